"""The Hugging Face side of our models, both ways: config.json <-> DecoderConfig and tensor names/layouts.

Families: llama (Llama-2/3/3.1, incl. `llama3` RoPE scaling), mistral (import only, no sliding window), qwen2
(Qwen2/2.5) and gemma. `weight_map(cfg)` lists every tensor once: its HF name and shape, our parameter path, and
how the layout changes: "same" (embeddings, norms: identical), "linear" (HF Linear [out, in] <-> ours
[in dims..., out dims...]) or "bias" (flat <-> [heads, head_dim]). Import and export are exact inverses.
"""
from typing import Iterator, NamedTuple, Optional

import numpy as np

from mathft_jax.models.config import DecoderConfig, RopeScaling

SUPPORTED = ("llama", "mistral", "qwen2", "gemma")
EXPORTABLE = ("llama", "qwen2", "gemma")
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma": "GemmaForCausalLM"}


class HfFormatError(ValueError):
  """A config or tensor that has no counterpart on the other side; the message names the file and the setting."""


def _rope_from_hf(hf: dict) -> tuple[float, Optional[RopeScaling]]:
  """Reads RoPE settings from either transformers>=5 `rope_parameters` or the older rope_theta/rope_scaling."""
  params = dict(hf.get("rope_parameters") or {})
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
  scaling = hf.get("rope_scaling") or params
  kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
  if kind == "default":
    return theta, None
  if kind == "linear":
    return theta, RopeScaling(kind="linear", factor=float(scaling["factor"]))
  if kind == "llama3":
    return theta, RopeScaling(kind="llama3", factor=float(scaling["factor"]),
                              low_freq_factor=float(scaling["low_freq_factor"]),
                              high_freq_factor=float(scaling["high_freq_factor"]),
                              original_max_position=int(scaling["original_max_position_embeddings"]))
  raise HfFormatError(f"config.json: unsupported RoPE scaling type {kind!r} (supported: linear, llama3)")


