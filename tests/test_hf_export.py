"""mathft-export-hf: params folder -> Hugging Face folder that transformers loads as it is.

Import -> export is bitwise (float32 and bfloat16, scanned layout, shards); a model trained here and exported gives
our logits in transformers; the byte vocabulary becomes an equivalent tokenizer.json; what cannot be exported fails
before anything is written, naming the file and the fix.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import hf_fixtures  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from mathft_jax.models import Decoder, init_params, preset  # noqa: E402
from mathft_jax.models.decoder import stack_layers  # noqa: E402
from mathft_jax.models.hf_export import CheckpointExportError, export_hf, main  # noqa: E402
from mathft_jax.models.hf_import import import_hf  # noqa: E402
from mathft_jax.models.params_io import load_params, model_config, save_params  # noqa: E402
from mathft_jax.text.tokenizer import BYTE, TokenizerError, load_tokenizer  # noqa: E402


def _tensors(folder: str) -> dict:
  out = {}
  for name in sorted(os.listdir(folder)):
    if name.endswith(".safetensors"):
      out.update(load_file(os.path.join(folder, name)))
  return out


def _assert_bitwise(a: dict, b: dict):
  assert sorted(a) == sorted(b)
  for name in a:
    assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
    assert a[name].tobytes() == b[name].tobytes(), name


def _ids(folder: str, text: str) -> list:
  return transformers.AutoTokenizer.from_pretrained(folder)(text)["input_ids"]


@pytest.mark.parametrize("family", hf_fixtures.FAMILIES)
def test_import_then_export_is_bitwise_and_loads_in_transformers(tmp_path, family):
  hf_dir, ours, back = str(tmp_path / "hf"), str(tmp_path / "ours"), str(tmp_path / "back")
  hf_fixtures.build(family, hf_dir)
  import_hf(hf_dir, ours, dtype="float32")
  main(["--checkpoint", ours, "--out_dir", back])  # the console script
  _assert_bitwise(_tensors(hf_dir), _tensors(back))
  model = transformers.AutoModelForCausalLM.from_pretrained(back)
  assert type(model).__name__ == type(transformers.AutoModelForCausalLM.from_pretrained(hf_dir)).__name__
  original, exported = (json.load(open(os.path.join(d, "config.json"))) for d in (hf_dir, back))
  assert {k: v for k, v in exported.items() if k != "torch_dtype"} == original
  text = "Problem:\nEvaluate $\\log_327$.\n\nSolution:\nWe have $3^3=27$, so $\\boxed{3}$."
  assert _ids(back, text) == _ids(hf_dir, text) == load_tokenizer(ours).prompt_ids(text)
  with pytest.raises(FileExistsError, match="already exists"):
    export_hf(ours, back)


def test_bfloat16_and_scanned_params_export_bitwise(tmp_path):
  hf_dir = str(tmp_path / "hf")
  hf_fixtures.build("llama", hf_dir, torch_dtype="bfloat16")
  original = _tensors(hf_dir)
  assert {a.dtype.name for a in original.values()} == {"bfloat16"}
  for param_dtype in ("float32", "bfloat16"):  # stored as float32 (default) or as bfloat16: both give the original
    ours = str(tmp_path / f"ours_{param_dtype}")
    import_hf(hf_dir, ours, param_dtype=param_dtype)
    _assert_bitwise(original, _tensors(export_hf(ours, str(tmp_path / f"back_{param_dtype}"))))
  # the scan layout (params stacked on a leading layers axis) exports in HF's per-layer layout
  cfg, params = load_params(str(tmp_path / "ours_float32"))
  scanned = str(tmp_path / "scanned")
  hf = {"hf_config": json.load(open(f"{hf_dir}/config.json"))}
  save_params(stack_layers(params, cfg.num_layers), cfg.replace(scan_layers=True), scanned,
              load_tokenizer(str(tmp_path / "ours_float32")), hf=hf)
  assert model_config(scanned).scan_layers
  _assert_bitwise(original, _tensors(export_hf(scanned, str(tmp_path / "back_scanned"))))
  # float32 on request
  exported = _tensors(export_hf(scanned, str(tmp_path / "back_f32"), dtype="float32"))
  assert {a.dtype.name for a in exported.values()} == {"float32"}


def _our_logits(checkpoint: str, tokens: np.ndarray) -> np.ndarray:
  cfg, params = load_params(checkpoint)
  logits, _ = Decoder(cfg.replace(dtype="float32")).apply({"params": params}, jnp.asarray(tokens))
  return np.asarray(logits)


def _hf_logits(folder: str, tokens: np.ndarray) -> np.ndarray:
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens)).logits.numpy()


def test_a_model_trained_here_exports_with_our_logits_in_shards(tmp_path):
  from mathft_jax.training.optim import OptimizerConfig, ScheduleConfig
  from mathft_jax.training.token_source import RandomTokenSource
  from mathft_jax.training.train import train
  from mathft_jax.training.train_config import TrainingConfig
  hf_dir, init = str(tmp_path / "hf"), str(tmp_path / "init")
  hf_fixtures.build("qwen2", hf_dir)
  import_hf(hf_dir, init, dtype="float32")
  train(model_dir=str(tmp_path / "run"), model_config=model_config(init), initial_checkpoint_path=init,
        train_data=RandomTokenSource(batch_size=8, length=32, vocab_size=500, seed=3), train_steps=3,
        training=TrainingConfig(OptimizerConfig(schedule=ScheduleConfig(peak=1e-2)), checkpoint_every=3))
  trained = str(tmp_path / "run" / "export")
  back = export_hf(trained, str(tmp_path / "back"), max_shard_bytes=40_000)
  files = sorted(f for f in os.listdir(back) if f.endswith(".safetensors"))
  assert len(files) > 1 and os.path.exists(os.path.join(back, "model.safetensors.index.json"))
  tokens = np.random.default_rng(0).integers(0, 512, (2, 24))
  ours = _our_logits(trained, tokens)
  assert np.abs(ours - _hf_logits(back, tokens)).max() < 1e-4
  assert np.abs(ours - _our_logits(init, tokens)).max() > 1e-2  # training changed the model


@pytest.mark.parametrize("family,cfg", [
    ("llama", preset("tiny", {"num_layers": 2})),
    ("gemma", preset("tiny_gemma", {"num_layers": 2})),
    ("qwen2", preset("tiny", {"num_layers": 2, "qkv_bias": True, "tie_embeddings": True}))], ids=lambda x: str(x)[:6])
def test_models_made_here_export_with_an_equivalent_byte_tokenizer(tmp_path, family, cfg):
  """No Hugging Face config to start from: config.json comes from the model config; the byte vocabulary becomes a
  tokenizer.json that gives our ids."""
  params = jax.tree_util.tree_map(lambda x: x + 0.05 * np.random.default_rng(1).standard_normal(x.shape, np.float32),
                                  init_params(cfg, jax.random.PRNGKey(3)))  # zero-initialised biases matter
  ours = save_params(params, cfg, str(tmp_path / "ours"), BYTE)
  back = export_hf(ours, str(tmp_path / "back"))
  assert json.load(open(os.path.join(back, "config.json")))["model_type"] == family
  text = "Problem:\nWhat is 3 + 4 + ünï?\n\nSolution:\n"
  # (AutoTokenizer would load it too, but for model_type qwen2 transformers imposes Qwen2Tokenizer, which rebuilds
  # a byte-level BPE around the vocabulary: README, "Real checkpoints".)
  hf_tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(back)
  ids = hf_tokenizer(text)["input_ids"]
  assert ids == BYTE.prompt_ids(text)
  assert hf_tokenizer.decode(ids[1:]) == text
  tokens = np.asarray([ids])
  assert np.abs(_our_logits(ours, tokens) - _hf_logits(back, tokens)).max() < 1e-4


def test_what_cannot_be_exported_fails_before_writing(tmp_path):
  cfg = preset("tiny_palm", {"num_layers": 1})
  palm = save_params(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(tmp_path / "palm"), BYTE)
  with pytest.raises(CheckpointExportError, match=r"palm/checkpoint.json: cannot export .*parallel_block=True.*"
                                                   r"keep this model in the params format"):
    export_hf(palm, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out") and not any(".tmp-" in n for n in os.listdir(tmp_path))
  legacy = tmp_path / "legacy"  # a params folder from before models carried their tokenizer
  os.makedirs(legacy)
  cfg = preset("tiny", {"num_layers": 1})
  json.dump(cfg.to_dict(), open(legacy / "model_config.json", "w"))
  with pytest.raises(TokenizerError, match=r"legacy/checkpoint.json: this params folder records no tokenizer.*"
                                           r"tokenizer='byte'"):
    export_hf(str(legacy), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
