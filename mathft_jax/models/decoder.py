"""The decoder-only transformer and its KV cache.

`Decoder.__call__(tokens, positions, segment_ids, cache)` serves training (packed examples: segment ids with 0 for
padding, explicit positions), scoring, and decoding (prefill writes a prompt into the cache, then one token per
step). Attention is causal within a segment; padding (segment 0) is never attended to.
"""
from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mathft_jax.models.config import DecoderConfig
from mathft_jax.models.layers import Attention, GatedMlp, Norm, constrain, param_with_axes, rope_tables

Array = jax.Array


@flax.struct.dataclass
class KVCache:
  """Fixed-size decoding cache.

  keys / values: per layer, [B, S, K, D] in the compute dtype.
  segment_ids: [B, S] int32 of the written slots (0 = empty or padding: never attended to).
  index: [] int32, the next slot to write (same for every row; rows differ by their padding).
  """
  keys: tuple
  values: tuple
  segment_ids: Array
  index: Array

  @property
  def max_length(self) -> int:
    return self.segment_ids.shape[1]


def init_cache(cfg: DecoderConfig, batch: int, max_length: int) -> KVCache:
  shape = (batch, max_length, cfg.num_kv_heads, cfg.head_dim)
  zeros = tuple(jnp.zeros(shape, cfg.dtype) for _ in range(cfg.num_layers))
  return KVCache(keys=zeros, values=tuple(jnp.zeros(shape, cfg.dtype) for _ in range(cfg.num_layers)),
                 segment_ids=jnp.zeros((batch, max_length), jnp.int32), index=jnp.array(0, jnp.int32))


def attention_mask(q_segments: Array, q_slots: Array, k_segments: Array, k_slots: Array) -> Array:
  """[B, 1, L, S] bool: key slot <= query slot, same segment, key not padding."""
  causal = k_slots[None, :] <= q_slots[:, None]  # [L, S]
  same = q_segments[:, :, None] == k_segments[:, None, :]  # [B, L, S]
  mask = causal[None] & same & (k_segments[:, None, :] != 0)
  return mask[:, None]


