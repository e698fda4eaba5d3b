"""A TensorFlow-free batch source of random tokens, for throughput benchmarks and trainer tests."""
import dataclasses
from typing import Iterator

import numpy as np


@dataclasses.dataclass
class RandomTokenSource:
  """Batch i is a deterministic function of (seed, i): random tokens, loss on every position but the first 8."""
  batch_size: int
  length: int
  vocab_size: int
  seed: int = 0

  def host_batches(self, start: int, shard_index: int = 0, num_shards: int = 1) -> Iterator[dict]:
    if self.batch_size % num_shards:
      raise ValueError(f"batch_size={self.batch_size} is not divisible by {num_shards} data shards")
    rows = slice(shard_index * self.batch_size // num_shards, (shard_index + 1) * self.batch_size // num_shards)
    index = start
    while True:
      rng = np.random.default_rng([self.seed, index])
      tokens = rng.integers(3, self.vocab_size, (self.batch_size, self.length + 1), dtype=np.int32)
      weights = np.ones((self.batch_size, self.length), np.float32)
      weights[:, :8] = 0
      yield {"decoder_input_tokens": tokens[rows, :-1], "decoder_target_tokens": tokens[rows, 1:],
             "decoder_loss_weights": weights[rows]}
      index += 1
