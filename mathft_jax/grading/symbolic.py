"""Safe, time-bounded symbolic work on model-written LaTeX.

Safety model:
1. Text is never evaluated: LaTeX is parsed by `latex2sympy2_extended` (an ANTLR grammar that builds sympy objects;
   no `eval`, `sympify` or `parse_expr` of the text), after `sanitize` rejects oversized, deeply nested,
   huge-number and non-ASCII input.
2. Before any arithmetic, `is_tame` walks the parsed tree and rejects what sympy could not evaluate within a bound,
   or would evaluate in uninterruptible C code: power towers and huge powers in any position, huge factorials,
   gammas and binomials, big integers, oversized trees, integrals, limits and derivatives, and sums or products
   over more than MAX_TERMS terms.
3. Every parse, evaluation and comparison runs under `time_limit` (a SIGALRM timer in the main thread). Limits
   nest and `budget` caps a whole call: no inner limit outlasts an enclosing one. In other threads no timer can
   fire, so no symbolic work starts there (answers compare by their string keys). Worker processes of the batch
   grader add a hard wall-clock kill on top (`mathft_jax.grading.batch`).
A rejected or timed-out input is never equal to anything it is not string-identical to (after normalization).
"""
import contextlib
import math
import re
import signal
import threading
import time
from functools import lru_cache
from typing import Optional

import sympy

MAX_CHARS = 400
MAX_DIGITS = 80
MAX_BRACE_DEPTH = 24
MAX_NODES = 400
MAX_RESULT_DIGITS = 2000
MAX_TERMS = 1000  # of a literal sum or product


class Timeout(Exception):
  pass


_budget: list = []  # deadlines (time.monotonic) of the enclosing `budget` blocks
_timers: list = []  # deadlines of the armed `time_limit` blocks, innermost last
_handlers: list = []  # the SIGALRM handler to restore when the outermost timer ends


def _raise_timeout(signum, frame):
  raise Timeout()


@contextlib.contextmanager
def budget(seconds: float):
  """A whole call's time: every `time_limit` inside ends by then at the latest (no timer of its own)."""
  _budget.append(time.monotonic() + seconds)
  try:
    yield
  finally:
    _budget.pop()


@contextlib.contextmanager
def time_limit(seconds: float):
  """Raises Timeout in the block after `seconds`, or at an enclosing limit's or budget's deadline if that is sooner
  (at once if it has passed). Outside the main thread no timer can fire: Timeout at once, so no symbolic work runs
  there unbounded."""
  if threading.current_thread() is not threading.main_thread():
    raise Timeout()
  now = time.monotonic()
  deadline = min([now + seconds, *_budget, *_timers[-1:]])
  if deadline <= now:
    raise Timeout()
  if not _timers:
    _handlers.append(signal.signal(signal.SIGALRM, _raise_timeout))
  _timers.append(deadline)
  signal.setitimer(signal.ITIMER_REAL, deadline - now)
  try:
    yield
  finally:
    _timers.pop()
    if _timers:  # the enclosing limit keeps its own deadline
      signal.setitimer(signal.ITIMER_REAL, max(_timers[-1] - time.monotonic(), 1e-6))
    else:
      signal.setitimer(signal.ITIMER_REAL, 0)
      signal.signal(signal.SIGALRM, _handlers.pop())


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


_UNBOUNDED = (sympy.Integral, sympy.Limit, sympy.Derivative)


def _short_range(limits) -> bool:
  """Every (variable, low, high) of a sum or product has literal integer bounds at most MAX_TERMS apart."""
  for limit in limits:
    if len(limit) != 3 or not (limit[1].is_Integer and limit[2].is_Integer):
      return False
    if abs(int(limit[2]) - int(limit[1])) > MAX_TERMS:
      return False
  return True


def is_tame(expr) -> bool:
  """True if sympy can do arithmetic on `expr` without blowing up (see the module doc)."""
  count = 0
  for node in sympy.preorder_traversal(expr):
    count += 1
    if count > MAX_NODES:
      return False
    if isinstance(node, _UNBOUNDED):
      return False  # quadrature, series and symbolic calculus have no useful time bound
    if isinstance(node, (sympy.Sum, sympy.Product)) and not _short_range(node.limits):
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
  """A tame sympy object for a normalized LaTeX scalar or matrix, or None (rejected or unparseable). Raises Timeout
  when it runs out of time: that is not an answer about `s`, so it is not cached (another call may have the time)."""
  s = sanitize(s)
  if s is None:
    return None
  from latex2sympy2_extended import latex2sympy  # lazy: ANTLR start-up cost only when needed
  with time_limit(seconds):
    try:
      expr = latex2sympy(s)
      if isinstance(expr, (list, tuple)) or not isinstance(expr, (sympy.Basic, sympy.MatrixBase)):
        return None
      return expr if is_tame(expr) else None
    except Timeout:
      raise
    except Exception:  # noqa: BLE001  latex2sympy raises many error types on malformed input
      return None


def _close(a: complex, b: complex) -> bool:
  return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def constant_value(expr, seconds: float = 1.0) -> Optional[complex]:
  """Numeric value of a symbol-free scalar expression, or None; Timeout past `seconds`."""
  if not isinstance(expr, sympy.Expr) or expr.free_symbols:
    return None
  try:
    with time_limit(seconds):
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
