"""PRM800K (Lightman et al. 2023) step-labelled solutions -> solution fine-tuning examples, and a TFDS builder.

Kept records (one example each; a problem can have several):
- `label.finish_reason == "solution"`: the labeller reached a final answer. "found_error" (a step was rated -1 and
  labelling stopped) and "give_up" records are dropped: they are not complete correct solutions.
- Every step has a chosen completion rated >= 0, or a human-written replacement (`human_completion`, unrated: a
  person wrote it as the correct next step). A step with neither is incomplete: dropped.
- The final step's "# Answer" equals `question.ground_truth_answer` by our grader (drops confidently wrong answers;
  records without a ground-truth answer cannot be checked and are dropped as "no_reference").
The solution text joins the step texts with newlines and replaces the "# Answer" section by
"The answer is $\\boxed{...}$.", matching MATH's format. `unique_id` is the MATH id of the same problem text when
MATH files are given (else "prm800k/<hash>").
"""
import collections
import functools
import glob
import hashlib
import json
import os
from typing import Iterable, Optional

from mathft_jax.grading import is_equivalent

DROP_REASONS = ("not_solution", "incomplete_step", "bad_step", "no_answer", "no_reference", "wrong_answer")


class Prm800kDataError(ValueError):
  """Malformed PRM800K files; the message names the file and line."""


def _problem_key(problem: str) -> str:
  return " ".join(problem.split())


def solution_from_record(record: dict) -> tuple[Optional[dict], str]:
  """(example or None, reason): the kept example, or why the record was dropped (see DROP_REASONS)."""
  label, question = record["label"], record["question"]
  if label.get("finish_reason") != "solution":
    return None, "not_solution"
  texts = []
  for step in label["steps"]:
    chosen = step.get("chosen_completion")
    if chosen is not None:
      completion = step["completions"][chosen]
      if (completion.get("rating") or 0) < 0:
        return None, "bad_step"
    elif step.get("human_completion"):
      completion = step["human_completion"]
    else:
      return None, "incomplete_step"
    texts.append(completion["text"].strip())
  if not texts or "# Answer" not in texts[-1]:
    return None, "no_answer"
  body, _, answer = texts[-1].partition("# Answer")
  answer = answer.strip()
  if not question.get("ground_truth_answer"):
    return None, "no_reference"
  if not answer or not is_equivalent(answer, question["ground_truth_answer"]):
    return None, "wrong_answer"
  steps = texts[:-1] + ([body.strip()] if body.strip() else [])
  solution = "\n".join(steps + [f"The answer is $\\boxed{{{answer}}}$."])
  return {"problem": question["problem"], "solution": solution, "answer": answer,
          "ground_truth_answer": question["ground_truth_answer"]}, "kept"


def read_prm800k(paths: Iterable[str], math_ids: Optional[dict] = None) -> tuple[list[dict], dict]:
  """Examples from PRM800K JSONL files and a count of records per outcome (kept + DROP_REASONS)."""
  math_ids = math_ids or {}
  examples, outcomes = [], collections.Counter()
  for path in paths:
    with open(path) as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
          example, outcome = solution_from_record(record)
        except (ValueError, KeyError, TypeError, IndexError) as e:
          raise Prm800kDataError(f"{path}:{line_no}: malformed PRM800K record ({e!r})") from None
        outcomes[outcome] += 1
        if example is not None:
          key = _problem_key(example["problem"])
          example["unique_id"] = math_ids.get(key, "prm800k/" + hashlib.sha1(key.encode()).hexdigest()[:16])
          example["source"] = f"{os.path.basename(path)}:{line_no}"
          examples.append(example)
  return examples, dict(outcomes)


def math_id_index(math_records: Iterable[dict]) -> dict:
  return {_problem_key(r["problem"]): r["unique_id"] for r in math_records}


def split_files(manual_dir: str) -> dict[str, list[str]]:
  """{"train": [...*train*.jsonl], "test": [...*test*.jsonl]} under manual_dir (or manual_dir/prm800k)."""
  root = os.path.join(manual_dir, "prm800k") if os.path.isdir(os.path.join(manual_dir, "prm800k")) else manual_dir
  files = {s: sorted(glob.glob(os.path.join(root, f"*{s}*.jsonl"))) for s in ("train", "test")}
  if not files["train"]:
    raise Prm800kDataError(f"no PRM800K files in {root}: put phase1_train.jsonl / phase2_train.jsonl (and the "
                           f"*_test.jsonl files) from https://github.com/openai/prm800k there")
  return files


@functools.lru_cache(maxsize=None)  # one class per process: TFDS registers builders by name
def _tfds_builder():
  import tensorflow_datasets as tfds

  from mathft_jax.data import quiet_tf  # noqa: F401  TensorFlow first, quietly
  from mathft_jax.data.math_dataset import MathDataError, read_math

  class MathftPrm800k(tfds.core.GeneratorBasedBuilder):
    """PRM800K solutions that reach the right answer, as MATH-style (problem, solution) examples."""
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put phase1_train.jsonl, phase2_train.jsonl (and the *_test.jsonl files) in "
                                    "manual_dir (or manual_dir/prm800k); optionally MATH under manual_dir/math to "
                                    "attach MATH unique_ids.")

    def _info(self):
      text = tfds.features.Text()
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(
          {k: text for k in ("unique_id", "problem", "solution", "answer", "ground_truth_answer", "source")}))

    def _split_generators(self, dl_manager):
      manual_dir = os.fspath(dl_manager.manual_dir)
      try:
        math = read_math(os.path.join(manual_dir, "math"))
        ids = math_id_index(math["train"] + math["test"])
      except (MathDataError, FileNotFoundError):
        ids = {}
      return {split: self._generate_examples(paths, ids) for split, paths in split_files(manual_dir).items()
              if paths}

    def _generate_examples(self, paths, ids):
      examples, _ = read_prm800k(paths, ids)
      for e in examples:
        yield e["source"], e

  return MathftPrm800k


def prepare(manual_dir: str, data_dir: str):
  """Builds the TFDS dataset `mathft_prm800k` into data_dir from manual_dir (offline); returns the builder."""
  from mathft_jax.data.math_dataset import prepare_offline
  return prepare_offline(_tfds_builder(), manual_dir, data_dir)
