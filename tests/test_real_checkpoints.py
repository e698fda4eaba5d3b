"""The whole recipe on MATH with imported Hugging Face models and their own tokenizers, and back to Hugging Face.

For each tokenizer kind (Qwen2: byte-level BPE without BOS; Llama-3: BPE with a BOS; Gemma: SentencePiece), a tiny
random model with a tokenizer trained here (tests/hf_fixtures.py) is imported with `mathft-import-hf`, then
`run_recipe` runs SSFT -> sampling -> grading -> evaluator ("ce" or "margin") -> multi-task SSFT -> evaluation on
the shortest MATH problems, and the fine-tuned generator and evaluator are exported with `mathft-export-hf` and
checked against transformers: greedy samples equal `generate` (ids, text, token counts, the EOS stop) and the
evaluator's scores equal its label probabilities under the tokenizer's own label ids.
"""
import dataclasses
import json
import os
import shutil

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import hf_fixtures  # noqa: E402

from mathft_jax.inference.infer import SamplingConfig, infer  # noqa: E402
from mathft_jax.models import hf_export, hf_import  # noqa: E402
from mathft_jax.models.params_io import model_config, read_manifest  # noqa: E402
from mathft_jax.partitioning import MeshConfig  # noqa: E402
from mathft_jax.recipe import ChangedSettingsError, EvaluatorConfig, MultitaskConfig, run_recipe  # noqa: E402
from mathft_jax.text import prompts  # noqa: E402
from mathft_jax.text.tokenizer import load_tokenizer  # noqa: E402
from mathft_jax.training.optim import OptimizerConfig, ScheduleConfig  # noqa: E402
from mathft_jax.training.train_config import TrainingConfig  # noqa: E402

SHARED_MATH = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "math")
LOSS = {"qwen2": "ce", "llama": "margin", "gemma": "ce"}
MAX_NEW = 40


