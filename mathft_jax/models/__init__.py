"""Decoder models: configs and presets, Flax modules, KV cache, and HF checkpoint import."""
from mathft_jax.models.config import PRESETS, DecoderConfig, RopeScaling, preset
from mathft_jax.models.decoder import (Decoder, KVCache, abstract_params, init_cache, init_params, logical_axes,
                                       param_count)
