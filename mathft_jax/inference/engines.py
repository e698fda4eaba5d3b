"""Picking a decoding engine: `make_generate_fn` jits the classic engine (`decoding.generate`), the shared-prompt
engine (`slot_refill.generate_shared`) or the slot-refill engine (`slot_refill.generate_refill`) for a config,
optionally over a mesh.
"""
from typing import Optional

import jax
import numpy as np

from mathft_jax import partitioning
from mathft_jax.inference.decoding import Greedy, generate
from mathft_jax.inference.slot_refill import generate_refill, generate_shared
from mathft_jax.models import DecoderConfig, abstract_params

ENGINES = ("classic", "shared", "refill")


def make_generate_fn(cfg: DecoderConfig, *, num_samples: int, max_new_tokens: int, sampler=Greedy(),
                     eos_id: int = 1, stop_sequences: tuple = (), pad_id: int = 0,
                     mesh: Optional[jax.sharding.Mesh] = None, rules=partitioning.DEFAULT_RULES,
                     engine: str = "classic", block: int = 128, slots: int = 0, lane: int = 16, row_max_tokens=None):
  """A jitted (params, tokens, mask, rng[, prompt_ids]) -> outputs closure; one compilation per prompt shape.

  engine: "classic" (`generate`: the prompt's cache repeated N times, one random key per step) or "shared"
  (`slot_refill.generate_shared`: the prompt's KV held once, live-length attention in `block`-token blocks, one
  random stream per (prompt id, sample): `prompt_ids` [P] ints, default 0..P-1) or "refill" (the shared engine's
  outputs, computed in `slots` decode slots, lanes of `lane`, refilled as samples end; 0 = one per sample). Greedy
  outputs are the same for all three; "shared" and "refill" sample the same texts. row_max_tokens: [P*N] ints,
  each sample's own length limit (<= max_new_tokens; "shared" and "refill" only).
  With a mesh, params are placed by the logical-axis rules and prompts (hence samples and the KV cache) are
  sharded over the data axes; the number of prompts must divide evenly over data x fsdp.
  """
  if engine not in ENGINES:
    raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
  if row_max_tokens is not None and engine == "classic":
    raise ValueError("row_max_tokens (per-sample length limits) needs engine 'shared' or 'refill'")

  def fn(params, tokens, mask, rng, prompt_ids=None):
    kwargs = dict(num_samples=num_samples, max_new_tokens=max_new_tokens, sampler=sampler, eos_id=eos_id,
                  stop_sequences=stop_sequences, pad_id=pad_id)
    if engine == "shared":
      return generate_shared(params, cfg, tokens, mask, rng, block=block, prompt_ids=prompt_ids,
                             row_max_tokens=row_max_tokens, **kwargs)
    if engine == "refill":
      return generate_refill(params, cfg, tokens, mask, rng, block=block, prompt_ids=prompt_ids, slots=slots,
                             lane=lane, row_max_tokens=row_max_tokens, **kwargs)
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
