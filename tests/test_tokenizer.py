"""The tokenizer travels with the model: the ids a model trains on and is prompted with are its tokenizer's, and a
tokenizer that does not belong to a checkpoint is refused before any compute, naming the files and the fix."""
import json
import os
import shutil

import jax
import pytest

transformers = pytest.importorskip("transformers")

import hf_fixtures  # noqa: E402

from mathft_jax.data.seqio_source import SeqioSource  # noqa: E402
from mathft_jax.models import init_params, preset  # noqa: E402
from mathft_jax.models.hf_import import import_hf  # noqa: E402
from mathft_jax.models.params_io import checkpoint_tokenizer, model_config, read_manifest, save_params  # noqa: E402
from mathft_jax.text import prompts  # noqa: E402
from mathft_jax.text.tokenizer import BYTE, TokenizerError, load_tokenizer  # noqa: E402

PROBLEM = "Evaluate $\\log_327$.\n"
SOLUTION = "Since $3^3=27$, $\\log_327=\\boxed{3}$. So 5! = 120 and x_{10}^2 — ünïcode ✓."


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  for family in hf_fixtures.FAMILIES:
    hf_fixtures.build(family, str(root / family))
  return root


@pytest.mark.parametrize("family", hf_fixtures.FAMILIES)
def test_training_examples_and_prompts_are_the_hf_tokenizers_ids(tmp_path, hf_dirs, family):
  """Through the real seqio pipeline: the sequence of one training example (model input + last target) equals the
  Hugging Face tokenizer's ids of prompt + solution with add_special_tokens=True, then EOS; the loss is on the
  solution and EOS only; and the prompt at sampling time is the prefix of that sequence."""
  hf = transformers.AutoTokenizer.from_pretrained(str(hf_dirs / family))
  tokenizer = load_tokenizer(str(hf_dirs / family))
  assert tokenizer.spec.start_id == {"qwen2": None, "llama": hf.bos_token_id, "gemma": hf.bos_token_id}[family]
  assert tokenizer.eos_id == hf.eos_token_id
  data = tmp_path / "problems.jsonl"
  data.write_text(json.dumps({"problem_id": "p", "problem": PROBLEM, "solution": SOLUTION, "answer": "3"}) + "\n")
  source = SeqioSource(f"problems:{data}", {"inputs": 64, "targets": 96}, batch_size=1, shuffle=False, pack=False,
                       num_epochs=1).with_tokenizer(tokenizer)
  batch = next(source.host_batches(0))
  n = int(batch["decoder_segment_ids"][0].sum())
  inputs, targets = batch["decoder_input_tokens"][0, :n].tolist(), batch["decoder_target_tokens"][0, :n].tolist()
  sequence = inputs[:1] + targets
  prompt, solution = prompts.generator_example(PROBLEM, SOLUTION).values()
  expected = hf(prompt + solution)["input_ids"]
  assert sequence == expected + [hf.eos_token_id]
  assert inputs == sequence[:-1]
  prompt_ids = hf(prompt)["input_ids"]
  assert tokenizer.prompt_ids(prompt) == prompt_ids == sequence[:len(prompt_ids)]
  weights = batch["decoder_loss_weights"][0, :n].tolist()
  assert weights == [0] * (len(prompt_ids) - 1) + [1] * (n - len(prompt_ids) + 1)  # predicting solution + EOS
  if family != "qwen2":
    assert sequence[0] == tokenizer.spec.start_id == hf.bos_token_id  # the BOS, not id 0 of seqio's converters
  # Packed, id 0 is a token like any other ("!" of the byte-level BPEs, in "5!"), not padding (seqio's packer
  # counts non-zero ids): the row holds the same sequence, then padding with segment id 0.
  packed = next(SeqioSource(f"problems:{data}", {"inputs": 64, "targets": 96}, batch_size=1, shuffle=False,
                            num_epochs=1).with_tokenizer(tokenizer).host_batches(0))
  assert packed["decoder_target_tokens"][0, :n].tolist() == targets and int(packed["decoder_segment_ids"][0].sum()) == n
  assert packed["decoder_positions"][0, :n].tolist() == list(range(n))
  if family != "gemma":
    assert 0 in targets


def test_the_byte_vocabulary_keeps_its_start_id_and_labels():
  assert BYTE.spec.start_id == 0 and BYTE.eos_id == 1 and BYTE.prompt_ids("P") == [0, ord("P") + 3]
  assert BYTE.evaluator_labels() == ([ord(" ") + 3], ord("c") + 3, ord("i") + 3)


@pytest.fixture(scope="module")
def imported(hf_dirs, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("imported") / "llama")
  import_hf(str(hf_dirs / "llama"), out, dtype="float32")
  return out


def test_a_params_folder_carries_its_tokenizer_and_manifest(imported, hf_dirs):
  manifest = read_manifest(imported)
  tokenizer = load_tokenizer(imported)
  assert tokenizer == load_tokenizer(str(hf_dirs / "llama")) == checkpoint_tokenizer(imported)
  assert sorted(os.listdir(os.path.join(imported, "tokenizer"))) == [
      "mathft_tokenizer.json", "tokenizer.json", "tokenizer_config.json"]
  spec = manifest["tokenizer"]
  assert (spec["kind"], spec["start_id"], spec["eos_id"], spec["fingerprint"]) == (
      "hf", tokenizer.spec.start_id, tokenizer.eos_id, tokenizer.fingerprint)
  prefix, correct, incorrect = tokenizer.evaluator_labels()
  assert spec["evaluator_labels"] == {"prefix": prefix, "correct": correct, "incorrect": incorrect}
  assert manifest["model_config"] == model_config(imported).to_dict() and manifest["hf_config"]["model_type"] == "llama"
  assert manifest["provenance"]["imported_from"] == os.path.abspath(hf_dirs / "llama")


