"""Import a local Hugging Face model folder (config.json + *.safetensors + its tokenizer) as a params folder.

    mathft-import-hf --hf_dir /ckpt/Qwen2.5-1.5B --out_dir /ckpt/qwen2_5_1_5b_init

Supported `model_type`s: llama (incl. Llama-3/3.1), mistral (without sliding window), qwen2, gemma. Tensors are
read with `safetensors` as numpy arrays (no torch); sharded checkpoints are found through
`model.safetensors.index.json`. Every expected tensor must be present with the expected shape and every tensor in
the files must be used, else `CheckpointImportError` names the tensor and its file. The tokenizer files
(tokenizer.json / tokenizer.model, tokenizer_config.json, ...) are copied into the params folder with their spec
(`mathft_jax.text.tokenizer`), and config.json / generation_config.json are kept in its manifest for `mathft-export-hf`.
"""
import argparse
import json
import os
from typing import Optional

import numpy as np
from safetensors import safe_open

from mathft_jax.models.decoder import abstract_params
from mathft_jax.models.hf_format import HfFormatError, config_from_hf, to_ours, weight_map
from mathft_jax.models.params_io import save_params
from mathft_jax.text.tokenizer import load_tokenizer

_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointImportError(HfFormatError):
  """The HF folder cannot be mapped onto our model; the message names the file and tensor."""


def _tensor_files(hf_dir: str) -> dict[str, str]:
  """Tensor name -> safetensors file path, from the shard index or the single file."""
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map_ = json.load(f)["weight_map"]
    return {name: os.path.join(hf_dir, fname) for name, fname in weight_map_.items()}
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


def _read_config(hf_dir: str, name: str = "config.json") -> Optional[dict]:
  path = os.path.join(hf_dir, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_hf_checkpoint(hf_dir: str, dtype: str = "float32", param_dtype: str = "float32"):
  """Reads config.json and the safetensors shards of `hf_dir`; returns (config, params as numpy arrays)."""
  hf_config = _read_config(hf_dir)
  if hf_config is None:
    raise CheckpointImportError(f"{os.path.join(hf_dir, 'config.json')}: not found (expected a Hugging Face model "
                                f"folder)")
  try:
    cfg = config_from_hf(hf_config, dtype=dtype, param_dtype=param_dtype)
  except HfFormatError as e:
    raise CheckpointImportError(str(e)) from None
  shapes = abstract_params(cfg)
  files = _tensor_files(hf_dir)
  unused = {n for n in files if not n.endswith(_IGNORED_SUFFIXES)}
  if cfg.tie_embeddings:
    unused.discard("lm_head.weight")  # some tied checkpoints store the shared matrix twice
  handles = {}
  params: dict = {}
  try:
    for tensor in weight_map(cfg):
      path = "/".join(tensor.path)
      if tensor.hf_name not in files:
        raise CheckpointImportError(f"{hf_dir}: tensor {tensor.hf_name!r} is missing (needed for {path})")
      fname = files[tensor.hf_name]
      if fname not in handles:
        handles[fname] = safe_open(fname, framework="numpy")
      array = handles[fname].get_tensor(tensor.hf_name)
      shape = tuple(_get(shapes, tensor.path).value.shape)
      try:
        value = to_ours(array, tensor, shape)
      except ValueError:
        raise CheckpointImportError(f"{fname}: tensor {tensor.hf_name!r} has shape {tuple(array.shape)}, which "
                                    f"does not fit {path} of shape {shape} implied by config.json") from None
      _set(params, tensor.path, np.ascontiguousarray(value.astype(param_dtype)))
      unused.discard(tensor.hf_name)
  finally:
    handles.clear()
  if unused:
    names = sorted(unused)
    raise CheckpointImportError(f"{hf_dir}: {len(names)} tensors are not used by the {cfg.num_layers}-layer model, "
                                f"e.g. {names[:3]} in {files[names[0]]}")
  return cfg, params


def import_hf(hf_dir: str, out_dir: str, tokenizer_dir: Optional[str] = None, dtype: str = "bfloat16",
              param_dtype: str = "float32", overwrite: bool = False) -> str:
  """HF folder -> params folder with its tokenizer (from `tokenizer_dir`, default `hf_dir`); returns out_dir.
  The tokenizer is read and checked against the model before any weight is."""
  tokenizer = load_tokenizer(tokenizer_dir or hf_dir)
  cfg, params = load_hf_checkpoint(hf_dir, dtype=dtype, param_dtype=param_dtype)
  hf = {"hf_config": _read_config(hf_dir), "hf_generation_config": _read_config(hf_dir, "generation_config.json")}
  return save_params(params, cfg, out_dir, tokenizer, overwrite=overwrite, hf=hf,
                     provenance={"imported_from": os.path.abspath(hf_dir)})


def main(argv: Optional[list] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--hf_dir", required=True, help="local HF folder: config.json + *.safetensors + tokenizer")
  parser.add_argument("--out_dir", required=True, help="the params folder to write")
  parser.add_argument("--tokenizer_dir", default=None, help="folder of the tokenizer files, if not in --hf_dir")
  parser.add_argument("--dtype", default="bfloat16", help="compute dtype recorded in the model config")
  parser.add_argument("--param_dtype", default="float32", help="dtype the parameters are stored in")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint in out_dir")
  args = parser.parse_args(argv)
  out = import_hf(args.hf_dir, args.out_dir, args.tokenizer_dir, args.dtype, args.param_dtype, args.overwrite)
  from mathft_jax.models.params_io import checkpoint_tokenizer, model_config
  cfg, tokenizer = model_config(out), checkpoint_tokenizer(out)
  print(f"imported {args.hf_dir} ({cfg.num_layers} layers) into {out}, with its {tokenizer.kind} tokenizer: "
        f"{tokenizer.vocab_size} tokens, start id {tokenizer.spec.start_id}, EOS {tokenizer.eos_id}")


if __name__ == "__main__":
  main()
