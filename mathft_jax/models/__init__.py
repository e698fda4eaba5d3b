"""Decoder models: configs and presets (`config`), Flax modules (`layers`, `decoder`), the params folder every binary
reads (`params_io`), and the way in from and back to Hugging Face (`hf_format`, `hf_import`, `hf_export`)."""
from mathft_jax.models.config import PRESETS, DecoderConfig, RopeScaling, preset
from mathft_jax.models.decoder import (
                                       Decoder,
                                       KVCache,
                                       abstract_params,
                                       init_cache,
                                       init_params,
                                       logical_axes,
                                       param_count,
)

__all__ = ["PRESETS", "Decoder", "DecoderConfig", "KVCache", "RopeScaling", "abstract_params", "init_cache",
           "init_params", "logical_axes", "param_count", "preset"]