def test_a_mismatched_tokenizer_is_refused_before_any_compute(imported, hf_dirs, tmp_path):
  from mathft_jax.inference.infer import infer
  from mathft_jax.recipe import run_recipe
  from mathft_jax.training.train import train
  other = str(hf_dirs / "qwen2")
  names_both = rf"the tokenizer given \(hf tokenizer from {other} .*\) is not the one {imported} was made with"
  with pytest.raises(TokenizerError, match=names_both):
    checkpoint_tokenizer(imported, other)
  with pytest.raises(TokenizerError, match=names_both):
    infer(mode="sample", output_dir=str(tmp_path / "samples"), checkpoint_path=imported,
          problems="synthetic:test:2", tokenizer=other)
  with pytest.raises(TokenizerError, match="byte tokenizer from byte .* is not the one"):
    train(model_dir=str(tmp_path / "train"), model_config=model_config(imported), initial_checkpoint_path=imported,
          train_data=SeqioSource("ssft_synthetic", {"inputs": 8, "targets": 8}, 8), train_steps=1, tokenizer="byte")
  with pytest.raises(TokenizerError, match=names_both):
    run_recipe(run_dir=str(tmp_path / "run"), model_config=model_config(imported), generator_task="ssft_synthetic",
               task_feature_lengths={"inputs": 8, "targets": 8}, train_problems="synthetic:train:2",
               test_problems="synthetic:test:2", ssft_steps=1, initial_checkpoint_path=imported, tokenizer=other)
  with pytest.raises(TokenizerError, match=r"the data's tokenizer \(hf tokenizer .*\) is not the model's"):
    SeqioSource("ssft_synthetic", {"inputs": 8, "targets": 8}, 8, tokenizer=other).with_tokenizer(BYTE)
  assert not any(os.path.exists(tmp_path / name) for name in ("samples", "train", "run"))


def test_a_checkpoint_without_its_tokenizer_files_names_the_file_and_the_fix(imported, tmp_path):
  from mathft_jax.inference.infer import infer
  damaged = str(tmp_path / "damaged")
  shutil.copytree(imported, damaged)
  os.remove(os.path.join(damaged, "tokenizer", "tokenizer.json"))
  with pytest.raises(TokenizerError, match=r"damaged/tokenizer/tokenizer.json: missing; .*re-import the model"):
    infer(mode="sample", output_dir=str(tmp_path / "samples"), checkpoint_path=damaged, problems="synthetic:test:2")
  legacy = tmp_path / "legacy"  # written before params folders carried a tokenizer: model_config.json only
  cfg = preset("tiny", {"num_layers": 1})
  save_params(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(legacy), BYTE)
  os.remove(legacy / "checkpoint.json")
  json.dump(cfg.to_dict(), open(legacy / "model_config.json", "w"))
  with pytest.raises(TokenizerError, match=r"legacy/checkpoint.json: this params folder records no tokenizer.*"
                                           r"tokenizer='byte' for a byte-level model made here"):
    infer(mode="sample", output_dir=str(tmp_path / "samples"), checkpoint_path=str(legacy),
          problems="synthetic:test:2")
  assert not os.path.exists(tmp_path / "samples")
  assert checkpoint_tokenizer(str(legacy), "byte") == BYTE  # the documented fix
  with pytest.raises(TokenizerError, match="has 512 tokens but the model only 384 embedding rows"):
    save_params(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(tmp_path / "small"), load_tokenizer(imported))


def test_an_hf_folder_without_a_tokenizer_is_refused_at_import(hf_dirs, tmp_path):
  weights_only = tmp_path / "weights_only"
  weights_only.mkdir()
  for name in ("config.json", "model.safetensors"):
    shutil.copy(hf_dirs / "qwen2" / name, weights_only / name)
  with pytest.raises(TokenizerError, match=r"weights_only: no tokenizer.json or tokenizer.model; .*--tokenizer_dir"):
    import_hf(str(weights_only), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  import_hf(str(weights_only), str(tmp_path / "out"), tokenizer_dir=str(hf_dirs / "qwen2"))
  assert load_tokenizer(str(tmp_path / "out")) == load_tokenizer(str(hf_dirs / "qwen2"))


def test_inference_import_and_export_load_without_tensorflow():
  import subprocess
  import sys
  code = ("import sys; import mathft_jax.inference.infer, mathft_jax.models.hf_import, mathft_jax.models.hf_export; "
          "bad = [m for m in ('tensorflow', 'seqio') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_a_resumed_training_run_keeps_the_tokenizer_it_started_with(hf_dirs, tmp_path):
  from mathft_jax.training.token_source import RandomTokenSource
  from mathft_jax.training.train import train
  cfg = preset("tiny", {"num_layers": 1, "vocab_size": 512})
  kwargs = dict(model_dir=str(tmp_path / "run"), model_config=cfg, train_steps=1,
                train_data=RandomTokenSource(batch_size=8, length=16, vocab_size=300))
  train(**kwargs)  # from scratch: the byte vocabulary, recorded in MODEL_DIR/tokenizer
  assert load_tokenizer(str(tmp_path / "run" / "tokenizer")) == BYTE == load_tokenizer(str(tmp_path / "run" / "export"))
  with pytest.raises(TokenizerError, match=r"run/tokenizer: this run started with another tokenizer \(byte"):
    train(**{**kwargs, "train_steps": 2, "tokenizer": str(hf_dirs / "qwen2")})
