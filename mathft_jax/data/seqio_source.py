"""Batches from a seqio task or mixture, sharded per host, resumable at any batch index.

`SeqioSource("ssft_synthetic", {"inputs": 256, "targets": 512}, batch_size=64)` yields this host's rows of each
global batch through seqio's PrefixLM feature converter: prompt ("inputs") and solution ("targets") are packed
into one decoder sequence with loss weights 0 on the prompt. Names that register a task on the fly:
- "jsonl:/path/file.jsonl": a JSONL file of {"inputs": ..., "targets": ...} lines, byte vocabulary;
- "evaluator_ce:/path/graded.jsonl", "evaluator_margin:...", "evaluator_seq:...": evaluator training data from a
  graded samples file (`mathft_jax.data.evaluator_data`); pair tasks give features of shape [B, 2, L].
"""
import dataclasses
import hashlib
import json
import os
from typing import Iterator, Optional

import numpy as np
import seqio
import tensorflow as tf

FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
            "decoder_positions")


def byte_output_features() -> dict:
  vocab = seqio.ByteVocabulary()
  return {"inputs": seqio.Feature(vocab, add_eos=False), "targets": seqio.Feature(vocab, add_eos=True)}


def _read_jsonl(path: str) -> dict:
  inputs, targets = [], []
  with tf.io.gfile.GFile(path) as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
        inputs.append(str(record["inputs"]))
        targets.append(str(record["targets"]))
      except (ValueError, KeyError) as e:
        raise ValueError(f"{path}:{line_no}: expected a JSON object with 'inputs' and 'targets' ({e!r})") from None
  if not inputs:
    raise ValueError(f"{path}: no records")
  return {"inputs": inputs, "targets": targets}


def register_text_task(name: str, data: dict[str, list[str]], output_features: dict,
                       token_preprocessors: tuple = ()) -> str:
  """(Re-)registers a task over in-memory text columns (every split reads them); "targets*" columns get EOS.

  token_preprocessors run after tokenization (seqio passes `sequence_length` to those that take it)."""
  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(data)

  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(dataset_fn, splits=("train", "validation", "test")),
                         preprocessors=[seqio.preprocessors.tokenize, *token_preprocessors,
                                        seqio.preprocessors.append_eos_after_trim],
                         output_features=output_features)
  return name


def jsonl_task(path: str) -> str:
  """Registers (once) and names a byte-vocabulary task over a JSONL file; the same split serves train/eval."""
  name = "jsonl_" + hashlib.sha1(path.encode()).hexdigest()[:12]
  if name not in seqio.TaskRegistry.names():
    register_text_task(name, _read_jsonl(path), byte_output_features())
  return name


@dataclasses.dataclass
class SeqioSource:
  """Global batches of `batch_size` packed sequences of length inputs+targets lengths."""
  mixture_or_task_name: str
  task_feature_lengths: dict
  batch_size: int
  split: str = "train"
  shuffle: bool = True
  seed: Optional[int] = 0
  pack: bool = True
  num_epochs: Optional[int] = None  # None: repeat forever (training); 1 for a single eval pass

  def _name(self) -> str:
    name = self.mixture_or_task_name
    if name.startswith("jsonl:"):
      return jsonl_task(name[len("jsonl:"):])
    kind, sep, path = name.partition(":")
    if sep and kind.startswith("evaluator_"):
      from mathft_jax.data import evaluator_data
      from mathft_jax.data.vocabularies import get_vocabulary
      task = f"{kind}_{hashlib.sha1(path.encode()).hexdigest()[:12]}"
      if task not in seqio.TaskRegistry.names():
        evaluator_data.register_evaluator_task(task, path, kind[len("evaluator_"):],
                                               get_vocabulary(os.environ.get("MATHFT_VOCABULARY", "byte")))
      return task
    import mathft_jax.tasks  # noqa: F401  registers the project's tasks and mixtures
    return name

  def dataset(self, shard_index: int = 0, num_shards: int = 1) -> tf.data.Dataset:
    if self.batch_size % num_shards:
      raise ValueError(f"batch_size={self.batch_size} is not divisible by {num_shards} data shards")
    name = self._name()
    lengths = dict(self.task_feature_lengths)
    converter = seqio.PrefixLMFeatureConverter(pack=self.pack)
    if "inputs_pos" in seqio.get_mixture_or_task(name).output_features:
      from mathft_jax.data.evaluator_data import PairFeatureConverter
      lengths = {f"{k}_{side}": lengths[k] for k in ("inputs", "targets") for side in ("pos", "neg")}
      converter = PairFeatureConverter()
    ds = seqio.get_dataset(name, lengths, converter, dataset_split=self.split,
                           shuffle=self.shuffle, num_epochs=self.num_epochs, seed=self.seed, verbose=False,
                           shard_info=seqio.ShardInfo(shard_index, num_shards))
    # No tf.data autotuning: its model thread sleeps up to 60 s between rounds, and deleting the iterator at the
    # end of training waited out that sleep (36-49 s idle in 4 of 6 evaluator runs of 300 steps; docs/benchmarks.md).
    # These pipelines are light next to a training step.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.batch(self.batch_size // num_shards, drop_remainder=True).with_options(options)

  def host_batches(self, start: int = 0, shard_index: int = 0, num_shards: int = 1) -> Iterator[dict]:
    for batch in self.dataset(shard_index, num_shards).skip(start).as_numpy_iterator():
      yield {k: np.asarray(v) for k, v in batch.items() if k in FEATURES}
