"""The shared-prompt decode loop, with slot refill (continuous batching): a call's cost follows the mean sample length.

`generate_refill` samples N continuations of P prompts (B = P*N items, item p*N + n is sample n of prompt p; same
arguments and outputs as `decoding.generate`) in a fixed number S of decode slots; `generate_shared` is the same
with one slot per item (nothing to refill):
- The P prompts are prefilled once into the prompt cache (keys [P, K, D, Lp], values [P, K, Lp, D] per layer).
- Slots come in lanes of `lane` slots; a lane serves one prompt at a time. Prompt attention is one batched matmul
  per lane ([lane*H, D] x [Lp, D]): a prompt's keys are read once per lane and step, not once per row.
- When an item ends (EOS, stop sequence, its length limit), its slot takes the next pending sample of its lane's
  prompt at the next step. A lane serves its prompt until that prompt's samples are all handed out; once its slots
  are all free it is bound to the next prompt no lane has served, or (when all have started) helps the prompt with
  the most pending samples. Slots wait only while their lane drains at the end of a prompt.
- Each slot has its own step: its generated keys are written at its own position, in blocks of `block` positions
  (keys [S, K, D, block], values [S, K, block, D] per layer). Attention reads only the blocks up to the longest
  live item (live length): each layer's attention is a `switch` over the block counts 1..T/block, so only the
  attention is compiled once per count, the rest of the model once (per stage).
- Idle rows cost nothing once few items are left: decoding runs in stages of decreasing width (S, S/2, S/4, S/8
  rows, at least MIN_WIDTH). Once every item is handed out and the busy slots fit a narrower width, the busy slots'
  state (keys, values, logits, steps) is moved once into that many rows, and the stage decodes them there, each row
  reading its own item's prompt (`shared_attention(row_prompt=...)`). So at the end of a call the step's cost
  follows the rows still decoding, not S, with no per-step gather.
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

# Keys are kept transposed ([.., K, D, positions]) and values not ([.., K, positions, D]): both attention matmuls of a
# step then read the cache as it lies, with no transposed operand (the key layout of vLLM's paged cache too).
_KEY_AXES = ("batch", "kv_heads", "head_dim", "length")  # slots over the data axes, as rows are
_VALUE_AXES = ("batch", "kv_heads", "length", "head_dim")
MIN_WIDTH = 4  # the narrowest compacted batch of busy slots


class SlotState(NamedTuple):
  """The refill loop's carry: S slots in W lanes, and the outputs of B items."""
  handed_out: jax.Array  # [P] int32: samples of each prompt given to slots so far
  next_prompt: jax.Array  # [] int32: the first prompt no lane has served yet
  item: jax.Array  # [S] int32: the item a slot serves, -1 when free
  step: jax.Array  # [S] int32: tokens the slot's item has drawn so far
  logprob: jax.Array  # [S] float32: sum of the item's token log-probs
  recent: jax.Array | None  # [S, T] int32: the item's tokens (None without stop sequences)
  last_logits: jax.Array  # [S, V] float32: next-token logits
  lane_prompt: jax.Array  # [W] int32: the prompt a lane serves (-1: none yet)
  gen_keys: tuple  # per layer, per block j: [S, K, D, block_j]
  gen_values: tuple  # per layer, per block j: [S, K, block_j, D]
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


