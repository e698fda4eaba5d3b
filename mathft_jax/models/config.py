"""Decoder architecture config and the named presets (tiny, Llama-3, Qwen2.5, Gemma, PaLM-style).

One frozen dataclass describes every supported family; the presets are the single source of the real sizes
(gin files under `mathft_jax/gin/models/` name a preset and may override fields).
"""
import dataclasses
from typing import Any, Optional

ACTIVATIONS = ("silu", "gelu", "gelu_tanh")
NORMS = ("rms", "layer")
# Activation checkpointing per block: "none" keeps every activation; "full" recomputes the whole block in the
# backward pass; "dots" saves matmul outputs; "dots_no_batch" saves only matmuls without batch dims (weights-like);
# "qkv_mlp" saves the named q/k/v projections and the MLP hidden (recomputes attention and norms).
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "qkv_mlp")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Context-extension rescaling of RoPE frequencies.

  kind: "linear" (positions / factor) or "llama3" (Llama-3.1's wavelength-dependent smoothing).
  """
  kind: str = "llama3"
  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position: int = 8192

  def __post_init__(self):
    if self.kind not in ("linear", "llama3"):
      raise ValueError(f"unsupported RoPE scaling kind {self.kind!r}; expected 'linear' or 'llama3'")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """A decoder-only transformer.

  Attributes:
    vocab_size: rows of the embedding table (may exceed the tokenizer's size).
    d_model: residual width.
    num_layers: transformer blocks.
    num_heads / num_kv_heads: query heads and key/value heads (kv < q is grouped-query, 1 is multi-query).
    head_dim: per-head width, independent of d_model (Gemma).
    mlp_dim: hidden width of the gated MLP.
    activation: gate nonlinearity: "silu" (SwiGLU), "gelu_tanh" (GeGLU as in Gemma) or exact "gelu".
    norm: "rms" or "layer" (LayerNorm without bias, PaLM); norm_plus_one scales by (1 + w) (Gemma).
    qkv_bias / out_bias: biases on the q/k/v projections (Qwen2) and on the output projection.
    tie_embeddings: the output projection is the transposed input embedding.
    scale_embeddings: multiply embeddings by sqrt(d_model) (Gemma).
    parallel_block: attention and MLP read the same normalized input and are summed (PaLM).
    rope_theta / rope_scaling: rotary embedding base and optional context-extension scaling.
    dtype: compute dtype of activations ("bfloat16" on accelerators); param_dtype: storage dtype of params.
    remat: activation checkpointing policy per block, one of REMAT_POLICIES (True/False read as "full"/"none").
    scan_layers: run the blocks with `nn.scan` over one stacked parameter tree (leading "layers" axis): one
      compiled block instead of num_layers, so compile time stops growing with depth. Exports are always
      unstacked (`layer_0`..), so checkpoints move between the two layouts.
  """
  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  activation: str = "silu"
  norm: str = "rms"
  norm_eps: float = 1e-6
  norm_plus_one: bool = False
  qkv_bias: bool = False
  out_bias: bool = False
  tie_embeddings: bool = False
  scale_embeddings: bool = False
  parallel_block: bool = False
  rope_theta: float = 10_000.0
  rope_scaling: Optional[RopeScaling] = None
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = False

  def __post_init__(self):
    if isinstance(self.remat, bool):  # older model_config.json files and overrides say True/False
      object.__setattr__(self, "remat", "full" if self.remat else "none")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")

  def replace(self, **changes: Any) -> "DecoderConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "DecoderConfig":
    d = dict(d)
    if d.get("rope_scaling") is not None:
      d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    return cls(**d)


# Byte-level tiny model of the embedded default: 259 byte-vocabulary ids, padded to 384 rows.
_TINY = DecoderConfig(vocab_size=384, d_model=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                      mlp_dim=384)

PRESETS: dict[str, DecoderConfig] = {
    "tiny": _TINY,
    "tiny_gemma": _TINY.replace(activation="gelu_tanh", norm_plus_one=True, tie_embeddings=True,
                                scale_embeddings=True, num_kv_heads=1, head_dim=48),
    "tiny_palm": _TINY.replace(norm="layer", parallel_block=True, tie_embeddings=True, num_kv_heads=1),
    "llama3_8b": DecoderConfig(vocab_size=128_256, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                               head_dim=128, mlp_dim=14_336, norm_eps=1e-5, rope_theta=500_000.0,
                               dtype="bfloat16"),
    "llama3_1_8b": DecoderConfig(vocab_size=128_256, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8,
                                 head_dim=128, mlp_dim=14_336, norm_eps=1e-5, rope_theta=500_000.0,
                                 rope_scaling=RopeScaling(), dtype="bfloat16"),
    "qwen2_5_1_5b": DecoderConfig(vocab_size=151_936, d_model=1536, num_layers=28, num_heads=12, num_kv_heads=2,
                                  head_dim=128, mlp_dim=8960, qkv_bias=True, tie_embeddings=True,
                                  rope_theta=1_000_000.0, dtype="bfloat16"),
    "qwen2_5_7b": DecoderConfig(vocab_size=152_064, d_model=3584, num_layers=28, num_heads=28, num_kv_heads=4,
                                head_dim=128, mlp_dim=18_944, qkv_bias=True, rope_theta=1_000_000.0,
                                dtype="bfloat16"),
    "gemma_2b": DecoderConfig(vocab_size=256_000, d_model=2048, num_layers=18, num_heads=8, num_kv_heads=1,
                              head_dim=256, mlp_dim=16_384, activation="gelu_tanh", norm_plus_one=True,
                              tie_embeddings=True, scale_embeddings=True, dtype="bfloat16"),
    "gemma_7b": DecoderConfig(vocab_size=256_000, d_model=3072, num_layers=28, num_heads=16, num_kv_heads=16,
                              head_dim=256, mlp_dim=24_576, activation="gelu_tanh", norm_plus_one=True,
                              tie_embeddings=True, scale_embeddings=True, dtype="bfloat16"),
    # PaLM-style ~1B (parallel block, multi-query, shared embeddings, no biases); no public weights.
    "palm_1b": DecoderConfig(vocab_size=256_000, d_model=2048, num_layers=16, num_heads=16, num_kv_heads=1,
                             head_dim=128, mlp_dim=8192, norm="layer", parallel_block=True, tie_embeddings=True,
                             dtype="bfloat16"),
}


def preset(name: str, overrides: Optional[dict] = None) -> DecoderConfig:
  """Returns the named preset with optional field overrides (e.g. {"dtype": "float32", "remat": True})."""
  if name not in PRESETS:
    raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name].replace(**(overrides or {}))
