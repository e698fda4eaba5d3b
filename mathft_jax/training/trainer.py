"""The Trainer: sharded train state, jitted steps under the mesh and rules, and batch feeding.

A data source is any object with `batch_size` (global) and `host_batches(start, shard_index, num_shards)`, an
iterator of this host's rows of batches `start, start+1, ...` as dicts of numpy [B_host, L] arrays (seqio feature
names, see `train_step`). Batches must be a deterministic function of their index so that resuming at a step
reads what an uninterrupted run would have read.
"""
import hashlib
from typing import Iterator, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mathft_jax import partitioning
from mathft_jax.models import DecoderConfig
from mathft_jax.training.optim import OptimizerConfig, make_optimizer, make_schedule
from mathft_jax.training.train_step import (
  LossFn,
  TrainState,
  abstract_train_state,
  init_train_state,
  make_eval_step,
  make_train_step,
  model_apply_fn,
  next_token_loss,
)


class BatchSource(Protocol):
  batch_size: int

  def host_batches(self, start: int, shard_index: int, num_shards: int) -> Iterator[dict]:
    ...


class Trainer:
  """Owns the mesh, the state shardings and the compiled train/eval steps."""

  def __init__(self, model_config: DecoderConfig, optimizer: OptimizerConfig, mesh: jax.sharding.Mesh,
               rules=partitioning.DEFAULT_RULES, loss_fn: LossFn = next_token_loss, accum_steps: int = 1):
    self.model_config = model_config
    self.mesh = mesh
    self.rules = rules
    self.optimizer = make_optimizer(optimizer)
    self.schedule = make_schedule(optimizer.schedule)
    boxed = abstract_train_state(model_config, self.optimizer)
    self.state_shardings = partitioning.boxed_to_sharding(boxed, mesh, rules)
    self.abstract_state = jax.tree_util.tree_map(
        lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), nn.unbox(boxed),
        self.state_shardings)
    apply_fn = model_apply_fn(model_config)
    batch_sharding = partitioning.batch_sharding(mesh)
    step = make_train_step(apply_fn, self.optimizer, loss_fn, self.schedule, accum_steps)
    self._train_step = jax.jit(step, in_shardings=(self.state_shardings, batch_sharding),
                               out_shardings=(self.state_shardings, None), donate_argnums=0)
    self._eval_step = jax.jit(make_eval_step(apply_fn, loss_fn),
                              in_shardings=(self.state_shardings.params, batch_sharding))

  def init_state(self, seed: int, params: Optional[dict] = None) -> TrainState:
    """Random init (or given params, e.g. from an imported checkpoint), created directly in its shardings."""
    rng = jax.random.PRNGKey(seed)
    with partitioning.on_mesh(self.mesh, self.rules):
      if params is None:
        return jax.jit(lambda r: init_train_state(self.model_config, self.optimizer, r),
                       out_shardings=self.state_shardings)(rng)
      params = jax.device_put(params, self.state_shardings.params)
      return jax.jit(lambda r, p: init_train_state(self.model_config, self.optimizer, r, p),
                     out_shardings=self.state_shardings)(rng, params)

  def global_batch(self, host_batch: dict) -> dict:
    return partitioning.shard_host_batch(host_batch, self.mesh)

  def train_step(self, state: TrainState, host_batch: dict) -> tuple[TrainState, dict]:
    with partitioning.on_mesh(self.mesh, self.rules):
      return self._train_step(state, self.global_batch(host_batch))

  def eval_sums(self, params: dict, host_batches) -> dict:
    """Adds up the loss sums over eval batches (then `train_step.summarize` them)."""
    total = None
    with partitioning.on_mesh(self.mesh, self.rules):
      for host_batch in host_batches:
        sums = self._eval_step(params, self.global_batch(host_batch))
        total = sums if total is None else jax.tree_util.tree_map(jnp.add, total, sums)
    return total



def host_batches(source: BatchSource, start: int, num_data_shards: Optional[int] = None) -> Iterator[dict]:
  """This process's rows of global batches start, start+1, ...

  The global batch is the concatenation of `num_data_shards` pipeline shards (default: one per process), so it
  does not depend on how many processes read it: process p reads shards [p*k, (p+1)*k), k = shards / processes.
  """
  processes = jax.process_count()
  shards = num_data_shards or processes
  if shards % processes:
    raise ValueError(f"num_data_shards={shards} is not a multiple of the process count {processes}")
  per_process = shards // processes
  first = jax.process_index() * per_process
  iterators = [source.host_batches(start, first + j, shards) for j in range(per_process)]
  if per_process == 1:
    yield from iterators[0]
    return
  for parts in zip(*iterators):
    yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def params_fingerprint(params) -> str:
  """A short hex digest of all parameter bytes (equal runs print equal fingerprints); collective on multi-host."""
  from jax.experimental import multihost_utils
  digest = hashlib.sha256()
  for leaf in jax.tree_util.tree_leaves(params):
    if not leaf.is_fully_addressable:
      leaf = multihost_utils.process_allgather(leaf, tiled=True)
    digest.update(np.asarray(jax.device_get(leaf)).tobytes())
  return digest.hexdigest()[:16]
