"""Picking a decoding engine: `make_generate_fn` jits the classic engine (`decoding.generate`) or the shared-prompt
engine (`shared_prompt.generate_shared`) for a config, optionally over a mesh.
"""
from typing import Optional

import jax
import numpy as np

from mathft_jax import partitioning
from mathft_jax.inference.decoding import Greedy, generate
from mathft_jax.inference.shared_prompt import generate_shared
from mathft_jax.models import DecoderConfig, abstract_params

ENGINES = ("classic", "shared")


def make_generate_fn(cfg: DecoderConfig, *, num_samples: int, max_new_tokens: int, sampler=Greedy(),
                     eos_id: int = 1, stop_sequences: tuple = (), pad_id: int = 0,
                     mesh: Optional[jax.sharding.Mesh] = None, rules=partitioning.DEFAULT_RULES,
                     engine: str = "classic", block: int = 128):
  """A jitted (params, tokens, mask, rng[, prompt_ids]) -> outputs closure; one compilation per prompt shape.

  engine: "classic" (`generate`: the prompt's cache repeated N times, one random key per step) or "shared"
  (`shared_prompt.generate_shared`: the prompt's KV held once, live-length attention in `block`-token blocks, one
  random stream per (prompt id, sample): `prompt_ids` [P] ints, default 0..P-1). Greedy outputs are the same.
  With a mesh, params are placed by the logical-axis rules and prompts (hence samples and the KV cache) are
  sharded over the data axes; the number of prompts must divide evenly over data x fsdp.
  """
  if engine not in ENGINES:
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")

  def fn(params, tokens, mask, rng, prompt_ids=None):
    kwargs = dict(num_samples=num_samples, max_new_tokens=max_new_tokens, sampler=sampler, eos_id=eos_id,
                  stop_sequences=stop_sequences, pad_id=pad_id)
    if engine == "shared":
      return generate_shared(params, cfg, tokens, mask, rng, block=block, prompt_ids=prompt_ids, **kwargs)
    return generate(params, cfg, tokens, mask, rng, **kwargs)
  if mesh is None:
    return jax.jit(fn)
  batch = partitioning.batch_sharding(mesh)
  param_shardings = partitioning.boxed_to_sharding(abstract_params(cfg), mesh, rules)
  ids = partitioning.batch_sharding(mesh, 1)
  jitted = partitioning.jit_on_mesh(fn, mesh, rules, in_shardings=(param_shardings, batch, batch, None, ids))

  def call(params, tokens, mask, rng, prompt_ids=None):
    if prompt_ids is None:
      prompt_ids = np.arange(tokens.shape[0], dtype=np.int32)
    # device_put is a no-op once params are placed.
    return jitted(jax.device_put(params, param_shardings), tokens, mask, rng, prompt_ids)
  return call
