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
STRICT = 1e-9  # the default numeric tolerance (relative): MATH's exact answers, float rounding aside


class Timeout(Exception):
  pass


_tolerance: list = [STRICT]  # the numeric tolerance in force (see `tolerance`)
_budget: list = []  # deadlines (time.monotonic) of the enclosing `budget` blocks
_timers: list = []  # deadlines of the armed `time_limit` blocks, innermost last
_handlers: list = []  # the SIGALRM handler to restore when the outermost timer ends


def _raise_timeout(signum, frame):
  raise Timeout()


@contextlib.contextmanager
def tolerance(rel_tol: float):
  """Numbers closer than `rel_tol * max(1, |a|, |b|)` are equal inside the block (default STRICT: 0.333 is not
  1/3, 0.0833333333333333 is 1/12)."""
  if not 0 <= rel_tol < 1:
    raise ValueError(f"rel_tol must be in [0, 1), got {rel_tol}")
  _tolerance.append(rel_tol)
  try:
    yield
  finally:
    _tolerance.pop()


def close(a: complex, b: complex) -> bool:
  """Numerically equal under the tolerance in force."""
  return abs(a - b) <= _tolerance[-1] * max(1.0, abs(a), abs(b))


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


def _exponent_ok(base, exp) -> bool:
  """A power of constants: its exponent is a number, or a tame constant that evaluates to a small one; the result
  has at most MAX_RESULT_DIGITS digits."""
  if not isinstance(exp, sympy.Number):
    if not is_tame(exp):
      return False
    value = constant_value(exp)  # tame: bounded; a tower's inner power is already too big to be tame
    if value is None or value.imag or abs(value.real) > 10_000:
      return False
    exp_value = value.real
  elif abs(exp) > 10_000:
    return False
  else:
    exp_value = float(exp)
  big_base = isinstance(base, sympy.Number) and abs(base) > 1
  return not (big_base and abs(exp_value) * math.log10(abs(float(base))) > MAX_RESULT_DIGITS)


def is_tame(expr, structural: bool = False) -> bool:
  """True if sympy can do arithmetic on `expr` without blowing up (see the module doc). `structural`: also admits
  what is fine to hold and compare as a tree but never to evaluate (integrals, limits, derivatives, sums and
  products with symbolic or long ranges)."""
  count = 0
  for node in sympy.preorder_traversal(expr):
    count += 1
    if count > MAX_NODES:
      return False
    if isinstance(node, _UNBOUNDED) and not structural:
      return False  # quadrature, series and symbolic calculus have no useful time bound
    if isinstance(node, (sympy.Sum, sympy.Product)) and not structural and not _short_range(node.limits):
      return False
    if isinstance(node, sympy.Integer) and _digits(node) > MAX_DIGITS:
      return False
    if isinstance(node, sympy.Pow):
      base, exp = node.args
      if not base.free_symbols and not exp.free_symbols:
        if not _exponent_ok(base, exp):
          return False
      elif isinstance(exp, sympy.Number) and abs(exp) > 1000:
        return False
    if isinstance(node, (sympy.factorial, sympy.binomial, sympy.gamma)):
      if any(not a.is_Number or abs(a) > 500 for a in node.args):
        return False
  return True


@lru_cache(maxsize=200_000)
def _parse(s: str, seconds: float):
  """(sympy object or None, tame) for a normalized LaTeX string. Raises Timeout, uncached, when out of time (that
  is not an answer about `s`; another call may have the time)."""
  s = sanitize(s)
  if s is None:
    return None, False
  from latex2sympy2_extended import latex2sympy  # lazy: ANTLR start-up cost only when needed
  with time_limit(seconds):
    try:
      expr = latex2sympy(s)
      if isinstance(expr, sympy.MatrixExpr) and not isinstance(expr, sympy.MatrixBase) and is_tame(expr):
        expr = expr.doit()  # a sum or product of explicit matrices
      if isinstance(expr, (list, tuple)) or not isinstance(expr, (sympy.Basic, sympy.MatrixBase)):
        return None, False
      if expr.has(sympy.zoo, sympy.nan):  # `12:00` is a time, not 12/0
        return None, False
      return expr, is_tame(expr)
    except Timeout:
      raise
    except Exception:  # noqa: BLE001  latex2sympy raises many error types on malformed input
      return None, False


