"""Import a local Hugging Face checkpoint folder (config.json + *.safetensors) into our parameter tree.

Supported `model_type`s: llama (incl. Llama-3/3.1), mistral (without sliding window), qwen2, gemma. Tensors are
read with `safetensors` as numpy arrays (no torch); sharded checkpoints are found through
`model.safetensors.index.json`. Every expected tensor must be present with the expected shape and every tensor in
the files must be used, else `CheckpointImportError` names the tensor and its file.

    mathft-import-hf --hf_dir /ckpt/Qwen2.5-1.5B --out_dir gs://bucket/qwen2_5_1_5b_init
"""
import argparse
import json
import os
from typing import Callable, Iterator, Optional

import flax.linen as nn
import jax
import numpy as np
from safetensors import safe_open

from mathft_jax.models.config import DecoderConfig, RopeScaling
from mathft_jax.models.decoder import abstract_params

SUPPORTED = ("llama", "mistral", "qwen2", "gemma")
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointImportError(ValueError):
  """The HF folder cannot be mapped onto our model; the message names the file and tensor."""


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
  raise CheckpointImportError(f"config.json: unsupported RoPE scaling type {kind!r} (supported: linear, llama3)")


def config_from_hf(hf: dict, dtype: str = "float32", param_dtype: str = "float32") -> DecoderConfig:
  """Maps an HF config.json dict to a DecoderConfig; unsupported architectures raise CheckpointImportError."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED:
    raise CheckpointImportError(f"config.json: unsupported model_type {model_type!r}; supported: {SUPPORTED}")
  if hf.get("mlp_bias"):
    raise CheckpointImportError("config.json: mlp_bias=true is not supported")
  if hf.get("use_sliding_window") or (model_type == "mistral" and hf.get("sliding_window")):
    raise CheckpointImportError("config.json: sliding-window attention is not supported")
  heads = hf["num_attention_heads"]
  act = hf.get("hidden_activation") or hf.get("hidden_act", "silu")
  gemma = model_type == "gemma"
  if gemma:
    act = "gelu_tanh" if act in ("gelu", "gelu_pytorch_tanh", "gelu_new") else act  # HF maps legacy "gelu" too
  activation = {"silu": "silu", "gelu_tanh": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}.get(act)
  if activation is None:
    raise CheckpointImportError(f"config.json: unsupported activation {act!r}")
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


# (HF name, our path, HF-to-ours transform). Transforms get the array and our target shape.
Mapping = tuple[str, tuple[str, ...], Callable[[np.ndarray, tuple], np.ndarray]]


def _same(w, shape):
  return w


def _linear(w, shape):  # HF Linear stores [out, in]; ours is [in, ...out dims] or [...in dims, out]
  return w.T.reshape(shape)


def _weight_map(cfg: DecoderConfig) -> Iterator[Mapping]:
  yield "model.embed_tokens.weight", ("embedding",), _same
  yield "model.norm.weight", ("final_norm", "scale"), _same
  if not cfg.tie_embeddings:
    yield "lm_head.weight", ("lm_head",), _linear
  for i in range(cfg.num_layers):
    hf, ours = f"model.layers.{i}", f"layer_{i}"
    yield f"{hf}.input_layernorm.weight", (ours, "attn_norm", "scale"), _same
    if not cfg.parallel_block:
      yield f"{hf}.post_attention_layernorm.weight", (ours, "mlp_norm", "scale"), _same
    for name in ("q", "k", "v", "o"):
      yield f"{hf}.self_attn.{name}_proj.weight", (ours, "attn", f"{name}_kernel"), _linear
    if cfg.qkv_bias:
      for name in ("q", "k", "v"):
        yield f"{hf}.self_attn.{name}_proj.bias", (ours, "attn", f"{name}_bias"), lambda w, s: w.reshape(s)
    if cfg.out_bias:
      yield f"{hf}.self_attn.o_proj.bias", (ours, "attn", "o_bias"), _same
    for name in ("gate", "up", "down"):
      yield f"{hf}.mlp.{name}_proj.weight", (ours, "mlp", f"{name}_kernel"), _linear


def _tensor_files(hf_dir: str) -> dict[str, str]:
  """Tensor name -> safetensors file path, from the shard index or the single file."""
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    return {name: os.path.join(hf_dir, fname) for name, fname in weight_map.items()}
  files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
  if not files:
    raise CheckpointImportError(f"{hf_dir}: no *.safetensors files (PyTorch .bin checkpoints are not read)")
  out = {}
  for fname in files:
    with safe_open(os.path.join(hf_dir, fname), framework="numpy") as f:
      out.update({name: os.path.join(hf_dir, fname) for name in f.keys()})
  return out


def _set(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def load_hf_checkpoint(hf_dir: str, dtype: str = "float32",
                       param_dtype: str = "float32") -> tuple[DecoderConfig, dict]:
  """Reads config.json and the safetensors shards of `hf_dir`; returns (config, params as numpy arrays)."""
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointImportError(f"{config_path}: not found (expected a Hugging Face model folder)")
  with open(config_path) as f:
    cfg = config_from_hf(json.load(f), dtype=dtype, param_dtype=param_dtype)
  shapes = abstract_params(cfg)
  files = _tensor_files(hf_dir)
  unused = {n for n in files if not n.endswith(_IGNORED_SUFFIXES)}
  if cfg.tie_embeddings:
    unused.discard("lm_head.weight")  # some tied checkpoints store the shared matrix twice
  handles = {}
  params: dict = {}
  try:
    for hf_name, path, transform in _weight_map(cfg):
      if hf_name not in files:
        raise CheckpointImportError(f"{hf_dir}: tensor {hf_name!r} is missing (needed for {'/'.join(path)})")
      fname = files[hf_name]
      if fname not in handles:
        handles[fname] = safe_open(fname, framework="numpy")
      array = handles[fname].get_tensor(hf_name)
      shape = tuple(_get(shapes, path).value.shape)
      try:
        value = transform(array, shape)
      except ValueError:
        value = None
      if value is None or value.shape != shape:
        raise CheckpointImportError(f"{fname}: tensor {hf_name!r} has shape {tuple(array.shape)}, which does not "
                                    f"fit {'/'.join(path)} of shape {shape} implied by config.json")
      _set(params, path, np.ascontiguousarray(value.astype(param_dtype)))
      unused.discard(hf_name)
  finally:
    handles.clear()
  if unused:
    names = sorted(unused)
    raise CheckpointImportError(f"{hf_dir}: {len(names)} tensors are not used by the {cfg.num_layers}-layer model, "
                                f"e.g. {names[:3]} in {files[names[0]]}")
  return cfg, params


def save_params(params: dict, cfg: DecoderConfig, out_dir: str, overwrite: bool = False) -> str:
  """Writes params as an orbax checkpoint `out_dir/params` and the config as `out_dir/model_config.json`.

  An existing checkpoint is kept (FileExistsError) unless `overwrite`.
  """
  import orbax.checkpoint as ocp  # imported here so model code does not pay for orbax at import time
  out_dir = os.path.abspath(out_dir) if "://" not in out_dir else out_dir
  os.makedirs(out_dir, exist_ok=True)
  target = os.path.join(out_dir, "params")
  if os.path.exists(target) and not overwrite:
    raise FileExistsError(f"{target} already exists; pass --overwrite (or overwrite=True) to replace it")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, params, force=overwrite)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:  # orbax coordinates the arrays across hosts; one host writes the config
    tmp = os.path.join(out_dir, f"model_config.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
      json.dump(cfg.to_dict(), f, indent=2)
    os.replace(tmp, os.path.join(out_dir, "model_config.json"))
  return out_dir


def load_params(out_dir: str, mesh=None) -> tuple[DecoderConfig, dict]:
  """Reads what `save_params` wrote: (config, params as jax arrays).

  With a `jax.sharding.Mesh`, each array is restored straight into its shards by the logical-axis rules (a model
  larger than one device's memory never lands whole on one device); without one, onto this host's first device
  (so each host of a multi-host job gets its own copy, as per-host inference wants).
  """
  import orbax.checkpoint as ocp
  out_dir = os.path.abspath(out_dir) if "://" not in out_dir else out_dir
  with open(os.path.join(out_dir, "model_config.json")) as f:
    cfg = DecoderConfig.from_dict(json.load(f))
  boxed = abstract_params(cfg)
  if mesh is not None:
    from mathft_jax import partitioning
    shardings = partitioning.boxed_to_sharding(boxed, mesh)
  else:
    shardings = jax.tree_util.tree_map(lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
                                       nn.unbox(boxed))
  target = jax.tree_util.tree_map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                                  nn.unbox(boxed), shardings)
  return cfg, ocp.StandardCheckpointer().restore(os.path.join(out_dir, "params"), target)


def main(argv: Optional[list] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--hf_dir", required=True, help="local HF folder: config.json + *.safetensors")
  parser.add_argument("--out_dir", required=True, help="where to write params/ (orbax) and model_config.json")
  parser.add_argument("--dtype", default="bfloat16", help="compute dtype recorded in the model config")
  parser.add_argument("--param_dtype", default="float32", help="dtype the parameters are stored in")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in out_dir")
  args = parser.parse_args(argv)
  cfg, params = load_hf_checkpoint(args.hf_dir, dtype=args.dtype, param_dtype=args.param_dtype)
  out = save_params(params, cfg, args.out_dir, overwrite=args.overwrite)
  count = sum(v.size for v in _leaves(params))
  print(f"imported {count:,} parameters ({cfg.num_layers} layers) from {args.hf_dir} into {out}")


def _leaves(tree):
  for v in tree.values():
    yield from (_leaves(v) if isinstance(v, dict) else [v])


if __name__ == "__main__":
  main()
