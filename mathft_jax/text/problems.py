"""Problem sets by name, without TensorFlow (for the inference and re-ranking binaries).

- "synthetic:<split>:<count>[:<levels>]": the embedded synthetic domain (levels e.g. "1" or "1,3"; default all);
- "math:<manual_dir>:<split>": MATH from local files (train, test, test500, train_prm), e.g. math:/data/MATH:test500;
- a JSONL path: lines with problem_id (or unique_id), problem and/or answer, optional level and subject.
Records: problem_id, problem, answer, level, subject, solution (missing fields are absent).
"""
import json

FIELDS = ("problem", "answer", "level", "subject", "solution")


class ProblemSetError(ValueError):
  """A bad problem-set name or file; names the file and line."""


def load_problems(spec: str) -> list[dict]:
  if spec.startswith("synthetic:"):
    from mathft_jax.data.synthetic import generate
    _, split, count, *levels = spec.split(":")
    chosen = tuple(int(x) for x in levels[0].split(",")) if levels else (1, 2, 3, 4, 5)
    return [{"problem_id": r["unique_id"], **{k: r[k] for k in FIELDS}}
            for r in generate(split, int(count), levels=chosen)]
  if spec.startswith("math:"):
    from mathft_jax.data.math_dataset import math_splits, read_math
    manual_dir, _, split = spec[len("math:"):].rpartition(":")
    splits = math_splits(read_math(manual_dir))
    if split not in splits:
      raise ProblemSetError(f"{spec}: unknown MATH split {split!r}; expected one of {sorted(splits)}")
    return [{"problem_id": r["unique_id"], **{k: r[k] for k in FIELDS}}
            for r in splits[split]]
  records = []
  with open(spec) as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        r = json.loads(line)
        pid = r.get("problem_id", r.get("unique_id"))
        if pid is None or not ("problem" in r or "answer" in r):
          raise KeyError("problem_id/unique_id and problem or answer")
      except (ValueError, KeyError, AttributeError) as e:
        raise ProblemSetError(f"{spec}:{line_no}: expected problem_id (or unique_id) and problem/answer ({e!r})") \
            from None
      records.append({**{k: r[k] for k in FIELDS if k in r},
                      "problem_id": str(pid)})
  return records