def _shortest(split: str, count: int) -> list[dict]:
  with open(os.path.join(SHARED_MATH, f"{split}.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return sorted(records, key=lambda r: len(r["problem"]) + len(r["solution"]))[:count]


def _records(folder) -> list[dict]:
  chunks = os.path.join(folder, "chunks")
  return [json.loads(line) for name in sorted(os.listdir(chunks)) for line in open(os.path.join(chunks, name))]


@pytest.fixture(scope="module", params=hf_fixtures.FAMILIES)
def run(request, tmp_path_factory):
  if not os.path.isdir(SHARED_MATH):
    pytest.skip("../shared/data/math is absent")
  family = request.param
  root = tmp_path_factory.mktemp(family)
  hf_fixtures.build(family, str(root / "hf"))
  hf_import.main(["--hf_dir", str(root / "hf"), "--out_dir", str(root / "init"), "--dtype", "float32"])
  for name, records in (("train", _shortest("train", 8)), ("test", _shortest("test", 4))):
    (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  kwargs = dict(
      run_dir=str(root / "run"), model_config=model_config(str(root / "init")),
      initial_checkpoint_path=str(root / "init"), generator_task=f"problems:{root / 'train.jsonl'}",
      task_feature_lengths={"inputs": 64, "targets": 64}, train_problems=str(root / "train.jsonl"),
      test_problems=str(root / "test.jsonl"), ssft_steps=40, batch_size=8, mesh=MeshConfig(),
      training=TrainingConfig(OptimizerConfig(schedule=ScheduleConfig(kind="cosine", peak=3e-3, warmup_steps=5))),
      evaluator=EvaluatorConfig(steps=3, loss=LOSS[family], include_reference_solutions=True),
      multitask=MultitaskConfig(steps=2, run_control=False),
      sampling=SamplingConfig(num_samples=4, temperature=1.0, max_new_tokens=MAX_NEW, batch_size=2, chunk_size=4))
  results = run_recipe(**kwargs)
  return {"family": family, "root": root, "results": results, "kwargs": kwargs,
          "tokenizer": load_tokenizer(str(root / "init"))}


def test_every_stage_runs_and_carries_the_models_tokenizer(run):
  root, tokenizer = run["root"], run["tokenizer"]
  assert tokenizer == load_tokenizer(str(root / "hf")) and tokenizer.kind == ("sentencepiece" if run["family"] ==
                                                                              "gemma" else "hf")
  prefix, correct, incorrect = tokenizer.evaluator_labels()
  for stage in ("ssft", "evaluator", "multitask"):
    export = root / "run" / stage / "export"
    assert load_tokenizer(str(export)) == tokenizer, stage
    recorded = read_manifest(str(export))["tokenizer"]
    assert recorded["evaluator_labels"] == {"prefix": prefix, "correct": correct, "incorrect": incorrect}
    assert (recorded["start_id"], recorded["eos_id"]) == (tokenizer.spec.start_id, tokenizer.eos_id)
  assert set(run["results"]) == {"ssft", "multitask"}
  assert "| metric | ssft | multitask |" in (root / "run" / "report.md").read_text()
  graded = [json.loads(line) for line in open(root / "run" / "train_graded" / "evaluator_data.jsonl")]
  assert len(graded) == 8 * 4 + 8 and any(r["correct"] for r in graded)
  for name in ("ssft", "multitask"):
    assert len(_records(root / "run" / f"eval_{name}" / "samples")) == 4 * 4
    scores = _records(root / "run" / f"eval_{name}" / "scores")
    assert len(scores) == 16 and all(0 < s["score"] < 1 for s in scores)


def test_greedy_samples_equal_transformers_generate_of_the_exported_generator(run):
  root, tokenizer = run["root"], run["tokenizer"]
  exported = hf_export.export_hf(str(root / "run" / "ssft" / "export"), str(root / "ssft_hf"))
  model = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
  problems = {json.loads(line)["unique_id"]: json.loads(line)["problem"] for line in open(root / "test.jsonl")}
  greedy = _records(root / "run" / "eval_ssft" / "greedy")
  assert len(greedy) == 4
  for record in greedy:
    prompt = prompts.generator_input(problems[record["problem_id"]])
    ids = hf_tokenizer(prompt)["input_ids"]  # add_special_tokens=True: the tokenizer's BOS where it has one
    assert ids == tokenizer.prompt_ids(prompt)
    with torch.no_grad():
      out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                           eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    new = out[0, len(ids):].tolist()
    ended = new[-1] == tokenizer.eos_id
    assert record["num_tokens"] == len(new) and record["finish_reason"] == ("eos" if ended else "length")
    assert record["text"] == hf_tokenizer.decode(new[:-1] if ended else new)
  # sampling stops at the tokenizer's EOS (after 40 SSFT steps on short solutions, greedy ends them)
  assert any(r["finish_reason"] == "eos" for r in greedy)
  samples = _records(root / "run" / "eval_ssft" / "samples")
  assert any(r["finish_reason"] == "eos" and r["num_tokens"] < MAX_NEW for r in samples)


def test_shared_and_refill_engines_sample_with_the_models_tokenizer(run):
  """mathft-infer engine="refill" (1 slot: each sample decoded after the last ended) writes the classic engine's
  greedy records; sampled, refill in 3 slots writes the shared engine's records (texts decoded with the model's own
  tokenizer, ended at its EOS)."""
  root, sampling = run["root"], run["kwargs"]["sampling"]
  checkpoint, problems = str(root / "run" / "ssft" / "export"), str(root / "test.jsonl")

  def sample(name, **changes):
    infer(mode="sample", output_dir=str(root / name), checkpoint_path=checkpoint, problems=problems,
          sampling=dataclasses.replace(sampling, **changes))
    return [{k: r[k] for k in ("problem_id", "sample_id", "text", "num_tokens", "finish_reason")}
            for r in _records(root / name)]

  classic = [{k: r[k] for k in ("problem_id", "sample_id", "text", "num_tokens", "finish_reason")}
             for r in _records(root / "run" / "eval_ssft" / "greedy")]
  assert sample("greedy_refill", num_samples=1, temperature=0.0, engine="refill", slots=1, lane=1) == classic
  shared = sample("samples_shared", engine="shared")
  assert any(r["finish_reason"] == "eos" for r in shared) and len({r["text"] for r in shared}) > 4
  assert sample("samples_refill", engine="refill", slots=3, lane=1) == shared


def test_evaluator_scores_read_the_tokenizers_label_ids(run):
  root = run["root"]
  exported = hf_export.export_hf(str(root / "run" / "evaluator" / "export"), str(root / "evaluator_hf"))
  model = transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
  problems = {json.loads(line)["unique_id"]: json.loads(line)["problem"] for line in open(root / "test.jsonl")}
  texts = {(r["problem_id"], r["sample_id"]): r["text"] for r in _records(root / "run" / "eval_ssft" / "samples")}
  for record in _records(root / "run" / "eval_ssft" / "scores")[:6]:
    prompt = prompts.evaluator_input(problems[record["problem_id"]],
                                     texts[(record["problem_id"], record["sample_id"])])
    correct, incorrect = (hf_tokenizer(prompt + label)["input_ids"] for label in prompts.EVALUATOR_LABELS)
    k = next(i for i in range(len(correct)) if correct[i] != incorrect[i])  # where the labels part
    with torch.no_grad():
      logp = torch.log_softmax(model(input_ids=torch.tensor([correct[:k]])).logits[0, -1], -1)
    expected = float(torch.sigmoid(logp[correct[k]] - logp[incorrect[k]]))
    assert record["score"] == pytest.approx(expected, abs=1e-4)


def test_rerun_with_the_checkpoint_reimported_with_another_tokenizer_is_refused(run):
  root, kwargs = run["root"], run["kwargs"]
  other = root / "other_tokenizer"
  hf_fixtures.save_tokenizer("gemma" if run["family"] != "gemma" else "qwen2", str(other))
  shutil.rmtree(root / "init")
  hf_import.import_hf(str(root / "hf"), str(root / "init"), tokenizer_dir=str(other), dtype="float32")
  with pytest.raises(ChangedSettingsError, match="tokenizer_fingerprint"):
    run_recipe(**kwargs)
