"""Per-device accelerator memory (HBM) of a training or sampling run, estimated before anything is allocated.

Training, per device:
  params      the parameter shards (logical-axis rules applied to the mesh exactly as the trainer does)
  optimizer   the optimizer-state shards (AdamW: two param-shaped moments; Adafactor: factored; SGD: none)
  gradients   one param-shaped gradient tree (sharded like the params)
  activations what the backward pass keeps: for each layer its input [B, L, E] plus the residuals JAX saves for
              one block under the remat policy; under remat, plus the full residuals of the one block whose
              backward pass is running (it recomputes them)
  logits      the loss head: residuals of logits -> loss plus the logits' cotangent, [B, L, V/tensor] float32
Residuals are counted by tracing one block's VJP at the per-device shapes (`jax.make_jaxpr`, nothing allocated),
so the figure follows the architecture and the remat policy rather than a rule of thumb.
Sampling, per device: params + KV cache [layers, 2, B*N, S, K/tensor, D] + the last-position logits.

The layer loop without `scan_layers` leaves the buffer schedule to XLA (on CPU it ignores remat), so the
activation figure describes the scanned layout; the shipped real-size recipes scan. `python -m mathft_jax.recipe.memory
--preset llama3_8b --mesh 1,16,1 --batch 32 --length 2048 --remat full --slice v4-32` prints the table.
"""
import argparse
import dataclasses
import math
import types
from typing import Optional

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp

from mathft_jax import partitioning
from mathft_jax.models import DecoderConfig, abstract_params, preset
from mathft_jax.models.decoder import Block, attention_mask, remat_policy
from mathft_jax.models.layers import rope_tables
from mathft_jax.training.optim import OptimizerConfig, make_optimizer
from mathft_jax.training.train_step import abstract_train_state, token_log_probs

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Slice:
  """An accelerator slice: number of chips (JAX devices), HBM per chip, chips per host (inference runs per host)."""
  name: str
  chips: int
  hbm_bytes: int
  chips_per_host: int = 4


