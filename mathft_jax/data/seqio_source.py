"""Batches from a seqio task or mixture, sharded per host, resumable at any batch index.

`SeqioSource("ssft_synthetic", {"inputs": 256, "targets": 512}, batch_size=64)` yields this host's rows of each
global batch: prompt ("inputs") and solution ("targets") form one next-token sequence with loss weights 0 on the
prompt (`mathft_jax.data.features`), packed several to a row. Task names are those of `mathft_jax.data.tasks`.
The tokenizer is the model's: the trainer binds it (`with_tokenizer`) from the checkpoint it starts from (or the
byte vocabulary for a model trained from scratch); one given here must be that same tokenizer.
"""
import dataclasses
from typing import Iterator, Optional, Union

import numpy as np

from mathft_jax.data.features import FEATURES, NextTokenFeatureConverter, PairFeatureConverter
from mathft_jax.data.quiet_tf import seqio, tf
from mathft_jax.text.tokenizer import Tokenizer, TokenizerError, load_tokenizer


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
  tokenizer: Union[None, str, Tokenizer] = None  # None: the model's, bound by the trainer

  def with_tokenizer(self, tokenizer: Tokenizer) -> "SeqioSource":
    """This source reading `tokenizer`'s ids; a different tokenizer given at construction is an error."""
    if self.tokenizer is not None:
      given = load_tokenizer(self.tokenizer) if isinstance(self.tokenizer, str) else self.tokenizer
      if given != tokenizer:
        raise TokenizerError(f"{self.mixture_or_task_name}: the data's tokenizer ({given}) is not the model's "
                             f"({tokenizer}); leave the data's tokenizer unset to use the model's")
    return dataclasses.replace(self, tokenizer=tokenizer)

  def dataset(self, shard_index: int = 0, num_shards: int = 1) -> tf.data.Dataset:
    from mathft_jax.data.tasks import task_name
    if self.batch_size % num_shards:
      raise ValueError(f"batch_size={self.batch_size} is not divisible by {num_shards} data shards")
    tokenizer = self.tokenizer if isinstance(self.tokenizer, Tokenizer) else load_tokenizer(self.tokenizer or "byte")
    name = task_name(self.mixture_or_task_name, tokenizer)
    lengths = dict(self.task_feature_lengths)
    converter = NextTokenFeatureConverter(pack=self.pack)
    if "inputs_pos" in seqio.get_mixture_or_task(name).output_features:
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
