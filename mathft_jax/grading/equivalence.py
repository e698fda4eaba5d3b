"""Answer equivalence, canonical keys and clustering.

`is_equivalent(a, b)`: equal normalized strings, else equal structure (see `structure`: tuples/intervals ordered,
sets and "1, 2" lists compared as sets; a named value `x=5` by its value; equations up to rearrangement and a
nonzero factor; an equation against a value by its right side) whose scalars are equal: same canonical key, or
(both parseable) numerically equal constants within the tolerance in force (`symbolic.tolerance`), equivalent
inequalities, or a symbolic identity (time-bounded, see `symbolic`).

`cluster(answers)` groups N answers in near-linear time: answers are hashed on a canonical key (normalized
string; exact rationals as "n:p/q"; sympy's canonical form for parseable expressions, which already merges
`\\sqrt{8}` with `2\\sqrt{2}`), constants are merged by sorting on their numeric value, and only the remaining
distinct symbolic keys are checked pairwise (bounded by `max_pair_checks`).
"""
import dataclasses
import re
from functools import lru_cache
from typing import Optional, Sequence

import sympy

from mathft_jax.grading import symbolic
from mathft_jax.grading.extract import extract_answers
from mathft_jax.grading.normalize import normalize
from mathft_jax.grading.structure import structure

_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")


@dataclasses.dataclass(frozen=True)
class Scalar:
  """One scalar answer: text (normalized), key (hashable canonical form), parsed sympy object or None."""
  text: str
  key: str
  expr: object = None
  value: Optional[complex] = None  # numeric value when the scalar is a constant

  @property
  def numeric(self) -> bool:
    return self.key.startswith("n:")


def _rational_key(r: sympy.Rational) -> str:
  return f"n:{r.p}/{r.q}"