def config_from_hf(hf: dict, dtype: str = "float32", param_dtype: str = "float32") -> DecoderConfig:
  """Maps an HF config.json dict to a DecoderConfig; unsupported architectures raise HfFormatError."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED:
    raise HfFormatError(f"config.json: unsupported model_type {model_type!r}; supported: {SUPPORTED}")
  if hf.get("mlp_bias"):
    raise HfFormatError("config.json: mlp_bias=true is not supported")
  if hf.get("use_sliding_window") or (model_type == "mistral" and hf.get("sliding_window")):
    raise HfFormatError("config.json: sliding-window attention is not supported")
  heads = hf["num_attention_heads"]
  act = hf.get("hidden_activation") or hf.get("hidden_act", "silu")
  gemma = model_type == "gemma"
  if gemma:
    act = "gelu_tanh" if act in ("gelu", "gelu_pytorch_tanh", "gelu_new") else act  # HF maps legacy "gelu" too
  activation = {"silu": "silu", "gelu_tanh": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}.get(act)
  if activation is None:
    raise HfFormatError(f"config.json: unsupported activation {act!r}")
  theta, scaling = _rope_from_hf(hf)
  return DecoderConfig(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, mlp_dim=hf["intermediate_size"],
      activation=activation, norm_eps=hf.get("rms_norm_eps", 1e-6), norm_plus_one=gemma,
      qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias")),
      out_bias=bool(hf.get("attention_bias")) and model_type != "qwen2",
      tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)), scale_embeddings=gemma,
      rope_theta=theta, rope_scaling=scaling, dtype=dtype, param_dtype=param_dtype)


def family_of(cfg: DecoderConfig) -> str:
  """The HF model_type whose architecture is `cfg`; HfFormatError names the setting none of them has."""
  if cfg.parallel_block or cfg.norm != "rms":
    raise HfFormatError(f"parallel_block={cfg.parallel_block}, norm={cfg.norm!r} (a PaLM-style block): no "
                        f"Hugging Face family among {EXPORTABLE} has it")
  gemma = (cfg.norm_plus_one, cfg.scale_embeddings, cfg.tie_embeddings, cfg.activation, cfg.qkv_bias)
  if gemma == (True, True, True, "gelu_tanh", False):
    return "gemma"
  if cfg.norm_plus_one or cfg.scale_embeddings or cfg.activation != "silu":
    raise HfFormatError(f"norm_plus_one={cfg.norm_plus_one}, scale_embeddings={cfg.scale_embeddings}, "
                        f"activation={cfg.activation!r}: not the Gemma combination (True, True, 'gelu_tanh', tied "
                        f"embeddings) nor Llama/Qwen2's (False, False, 'silu')")
  if cfg.qkv_bias and not cfg.out_bias:
    return "qwen2"
  if cfg.qkv_bias != cfg.out_bias:
    raise HfFormatError(f"qkv_bias={cfg.qkv_bias}, out_bias={cfg.out_bias}: Llama's attention_bias sets both")
  return "llama"


def config_to_hf(cfg: DecoderConfig, dtype: str, special_ids: dict, max_positions: int = 8192) -> dict:
  """A config.json for `cfg` (transformers >= 5 layout, with the legacy RoPE keys too); special_ids: bos_token_id,
  eos_token_id, pad_token_id."""
  family = family_of(cfg)
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling is not None:
    s = cfg.rope_scaling
    rope.update({"rope_type": s.kind, "factor": s.factor} if s.kind == "linear" else {
        "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
        "high_freq_factor": s.high_freq_factor, "original_max_position_embeddings": s.original_max_position})
  out = {"architectures": [ARCHITECTURES[family]], "model_type": family, "vocab_size": cfg.vocab_size,
         "hidden_size": cfg.d_model, "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers,
         "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
         "hidden_act": "gelu_pytorch_tanh" if family == "gemma" else "silu", "rms_norm_eps": cfg.norm_eps,
         "max_position_embeddings": max_positions, "tie_word_embeddings": cfg.tie_embeddings,
         "rope_parameters": rope, "rope_theta": cfg.rope_theta, "dtype": dtype, "torch_dtype": dtype,
         **special_ids}
  if cfg.rope_scaling is not None:
    out["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
  if family == "gemma":
    out["hidden_activation"] = "gelu_pytorch_tanh"
  if family == "llama":
    out.update(attention_bias=cfg.qkv_bias, mlp_bias=False)
  return out


class Tensor(NamedTuple):
  hf_name: str
  path: tuple  # our parameter path
  hf_shape: tuple
  layout: str  # "same", "linear" or "bias"


def weight_map(cfg: DecoderConfig) -> Iterator[Tensor]:
  """Every tensor of the unstacked model (layer_0..), in HF's order."""
  e, q, kv = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  yield Tensor("model.embed_tokens.weight", ("embedding",), (cfg.vocab_size, e), "same")
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}", f"layer_{i}"
    yield Tensor(f"{hf}.input_layernorm.weight", (ours, "attn_norm", "scale"), (e,), "same")
    for name, out in (("q", q), ("k", kv), ("v", kv)):
      yield Tensor(f"{hf}.self_attn.{name}_proj.weight", (ours, "attn", f"{name}_kernel"), (out, e), "linear")
      if cfg.qkv_bias:
        yield Tensor(f"{hf}.self_attn.{name}_proj.bias", (ours, "attn", f"{name}_bias"), (out,), "bias")
    yield Tensor(f"{hf}.self_attn.o_proj.weight", (ours, "attn", "o_kernel"), (e, q), "linear")
    if cfg.out_bias:
      yield Tensor(f"{hf}.self_attn.o_proj.bias", (ours, "attn", "o_bias"), (e,), "same")
    for name, shape in (("gate", (cfg.mlp_dim, e)), ("up", (cfg.mlp_dim, e)), ("down", (e, cfg.mlp_dim))):
      yield Tensor(f"{hf}.mlp.{name}_proj.weight", (ours, "mlp", f"{name}_kernel"), shape, "linear")
    if not cfg.parallel_block:
      yield Tensor(f"{hf}.post_attention_layernorm.weight", (ours, "mlp_norm", "scale"), (e,), "same")
  yield Tensor("model.norm.weight", ("final_norm", "scale"), (e,), "same")
  if not cfg.tie_embeddings:
    yield Tensor("lm_head.weight", ("lm_head",), (cfg.vocab_size, e), "linear")


def to_ours(array: np.ndarray, tensor: Tensor, shape: tuple) -> np.ndarray:
  """HF tensor -> our layout of `shape` (ValueError when the sizes do not fit)."""
  if tuple(array.shape) != tuple(tensor.hf_shape):
    raise ValueError(f"shape {tuple(array.shape)} != {tensor.hf_shape}")
  return (array.T if tensor.layout == "linear" else array).reshape(shape)


def to_hf(array: np.ndarray, tensor: Tensor) -> np.ndarray:
  """Our parameter -> the HF tensor (the exact inverse of `to_ours`)."""
  if tensor.layout == "linear":
    return np.ascontiguousarray(array.reshape(tensor.hf_shape[::-1]).T)
  return np.ascontiguousarray(array.reshape(tensor.hf_shape))