# The suffix of a TPU slice name counts TensorCores for v4/v5p (2 per chip) and chips for v5e.
SLICES = {s.name: s for s in (
    Slice("v4-8", 4, 32 * GIB), Slice("v4-32", 16, 32 * GIB), Slice("v4-64", 32, 32 * GIB),
    Slice("v5e-8", 8, 16 * GIB), Slice("v5e-16", 16, 16 * GIB), Slice("v5e-32", 32, 16 * GIB),
    Slice("v5p-8", 4, 95 * GIB), Slice("v5p-16", 8, 95 * GIB),
    Slice("h100x8", 8, 80 * 10 ** 9, 8), Slice("h200x8", 8, 141 * 10 ** 9, 8))}


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes per device, by category."""
  params: int = 0
  optimizer: int = 0
  gradients: int = 0
  activations: int = 0
  logits: int = 0
  kv_cache: int = 0
  batch: int = 0

  @property
  def total(self) -> int:
    return sum(dataclasses.astuple(self))

  def table(self, slice_: Optional[Slice] = None) -> str:
    rows = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name)]
    rows.append(("total", self.total))
    lines = [f"{name:12s} {value / GIB:9.2f} GiB" for name, value in rows]
    if slice_ is not None:
      used = self.total / slice_.hbm_bytes
      lines.append(f"{slice_.name}: {slice_.hbm_bytes / GIB:.1f} GiB per chip, {used:.0%} used")
    return "\n".join(lines)


def mesh_sizes(mesh: partitioning.MeshConfig, num_devices: int) -> dict:
  """MeshConfig (one axis may be -1) -> {"data": d, "fsdp": f, "tensor": t} for `num_devices` devices."""
  sizes = [mesh.data, mesh.fsdp, mesh.tensor]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {mesh} does not cover {num_devices} devices")
  return dict(zip(partitioning.MESH_AXES, sizes))


def sharded_bytes(boxed_tree, sizes: dict, rules=partitioning.DEFAULT_RULES) -> int:
  """Per-device bytes of a shape-only tree whose leaves may carry logical axes (others count as replicated)."""
  fake_mesh = types.SimpleNamespace(shape=sizes)
  total = 0
  for leaf in jax.tree_util.tree_leaves(boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
    value, names = (leaf.value, leaf.names) if isinstance(leaf, nn.Partitioned) else (leaf, ())
    spec = nn.logical_to_mesh_axes(names, rules) if names else jax.sharding.PartitionSpec()
    spec = partitioning._fit_to_shape(spec, tuple(value.shape), fake_mesh)
    shard = [dim // math.prod(sizes[a] for a in ((axes,) if isinstance(axes, str) else tuple(axes or ())))
             for dim, axes in zip(value.shape, tuple(spec) + (None,) * (len(value.shape) - len(spec)))]
    total += math.prod(shard) * jnp.dtype(value.dtype).itemsize
  return total


def _local_config(cfg: DecoderConfig, tensor: int) -> DecoderConfig:
  """The per-device slice of a layer under tensor parallelism (dims tensor does not divide stay whole)."""
  split = lambda n: n // tensor if n % tensor == 0 else n  # noqa: E731
  heads, kv = split(cfg.num_heads), split(cfg.num_kv_heads)
  if heads % kv:  # kv heads replicated while query heads split: every device still needs its groups' kv
    kv = cfg.num_kv_heads
  return cfg.replace(num_heads=heads, num_kv_heads=kv, mlp_dim=split(cfg.mlp_dim), vocab_size=split(cfg.vocab_size))


def _residual_bytes(fn, *args) -> int:
  """Bytes of the residuals `jax.vjp(fn, *args)` keeps for the backward pass, not counting the arguments."""
  closed = jax.make_jaxpr(lambda *a: jax.vjp(fn, *a)[1])(*args)
  inputs = set(closed.jaxpr.invars)
  seen, total = set(), 0
  for var in closed.jaxpr.outvars:
    if isinstance(var, jax.extend.core.Literal) or var in inputs or var in seen:  # constants, arguments, repeats
      continue
    seen.add(var)
    total += math.prod(var.aval.shape) * jnp.dtype(var.aval.dtype).itemsize
  return total


def _block_residuals(cfg: DecoderConfig, batch: int, length: int, policy: str) -> int:
  block = Block(cfg)
  x = jax.ShapeDtypeStruct((batch, length, cfg.d_model), jnp.dtype(cfg.dtype))
  params = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), nn.unbox(jax.eval_shape(
      lambda: block.init(jax.random.PRNGKey(0), jnp.zeros(x.shape, x.dtype), *_block_aux(cfg, batch, length)))))

  def apply(p, h):
    return block.apply(p, h, *_block_aux(cfg, batch, length))[0]
  if policy != "none":
    apply = jax.checkpoint(apply, policy=remat_policy(policy))
  return _residual_bytes(apply, params, x)


def _block_aux(cfg: DecoderConfig, batch: int, length: int):
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  segments = jnp.ones((batch, length), jnp.int32)
  slots = jnp.arange(length)
  return (*rope_tables(positions, cfg), attention_mask(segments, slots, segments, slots))


def _head_residuals(cfg: DecoderConfig, batch: int, length: int) -> int:
  x = jax.ShapeDtypeStruct((batch, length, cfg.d_model), jnp.dtype(cfg.dtype))
  w = jax.ShapeDtypeStruct((cfg.d_model, cfg.vocab_size), jnp.dtype(cfg.param_dtype))
  targets = jnp.zeros((batch, length), jnp.int32)

  def loss(h, head):
    logits = (h @ head.astype(cfg.dtype)).astype(jnp.float32)
    return -token_log_probs(logits, targets)[0].sum()
  return _residual_bytes(loss, x, w) + batch * length * cfg.vocab_size * 4  # + the logits' cotangent


def estimate_training(cfg: DecoderConfig, mesh: partitioning.MeshConfig, num_devices: int, batch_size: int,
                      length: int, optimizer: OptimizerConfig = OptimizerConfig(), accum_steps: int = 1,
                      rules=partitioning.DEFAULT_RULES) -> MemoryEstimate:
  """Per-device bytes of one train step: global `batch_size` sequences of `length` tokens."""
  sizes = mesh_sizes(mesh, num_devices)
  data_shards = sizes["data"] * sizes["fsdp"]
  if batch_size % (data_shards * accum_steps):
    raise ValueError(f"batch {batch_size} does not split over {data_shards} data shards x {accum_steps} micro-batches")
  local_batch = batch_size // data_shards // accum_steps
  state = abstract_train_state(cfg, make_optimizer(optimizer))
  params = sharded_bytes(state.params, sizes, rules)
  local = _local_config(cfg, sizes["tensor"])
  per_layer_input = local_batch * length * cfg.d_model * jnp.dtype(cfg.dtype).itemsize
  saved = _block_residuals(local, local_batch, length, cfg.remat)
  activations = cfg.num_layers * (per_layer_input + saved)
  if cfg.remat != "none":
    activations += _block_residuals(local, local_batch, length, "none") + per_layer_input
  if accum_steps > 1:  # the scan over micro-batches carries a gradient accumulator
    activations += params
  return MemoryEstimate(params=params, optimizer=sharded_bytes(state.opt_state, sizes, rules), gradients=params,
                        activations=activations, logits=_head_residuals(local, local_batch, length),
                        batch=5 * 4 * local_batch * accum_steps * length)


def estimate_sampling(cfg: DecoderConfig, mesh: partitioning.MeshConfig, num_devices: int, num_prompts: int,
                      num_samples: int, max_length: int, rules=partitioning.DEFAULT_RULES, engine: str = "classic",
                      prompt_length: int = 0, decode_slots: int = 0) -> MemoryEstimate:
  """Per-device bytes of sampling: params + KV cache of num_prompts x num_samples rows of `max_length` slots
  (prompt + new tokens). engine "classic" (`decoding.generate`): every row holds all its slots; "shared"
  (`slot_refill.generate_shared`): a prompt's `prompt_length` slots once, each row its new tokens only; "refill"
  (`slot_refill.generate_refill`): as "shared" with `decode_slots` rows (0: one per sample) over all devices."""
  sizes = mesh_sizes(mesh, num_devices)
  prompts = -(-num_prompts // (sizes["data"] * sizes["fsdp"]))
  rows = prompts * num_samples
  if engine == "refill" and decode_slots:
    rows = min(rows, -(-decode_slots // (sizes["data"] * sizes["fsdp"])))
  local = _local_config(cfg, sizes["tensor"])
  slots = rows * max_length if engine == "classic" else prompts * prompt_length + rows * (max_length - prompt_length)
  cache = cfg.num_layers * 2 * slots * local.num_kv_heads * cfg.head_dim * jnp.dtype(cfg.dtype).itemsize
  return MemoryEstimate(params=sharded_bytes(abstract_params(cfg), sizes, rules), kv_cache=cache,
                        logits=rows * local.vocab_size * 4 * 2)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", required=True)
  parser.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor")
  parser.add_argument("--devices", type=int, help="number of devices (default: the slice's chips)")
  parser.add_argument("--slice", choices=sorted(SLICES))
  parser.add_argument("--batch", type=int, required=True, help="global batch (sequences)")
  parser.add_argument("--length", type=int, required=True)
  parser.add_argument("--remat", default="full")
  parser.add_argument("--optimizer", default="adamw")
  parser.add_argument("--accum_steps", type=int, default=1)
  args = parser.parse_args(argv)
  slice_ = SLICES.get(args.slice)
  devices = args.devices or (slice_.chips if slice_ else None)
  if not devices:
    parser.error("give --devices or --slice")
  cfg = preset(args.preset, {"remat": args.remat, "scan_layers": True})
  mesh = partitioning.MeshConfig(*map(int, args.mesh.split(",")))
  print(estimate_training(cfg, mesh, devices, args.batch, args.length, OptimizerConfig(name=args.optimizer),
                          args.accum_steps).table(slice_))


if __name__ == "__main__":
  main()
