"""The shared-prompt decode loop, with slot refill (continuous batching): a call's cost follows the mean sample length.

`generate_refill` samples N continuations of P prompts (B = P*N items, item p*N + n is sample n of prompt p; same
arguments and outputs as `decoding.generate`) in a fixed number S of decode slots; `generate_shared` is the same
with one slot per item (nothing to refill):
- The P prompts are prefilled once into the prompt cache [P, Lp, K, D] per layer (as in the shared engine).
- Slots come in lanes of `lane` slots; a lane serves one prompt at a time. Prompt attention is one batched matmul
  per lane ([lane*H, D] x [Lp, D]): a prompt's keys are read once per lane and step, not once per row.
- When an item ends (EOS, stop sequence, its length limit), its slot takes the next pending item of its lane's
  prompt at the next step; a lane whose slots are all free is bound to the prompt of the next pending item. Items
  are taken in order (prompt-major), so at most a lane's worth of slots waits at the end of a prompt.
- Each slot has its own step: its generated keys are written at its own position, in blocks of `block` positions
  ([S, block, K, D] arrays per layer). Attention reads only the blocks up to the longest live item (live length):
  decoding runs in phases of k live blocks, each a `while_loop` that exits when an item moves into block k+1 or the
  longest one ends; a `switch` then picks the next phase.
- An item's random stream is keyed by (prompt id, sample index) and its own step, exactly as in the shared engine,
  so its text does not depend on the slot count, the lane size, or which slot served it.

Shapes: P prompts, N samples, B = P*N items, S slots, W = S/lane lanes, Lp prompt bucket, T max new tokens,
V vocab, K kv heads, D head dim.
"""
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mathft_jax.inference.decoding import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Greedy, mask_positions
from mathft_jax.inference.shared_prompt import draw_tokens, row_keys, shared_attention
from mathft_jax.models import Decoder, DecoderConfig, init_cache
from mathft_jax.models.decoder import unstack_layers
from mathft_jax.models.layers import constrain

_KV_AXES = ("batch", "length", "kv_heads", "head_dim")  # slots over the data axes, as rows are


class SlotState(NamedTuple):
  """The refill loop's carry: S slots in W lanes, and the outputs of B items."""
  next_item: jax.Array  # [] int32: the first item no slot has taken yet
  item: jax.Array  # [S] int32: the item a slot serves, -1 when free
  step: jax.Array  # [S] int32: tokens the slot's item has drawn so far
  logprob: jax.Array  # [S] float32: sum of the item's token log-probs
  recent: jax.Array  # [S, T] int32: the item's tokens (for stop sequences)
  last_logits: jax.Array  # [S, V] float32: next-token logits
  lane_prompt: jax.Array  # [W] int32: the prompt a lane serves (-1: none yet)
  gen_keys: tuple  # per layer, per block j: [S, block_j, K, D]
  gen_values: tuple  # per layer, per block j: [S, block_j, K, D]
  tokens: jax.Array  # [B, T] int32: the items' tokens, pad after their end
  lengths: jax.Array  # [B] int32
  item_logprob: jax.Array  # [B] float32
  finish: jax.Array  # [B] int32


def ends_with_rows(recent: jax.Array, step: jax.Array, seq: tuple) -> jax.Array:
  """[S] whether recent[s, :step[s]+1] ends with the token sequence `seq` (each row at its own step)."""
  m = len(seq)
  idx = jnp.clip(step[:, None] - m + 1 + jnp.arange(m), 0, recent.shape[1] - 1)
  window = jnp.take_along_axis(recent, idx, axis=1)
  return (step + 1 >= m) & jnp.all(window == jnp.asarray(seq, recent.dtype), axis=1)


def refill(state: SlotState, num_items: int, num_samples: int, lane: int) -> tuple[SlotState, jax.Array]:
  """Gives free slots the next pending items; returns the state and [S] bool, the slots that took an item.

  Lanes with no busy slot are bound to the prompt of the next pending item; then free slots of lanes bound to that
  prompt take its next items, in slot order. Repeated while slots take items (crossing prompt boundaries)."""
  slots = state.item.shape[0]
  lane_of = jnp.arange(slots) // lane

  def one_round(carry):
    state, taken, _ = carry
    pending = state.next_item < num_items
    prompt = state.next_item // num_samples
    busy = jnp.any((state.item >= 0).reshape(-1, lane), axis=1)
    lane_prompt = jnp.where(~busy & pending, prompt, state.lane_prompt)
    eligible = (state.item < 0) & (lane_prompt[lane_of] == prompt) & pending
    new_item = state.next_item + jnp.cumsum(eligible) - 1
    take = eligible & (new_item < (prompt + 1) * num_samples)
    state = state._replace(next_item=state.next_item + jnp.sum(take), item=jnp.where(take, new_item, state.item),
                           lane_prompt=lane_prompt)
    return state, taken | take, jnp.any(take)

  state, taken, _ = jax.lax.while_loop(lambda c: c[2] & (c[0].next_item < num_items), one_round,
                                       (state, jnp.zeros(slots, bool), jnp.array(True)))
  return state, taken


