"""The recipe's judge: answer extraction, normalization, safe time-bounded equivalence, clustering.

Importable without JAX or TensorFlow (sympy and latex2sympy2_extended only).

What is equal (see `extract`, `normalize`, `structure`, `equivalence`):
- Extraction: the last box, with the boxes just before it joined by separators or "and" (graded as the list, or by
  its last box: MATH's references keep the last of several); an answer phrase after it; else free text, the last
  math of the answer sentence.
- Presentation is ignored: `\\dfrac`, `\\left`, spacing, `\\text{}` units and unit words, degrees, percent (`28\\%`,
  "28 percent" and 28 are one answer), dollars, thousands separators (`11,\\!111`), `bmatrix`/`array`/`pmatrix`.
- Values: equal numbers (exact; decimals within the numeric tolerance), symbolic identities, named values by their
  value (`x=5`, `f(x)=1`, `(p,q)=(3,2)`, `x\\in[0,1]`), chains and computations by their last part
  (`x=5+5+1=11`), equations up to rearrangement and a nonzero factor, inequalities up to rearrangement and a
  positive factor, a chained inequality around a name as its interval (`-2\\le x<7` is `[-2,7)`), `\\pm` as both
  values, "x = a or x = b" / "a and b" / "a; b" as the list, lists and sets as sets.

Strictness rules, on purpose (where Math-Verify, say, is more lenient):
- Interval brackets are part of the answer: `[1,2)` is not `(1,2)` nor `[1,2]`.
- An ordered pair or open interval `(1,2)` is not the list `1, 2` (nor `{1,2}`, braces being grouping).
- An equation is not its right side: `a+3z=0` is not `0` (a named value `x=0` is).
- Numbers: the tolerance is a setting, `rel_tol` of `is_equivalent`, `grade`, `cluster`, `batch.grade_problem(s)`,
  `mathft-rerank --rel_tol` (or `tolerance(rel_tol)` around any call): |a - b| <= rel_tol * max(1, |a|, |b|). The
  default, `STRICT` = 1e-9, is MATH's exact answers: `0.333` is not 1/3, `0.0833333333333333` (1/12 to float
  precision) is; `3.1416` is pi only with a loose tolerance (1e-4: Qwen2.5-Math's grader's).
- Boxes join only across separators and "and": "\\boxed{28} or \\boxed{28_9}" (alternatives) and "first
  \\boxed{1} then \\boxed{2}" have the last box as their answer.
- Words are words: `\\text{Monday}` is not a product of letters (and not "dynamo"); `12:00` is a time, not 12/0.

Time bounds of the public calls (the symbolic work in each; string work on top is linear in the input, and inputs
past a few hundred characters are compared as strings):
- `extract_answer(s)`: no symbolic work at all.
- `is_equivalent(a, b, seconds=2.0)`, `grade(text, reference, seconds=2.0)`, `answer_key(answer, seconds=2.0)`:
  `seconds` in all; past it, not equal / the normalized string's key.
- `cluster(answers, seconds=1.0, budget=10.0)`: `budget` in all, `seconds` per pair check.
- `batch.grade_problem(texts, reference, budget=20.0)`: `budget` in all.
- `batch.grade_problems(..., timeout=60.0)`: each problem in a worker process killed past `timeout` (any number of
  workers), then graded by string keys and flagged "degraded".
Before any evaluation, `symbolic.is_tame` rejects the inputs that no time bound could save (power towers, huge
factorials, integrals, limits, long sums; see `symbolic`), so their verdicts do not depend on timing; such trees are
only compared as trees. Symbolic work needs the main thread's SIGALRM timer; in other threads answers compare by
their string keys.
"""
from mathft_jax.grading.equivalence import answer_key, cluster, grade, is_equivalent, parts_equivalent
from mathft_jax.grading.extract import extract_answer, extract_answers
from mathft_jax.grading.normalize import normalize
from mathft_jax.grading.symbolic import STRICT, tolerance

__all__ = ["STRICT", "answer_key", "cluster", "extract_answer", "extract_answers", "grade", "is_equivalent",
           "normalize", "parts_equivalent", "tolerance"]