class Block(nn.Module):
  """Pre-norm transformer block: sequential (Llama/Qwen2/Gemma) or parallel attention+MLP (PaLM)."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, layer_cache=None, cache_index=None, attend=None):
    cfg = self.config
    h = Norm(cfg, name="attn_norm")(x)
    attn, layer_cache = Attention(cfg, name="attn")(h, cos, sin, mask, layer_cache, cache_index, attend)
    if cfg.parallel_block:
      x = x + attn + GatedMlp(cfg, name="mlp")(h)
    else:
      x = x + attn
      x = x + GatedMlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x))
    return constrain(x, ("batch", "length", "embed")), layer_cache


class Decoder(nn.Module):
  """Token ids -> next-token logits."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, tokens: Array, positions: Optional[Array] = None, segment_ids: Optional[Array] = None,
               cache: Optional[KVCache] = None, attend=None) -> tuple[Array, Optional[KVCache]]:
    """tokens [B, L] int; positions [B, L] (default: slot index); segment_ids [B, L] (default: all 1).

    With a cache, the L tokens are written at slots index..index+L-1 and attend to every earlier written slot.
    Returns logits [B, L, V] float32 and the updated cache (None without one). With `attend(layer, q, k, v) ->
    (out, state)` instead (unscanned layers only), each layer's attention is that function's, and the second
    result is the tuple of the layers' states (see `mathft_jax.inference.shared_prompt`).
    """
    cfg = self.config
    if attend is not None:
      return self._with_attend(tokens, positions, attend)
    batch, length = tokens.shape
    start = cache.index if cache is not None else 0
    q_slots = start + jnp.arange(length, dtype=jnp.int32)
    if positions is None:
      positions = jnp.broadcast_to(q_slots, (batch, length))
    if segment_ids is None:
      segment_ids = jnp.ones((batch, length), jnp.int32)
    segment_ids = segment_ids.astype(jnp.int32)

    if cache is None:
      mask = attention_mask(segment_ids, q_slots, segment_ids, q_slots)
    else:
      k_segments = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids, (0, start))
      mask = attention_mask(segment_ids, q_slots, k_segments, jnp.arange(cache.max_length, dtype=jnp.int32))

    embedding = self._embedding()
    x = self._embed(embedding, tokens)
    cos, sin = rope_tables(positions, cfg)

    block_cls = Block
    if cfg.remat != "none":
      block_cls = nn.remat(Block, policy=remat_policy(cfg.remat), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stacked = (jnp.stack(cache.keys), jnp.stack(cache.values)) if cache is not None else None  # [N, B, S, K, D]
      scanned = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
                        length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
      x, stacked = scanned(cfg, name="layers")(x, cos, sin, mask, stacked, start)
      new_keys, new_values = (list(stacked[0]), list(stacked[1])) if cache is not None else ([], [])
    else:
      new_keys, new_values = [], []
      for i in range(cfg.num_layers):
        layer_cache = (cache.keys[i], cache.values[i]) if cache is not None else None
        x, layer_cache = block_cls(cfg, name=f"layer_{i}")(x, cos, sin, mask, layer_cache, start)
        if cache is not None:
          new_keys.append(layer_cache[0])
          new_values.append(layer_cache[1])

    logits = self._logits(embedding, x)
    if cache is not None:
      cache = KVCache(keys=tuple(new_keys), values=tuple(new_values), segment_ids=k_segments,
                      index=start + length)
    return logits, cache


  def _embedding(self) -> Array:
    cfg = self.config
    return param_with_axes(self, "embedding", nn.initializers.normal(cfg.d_model ** -0.5),
                           (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.param_dtype)

  def _embed(self, embedding: Array, tokens: Array) -> Array:
    cfg = self.config
    x = jnp.take(embedding, tokens, axis=0).astype(cfg.dtype)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(cfg.d_model ** 0.5, cfg.dtype)
    return constrain(x, ("batch", "length", "embed"))

  def _logits(self, embedding: Array, x: Array) -> Array:
    cfg = self.config
    x = Norm(cfg, name="final_norm")(x)
    if cfg.tie_embeddings:
      logits = x @ embedding.astype(cfg.dtype).T
    else:
      head = param_with_axes(self, "lm_head", nn.initializers.normal(cfg.d_model ** -0.5),
                             (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype)
      logits = x @ head.astype(cfg.dtype)
    return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

  def _with_attend(self, tokens: Array, positions: Array, attend) -> tuple[Array, tuple]:
    cfg = self.config
    if cfg.scan_layers:
      raise ValueError("attend needs unscanned layers: unstack_layers(params) and scan_layers=False")
    embedding = self._embedding()
    x = self._embed(embedding, tokens)
    cos, sin = rope_tables(positions, cfg)
    states = []
    for i in range(cfg.num_layers):
      x, state = Block(cfg, name=f"layer_{i}")(x, cos, sin, None, attend=lambda q, k, v, i=i: attend(i, q, k, v))
      states.append(state)
    return self._logits(embedding, x), tuple(states)


def remat_policy(name: str):
  """The jax.checkpoint policy of a DecoderConfig.remat name ("full": save nothing, recompute the block)."""
  policies = jax.checkpoint_policies
  return {"full": policies.nothing_saveable, "dots": policies.checkpoint_dots,
          "dots_no_batch": policies.dots_with_no_batch_dims_saveable,
          "qkv_mlp": policies.save_only_these_names("qkv", "mlp_hidden")}[name]


def stack_layers(params: dict, num_layers: int) -> dict:
  """Unstacked params (`layer_0`..`layer_{N-1}`) -> the scan layout (`layers`, every leaf with a leading [N])."""
  out = {k: v for k, v in params.items() if not k.startswith("layer_")}
  out["layers"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[params[f"layer_{i}"] for i in range(num_layers)])
  return out


def unstack_layers(params: dict) -> dict:
  """The scan layout -> `layer_0`..`layer_{N-1}` (the layout of exports and HF imports)."""
  out = {k: v for k, v in params.items() if k != "layers"}
  num_layers = jax.tree_util.tree_leaves(params["layers"])[0].shape[0]
  for i in range(num_layers):
    out[f"layer_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], params["layers"])
  return out


def abstract_params(cfg: DecoderConfig):
  """Shape-only parameter tree (boxed with logical axes), computed by `jax.eval_shape` without allocation."""
  model = Decoder(cfg)
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  return jax.eval_shape(lambda t: model.init(jax.random.PRNGKey(0), t), tokens)["params"]


def param_count(cfg: DecoderConfig) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(abstract_params(cfg)))


def logical_axes(cfg: DecoderConfig):
  """Parameter tree of logical-axis PartitionSpecs, e.g. PartitionSpec('embed', 'heads', 'head_dim')."""
  return nn.get_partition_spec(abstract_params(cfg))


def init_params(cfg: DecoderConfig, rng: Array):
  """Random parameters (unboxed arrays)."""
  return nn.unbox(Decoder(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))["params"])
