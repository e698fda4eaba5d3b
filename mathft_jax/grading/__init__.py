"""The recipe's judge: answer extraction, normalization, safe time-bounded equivalence, clustering.

Importable without JAX or TensorFlow (sympy and latex2sympy2_extended only). Time bounds of the public calls (the
symbolic work in each; string work on top is linear in the input, and inputs past a few hundred characters are
compared as strings):
- `extract_answer`: no symbolic work at all.
- `is_equivalent(a, b, seconds=2.0)`, `grade(text, reference, seconds=2.0)`, `answer_key(answer, seconds=2.0)`:
  `seconds` in all; past it, not equal / the normalized string's key.
- `cluster(answers, seconds=1.0, budget=10.0)`: `budget` in all, `seconds` per pair check.
- `batch.grade_problem(texts, reference, budget=20.0)`: `budget` in all.
- `batch.grade_problems(..., timeout=60.0)`: each problem in a worker process killed past `timeout` (any number of
  workers), then graded by string keys and flagged "degraded".
Before any evaluation, `symbolic.is_tame` rejects the inputs that no time bound could save (power towers, huge
factorials, integrals, limits, long sums; see `symbolic`), so their verdicts do not depend on timing. Symbolic
work needs the main thread's SIGALRM timer; in other threads answers compare by their string keys.
"""
from mathft_jax.grading.equivalence import answer_key, cluster, grade, is_equivalent, parts_equivalent
from mathft_jax.grading.extract import extract_answer, extract_answers
from mathft_jax.grading.normalize import normalize
from mathft_jax.grading.symbolic import STRICT, tolerance

__all__ = ["STRICT", "answer_key", "cluster", "extract_answer", "extract_answers", "grade", "is_equivalent",
           "normalize", "parts_equivalent", "tolerance"]
