"""Evaluator training data from graded samples: balanced examples and (correct, incorrect) pairs per problem.

Graded records are JSONL lines with problem_id, sample_id, text, correct and problem (the problem text), as the
grading stage writes them. Only problems with at least one correct and one incorrect sample contribute. Per
problem, distinct correct and incorrect texts are shuffled (seeded) and zipped into at most `per_problem // 2`
pairs, so each problem gives about `per_problem` examples (default 10, as in the paper) and the labels are
balanced by construction.

Task kinds (see `register_evaluator_task`):
- "ce": flat examples, evaluator prompt -> " correct" / " incorrect" (token cross-entropy).
- "margin": pairs of evaluator prompts (x+ -> " correct", x- -> " incorrect") for the margin on log S.
- "seq": pairs of generator examples (P -> x+, P -> x-) for the sequence-likelihood contrastive loss.
Pairs reach the model as features of shape [2, L] (row 0 the correct sample) through
`mathft_jax.data.features.PairFeatureConverter`, which runs after seqio's shuffle so that pairs stay together. The
tasks themselves are registered by `mathft_jax.data.tasks`. No TensorFlow here.
"""
import collections
import json
import random
from typing import Mapping

from mathft_jax import run_io
from mathft_jax.text import prompts

KINDS = ("ce", "margin", "seq")


class GradedFileError(ValueError):
  """Malformed graded file; the message names file and line."""


def read_graded(path: str) -> dict[str, list[dict]]:
  by_problem = collections.OrderedDict()
  for line_no, line in enumerate(run_io.path(path).read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      r = json.loads(line)
      record = {"problem_id": str(r["problem_id"]), "problem": str(r["problem"]), "text": str(r["text"]),
                "correct": bool(r["correct"])}
    except (ValueError, KeyError, TypeError) as e:
      raise GradedFileError(f"{path}:{line_no}: expected problem_id, problem, text, correct ({e!r})") from None
    by_problem.setdefault(record["problem_id"], []).append(record)
  return by_problem


def build_pairs(by_problem: Mapping[str, list[dict]], per_problem: int = 10, seed: int = 0) -> list[dict]:
  """[{problem_id, problem, pos, neg}], at most per_problem // 2 pairs per problem (see the module doc)."""
  rng = random.Random(seed)
  pairs = []
  for pid, records in by_problem.items():
    pos = sorted({r["text"] for r in records if r["correct"]})
    neg = sorted({r["text"] for r in records if not r["correct"]})
    if not pos or not neg:
      continue
    rng.shuffle(pos)
    rng.shuffle(neg)
    n = max(1, per_problem // 2)
    for i in range(min(n, max(len(pos), len(neg)))):
      pairs.append({"problem_id": pid, "problem": records[0]["problem"], "pos": pos[i % len(pos)],
                    "neg": neg[i % len(neg)]})
  return pairs


def examples(pairs: list[dict], kind: str) -> list[dict]:
  """String examples of a task kind: inputs/targets ("ce") or the four PAIR_FEATURES."""
  if kind == "ce":
    return [prompts.evaluator_example(p["problem"], p[side], side == "pos") for p in pairs for side in ("pos", "neg")]
  out = []
  for p in pairs:
    if kind == "margin":
      pos, neg = (prompts.evaluator_example(p["problem"], p["pos"], True),
                  prompts.evaluator_example(p["problem"], p["neg"], False))
    elif kind == "seq":
      pos, neg = prompts.generator_example(p["problem"], p["pos"]), prompts.generator_example(p["problem"], p["neg"])
    else:
      raise ValueError(f"unknown evaluator task kind {kind!r}; expected one of {KINDS}")
    out.append({"inputs_pos": pos["inputs"], "targets_pos": pos["targets"], "inputs_neg": neg["inputs"],
                "targets_neg": neg["targets"]})
  return out


def write_evaluator_data(graded_path: str, out_path: str, problems: str, add_references: bool) -> None:
  """graded.jsonl (+ with `add_references`, one correct candidate per problem: its reference solution from the
  problem set) -> out_path, atomically: the file the evaluator tasks read."""
  from mathft_jax.text.problems import load_problems
  records = run_io.read_jsonl(graded_path)
  next_id = {}
  for r in records:
    next_id[r["problem_id"]] = max(next_id.get(r["problem_id"], -1), int(r["sample_id"])) + 1
  extra = [{"problem_id": p["problem_id"], "sample_id": next_id[p["problem_id"]], "text": p["solution"],
            "answer": p.get("answer"), "cluster": -2, "correct": True, "problem": p["problem"], "reference": True}
           for p in load_problems(problems) if add_references and p["problem_id"] in next_id and p.get("solution")]
  run_io.write_atomic(out_path, "".join(json.dumps(r) + "\n" for r in records + extra))