def refill(state: SlotState, num_samples: int, lane: int) -> tuple[SlotState, jax.Array]:
  """Gives free slots pending samples; returns the state and [S] bool, the slots that took one.

  A lane with no busy slot whose prompt has no pending sample is bound to the next prompt no lane has served yet,
  or, when every prompt has been started, to the prompt with the most pending samples. Then free slots take the next
  pending samples of their lane's prompt, in slot order."""
  slots, num_prompts = state.item.shape[0], state.handed_out.shape[0]
  lane_of = jnp.arange(slots) // lane
  pending = num_samples - state.handed_out  # [P]
  idle = ~jnp.any((state.item >= 0).reshape(-1, lane), axis=1)  # [W]
  rebind = idle & ((state.lane_prompt < 0) | (pending[jnp.maximum(state.lane_prompt, 0)] == 0))
  rank = jnp.cumsum(rebind) - 1
  fresh = num_prompts - state.next_prompt
  bound = jnp.where(rank < fresh, state.next_prompt + rank, jnp.argmax(pending))
  lane_prompt = jnp.where(rebind & ((rank < fresh) | jnp.any(pending > 0)), bound, state.lane_prompt)
  prompt = jnp.maximum(lane_prompt[lane_of], 0)  # [S]
  eligible = (state.item < 0) & (lane_prompt[lane_of] >= 0)
  per_prompt = eligible[:, None] & (prompt[:, None] == jnp.arange(num_prompts))  # [S, P]
  sample = state.handed_out[prompt] + jnp.take_along_axis(jnp.cumsum(per_prompt, 0), prompt[:, None], 1)[:, 0] - 1
  take = eligible & (sample < num_samples)
  state = state._replace(
      item=jnp.where(take, prompt * num_samples + sample, state.item), lane_prompt=lane_prompt,
      handed_out=state.handed_out + jnp.sum(per_prompt & take[:, None], 0),
      next_prompt=state.next_prompt + jnp.minimum(jnp.sum(rebind), fresh))
  return state, take


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
  sizes = [min(block, total - b) for b in starts]
  positions = mask_positions(mask)
  prompt_logits, prompt_cache = decoder.apply({"params": params}, tokens, positions, mask,
                                              init_cache(cfg, num_prompts, prompt_len))
  prompt_logits = prompt_logits[:, -1]  # [P, V]
  kv_dtype = jnp.dtype(kv_dtype or cfg.dtype)
  prompt_keys = tuple(k.astype(kv_dtype).transpose(0, 2, 3, 1) for k in prompt_cache.keys)  # [P, K, D, Lp]
  prompt_values = tuple(v.astype(kv_dtype).transpose(0, 2, 1, 3) for v in prompt_cache.values)  # [P, K, Lp, D]
  prompt_mask = mask.astype(bool)
  first_pos = positions[:, -1] + 1  # [P]
  keys = row_keys(rng, num_prompts, num_samples, prompt_ids)  # [B] per item
  limit = jnp.full((items,), total, jnp.int32) if row_max_tokens is None else jnp.asarray(row_max_tokens, jnp.int32)
  scale = cfg.head_dim ** -0.5
  fixed_lanes = slots == items and lane == num_samples  # generate_shared: one lane per prompt, bound in order

  def forward(state: SlotState, token, live: jax.Array, full: bool):
    """Runs the slots' tokens through the model, writing their keys at their steps; attention reads the first `live`
    ([] int) generated blocks, picked per layer by a `switch` over the block counts (the dense part is compiled
    once, not once per count). full: every slot, each lane's prompt keys read once for the lane; else (a narrowed
    stage) each row reads its own item's prompt. Returns logits [S', V] (stale for idle slots) and the new key and
    value blocks."""
    width = state.item.shape[0]
    step = state.step
    target = jnp.arange(width)
    item_prompt = jnp.maximum(state.item, 0) // num_samples

    def write(blocks, x, j, keys: bool):  # x [width, 1, K, D] at each row's step, if it falls in block j
      size = sizes[j]
      local = step - starts[j]
      local = jnp.where((local >= 0) & (local < size), local, size)  # elsewhere: dropped
      x = x[:, 0].astype(kv_dtype)  # [width, K, D]
      if keys:  # block [S', K, D, size]
        return constrain(blocks[j].at[target, :, :, local].set(x, mode="drop"), _KEY_AXES)
      return constrain(blocks[j].at[target, :, local].set(x, mode="drop"), _VALUE_AXES)  # block [S', K, size, D]

    def attend(layer, q, k, v):
      gk = tuple(write(state.gen_keys[layer], k, j, True) for j in range(len(starts)))
      gv = tuple(write(state.gen_values[layer], v, j, False) for j in range(len(starts)))
      pk, pv, pm, row_prompt = prompt_keys[layer], prompt_values[layer], prompt_mask, None
      if full and not fixed_lanes:  # (fixed lanes: lane p serves prompt p throughout, no gather)
        lanes = jnp.maximum(state.lane_prompt, 0)  # [W]
        pk, pv, pm = pk[lanes], pv[lanes], pm[lanes]
      elif not full:
        row_prompt = item_prompt

      def over(n):  # attention over the first n generated blocks
        masks = [starts[j] + jnp.arange(sizes[j])[None, :] <= step[:, None] for j in range(n)]
        return lambda q, gk, gv: shared_attention(q, pk, pv, pm, gk[:n], gv[:n], masks, scale, row_prompt=row_prompt)
      if len(starts) == 1:
        return over(1)(q, gk, gv), (gk, gv)
      return jax.lax.switch(live - 1, [over(n) for n in range(1, len(starts) + 1)], q, gk, gv), (gk, gv)

    logits, kv = decoder.apply({"params": params}, token[:, None], (first_pos[item_prompt] + step)[:, None],
                               attend=attend)
    return logits[:, -1], tuple(x[0] for x in kv), tuple(x[1] for x in kv)

  def step_fn(state: SlotState, full: bool) -> SlotState:
    if full:
      state, taken = refill(state, num_samples, lane)
    else:  # narrowed stages start once every item is handed out: nothing to refill
      taken = jnp.zeros_like(state.item, bool)
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
    recent = state.recent.at[jnp.arange(step.shape[0]), step].set(token) if stop_sequences else None
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
    live = jnp.max(jnp.where(active & ~ended, step, 0)) // block + 1  # blocks up to the longest live item's
    logits, gen_keys, gen_values = forward(state, token, live, full)
    return state._replace(item=jnp.where(ended, -1, state.item), step=jnp.where(active & ~ended, step + 1, step),
                          logprob=logprob, last_logits=logits, gen_keys=gen_keys, gen_values=gen_values)

  # Stages of decreasing width: S slots while items are pending, then (every item handed out) the narrowest width
  # that holds the busy slots; entering a stage moves its busy slots (all of them) into its rows, once.
  widths = sorted({slots} | {slots >> k for k in range(1, 4) if slots >> k >= MIN_WIDTH}, reverse=True)

  def stays(state: SlotState, stage: int):  # items pending, or more busy slots than a narrower stage holds (0)
    narrower = widths[stage + 1] if stage + 1 < len(widths) else 0
    return jnp.any(state.handed_out < num_samples) | (jnp.sum(state.item >= 0) > narrower)

  def narrow(state: SlotState, width: int) -> SlotState:  # the busy slots (at most width) into `width` rows
    order = jnp.argsort(state.item < 0, stable=True)[:width]
    take = lambda x: x[order]  # noqa: E731
    return state._replace(item=take(state.item), step=take(state.step), logprob=take(state.logprob),
                          recent=jax.tree.map(take, state.recent), last_logits=take(state.last_logits),
                          gen_keys=jax.tree.map(take, state.gen_keys), gen_values=jax.tree.map(take, state.gen_values))

  key_blocks = lambda: tuple(  # noqa: E731
      constrain(jnp.zeros((slots, cfg.num_kv_heads, cfg.head_dim, size), kv_dtype), _KEY_AXES) for size in sizes)
  value_blocks = lambda: tuple(  # noqa: E731
      constrain(jnp.zeros((slots, cfg.num_kv_heads, size, cfg.head_dim), kv_dtype), _VALUE_AXES) for size in sizes)
  state = SlotState(
      handed_out=jnp.zeros(num_prompts, jnp.int32), next_prompt=jnp.array(0, jnp.int32),
      item=jnp.full(slots, -1, jnp.int32), step=jnp.zeros(slots, jnp.int32),
      logprob=jnp.zeros(slots, jnp.float32),
      recent=jnp.full((slots, total), pad_id, jnp.int32) if stop_sequences else None,
      last_logits=jnp.zeros((slots, prompt_logits.shape[-1]), jnp.float32),
      lane_prompt=jnp.full(slots // lane, -1, jnp.int32),
      gen_keys=tuple(key_blocks() for _ in range(cfg.num_layers)),
      gen_values=tuple(value_blocks() for _ in range(cfg.num_layers)),
      tokens=jnp.full((items, total), pad_id, jnp.int32), lengths=jnp.full(items, total, jnp.int32),
      item_logprob=jnp.zeros(items, jnp.float32), finish=jnp.full(items, FINISH_LENGTH, jnp.int32))
  for stage, width in enumerate(widths):
    if stage:
      state = narrow(state, width)
    state = jax.lax.while_loop(lambda s, stage=stage: stays(s, stage),
                               lambda s, stage=stage: step_fn(s, stage == 0), state)
  return {"tokens": state.tokens, "num_tokens": state.lengths, "logprob": state.item_logprob,
          "finish": state.finish}


def generate_shared(params, cfg: DecoderConfig, tokens: jax.Array, mask: jax.Array, rng: jax.Array, *,
                    num_samples: int, **kwargs) -> dict:
  """`generate_refill` with one slot per item and one lane per prompt: every sample decoded at once, each prompt's
  keys read once per step for its N rows."""
  kwargs.update(slots=0, lane=num_samples)
  return generate_refill(params, cfg, tokens, mask, rng, num_samples=num_samples, **kwargs)
