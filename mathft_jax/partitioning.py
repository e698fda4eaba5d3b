"""Device mesh, logical-axis rules and sharding helpers (the T5X partitioner's job, in small).

The mesh has axes (data, fsdp, tensor). Parameters and activations carry logical axis names (see
`mathft_jax.models.layers`); `rules` map them to mesh axes. Batches are sharded over (data, fsdp); parameters
and optimizer state are sharded over fsdp (embed) and tensor (heads, mlp, vocab). A dimension that a mesh axis
does not divide stays replicated on that axis (e.g. Gemma-2B's single kv head on tensor=2).
"""
import contextlib
import dataclasses
import functools
import math
import os
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical name -> mesh axes. The first rule whose mesh axes are still free in a spec wins (flax semantics), so
# activations [batch, length, embed] shard batch over (data, fsdp) and leave embed replicated.
DEFAULT_RULES: tuple = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("length", None),
    ("layers", None),
)


def maybe_initialize_distributed() -> None:
  """Starts multi-host JAX when the launcher says so (JAX_COORDINATOR_ADDRESS, or a TPU pod's own environment).

  Set MATHFT_DISTRIBUTED=1 on TPU VMs (jax finds the coordinator itself); for CPU/GPU hosts set
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  """
  if jax.distributed.is_initialized():
    return
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if address:
    if os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts talk over gloo
    jax.distributed.initialize(coordinator_address=address, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif os.environ.get("MATHFT_DISTRIBUTED") == "1":
    jax.distributed.initialize()


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh axis sizes; one of them may be -1 (all remaining devices)."""
  data: int = -1
  fsdp: int = 1
  tensor: int = 1


def make_mesh(config: MeshConfig = MeshConfig(), devices: Optional[Sequence[Any]] = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  sizes = [config.data, config.fsdp, config.tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {config}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices are not divisible by the fixed mesh axes {config}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, have {len(devices)}")
  if devices == list(jax.devices()):
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  return Mesh(np.array(devices).reshape(sizes), MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _fit_to_shape(spec: PartitionSpec, shape: tuple, mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes from dimensions they do not divide."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = []
    for name in names:
      if dim % (mesh.shape[name] * math.prod(mesh.shape[k] for k in kept)) == 0:
        kept.append(name)
    fitted.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
  return PartitionSpec(*fitted)


def logical_to_sharding(logical_specs, shapes, mesh: Mesh, rules=DEFAULT_RULES):
  """Tree of logical PartitionSpecs + matching tree of shapes -> tree of NamedShardings."""
  def one(spec, shape):
    mesh_spec = nn.logical_to_mesh_axes(spec, rules) if spec is not None else PartitionSpec()
    return NamedSharding(mesh, _fit_to_shape(mesh_spec, tuple(shape.shape), mesh))
  return jax.tree_util.tree_map(one, logical_specs, shapes,
                                is_leaf=lambda x: isinstance(x, PartitionSpec) or x is None)


def boxed_to_sharding(abstract_boxed, mesh: Mesh, rules=DEFAULT_RULES):
  """Sharding tree for an `eval_shape`d tree whose leaves may be flax `Partitioned` boxes (unboxed: replicated)."""
  specs = nn.get_partition_spec(abstract_boxed)
  shapes = nn.unbox(abstract_boxed)
  return logical_to_sharding(specs, shapes, mesh, rules)


@contextlib.contextmanager
def on_mesh(mesh: Optional[Mesh], rules=DEFAULT_RULES):
  """Inside: `mesh` is the current mesh and `rules` map logical axis names to it (a no-op without a mesh). Every
  jitted train, eval, sampling and scoring step runs under it."""
  if mesh is None:
    yield
    return
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def jit_on_mesh(fn, mesh: Optional[Mesh], rules=DEFAULT_RULES, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` whose every call runs `on_mesh(mesh, rules)`."""
  jitted = jax.jit(fn, **jit_kwargs)

  @functools.wraps(fn)
  def call(*args):
    with on_mesh(mesh, rules):
      return jitted(*args)
  return call


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def shard_host_batch(host_batch: dict, mesh: Mesh) -> dict:
  """Assembles a global jax.Array batch from each process's local rows (no gathering onto one host)."""
  ways = math.prod(mesh.shape[a] for a in BATCH_AXES)
  for k, v in host_batch.items():
    rows = np.shape(v)[0] * jax.process_count()
    if rows % ways:
      raise ValueError(f"a global batch of {rows} rows ({k}) does not divide over the mesh's batch axes {BATCH_AXES} "
                       f"({ways} ways, mesh {dict(mesh.shape)}); choose a batch size that is a multiple of {ways}")
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
          for k, v in host_batch.items()}