def generate_refill(params, cfg: DecoderConfig, tokens: jax.Array, mask: jax.Array, rng: jax.Array, *,
                    num_samples: int, max_new_tokens: int, sampler=Greedy(), eos_id: int = 1,
                    stop_sequences: tuple = (), pad_id: int = 0, block: int = 128, prompt_ids=None,
                    row_max_tokens=None, slots: int = 0, lane: int = 16, kv_dtype=None) -> dict:
  """Samples N continuations of each prompt in S decode slots, refilled as items end (see the module doc).

  tokens, mask: [P, Lp] left-padded prompts. prompt_ids: [P] ints keying the prompts' random streams (default
  0..P-1). row_max_tokens: [B] ints, each item's length limit (<= max_new_tokens). slots: S (0: one per item);
  rounded up to a multiple of `lane` (itself at most N). kv_dtype: the KV cache's dtype (default: the compute dtype;
  "bfloat16" under float32 compute halves the bytes attention reads a step). Returns tokens [B, T] (pad after the
  end), num_tokens [B] (EOS/stop tokens included), logprob [B] (sum of the model's token log-probs), finish [B], as
  `decoding.generate`.
  """
  if cfg.scan_layers:
    params, cfg = unstack_layers(params), dataclasses.replace(cfg, scan_layers=False)
  decoder = Decoder(cfg)
  num_prompts, prompt_len = tokens.shape
  items, total = num_prompts * num_samples, max_new_tokens
  lane = max(1, min(lane, num_samples))
  slots = -(-min(slots or items, items) // lane) * lane
  starts = list(range(0, total, block))  # the generated blocks' first positions
  positions = mask_positions(mask)
  prompt_logits, prompt_cache = decoder.apply({"params": params}, tokens, positions, mask,
                                              init_cache(cfg, num_prompts, prompt_len))
  prompt_logits = prompt_logits[:, -1]  # [P, V]
  kv_dtype = jnp.dtype(kv_dtype or cfg.dtype)
  prompt_keys = tuple(k.astype(kv_dtype) for k in prompt_cache.keys)
  prompt_values = tuple(v.astype(kv_dtype) for v in prompt_cache.values)
  prompt_mask = mask.astype(bool)
  first_pos = positions[:, -1] + 1  # [P]
  keys = row_keys(rng, num_prompts, num_samples, prompt_ids)  # [B] per item
  limit = jnp.full((items,), total, jnp.int32) if row_max_tokens is None else jnp.asarray(row_max_tokens, jnp.int32)
  scale = cfg.head_dim ** -0.5
  rows = jnp.arange(slots)

  def forward(state: SlotState, token, live: int):
    """Runs the S slots' tokens through the model, writing their keys at their steps; attention reads the first
    `live` generated blocks. Returns logits [S, V] and the new key and value blocks."""
    prompt = jnp.maximum(state.lane_prompt, 0)  # [W]

    def write(blocks, x, j):  # x [S, 1, K, D] into block j where a slot's step falls in it (elsewhere dropped)
      local = state.step - starts[j]
      local = jnp.where((local >= 0) & (local < blocks[j].shape[1]), local, blocks[j].shape[1])
      return constrain(blocks[j].at[rows, local].set(x[:, 0].astype(kv_dtype), mode="drop"), _KV_AXES)

    def attend(layer, q, k, v):
      gk = [write(state.gen_keys[layer], k, j) for j in range(live)]
      gv = [write(state.gen_values[layer], v, j) for j in range(live)]
      masks = [starts[j] + jnp.arange(b.shape[1])[None, :] <= state.step[:, None] for j, b in enumerate(gk)]
      out = shared_attention(q, prompt_keys[layer][prompt], prompt_values[layer][prompt],
                             prompt_mask[prompt], gk, gv, masks, scale)
      return out, (tuple(gk) + state.gen_keys[layer][live:], tuple(gv) + state.gen_values[layer][live:])

    item_prompt = jnp.maximum(state.item, 0) // num_samples
    logits, kv = decoder.apply({"params": params}, token[:, None], (first_pos[item_prompt] + state.step)[:, None],
                               attend=attend)
    return logits[:, -1], tuple(x[0] for x in kv), tuple(x[1] for x in kv)

  def step_fn(state: SlotState, live: int) -> SlotState:
    state, taken = refill(state, items, num_samples, lane)
    item_prompt = jnp.maximum(state.item, 0) // num_samples
    last = jnp.where(taken[:, None], prompt_logits[item_prompt], state.last_logits)
    step = jnp.where(taken, 0, state.step)
    logprob = jnp.where(taken, 0.0, state.logprob)
    active = state.item >= 0
    item = jnp.maximum(state.item, 0)
    token = draw_tokens(sampler, last, jax.vmap(jax.random.fold_in)(keys[item], step))
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(last), token[:, None], axis=1)[:, 0]
    token = jnp.where(active, token, pad_id)
    logprob = logprob + jnp.where(active, token_logp, 0.0)
    recent = state.recent.at[rows, step].set(token) if stop_sequences else state.recent
    hit_eos = active & (token == eos_id)
    hit_stop = jnp.zeros_like(active)
    for seq in stop_sequences:
      hit_stop = hit_stop | (active & ~hit_eos & ends_with_rows(recent, step, seq))
    hit_limit = active & (step + 1 >= limit[item])
    ended = hit_eos | hit_stop | hit_limit
    out_row = jnp.where(active, item, items)  # out of range: dropped
    end_row = jnp.where(ended, item, items)
    why = jnp.where(hit_eos, FINISH_EOS, jnp.where(hit_stop, FINISH_STOP, FINISH_LENGTH))
    state = state._replace(
        step=step, recent=recent, tokens=state.tokens.at[out_row, step].set(token, mode="drop"),
        lengths=state.lengths.at[end_row].set(step + 1, mode="drop"),
        item_logprob=state.item_logprob.at[end_row].set(logprob, mode="drop"),
        finish=state.finish.at[end_row].set(why, mode="drop"))
    logits, gen_keys, gen_values = forward(state, token, live)
    return state._replace(item=jnp.where(ended, -1, state.item), step=jnp.where(active & ~ended, step + 1, step),
                          logprob=logprob, last_logits=logits, gen_keys=gen_keys, gen_values=gen_values)

  def work_left(state: SlotState):
    return (state.next_item < items) | jnp.any(state.item >= 0)

  def live_blocks(state: SlotState):  # blocks the next step attends to: up to the longest live item's
    return jnp.max(jnp.where(state.item >= 0, state.step, 0)) // block + 1

  def phase(live: int):
    return lambda state: jax.lax.while_loop(lambda s: work_left(s) & (live_blocks(s) == live),
                                            lambda s: step_fn(s, live), state)

  kv_blocks = lambda: tuple(  # noqa: E731
      constrain(jnp.zeros((slots, min(block, total - b), cfg.num_kv_heads, cfg.head_dim), kv_dtype), _KV_AXES)
      for b in starts)
  state = SlotState(
      next_item=jnp.array(0, jnp.int32), item=jnp.full(slots, -1, jnp.int32), step=jnp.zeros(slots, jnp.int32),
      logprob=jnp.zeros(slots, jnp.float32),
      recent=jnp.full((slots, total if stop_sequences else 1), pad_id, jnp.int32),
      last_logits=jnp.zeros((slots, prompt_logits.shape[-1]), jnp.float32),
      lane_prompt=jnp.full(slots // lane, -1, jnp.int32),
      gen_keys=tuple(kv_blocks() for _ in range(cfg.num_layers)),
      gen_values=tuple(kv_blocks() for _ in range(cfg.num_layers)),
      tokens=jnp.full((items, total), pad_id, jnp.int32), lengths=jnp.full(items, total, jnp.int32),
      item_logprob=jnp.zeros(items, jnp.float32), finish=jnp.full(items, FINISH_LENGTH, jnp.int32))
  phases = [phase(live) for live in range(1, len(starts) + 1)]
  state = jax.lax.while_loop(work_left, lambda s: jax.lax.switch(live_blocks(s) - 1, phases, s), state)
  return {"tokens": state.tokens, "num_tokens": state.lengths, "logprob": state.item_logprob,
          "finish": state.finish}


def generate_shared(params, cfg: DecoderConfig, tokens: jax.Array, mask: jax.Array, rng: jax.Array, *,
                    num_samples: int, **kwargs) -> dict:
  """`generate_refill` with one slot per item and one lane per prompt: every sample decoded at once, each prompt's
  keys read once per step for its N rows."""
  kwargs.update(slots=0, lane=num_samples)
  return generate_refill(params, cfg, tokens, mask, rng, num_samples=num_samples, **kwargs)
