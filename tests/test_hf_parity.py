"""Imported tiny random HF models (Llama, Qwen2, Gemma) give the same logits as transformers, full and cached."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mathft_jax.models import Decoder, init_cache  # noqa: E402
from mathft_jax.models.hf_import import CheckpointImportError, load_hf_checkpoint, main  # noqa: E402
from mathft_jax.models.params_io import load_params, save_params  # noqa: E402
from mathft_jax.text.tokenizer import BYTE  # noqa: E402

COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              max_position_embeddings=256)


def _llama():
  return transformers.LlamaConfig(
      **COMMON, num_key_value_heads=2, rms_norm_eps=1e-5,
      rope_parameters={"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 32}), transformers.LlamaForCausalLM


def _qwen2():
  return transformers.Qwen2Config(**COMMON, num_key_value_heads=2, tie_word_embeddings=True,
                                  rope_parameters={"rope_type": "default", "rope_theta": 100_000.0}
                                  ), transformers.Qwen2ForCausalLM


def _gemma():
  return transformers.GemmaConfig(**{**COMMON, "hidden_size": 48}, num_key_value_heads=1, head_dim=32,
                                  hidden_activation="gelu_pytorch_tanh"), transformers.GemmaForCausalLM


FAMILIES = {"llama": _llama, "qwen2": _qwen2, "gemma": _gemma}


def _build(family: str, out_dir: str, **save_kwargs):
  """Random HF model with every parameter perturbed (so zero-initialised biases and norms matter), saved."""
  config, model_cls = FAMILIES[family]()
  torch.manual_seed(0)
  model = model_cls(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  model.save_pretrained(out_dir, **save_kwargs)
  return model


def _padded_batch(vocab: int, length: int = 12):
  """Row 0 full, row 1 left-padded by 4, row 2 right-padded by 5. Returns tokens, mask, positions (numpy)."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, vocab, (3, length))
  mask = np.ones((3, length), np.int32)
  mask[1, :4] = 0
  mask[2, -5:] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return tokens, mask, positions


def _hf_logits(model, tokens, mask, positions):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions))
  return out.logits.float().numpy()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def imported(request, tmp_path_factory):
  family = request.param
  hf_dir = str(tmp_path_factory.mktemp(family))
  model = _build(family, hf_dir)
  cfg, params = load_hf_checkpoint(hf_dir)
  return family, model, cfg, params


def test_full_forward_matches_transformers(imported):
  family, model, cfg, params = imported
  tokens, mask, positions = _padded_batch(cfg.vocab_size)
  expected = _hf_logits(model, tokens, mask, positions)
  ours, _ = Decoder(cfg).apply({"params": params}, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
  valid = mask.astype(bool)
  diff = np.abs(np.asarray(ours)[valid] - expected[valid]).max()
  assert diff < 1e-4, f"{family}: max |logit diff| {diff}"
  assert np.abs(expected[valid]).max() > 0.5  # the logits are not trivially small


def test_kv_cache_prefill_then_steps_matches_full_forward(imported):
  """Left-padded prompts prefilled into the cache, then one token a step, equal the uncached forward and HF."""
  family, model, cfg, params = imported
  tokens, mask, positions = _padded_batch(cfg.vocab_size)
  mask[2] = 1  # decoding needs left padding only
  mask[2, :2] = 0
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  decoder = Decoder(cfg)
  full, _ = decoder.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
  prefill = 7
  cache = init_cache(cfg, batch=3, max_length=16)
  step = jax.jit(lambda t, p, s, c: decoder.apply({"params": params}, t, p, s, c))
  logits, cache = step(tokens[:, :prefill], positions[:, :prefill], mask[:, :prefill], cache)
  pieces = [logits]
  for i in range(prefill, tokens.shape[1]):
    logits, cache = step(tokens[:, i:i + 1], positions[:, i:i + 1], mask[:, i:i + 1], cache)
    pieces.append(logits)
  cached = np.concatenate([np.asarray(p) for p in pieces], axis=1)
  valid = mask.astype(bool)
  assert np.abs(cached[valid] - np.asarray(full)[valid]).max() < 1e-4
  expected = _hf_logits(model, tokens, mask, positions)
  assert np.abs(cached[valid] - expected[valid]).max() < 1e-4
  assert int(cache.index) == tokens.shape[1]


def test_sharded_checkpoint_and_orbax_round_trip(tmp_path):
  import hf_fixtures
  hf_dir = str(tmp_path / "hf")
  model = hf_fixtures.build("qwen2", hf_dir, save_kwargs={"max_shard_size": "40KB"})
  assert os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json"))
  main(["--hf_dir", hf_dir, "--out_dir", str(tmp_path / "ours"), "--dtype", "float32"])  # the console script
  cfg, params = load_hf_checkpoint(hf_dir)
  with pytest.raises(FileExistsError, match="already exists"):
    save_params(params, cfg, str(tmp_path / "ours"), BYTE)
  cfg2, restored = load_params(str(tmp_path / "ours"))
  assert cfg2 == cfg
  tokens, mask, positions = _padded_batch(cfg.vocab_size)
  ours, _ = Decoder(cfg2).apply({"params": restored}, jnp.asarray(tokens), jnp.asarray(positions),
                                jnp.asarray(mask))
  valid = mask.astype(bool)
  assert np.abs(np.asarray(ours)[valid] - _hf_logits(model, tokens, mask, positions)[valid]).max() < 1e-4


def _edit_config(hf_dir: str, **changes):
  path = os.path.join(hf_dir, "config.json")
  with open(path) as f:
    config = json.load(f)
  config.update(changes)
  with open(path, "w") as f:
    json.dump(config, f)


def test_import_errors_name_the_problem(tmp_path):
  hf_dir = str(tmp_path / "hf")
  _build("llama", hf_dir)
  _edit_config(hf_dir, intermediate_size=128)
  with pytest.raises(CheckpointImportError,
                     match=r"model\.safetensors: tensor .model\.layers\.0\.mlp\.gate_proj\.weight. has shape"):
    load_hf_checkpoint(hf_dir)
  _edit_config(hf_dir, intermediate_size=96, num_hidden_layers=4)
  with pytest.raises(CheckpointImportError, match=r"model\.layers\.3\..* is missing"):
    load_hf_checkpoint(hf_dir)
  _edit_config(hf_dir, num_hidden_layers=2)
  with pytest.raises(CheckpointImportError, match=r"not used.*model\.layers\.2\."):
    load_hf_checkpoint(hf_dir)
  _edit_config(hf_dir, num_hidden_layers=3, model_type="gpt_neox")
  with pytest.raises(CheckpointImportError, match="unsupported model_type 'gpt_neox'"):
    load_hf_checkpoint(hf_dir)
  with pytest.raises(CheckpointImportError, match="config.json: not found"):
    load_hf_checkpoint(str(tmp_path))
