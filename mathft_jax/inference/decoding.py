"""Batched KV-cache decoding: N samples per prompt with shared-prefix prefill (no TensorFlow).

`generate` prefills P left-padded prompts once, repeats the cache N times (row p*N + n is sample n of prompt p),
then decodes in a jitted `lax.while_loop` over a fixed-size cache. A row stops at EOS or when its tokens end with a
stop sequence; the loop exits early once every row has stopped. Each row carries the sum of the model's token
log-probs (temperature 1, i.e. log p(sample | prompt) under the model, whatever the sampling strategy).

Shapes: P prompts, N samples, B = P*N rows, Lp prompt bucket length, T max new tokens, V vocab.
"""
import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mathft_jax.models import Decoder, DecoderConfig, KVCache, init_cache

FINISH_EOS, FINISH_STOP, FINISH_LENGTH = 0, 1, 2
FINISH_NAMES = ("eos", "stop", "length")
DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)


@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding (pass@1)."""

  def __call__(self, logits: jax.Array, rng: jax.Array) -> jax.Array:
    return jnp.argmax(logits, axis=-1)


@dataclasses.dataclass(frozen=True)
class Temperature:
  """Samples from softmax(logits / temperature)."""
  temperature: float = 1.0

  def transform(self, logits: jax.Array) -> jax.Array:
    return logits / self.temperature

  def __call__(self, logits: jax.Array, rng: jax.Array) -> jax.Array:
    return jax.random.categorical(rng, self.transform(logits), axis=-1)


@dataclasses.dataclass(frozen=True)
class TopK(Temperature):
  """Samples among the k most likely tokens."""
  k: int = 40

  def transform(self, logits):
    logits = logits / self.temperature
    kth = jax.lax.top_k(logits, self.k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


@dataclasses.dataclass(frozen=True)
class TopP(Temperature):
  """Nucleus sampling: the smallest set of most likely tokens whose probability reaches p."""
  p: float = 0.95

  def transform(self, logits):
    logits = logits / self.temperature
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    cutoff = jnp.min(jnp.where(before < self.p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def bucket_length(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The smallest bucket >= n (so compilations stay few); the next power of two beyond the last bucket."""
  for b in buckets:
    if n <= b:
      return b
  return 1 << (n - 1).bit_length()


def mask_positions(mask: jax.Array) -> jax.Array:
  """Positions [B, L] of left-padded rows from their 0/1 mask [B, L]: 0 at the first real token (0 on padding)."""
  return jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Token lists -> (tokens [P, length], mask [P, length]) right-aligned; a prompt longer than `length` is an error."""
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  mask = np.zeros((len(prompts), length), np.int32)
  for i, p in enumerate(prompts):
    if len(p) > length or not len(p):
      raise ValueError(f"prompt {i} has {len(p)} tokens; expected 1..{length}")
    tokens[i, length - len(p):] = p
    mask[i, length - len(p):] = 1
  return tokens, mask


def ends_with(buffer: jax.Array, step: jax.Array, seq: tuple) -> jax.Array:
  """[B] whether buffer[:, :step+1] ends with the token sequence `seq`."""
  m = len(seq)
  start = jnp.maximum(step - m + 1, 0)
  window = jax.lax.dynamic_slice_in_dim(buffer, start, m, axis=1) if buffer.shape[1] >= m else buffer
  return (step + 1 >= m) & jnp.all(window == jnp.asarray(seq, buffer.dtype), axis=1)


class DecodeState(NamedTuple):
  """The `while_loop` carry of `generate`, over B rows, T max new tokens, V vocab."""
  step: jax.Array  # [] int32: new tokens written so far
  buffer: jax.Array  # [B, T] int32: the new tokens, pad after a row stops
  done: jax.Array  # [B] bool: the row hit EOS or a stop sequence
  finish: jax.Array  # [B] int32: FINISH_EOS / FINISH_STOP / FINISH_LENGTH
  lengths: jax.Array  # [B] int32: tokens of the row, its EOS or stop tokens included
  logprob: jax.Array  # [B] float32: sum of the row's token log-probs
  last_logits: jax.Array  # [B, V] float32: next-token logits
  cache: KVCache  # every layer's keys and values


def generate(params, cfg: DecoderConfig, tokens: jax.Array, mask: jax.Array, rng: jax.Array, *,
             num_samples: int, max_new_tokens: int, sampler=Greedy(), eos_id: int = 1,
             stop_sequences: tuple = (), pad_id: int = 0) -> dict:
  """Samples continuations of left-padded prompts.

  Args:
    tokens, mask: [P, Lp] left-padded prompt ids and their 0/1 mask.
    stop_sequences: tuple of token-id tuples; a row also stops when its new tokens end with one.
  Returns dict of arrays over B = P*N rows: tokens [B, T] (pad after the stop), num_tokens [B] (including the
  EOS/stop tokens), logprob [B], finish [B] (FINISH_EOS / FINISH_STOP / FINISH_LENGTH).
  """
  decoder = Decoder(cfg)
  num_prompts, prompt_len = tokens.shape
  rows = num_prompts * num_samples
  positions = mask_positions(mask)
  cache = init_cache(cfg, num_prompts, prompt_len + max_new_tokens)
  logits, cache = decoder.apply({"params": params}, tokens, positions, mask, cache)
  repeat = lambda x: jnp.repeat(x, num_samples, axis=0)  # noqa: E731
  cache = cache.replace(keys=tuple(map(repeat, cache.keys)), values=tuple(map(repeat, cache.values)),
                        segment_ids=repeat(cache.segment_ids))
  last = repeat(logits[:, -1])
  next_pos = repeat(positions[:, -1] + 1)

  def cond(state: DecodeState):
    return (state.step < max_new_tokens) & ~jnp.all(state.done)

  def body(state: DecodeState) -> DecodeState:
    step, buffer, done, finish, lengths, logprob, last, cache = state
    token = sampler(last, jax.random.fold_in(rng, step)).astype(jnp.int32)
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(last), token[:, None], axis=1)[:, 0]
    token = jnp.where(done, pad_id, token)
    logprob = logprob + jnp.where(done, 0.0, token_logp)
    buffer = buffer.at[:, step].set(token)
    hit_eos = ~done & (token == eos_id)
    hit_stop = jnp.zeros_like(done)
    for seq in stop_sequences:
      hit_stop = hit_stop | (~done & ~hit_eos & ends_with(buffer, step, seq))
    finish = jnp.where(hit_eos, FINISH_EOS, jnp.where(hit_stop, FINISH_STOP, finish))
    lengths = jnp.where(hit_eos | hit_stop, step + 1, lengths)
    done = done | hit_eos | hit_stop
    logits, cache = decoder.apply({"params": params}, token[:, None], (next_pos + step)[:, None],
                                  jnp.ones((rows, 1), jnp.int32), cache)
    return DecodeState(step + 1, buffer, done, finish, lengths, logprob, logits[:, -1], cache)

  state = DecodeState(step=jnp.array(0, jnp.int32), buffer=jnp.full((rows, max_new_tokens), pad_id, jnp.int32),
                      done=jnp.zeros(rows, bool), finish=jnp.full(rows, FINISH_LENGTH, jnp.int32),
                      lengths=jnp.full(rows, max_new_tokens, jnp.int32), logprob=jnp.zeros(rows, jnp.float32),
                      last_logits=last, cache=cache)
  final = jax.lax.while_loop(cond, body, state)
  return {"tokens": final.buffer, "num_tokens": final.lengths, "logprob": final.logprob, "finish": final.finish}