def parse_latex(s: str, seconds: float = 1.0):
  """A tame sympy object for a normalized LaTeX scalar, relation or matrix, or None (rejected or unparseable).
  Raises Timeout when it runs out of time."""
  expr, tame = _parse(s, seconds)
  return expr if tame else None


def structural_key(s: str, seconds: float = 1.0) -> Optional[str]:
  """For what parses but may not be evaluated (`\\sum_{k=0}^{n-1} F_k F_{n-k-1}`, an integral): its canonical
  tree as a string, equal for equal trees up to sympy's ordering of sums and products; None otherwise."""
  expr, tame = _parse(s, seconds)
  if expr is None or tame:
    return None
  with time_limit(seconds):
    return str(expr) if is_tame(expr, structural=True) else None


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


def _relation(r) -> tuple:
  """An inequality as (d, op) with `d op 0`, op one of ">", ">=", "!=": `5 \\geq x` -> (5 - x, ">=")."""
  if isinstance(r, (sympy.StrictGreaterThan, sympy.GreaterThan)):
    return r.lhs - r.rhs, ">" if isinstance(r, sympy.StrictGreaterThan) else ">="
  if isinstance(r, (sympy.StrictLessThan, sympy.LessThan)):
    return r.rhs - r.lhs, ">" if isinstance(r, sympy.StrictLessThan) else ">="
  return r.lhs - r.rhs, "!="


_PROBES = ((3, 7), (-5, 11), (13, 17))


def _probe_values(symbols) -> list[dict]:
  """Three rational points, one value per symbol (sorted by name), away from small integers and each other."""
  return [{s: sympy.Rational(p + i, q + k) for i, s in enumerate(symbols)} for k, (p, q) in enumerate(_PROBES)]


def proportional(x, y, positive: bool = False) -> bool:
  """x = c * y for a constant c != 0 (c > 0 with `positive`): equations `x = 0` and `y = 0`, or inequalities
  `x > 0` and `y > 0`, with the same solutions. Probed at three rational points (the ratio must be the same
  nonzero number at each); only where a probe cannot be evaluated does sympy's `simplify` decide. Call under a
  time limit."""
  if x == y:
    return True
  if x == 0 or y == 0 or not is_tame(x) or not is_tame(y):
    return False
  ratios = []
  for values in _probe_values(sorted(x.free_symbols | y.free_symbols, key=str)):
    vx, vy = constant_value(x.subs(values)), constant_value(y.subs(values))
    if vx is None or vy is None or vy == 0:
      ratios = None
      break
    ratios.append(vx / vy)
  if ratios is not None:
    same = all(abs(r - ratios[0]) <= STRICT * max(1.0, abs(ratios[0])) for r in ratios)
    if not same or abs(ratios[0]) <= STRICT:
      return False
    return not positive or (abs(ratios[0].imag) <= STRICT and ratios[0].real > 0)
  ratio = sympy.simplify(x / y)
  if not ratio.is_number or ratio == 0:
    return False
  return not positive or bool(ratio.is_positive)


def _scalar_equal(x, y) -> bool:
  if x == y:
    return True
  if isinstance(x, sympy.Eq) and isinstance(y, sympy.Eq):
    return proportional(x.lhs - x.rhs, y.lhs - y.rhs)
  relations = (sympy.StrictGreaterThan, sympy.GreaterThan, sympy.StrictLessThan, sympy.LessThan, sympy.Ne)
  if isinstance(x, relations) and isinstance(y, relations):
    (dx, opx), (dy, opy) = _relation(x), _relation(y)
    return opx == opy and proportional(dx, dy, positive=opx != "!=")
  if not isinstance(x, sympy.Expr) or not isinstance(y, sympy.Expr):
    return False
  vx, vy = constant_value(x), constant_value(y)
  if vx is not None and vy is not None:
    return close(vx, vy)
  diff = x - y
  if not is_tame(diff):
    return False
  # Probe at rational points first (cheap): a value away from 0 decides "different"; all three vanishing decides
  # "identical" (identities are exact, whatever the numeric tolerance). Only where a probe cannot be evaluated
  # (a pole, a log of a negative) does sympy's slower `simplify` decide.
  undecided = False
  for values in _probe_values(sorted(diff.free_symbols, key=str)):
    v = constant_value(diff.subs(values))
    if v is None:
      undecided = True
    elif abs(v) > STRICT:
      return False
  return not undecided or sympy.simplify(diff) == 0


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
