"""The params folder: what `mathft-import-hf` and the trainer's export write, and what every binary reads.

Layout of a params folder DIR:
  DIR/params/          orbax checkpoint of the parameter tree (unstacked unless the config says scan_layers)
  DIR/tokenizer/       the tokenizer files the model was made with, and their spec (`mathft_jax.text.tokenizer`)
  DIR/checkpoint.json  the manifest, written last: {"model_config", "tokenizer" (its spec, special ids and
                       evaluator label ids, or null), "hf_config"/"hf_generation_config" (the Hugging Face files
                       the model was imported from, for the way back), "provenance"}
Folders written before the manifest existed hold `model_config.json` alone: they load, but have no tokenizer.
"""
from typing import Optional

import flax.linen as nn
import jax

from mathft_jax import run_io
from mathft_jax.models.config import DecoderConfig
from mathft_jax.models.decoder import abstract_params
from mathft_jax.text.tokenizer import Tokenizer, TokenizerError, load_tokenizer

MANIFEST = "checkpoint.json"
LEGACY_CONFIG = "model_config.json"


def is_params_folder(path: str) -> bool:
  """Whether `path` holds a finished params folder (its manifest, or a legacy model_config.json)."""
  return run_io.exists(run_io.join(path, MANIFEST)) or run_io.exists(run_io.join(path, LEGACY_CONFIG))


def read_manifest(path: str) -> dict:
  """DIR/checkpoint.json, or {"model_config": ..., "tokenizer": None} for a legacy folder."""
  manifest = run_io.join(path, MANIFEST)
  if run_io.exists(manifest):
    return run_io.read_json(manifest)
  legacy = run_io.join(path, LEGACY_CONFIG)
  if run_io.exists(legacy):
    return {"model_config": run_io.read_json(legacy), "tokenizer": None}
  raise FileNotFoundError(f"{manifest}: not found; {path} is not a params folder (mathft-import-hf and mathft-train "
                          f"write them; a training run's is MODEL_DIR/export)")


def model_config(path: str) -> DecoderConfig:
  return DecoderConfig.from_dict(read_manifest(path)["model_config"])


def from_checkpoint(path: str, overrides: Optional[dict] = None) -> DecoderConfig:
  """The model config a params folder records, with optional field overrides (gin: `models/from_checkpoint.gin`)."""
  return model_config(path).replace(**(overrides or {}))


def check_vocab_fits(tokenizer: Tokenizer, cfg: DecoderConfig, where: str) -> None:
  if tokenizer.vocab_size > cfg.vocab_size:
    raise TokenizerError(f"{where}: the {tokenizer} has {tokenizer.vocab_size} tokens but the model only "
                         f"{cfg.vocab_size} embedding rows; use the model's own tokenizer")


def checkpoint_tokenizer(path: str, explicit=None) -> Tokenizer:
  """The tokenizer params folder `path` was made with. `explicit` (a tokenizer source or a Tokenizer) must be the
  same one; for a folder that records none (written before tokenizers travelled with models) it is required."""
  given = load_tokenizer(explicit) if isinstance(explicit, str) else explicit
  recorded = read_manifest(path).get("tokenizer")
  if recorded is None:
    if given is None:
      raise TokenizerError(
          f"{run_io.join(path, MANIFEST)}: this params folder records no tokenizer (it was written before models "
          f"carried theirs). Pass the tokenizer it was made with: tokenizer='byte' for a byte-level model made "
          f"here, or the Hugging Face folder it was imported from (or re-import it with mathft-import-hf)")
    tokenizer = given
  else:
    tokenizer = load_tokenizer(run_io.join(path, "tokenizer"))
    if tokenizer.fingerprint != recorded["fingerprint"]:
      raise TokenizerError(f"{run_io.join(path, 'tokenizer')}: the tokenizer files are not the ones "
                           f"{run_io.join(path, MANIFEST)} records (fingerprint {tokenizer.fingerprint[:12]} vs "
                           f"{recorded['fingerprint'][:12]})")
    if given is not None and given != tokenizer:
      raise TokenizerError(f"the tokenizer given ({given}) is not the one {path} was made with ({tokenizer}); "
                           f"drop the explicit tokenizer to use the checkpoint's")
  check_vocab_fits(tokenizer, model_config(path), path)
  return tokenizer


def starting_tokenizer(initial_checkpoint_path: Optional[str], tokenizer=None) -> Tokenizer:
  """The tokenizer of a model that starts from the params folder `initial_checkpoint_path` (its own; `tokenizer`
  must be the same), or is trained from scratch (`tokenizer`, by default the byte vocabulary)."""
  if initial_checkpoint_path:
    return checkpoint_tokenizer(initial_checkpoint_path, tokenizer)
  return tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer or "byte")


def save_params(params: dict, cfg: DecoderConfig, out_dir: str, tokenizer: Tokenizer, overwrite: bool = False,
                hf: Optional[dict] = None, provenance: Optional[dict] = None) -> str:
  """Writes a params folder (see the module doc): params, then the tokenizer, then the manifest.

  hf: {"hf_config": ..., "hf_generation_config": ...} of the Hugging Face model it descends from (carried along
  so that the export keeps the original settings). An existing folder is kept (FileExistsError) unless `overwrite`.
  """
  import orbax.checkpoint as ocp  # imported here so model code does not pay for orbax at import time
  check_vocab_fits(tokenizer, cfg, out_dir)
  out_dir = run_io.absolute(out_dir)
  run_io.makedirs(out_dir)
  target = run_io.join(out_dir, "params")
  if run_io.exists(target) and not overwrite:
    raise FileExistsError(f"{target} already exists; pass --overwrite (or overwrite=True) to replace it")
  if jax.process_index() == 0 and run_io.exists(run_io.join(out_dir, MANIFEST)):
    run_io.path(run_io.join(out_dir, MANIFEST)).unlink()  # an overwritten folder is unfinished until a new manifest
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, params, force=overwrite)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:  # orbax coordinates the arrays across hosts; one host writes the rest
    tokenizer.save(run_io.join(out_dir, "tokenizer"))
    manifest = {"model_config": cfg.to_dict(), "tokenizer": tokenizer.record(), **(hf or {}),
                "provenance": provenance or {}}
    run_io.write_json(run_io.join(out_dir, MANIFEST), manifest, indent=2)
  return out_dir


def hf_source(path: str) -> dict:
  """{"hf_config", "hf_generation_config"} a params folder carries (empty for models made here)."""
  manifest = read_manifest(path)
  return {k: manifest[k] for k in ("hf_config", "hf_generation_config") if manifest.get(k) is not None}


def load_params(out_dir: str, mesh=None) -> tuple[DecoderConfig, dict]:
  """Reads the params of a params folder: (config, params as jax arrays).

  With a `jax.sharding.Mesh`, each array is restored straight into its shards by the logical-axis rules (a model
  larger than one device's memory never lands whole on one device); without one, onto this host's first device
  (so each host of a multi-host job gets its own copy, as per-host inference wants).
  """
  import orbax.checkpoint as ocp
  out_dir = run_io.absolute(out_dir)
  cfg = model_config(out_dir)
  boxed = abstract_params(cfg)
  if mesh is not None:
    from mathft_jax import partitioning
    shardings = partitioning.boxed_to_sharding(boxed, mesh)
  else:
    shardings = jax.tree_util.tree_map(lambda _: jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
                                       nn.unbox(boxed))
  target = jax.tree_util.tree_map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                                  nn.unbox(boxed), shardings)
  return cfg, ocp.StandardCheckpointer().restore(run_io.join(out_dir, "params"), target)
