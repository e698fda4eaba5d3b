"""Safe, time-bounded symbolic work on model-written LaTeX.

Safety model:
1. Text is never evaluated: LaTeX is parsed by `latex2sympy2_extended` (an ANTLR grammar that builds sympy objects;
   no `eval`, `sympify` or `parse_expr` of the text), after `sanitize` rejects oversized, deeply nested,
   huge-number and non-ASCII input.
2. Before any arithmetic, `is_tame` walks the parsed tree and rejects what sympy would evaluate in uninterruptible
   C code: power towers, huge powers and factorials, big integers, oversized trees.
3. Every parse and comparison runs under `time_limit` (a SIGALRM timer in the main thread). Worker processes of the
   batch grader add a hard wall-clock kill on top (`mathft_jax.grading.batch`).
A rejected or timed-out input is never equal to anything it is not string-identical to (after normalization).
"""
import contextlib
import math
import re
import signal
import threading
from functools import lru_cache
from typing import Optional

import sympy

MAX_CHARS = 400
MAX_DIGITS = 80
MAX_BRACE_DEPTH = 24
MAX_NODES = 400
MAX_RESULT_DIGITS = 2000


class Timeout(Exception):
  pass


@contextlib.contextmanager
def time_limit(seconds: float):
  """Raises Timeout in the block after `seconds` (main thread only; elsewhere the batch grader's kill bounds it)."""
  if seconds is None or threading.current_thread() is not threading.main_thread():
    yield
    return

  def _raise(signum, frame):
    raise Timeout()

  previous = signal.signal(signal.SIGALRM, _raise)
  signal.setitimer(signal.ITIMER_REAL, seconds)
  try:
    yield
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def sanitize(s: str) -> Optional[str]:
  """The string if it is small, ASCII, shallow and free of huge numbers; else None."""
  if not s or len(s) > MAX_CHARS or not s.isascii() or not s.isprintable():
    return None
  if re.search(r"\d{%d,}" % (MAX_DIGITS + 1), s):
    return None
  depth = 0
  for c in s:
    depth += c == "{"
    depth -= c == "}"
    if depth > MAX_BRACE_DEPTH or depth < 0:
      return None
  return s if depth == 0 else None


def _digits(n: sympy.Expr) -> float:
  return math.log10(abs(int(n))) + 1 if n != 0 else 1


def is_tame(expr) -> bool:
  """True if sympy can do arithmetic on `expr` without blowing up (see the module doc)."""
  count = 0
  for node in sympy.preorder_traversal(expr):
    count += 1
    if count > MAX_NODES:
      return False
    if isinstance(node, sympy.Integer) and _digits(node) > MAX_DIGITS:
      return False
    if isinstance(node, sympy.Pow):
      base, exp = node.args
      if not base.free_symbols and not exp.free_symbols:
        if not isinstance(exp, sympy.Number):
          return False  # numeric exponent still to be evaluated, e.g. a power tower
        if abs(exp) > 10_000:
          return False
        big_base = isinstance(base, sympy.Number) and abs(base) > 1
        if big_base and abs(float(exp)) * math.log10(abs(float(base))) > MAX_RESULT_DIGITS:
          return False
      elif isinstance(exp, sympy.Number) and abs(exp) > 1000:
        return False
    if isinstance(node, (sympy.factorial, sympy.binomial, sympy.gamma)):
      if any(not a.is_Number or abs(a) > 500 for a in node.args):
        return False
  return True


@lru_cache(maxsize=200_000)
def parse_latex(s: str, seconds: float = 1.0):
  """A tame sympy object for a normalized LaTeX scalar or matrix, or None (rejected, unparseable, timed out)."""
  s = sanitize(s)
  if s is None:
    return None
  from latex2sympy2_extended import latex2sympy  # lazy: ANTLR start-up cost only when needed
  try:
    with time_limit(seconds):
      expr = latex2sympy(s)
      if isinstance(expr, (list, tuple)) or not isinstance(expr, (sympy.Basic, sympy.MatrixBase)):
        return None
      return expr if is_tame(expr) else None
  except (Timeout, Exception):  # noqa: B014  latex2sympy raises many error types on malformed input
    return None


def _close(a: complex, b: complex) -> bool:
  return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def constant_value(expr) -> Optional[complex]:
  """Numeric value of a symbol-free scalar expression, or None."""
  if not isinstance(expr, sympy.Expr) or expr.free_symbols:
    return None
  try:
    value = complex(expr.evalf(30))
  except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError):
    return None
  return value if all(math.isfinite(v) for v in (value.real, value.imag)) else None


def _scalar_equal(x, y) -> bool:
  if x == y:
    return True
  if isinstance(x, sympy.Eq) and isinstance(y, sympy.Eq):
    dx, dy = x.lhs - x.rhs, y.lhs - y.rhs
    if _scalar_equal(dx, dy) or _scalar_equal(dx, -dy):
      return True
    ratio = sympy.simplify(dx / dy)
    return bool(ratio.is_number and ratio != 0)
  if not isinstance(x, sympy.Expr) or not isinstance(y, sympy.Expr):
    return False
  vx, vy = constant_value(x), constant_value(y)
  if vx is not None and vy is not None:
    return _close(vx, vy)
  diff = x - y
  if not is_tame(diff):
    return False
  if sympy.simplify(diff) == 0:
    return True
  # Symbolic simplification can miss identities: probe at rational points (all must agree, none may fail).
  symbols = sorted(diff.free_symbols, key=str)
  for k, point in enumerate(((3, 7), (-5, 11), (13, 17))):
    values = {s: sympy.Rational(point[0] + i, point[1] + k) for i, s in enumerate(symbols)}
    v = constant_value(diff.subs(values))
    if v is None or not _close(v, 0):
      return False
  return True


def symbolic_equal(x, y, seconds: float = 2.0) -> bool:
  """Mathematical equality of two tame parsed objects (scalars, equations, matrices), time-bounded."""
  try:
    with time_limit(seconds):
      if isinstance(x, sympy.MatrixBase) or isinstance(y, sympy.MatrixBase):
        if not (isinstance(x, sympy.MatrixBase) and isinstance(y, sympy.MatrixBase)) or x.shape != y.shape:
          return False
        return all(_scalar_equal(a, b) for a, b in zip(x, y))
      return _scalar_equal(x, y)
  except (Timeout, Exception):  # noqa: B014  sympy raises many error types on odd objects
    return False