@lru_cache(maxsize=200_000)
def scalar(text: str, use_sympy: bool = True) -> Scalar:
  """Canonical form of one normalized scalar answer (huge numbers are compared as strings only). Raises
  symbolic.Timeout, uncached, when parsing or evaluating runs out of time."""
  if _DECIMAL.fullmatch(text) and len(text) <= symbolic.MAX_DIGITS:
    r = sympy.Rational(text)
    return Scalar(text, _rational_key(r), r, complex(r))
  m = _FRACTION.fullmatch(text)
  if m and int(m.group(3)) != 0 and len(text) < 60:
    r = sympy.Rational(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
    return Scalar(text, _rational_key(r), r, complex(r))
  # A word of 3+ letters is a word ("Monday", "odd", "neither"), not a product of variables: parsed, "Monday"
  # and "dynamo" would be the same product of six symbols.
  word = re.fullmatch(r"[A-Za-z]{3,}", text)
  expr = symbolic.parse_latex(text) if use_sympy and not word else None
  if expr is None:
    tree = symbolic.structural_key(text) if use_sympy and not word else None
    if tree is not None:
      return Scalar(text, "t:" + tree)
    word = text.lower() if re.fullmatch(r"[A-Za-z]{2,}", text) else text
    return Scalar(text, "s:" + word)
  if isinstance(expr, sympy.Float):
    expr = sympy.Rational(str(expr))
  if isinstance(expr, sympy.Rational):
    return Scalar(text, _rational_key(expr), expr, complex(expr))
  return Scalar(text, "x:" + str(expr), expr, symbolic.constant_value(expr))


def _key(node, use_sympy: bool) -> str:
  kind = node[0]
  if kind == "scalar":
    return scalar(node[1], use_sympy).key
  if kind == "labeled":
    return _key(node[3], use_sympy)
  if kind == "eq":
    return "eq:" + scalar(node[1], use_sympy).key + "=" + scalar(node[2], use_sympy).key
  if kind == "seq":
    return node[1] + ",".join(_key(n, use_sympy) for n in node[3]) + node[2]
  inner = ",".join(sorted(_key(n, use_sympy) for n in node[-1]))
  return {"set": "{%s}", "list": "{%s}", "union": "U(%s)"}[kind] % inner


def answer_key(answer: Optional[str], use_sympy: bool = True, seconds: float = 2.0) -> Optional[str]:
  """Hashable canonical key of an answer (None for no answer): equal keys imply equivalent answers. Symbolic work
  gets `seconds` in all; past that the key is the normalized string's."""
  text = normalize(answer)
  if not text:
    return None
  node = structure(text)
  if use_sympy:
    try:
      with symbolic.budget(seconds):
        return _key(node, True)
    except symbolic.Timeout:
      pass
  return _key(node, False)


def _scalars_equal(a: Scalar, b: Scalar, seconds: float) -> bool:
  if a.key == b.key:
    return True
  if a.expr is None or b.expr is None:
    return False
  if a.value is not None and b.value is not None:
    return symbolic.close(a.value, b.value)
  return symbolic.symbolic_equal(a.expr, b.expr, seconds)


def _unordered_equal(xs, ys, seconds) -> bool:
  """Equal as sets: every item of each has an equal item in the other (repeats do not count)."""
  return (all(any(_nodes_equal(x, y, seconds) for y in ys) for x in xs)
          and all(any(_nodes_equal(x, y, seconds) for x in xs) for y in ys))


def _equations_equal(lhs1: str, rhs1: str, lhs2: str, rhs2: str, seconds: float) -> bool:
  """`lhs1 = rhs1` and `lhs2 = rhs2` have the same solutions: sides rearranged, both scaled by a constant."""
  sides = [scalar(t).expr for t in (lhs1, rhs1, lhs2, rhs2)]
  if any(not isinstance(e, sympy.Expr) for e in sides):
    return False
  try:
    with symbolic.time_limit(seconds):
      return symbolic.proportional(sides[0] - sides[1], sides[2] - sides[3])
  except symbolic.Timeout:
    raise
  except Exception:  # noqa: BLE001  sympy raises many error types on odd objects
    return False


def _nodes_equal(x, y, seconds: float) -> bool:
  unordered = {"set", "list"}
  if x[0] == "eq" and y[0] in ("eq", "labeled"):
    return _equations_equal(*x[1:3], *y[1:3], seconds)
  if y[0] == "eq" and x[0] == "labeled":
    return _nodes_equal(y, x, seconds)
  if x[0] == "eq" or y[0] == "eq":  # `a+3z=0` is not `0`
    return False
  if x[0] == "labeled" or y[0] == "labeled":
    return _nodes_equal(x[3] if x[0] == "labeled" else x, y[3] if y[0] == "labeled" else y, seconds)
  if x[0] == "scalar" and y[0] == "scalar":
    return _scalars_equal(scalar(x[1]), scalar(y[1]), seconds)
  if x[0] == "seq" and y[0] == "seq":
    return (x[1:3] == y[1:3] and len(x[3]) == len(y[3])
            and all(_nodes_equal(a, b, seconds) for a, b in zip(x[3], y[3])))
  if x[0] in unordered and y[0] in unordered or x[0] == y[0] == "union":
    return _unordered_equal(x[-1], y[-1], seconds)
  return False


def is_equivalent(a: Optional[str], b: Optional[str], seconds: float = 2.0, rel_tol: float = symbolic.STRICT) -> bool:
  """Whether two answers (LaTeX strings, e.g. a model's and the reference) are mathematically equal; symbolic work
  gets `seconds` in all (past that: not equal); numbers within `rel_tol` (relative) are equal."""
  na, nb = normalize(a), normalize(b)
  if not na or not nb:
    return False
  if na == nb:
    return True
  try:
    with symbolic.budget(seconds), symbolic.tolerance(rel_tol):
      return _nodes_equal(structure(na), structure(nb), seconds)
  except symbolic.Timeout:
    return False


def parts_equivalent(parts: Sequence[str], reference: Optional[str], seconds: float = 2.0,
                     rel_tol: float = symbolic.STRICT) -> bool:
  """Whether an answer given in parts (`extract_answers`) equals the reference: all parts as a list, or the last
  part alone (MATH's references keep the last of several boxes: "$\\boxed{1}$ and $\\boxed{9}$" has answer 9)."""
  if not parts:
    return False
  if is_equivalent(", ".join(parts), reference, seconds, rel_tol):
    return True
  return len(parts) > 1 and is_equivalent(parts[-1], reference, seconds, rel_tol)


def grade(text: Optional[str], reference: str, seconds: float = 2.0, rel_tol: float = symbolic.STRICT) -> bool:
  """Whether the final answer of a solution text equals the reference answer (see `parts_equivalent`)."""
  return parts_equivalent(extract_answers(text), reference, seconds, rel_tol)


class _UnionFind:

  def __init__(self, n: int):
    self.parent = list(range(n))

  def find(self, i: int) -> int:
    while self.parent[i] != i:
      self.parent[i] = self.parent[self.parent[i]]
      i = self.parent[i]
    return i

  def union(self, i: int, j: int) -> None:
    i, j = self.find(i), self.find(j)
    if i != j:
      self.parent[max(i, j)] = min(i, j)


def cluster(answers: Sequence[Optional[str]], max_pair_checks: int = 200, seconds: float = 1.0,
            use_sympy: bool = True, budget: float = 10.0, rel_tol: float = symbolic.STRICT) -> list[int]:
  """Cluster ids for N answers: 0, 1, ... in order of first appearance; -1 for no answer. Symbolic work gets
  `budget` seconds in all (each pair check `seconds`); past it, answers are merged by their keys alone. Constants
  within `rel_tol` of each other (relative) are merged."""
  with symbolic.budget(budget), symbolic.tolerance(rel_tol):
    return _cluster(answers, max_pair_checks, seconds, use_sympy)


def _scalar_or_none(text: str) -> Optional[Scalar]:
  try:
    return scalar(text)
  except symbolic.Timeout:
    return None


def _cluster(answers, max_pair_checks: int, seconds: float, use_sympy: bool) -> list[int]:
  keys = [answer_key(a, use_sympy, seconds) for a in answers]
  distinct: dict[str, int] = {}
  reps = []
  for a, k in zip(answers, keys):
    if k is not None and k not in distinct:
      distinct[k] = len(reps)
      reps.append(structure(normalize(a)))
  groups = _UnionFind(len(reps))
  if use_sympy:
    # Constants: merge neighbours in value order (near-linear).
    constants = []
    others = []
    for i, node in enumerate(reps):
      s = _scalar_or_none(node[1]) if node[0] == "scalar" else None
      if s is not None and s.value is not None:
        constants.append((s.value.real, s.value.imag, i))
      elif not (s is not None and s.key.startswith("s:")):
        others.append(i)
    constants.sort()
    for (re1, im1, i), (re2, im2, j) in zip(constants, constants[1:]):
      if symbolic.close(complex(re1, im1), complex(re2, im2)):
        groups.union(i, j)
    # Symbolic expressions and structures: bounded pairwise checks.
    checks = 0
    for x in range(len(others)):
      for y in range(x + 1, len(others)):
        i, j = others[x], others[y]
        if groups.find(i) == groups.find(j):
          continue
        if checks >= max_pair_checks:
          break
        checks += 1
        try:
          if _nodes_equal(reps[i], reps[j], seconds):
            groups.union(i, j)
        except symbolic.Timeout:  # out of time for this pair (or for the whole call): not merged
          pass
  root_to_id: dict[int, int] = {}
  ids = []
  for k in keys:
    if k is None:
      ids.append(-1)
      continue
    root = groups.find(distinct[k])
    ids.append(root_to_id.setdefault(root, len(root_to_id)))
  return ids
