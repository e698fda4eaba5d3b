"""Transformer building blocks with logical axis names on every parameter and main activation.

Logical axes: batch, length, embed, heads, kv_heads, head_dim, mlp, vocab. A partitioner maps them to mesh axes
with rules; without rules the annotations are no-ops. Shapes: B batch, L query length, S key length (cache slots),
E d_model, H query heads, K kv heads, D head_dim, F mlp_dim, V vocab.
"""
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from mathft_jax.models.config import DecoderConfig, RopeScaling

Array = jax.Array


def param_with_axes(module: nn.Module, name: str, init, shape: tuple, axes: tuple, dtype) -> Array:
  """Declares a parameter whose initial value carries logical axis names for the partitioner."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.dtype(dtype))


def constrain(x: Array, axes: tuple) -> Array:
  """Logical sharding constraint on an activation (a no-op outside a mesh with rules)."""
  return nn.with_logical_constraint(x, axes)


def fan_in_init(in_axis, out_axis):
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


class Norm(nn.Module):
  """RMSNorm (optionally scaling by 1 + w, Gemma) or bias-free LayerNorm (PaLM), computed in float32."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    init = nn.initializers.zeros if cfg.norm_plus_one else nn.initializers.ones
    scale = param_with_axes(self, "scale", init, (x.shape[-1],), ("embed",), cfg.param_dtype)
    x32 = x.astype(jnp.float32)
    if cfg.norm == "layer":
      x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + cfg.norm_eps)
    scale = scale.astype(jnp.float32)
    y = y * (1.0 + scale if cfg.norm_plus_one else scale)
    return y.astype(cfg.dtype)


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: Optional[RopeScaling]) -> Array:
  """[D/2] float32 inverse frequencies, with Llama-3.1 style rescaling when configured."""
  inv = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  if scaling is None or scaling.kind == "linear":
    return inv
  low_wavelen = scaling.original_max_position / scaling.low_freq_factor
  high_wavelen = scaling.original_max_position / scaling.high_freq_factor
  wavelen = 2 * math.pi / inv
  scaled = jnp.where(wavelen > low_wavelen, inv / scaling.factor, inv)
  smooth = ((scaling.original_max_position / wavelen - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def rope_tables(positions: Array, cfg: DecoderConfig) -> tuple[Array, Array]:
  """positions [B, L] int -> (cos, sin), each [B, L, D] float32 in the rotate-half layout."""
  inv = rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
  pos = positions.astype(jnp.float32)
  if cfg.rope_scaling is not None and cfg.rope_scaling.kind == "linear":
    pos = pos / cfg.rope_scaling.factor
  angles = pos[..., None] * inv  # [B, L, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """x [B, L, N, D] -> x rotated by position (rotate-half convention, as in the HF checkpoints)."""
  half = x.shape[-1] // 2
  x32 = x.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


def grouped_attention(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
  """Softmax attention without repeating kv heads: q [B, L, H, D], k/v [B, S, K, D], mask [B, 1, L, S] bool.

  Query heads are grouped G = H / K per kv head; logits and softmax in float32. Returns [B, L, H, D].
  """
  b, length, h, d = q.shape
  groups = h // k.shape[2]
  qg = q.reshape(b, length, k.shape[2], groups, d)
  logits = jnp.einsum("blkgd,bskd->bkgls", qg, k, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)  # fully masked rows: uniform, no NaN
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bkgls,bskd->blkgd", probs, v).reshape(b, length, h, d)


class Attention(nn.Module):
  """Grouped-query self-attention with RoPE and an optional per-layer KV cache."""
  config: DecoderConfig

  def _proj(self, x: Array, name: str, heads: int, heads_axis: str) -> Array:
    cfg = self.config
    shape = (cfg.d_model, heads, cfg.head_dim)
    w = param_with_axes(self, f"{name}_kernel", fan_in_init(0, (1, 2)), shape, ("embed", heads_axis, "head_dim"),
                        cfg.param_dtype)
    y = jnp.einsum("ble,ehd->blhd", x, w.astype(cfg.dtype))
    if cfg.qkv_bias:
      b = param_with_axes(self, f"{name}_bias", nn.initializers.zeros, shape[1:], (heads_axis, "head_dim"),
                          cfg.param_dtype)
      y = y + b.astype(cfg.dtype)
    y = checkpoint_name(y, "qkv")  # saved by the "qkv_mlp" remat policy
    return constrain(y, ("batch", "length", heads_axis, "head_dim"))

  @nn.compact
  def __call__(self, x: Array, cos: Array, sin: Array, mask: Optional[Array],
               layer_cache: Optional[tuple[Array, Array]] = None,
               cache_index: Optional[Array] = None, attend=None) -> tuple[Array, Optional[tuple[Array, Array]]]:
    """x [B, L, E]; cos/sin [B, L, D]; mask [B, 1, L, S] bool; layer_cache (k, v) each [B, S, K, D].

    Returns the output [B, L, E] and the updated (k, v) cache (None without a cache). `attend`, when given, replaces
    the cache and the attention: (q [B, L, H, D], k, v [B, L, K, D]) -> (out [B, L, H, D], its own cache state),
    e.g. the shared-prompt decoding of `mathft_jax.inference.shared_prompt`.
    """
    cfg = self.config
    q = apply_rope(self._proj(x, "q", cfg.num_heads, "heads"), cos, sin)
    k = apply_rope(self._proj(x, "k", cfg.num_kv_heads, "kv_heads"), cos, sin)
    v = self._proj(x, "v", cfg.num_kv_heads, "kv_heads")
    if attend is not None:
      out, layer_cache = attend(q, k, v)
      return self._output(out), layer_cache
    if layer_cache is not None:
      k_cache, v_cache = layer_cache
      k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, cache_index, 0, 0))
      v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, cache_index, 0, 0))
      layer_cache = (k, v)
    out = grouped_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, cfg.head_dim ** -0.5)
    return self._output(out), layer_cache

  def _output(self, out: Array) -> Array:
    """Per-head attention output [B, L, H, D] -> [B, L, E] (called inside `__call__`)."""
    cfg = self.config
    out = constrain(out, ("batch", "length", "heads", "head_dim"))
    w_o = param_with_axes(self, "o_kernel", fan_in_init((0, 1), 2), (cfg.num_heads, cfg.head_dim, cfg.d_model),
                          ("heads", "head_dim", "embed"), cfg.param_dtype)
    y = jnp.einsum("blhd,hde->ble", out, w_o.astype(cfg.dtype))
    if cfg.out_bias:
      y = y + param_with_axes(self, "o_bias", nn.initializers.zeros, (cfg.d_model,), ("embed",),
                              cfg.param_dtype).astype(cfg.dtype)
    return constrain(y, ("batch", "length", "embed"))


_ACT = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class GatedMlp(nn.Module):
  """act(x W_gate) * (x W_up) W_down: SwiGLU (Llama, Qwen2, PaLM) or GeGLU (Gemma)."""
  config: DecoderConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x [B, L, E] -> [B, L, E]."""
    cfg = self.config
    shape_in, shape_out = (cfg.d_model, cfg.mlp_dim), (cfg.mlp_dim, cfg.d_model)
    w_gate = param_with_axes(self, "gate_kernel", fan_in_init(0, 1), shape_in, ("embed", "mlp"), cfg.param_dtype)
    w_up = param_with_axes(self, "up_kernel", fan_in_init(0, 1), shape_in, ("embed", "mlp"), cfg.param_dtype)
    w_down = param_with_axes(self, "down_kernel", fan_in_init(0, 1), shape_out, ("mlp", "embed"), cfg.param_dtype)
    h = _ACT[cfg.activation](x @ w_gate.astype(cfg.dtype)) * (x @ w_up.astype(cfg.dtype))
    h = checkpoint_name(constrain(h, ("batch", "length", "mlp")), "mlp_hidden")  # saved by "qkv_mlp"
    return constrain(h @ w_down.astype(cfg.dtype), ("batch", "length", "embed"))
