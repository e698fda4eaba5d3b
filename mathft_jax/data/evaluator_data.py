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
Pairs reach the model as features of shape [2, L] (row 0 the correct sample) through `PairFeatureConverter`,
which runs after seqio's shuffle so that pairs stay together.
"""
import collections
import json
import random
from typing import Mapping, Optional

import seqio
import tensorflow as tf

from mathft_jax.data import prompts

KINDS = ("ce", "margin", "seq")
PAIR_FEATURES = ("inputs_pos", "targets_pos", "inputs_neg", "targets_neg")


class GradedFileError(ValueError):
  """Malformed graded file; the message names file and line."""


def read_graded(path: str) -> dict[str, list[dict]]:
  by_problem = collections.OrderedDict()
  with tf.io.gfile.GFile(path) as f:
    for line_no, line in enumerate(f, 1):
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


def register_evaluator_task(name: str, graded_path: str, kind: str, vocabulary: seqio.Vocabulary,
                            per_problem: int = 10, seed: int = 0) -> str:
  """Registers (replacing) a seqio task over a graded file; all splits read the same pairs."""
  exs = examples(build_pairs(read_graded(graded_path), per_problem, seed), kind)
  if not exs:
    raise GradedFileError(f"{graded_path}: no problem has both a correct and an incorrect sample")
  from mathft_jax.data.seqio_source import register_text_task
  keys = list(exs[0])
  features = {k: seqio.Feature(vocabulary, add_eos=k.startswith("targets")) for k in keys}
  trims = (keep_input_tails,) if kind in ("ce", "margin") else ()  # "seq" inputs are generator prompts
  return register_text_task(name, {k: [e[k] for e in exs] for k in keys}, features, trims)


def keep_input_tails(dataset: tf.data.Dataset, sequence_length: Optional[dict] = None) -> tf.data.Dataset:
  """Cuts over-long evaluator prompts from the left: the question that ends the prompt ("The above candidate
  solution is") and the end of the candidate, where its answer is, always reach the model (the default cut
  from the right would train the label on a prompt without its question)."""
  if not sequence_length:
    return dataset
  return dataset.map(lambda ex: {k: v[-sequence_length[k]:] if k.startswith("inputs") and k in sequence_length else v
                                 for k, v in ex.items()})


def _decoder_row(inputs: tf.Tensor, targets: tf.Tensor, length: int) -> dict:
  """One unpacked PrefixLM row: loss on the targets only, padded to `length`."""
  seq = tf.concat([inputs, targets], 0)[:length]
  n = tf.size(seq)
  pad = [[0, length - n]]
  weights = tf.concat([tf.zeros_like(inputs), tf.ones_like(targets)], 0)[:length]
  return {"decoder_target_tokens": tf.pad(seq, pad),
          "decoder_input_tokens": tf.pad(tf.concat([[0], seq[:-1]], 0), pad),
          "decoder_loss_weights": tf.pad(weights, pad),
          "decoder_segment_ids": tf.pad(tf.ones_like(seq), pad),
          "decoder_positions": tf.pad(tf.range(n), pad)}


class PairFeatureConverter(seqio.FeatureConverter):
  """(inputs|targets)_(pos|neg) -> decoder features of shape [2, inputs+targets length]; row 0 = the correct one."""
  TASK_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for k in PAIR_FEATURES}
  MODEL_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=2) for k in (
      "decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights", "decoder_segment_ids",
      "decoder_positions")}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self):
    super().__init__(pack=False)

  def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    length = task_feature_lengths["inputs_pos"] + task_feature_lengths["targets_pos"]

    def convert(ex):
      pos = _decoder_row(ex["inputs_pos"], ex["targets_pos"], length)
      neg = _decoder_row(ex["inputs_neg"], ex["targets_neg"], length)
      return {k: tf.stack([pos[k], neg[k]]) for k in pos}

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def _convert_features(self, ds, task_feature_lengths):
    raise NotImplementedError("PairFeatureConverter overrides __call__")

  def get_model_feature_lengths(self, task_feature_lengths):
    length = task_feature_lengths["inputs_pos"] + task_feature_lengths["targets_pos"]
    return {k: length for k in self.MODEL_FEATURES}
