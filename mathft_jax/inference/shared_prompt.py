"""The shared-prompt cache layout's pieces: attention over a prompt's KV held once, per-sample random streams, draws.

- A prompt is prefilled once into a prompt cache per layer (keys [P, K, D, Lp], values [P, K, Lp, D]), never
  repeated N times; each decode row keeps only its own generated keys and values, in blocks ([B, K, D, block] and
  [B, K, block, D]). Heads lead and keys are stored transposed (as in vLLM's paged key cache), so both matmuls of a
  step read the cache as it lies: no per-step transpose of the cache, no transposed matmul operand (on the 2-core
  CPU the [B, S, K, D] layout made the generated-key attention ~8x slower than the bytes it reads).
- `shared_attention`: a decode step's attention is one softmax over the union of the row's prompt keys and its
  generated keys: the prompt part is one batched matmul for the rows of a prompt ([P, N*H, D] x [P, Lp, D], the
  prompt's keys read once for all its rows: Hydragen / bifurcated attention), the generated part a per-row matmul
  over the live blocks only; the logit blocks are normalized together (one log-sum-exp), then the value reads
  summed.
- `row_keys`: each sample draws from its own random stream, keyed by (prompt id, sample index) and its step, so a
  sample does not depend on how many rows are decoded beside it.
- `inverse_cdf_draw`: a draw takes one uniform number per row, not one per vocabulary entry.
The decode loop that uses them is `slot_refill.generate_refill` (and `generate_shared`, the same without refill).

KV memory: P*Lp + B*T slots per layer instead of B*(Lp+T) (1,024-token prompts, N=64, T=256: 4.9x less).
Shapes: P prompts, N samples, B = P*N rows, Lp prompt bucket, T max new tokens, H heads, K kv heads, D head dim.
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp

_NEG = jnp.finfo(jnp.float32).min


def _logits(spec: str, q, k):
  """Attention logits in float32 (bf16 x bf16 products are exact in float32). XLA:CPU has no bf16 x bf16 -> f32
  kernel for these untransposed shapes, so there both operands are widened first (same result)."""
  if q.dtype != jnp.float32 and jax.default_backend() == "cpu":
    q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  return jnp.einsum(spec, q, k, preferred_element_type=jnp.float32)


def shared_attention(q, prompt_k, prompt_v, prompt_mask, gen_k: Sequence, gen_v: Sequence, gen_mask: Sequence,
                     scale: float, row_prompt=None):
  """One query token per row over its prompt's keys and its own generated keys, normalized together.

  q [B, 1, H, D]; prompt_k [P, K, D, Lp], prompt_v [P, K, Lp, D]; prompt_mask [P, Lp] bool; gen_k [B, K, D, S_j] and
  gen_v [B, K, S_j, D]: blocks of generated keys and values, gen_mask: their masks [B, S_j] bool.
  Rows p*N..p*N+N-1 attend to prompt p; or, with row_prompt [B] int (rows in any order, e.g. the few left at the end
  of a call), row b to prompt row_prompt[b]: then each row's logits are taken over all P prompts' keys at once (one
  [B*G, D] x [D, P*Lp] matmul per kv head) and masked to its own, P times the prompt FLOPs but no per-row copy of a
  prompt's keys (a gather costs more than the matmul it saves for P up to ~30 on a CPU, ~200 on a GPU).
  Returns [B, 1, H, D].
  """
  rows, _, heads, dim = q.shape
  prompts, kv, lp = prompt_k.shape[0], prompt_k.shape[1], prompt_k.shape[3]
  groups = heads // kv
  qg = q.reshape(rows, kv, groups, dim)
  if row_prompt is None:  # the prompt part stays in [P, K, N*G, .] (one matmul per prompt and kv head)
    samples = rows // prompts
    to_prompt = lambda x: x.reshape(prompts, samples, kv, groups, *x.shape[3:]).swapaxes(1, 2).reshape(  # noqa: E731
        prompts, kv, samples * groups, *x.shape[3:])  # [B, K, G, ...] -> [P, K, N*G, ...]
    to_rows = lambda x: x.reshape(prompts, kv, samples, groups, *x.shape[3:]).swapaxes(1, 2).reshape(  # noqa: E731
        rows, kv, groups, *x.shape[3:])
    logits_p = _logits("pkrd,pkds->pkrs", to_prompt(qg), prompt_k.astype(q.dtype))  # [P, K, N*G, Lp]
    logits_p = jnp.where(prompt_mask[:, None, None, :], logits_p * scale, _NEG)
  else:
    to_prompt = to_rows = lambda x: x  # noqa: E731
    logits_p = _logits("bkgd,pkds->bkgps", qg, prompt_k.astype(q.dtype))  # [B, K, G, P, Lp]
    own = (row_prompt[:, None, None] == jnp.arange(prompts)[None, :, None]) & prompt_mask[None]  # [B, P, Lp]
    logits_p = jnp.where(own[:, None, None], logits_p * scale, _NEG).reshape(rows, kv, groups, prompts * lp)
  logits_g = [jnp.where(m[:, None, None, :], _logits("bkgd,bkds->bkgs", qg, k.astype(q.dtype)) * scale, _NEG)
              for k, m in zip(gen_k, gen_mask)]  # [B, K, G, S_j]
  # One softmax over all parts without joining them: a shared max, then each part's exp, sum and value read.
  top = functools.reduce(jnp.maximum, [x.max(-1) for x in logits_g], to_rows(logits_p.max(-1)))  # [B, K, G]
  probs_p = jnp.exp(logits_p - to_prompt(top)[..., None])
  total = to_rows(probs_p.sum(-1))
  if row_prompt is None:
    out = to_rows(jnp.einsum("pkrs,pksd->pkrd", probs_p.astype(q.dtype), prompt_v.astype(q.dtype)))
  else:
    out = jnp.einsum("bkgps,pksd->bkgd", probs_p.reshape(rows, kv, groups, prompts, lp).astype(q.dtype),
                     prompt_v.astype(q.dtype))
  out = out.astype(jnp.float32)
  for x, v in zip(logits_g, gen_v):
    probs = jnp.exp(x - top[..., None])
    total = total + probs.sum(-1)
    out = out + jnp.einsum("bkgs,bksd->bkgd", probs.astype(q.dtype), v.astype(q.dtype)).astype(jnp.float32)
  return (out / total[..., None]).astype(q.dtype).reshape(rows, 1, heads, dim)


def inverse_cdf_draw(logits: jax.Array, u: jax.Array, block: int = 256) -> jax.Array:
  """Exact sampling from softmax(logits) [B, V] with one uniform u [B] in [0, 1) per row: the first token whose
  cumulative probability exceeds u, found block by block (block sums, then one block's prefix sums). A categorical
  draw by Gumbel noise needs V random numbers per row (on a CPU, 256 rows x 32,000: 160 ms a step, this 10 ms).
  Tokens of probability 0 (-inf logits, e.g. outside top-k) are never drawn. Returns [B] int32."""
  rows, vocab = logits.shape
  padded = -(-vocab // block) * block
  logits = jnp.pad(logits, ((0, 0), (0, padded - vocab)), constant_values=-jnp.inf)
  probs = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)).reshape(rows, padded // block, block)
  sums = probs.sum(-1)  # [B, nb]
  cum = jnp.cumsum(sums, -1)
  target = u * cum[:, -1]
  last_block = jnp.max(jnp.where(sums > 0, jnp.arange(sums.shape[1]), 0), axis=-1)
  chosen = jnp.minimum(jnp.sum(cum <= target[:, None], -1), last_block)  # rounding never picks an empty block
  before = jnp.where(chosen > 0, jnp.take_along_axis(cum, jnp.maximum(chosen - 1, 0)[:, None], 1)[:, 0], 0.0)
  inner = jnp.take_along_axis(probs, chosen[:, None, None], 1)[:, 0]  # [B, block]
  last_token = jnp.max(jnp.where(inner > 0, jnp.arange(block), 0), axis=-1)
  index = jnp.minimum(jnp.sum(jnp.cumsum(inner, -1) <= (target - before)[:, None], -1), last_token)
  return (chosen * block + index).astype(jnp.int32)


def draw_tokens(sampler, logits: jax.Array, keys: jax.Array) -> jax.Array:
  """Next tokens [B] from logits [B, V] and one random key per row: argmax for Greedy, else an inverse-CDF draw
  from the sampler's transformed logits (temperature, top-k, top-p)."""
  if not hasattr(sampler, "transform"):
    return sampler(logits, keys[0]).astype(jnp.int32)
  u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(keys)
  return inverse_cdf_draw(sampler.transform(logits).astype(jnp.float32), u)


def row_keys(rng: jax.Array, num_prompts: int, num_samples: int, prompt_ids=None) -> jax.Array:
  """[B] random keys, one per (prompt, sample): fold_in(fold_in(rng, prompt id), sample index)."""
  ids = jnp.arange(num_prompts) if prompt_ids is None else jnp.asarray(prompt_ids)
  per_prompt = jax.vmap(lambda i: jax.random.fold_in(rng, i))(ids)
  return jax.vmap(lambda k: jax.vmap(lambda n: jax.random.fold_in(k, n))(jnp.arange(num_samples)))(
      per_prompt).reshape((num_prompts * num_samples,) + per_prompt.shape[1:])
