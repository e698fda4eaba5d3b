"""Export a params folder to a Hugging Face model folder: `mathft-export-hf --checkpoint DIR --out_dir HF_DIR`.

Writes config.json, generation_config.json, the weights as safetensors (`model.safetensors`, or shards of at
most --max_shard_size with `model.safetensors.index.json`) and the tokenizer files, so that
`transformers.AutoModelForCausalLM.from_pretrained(HF_DIR)` and `AutoTokenizer.from_pretrained(HF_DIR)` load it
as it is (and vLLM / SGLang serve it). Families: llama, qwen2, gemma (and mistral when imported from one). A model
imported from Hugging Face keeps its original config.json and generation_config.json (the dtype follows
--dtype, by default the original's); one made here gets them from its model config and tokenizer. Scanned
(`scan_layers`) and bfloat16 params are written in HF's per-layer layout. The byte vocabulary is written as an
equivalent `tokenizer.json` (byte fallback, id 0 first). Nothing is written until every check has passed, and
the folder appears whole (written beside it, then renamed).
"""
import argparse
import json
import os
import shutil
from typing import Optional

import jax
import ml_dtypes
import numpy as np

from mathft_jax.models.hf_format import (
  EXPORTABLE,
  SUPPORTED,
  HfFormatError,
  config_from_hf,
  config_to_hf,
  to_hf,
  weight_map,
)
from mathft_jax.models.params_io import MANIFEST, checkpoint_tokenizer, hf_source, load_params, model_config
from mathft_jax.text.tokenizer import SPEC_FILE, Tokenizer

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


class CheckpointExportError(HfFormatError):
  """A params folder that cannot become a Hugging Face folder; names the file and the fix."""


def _arch(cfg):
  return cfg.replace(dtype="float32", param_dtype="float32", remat="none", scan_layers=False)


def _hf_config(checkpoint: str, cfg, tokenizer: Tokenizer, dtype: str) -> tuple[dict, dict]:
  """(config.json, generation_config.json) for the export; CheckpointExportError before anything is written."""
  where = os.path.join(checkpoint, MANIFEST)
  source = hf_source(checkpoint)
  special = {"bos_token_id": tokenizer.spec.start_id, "eos_token_id": tokenizer.eos_id,
             "pad_token_id": tokenizer.pad_id}
  if "hf_config" in source:
    config = dict(source["hf_config"])
    if config.get("model_type") not in SUPPORTED or _arch(config_from_hf(config)) != _arch(cfg):
      raise CheckpointExportError(f"{where}: the model config no longer matches the Hugging Face config it was "
                                  f"imported with (hf_config); remove hf_config to export from the model config")
    config.update(dtype=dtype, torch_dtype=dtype)
  else:
    try:
      config = config_to_hf(cfg, dtype, special)
    except HfFormatError as e:
      raise CheckpointExportError(f"{where}: cannot export this model to Hugging Face: {e}. Export supports the "
                                  f"{', '.join(EXPORTABLE)} architectures; keep this model in the params format "
                                  f"(mathft-infer reads it)") from None
  generation = dict(source.get("hf_generation_config") or {k: v for k, v in special.items() if v is not None})
  return config, generation


def _byte_tokenizer_files(out_dir: str) -> None:
  """The byte vocabulary as a `tokenizers` file: ids 0-2 <s> (start and pad), </s>, <unk>; byte b is id b + 3."""
  import tokenizers
  vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{f"<0x{b:02X}>": b + 3 for b in range(256)}}
  tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
  tok.add_special_tokens(["<s>", "</s>", "<unk>"])
  tok.decoder = tokenizers.decoders.Sequence([tokenizers.decoders.ByteFallback(), tokenizers.decoders.Fuse()])
  tok.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
               "pad_token": "<s>", "unk_token": "<unk>"}, f, indent=2)


def _write_tokenizer(tokenizer: Tokenizer, out_dir: str) -> None:
  if tokenizer.kind == "byte":
    _byte_tokenizer_files(out_dir)
    return
  for name in tokenizer.spec.files:
    if name != SPEC_FILE:
      shutil.copyfile(os.path.join(tokenizer.folder, name), os.path.join(out_dir, name))


def _numpy_params(checkpoint: str, cfg) -> dict:
  """Params on the host as numpy, in the per-layer layout (a scanned `layers` tree is split into layer_i)."""
  _, params = load_params(checkpoint)
  params = jax.device_get(params)
  if cfg.scan_layers:
    stacked = params.pop("layers")
    for i in range(cfg.num_layers):
      params[f"layer_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
  return params


def _write_weights(params: dict, cfg, out_dir: str, dtype: str, max_shard_bytes: int) -> None:
  from safetensors.numpy import save_file
  shards, current, size = [], {}, 0
  for tensor in weight_map(cfg.replace(scan_layers=False)):
    value = params
    for key in tensor.path:
      value = value[key]
    array = to_hf(np.asarray(value), tensor).astype(DTYPES[dtype])
    if current and size + array.nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[tensor.hf_name] = array
    size += array.nbytes
  shards.append(current)
  if len(shards) == 1:
    save_file(shards[0], os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    return
  index = {"metadata": {"total_size": sum(a.nbytes for s in shards for a in s.values())}, "weight_map": {}}
  for i, shard in enumerate(shards, 1):
    name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
    index["weight_map"].update({k: name for k in shard})
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
    json.dump(index, f, indent=2)


def export_hf(checkpoint: str, out_dir: str, dtype: Optional[str] = None, max_shard_bytes: int = 5 * 10**9,
              overwrite: bool = False) -> str:
  """Params folder `checkpoint` -> Hugging Face folder `out_dir` (see the module doc); returns out_dir."""
  cfg = model_config(checkpoint)
  tokenizer = checkpoint_tokenizer(checkpoint)
  source_dtype = (hf_source(checkpoint).get("hf_config") or {})
  dtype = dtype or source_dtype.get("dtype") or source_dtype.get("torch_dtype") or cfg.param_dtype
  if dtype not in DTYPES:
    raise CheckpointExportError(f"dtype {dtype!r}: expected one of {sorted(DTYPES)}")
  config, generation = _hf_config(checkpoint, cfg, tokenizer, dtype)
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
  tmp = f"{out_dir.rstrip('/')}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  _write_weights(_numpy_params(checkpoint, cfg), cfg, tmp, dtype, max_shard_bytes)
  for name, content in (("config.json", config), ("generation_config.json", generation)):
    with open(os.path.join(tmp, name), "w") as f:
      json.dump(content, f, indent=2)
  _write_tokenizer(tokenizer, tmp)
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(tmp, out_dir)
  return out_dir


def _bytes(text: str) -> int:
  units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
  unit = text[-2:].upper()
  return int(float(text[:-2]) * units[unit]) if unit in units else int(text)


def main(argv: Optional[list] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, help="a params folder (e.g. RUN_DIR/ssft/export)")
  parser.add_argument("--out_dir", required=True, help="the Hugging Face folder to write")
  parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the original's)")
  parser.add_argument("--max_shard_size", default="5GB", help="largest safetensors file, e.g. 5GB or 500MB")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing out_dir")
  args = parser.parse_args(argv)
  out = export_hf(args.checkpoint, args.out_dir, args.dtype, _bytes(args.max_shard_size), args.overwrite)
  print(f"exported {args.checkpoint} to {out} (transformers: AutoModelForCausalLM.from_pretrained({out!r}))")


if __name__ == "__main__":
  main()
