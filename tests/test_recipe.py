"""CI-sized smoke run of the whole recipe: every stage's outputs exist and are well-formed; a rerun resumes."""
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from mathft_jax.inference.infer import SamplingConfig
from mathft_jax.models import preset
from mathft_jax.partitioning import MeshConfig
from mathft_jax.recipe import ChangedSettingsError, EvaluatorConfig, MultitaskConfig, run_recipe
from mathft_jax.training.optim import OptimizerConfig, ScheduleConfig
from mathft_jax.training.train_config import TrainingConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_recipe_smoke_run_and_resume(tmp_path, capsys):
  kwargs = dict(run_dir=str(tmp_path), model_config=preset("tiny", {"num_layers": 1}),
                generator_task="ssft_synthetic", task_feature_lengths={"inputs": 64, "targets": 128},
                train_problems="synthetic:train:4", test_problems="synthetic:test:4", ssft_steps=3, batch_size=8,
                training=TrainingConfig(OptimizerConfig(schedule=ScheduleConfig(kind="cosine", peak=1e-3))),
                evaluator=EvaluatorConfig(steps=2, loss="margin", batch_size=16, samples_per_problem=3,
                                          include_reference_solutions=True),
                multitask=MultitaskConfig(steps=2),
                sampling=SamplingConfig(num_samples=2, temperature=0.8, max_new_tokens=12, batch_size=2, chunk_size=2),
                mesh=MeshConfig())
  results = run_recipe(**kwargs)
  assert set(results) == {"ssft", "multitask", "continued"}
  for stage in ("ssft", "evaluator", "multitask", "continued"):
    assert os.path.isfile(tmp_path / stage / "export" / "checkpoint.json"), stage
  data = [json.loads(line) for line in open(tmp_path / "train_graded" / "evaluator_data.jsonl")]
  assert len(data) == 4 * 3 + 4 and sum(r.get("reference", False) for r in data) == 4  # 3 samples a problem
  for name, metrics in results.items():
    report = tmp_path / f"eval_{name}" / "report"
    assert {"metrics.json", "report.md", "accuracy_vs_n.png", "graded.jsonl"} <= set(os.listdir(report))
    assert {"maj1", "rr_all", "rr_topk", "wrr", "wrr_majk", "pass", "majk"} <= set(metrics["strategies"])
    assert 0.0 <= metrics["evaluator"]["accuracy_at_0.5"] <= 1.0 and metrics["greedy_pass@1"]["mean"] >= 0
    scores = [json.loads(line) for f in sorted(os.listdir(tmp_path / f"eval_{name}" / "scores" / "chunks"))
              for line in open(tmp_path / f"eval_{name}" / "scores" / "chunks" / f)]
    assert len(scores) == 8 and all(0 < s["score"] < 1 and "loglik" not in s for s in scores)  # what margin needs
  report = open(tmp_path / "report.md").read()
  assert "| metric | ssft | multitask | continued |" in report and "RR.Top-8@2" in report
  assert "within a problem" in report
  assert os.path.getsize(tmp_path / "accuracy_vs_n.png") > 1000
  first = capsys.readouterr().out
  evaluator_log = first[first.index("evaluator: 2 steps"):first.index("multitask: 2 steps")]
  assert [float(x) for x in re.findall(r"weight_sum=([\d.]+)", evaluator_log)] == [16.0, 16.0]  # pairs a step
  run_recipe(**kwargs)  # everything exists: no stage runs again
  log = capsys.readouterr().out
  assert "done earlier" in log and "steps on" not in log and "samples on" not in log
  # other settings would mix stale stages into the report: stop before any stage, naming what changed
  with pytest.raises(ChangedSettingsError, match=r"evaluator.steps: 2 -> 3\)"):
    run_recipe(**{**kwargs, "evaluator": dataclasses.replace(kwargs["evaluator"], steps=3)})
  with pytest.raises(ChangedSettingsError, match=r"model_config.num_layers: 1 -> 2; sampling.temperature: 0.8 -> 0.5"):
    run_recipe(**{**kwargs, "model_config": preset("tiny", {"num_layers": 2}),
                  "sampling": dataclasses.replace(kwargs["sampling"], temperature=0.5)})
  assert "steps on" not in capsys.readouterr().out
  run_recipe(**{**kwargs, "mesh": MeshConfig(2, 1, 4)})  # another layout resumes


def test_seq_pairs_keep_the_generator_lengths():
  generator = {"inputs": 64, "targets": 128}
  ce = {"inputs": 320, "targets": 16}
  assert EvaluatorConfig(loss="ce", feature_lengths=ce).lengths(generator) == ce
  assert EvaluatorConfig(loss="margin").lengths(generator) == {"inputs": 192, "targets": 16}
  # a ce-sized override must not cut "seq" solutions to the label's 16 tokens
  assert EvaluatorConfig(loss="seq", feature_lengths=ce).lengths(generator) == generator


def test_a_recipe_gin_file_sets_what_mathft_train_can(tmp_path, capsys):
  """Accumulation and checkpoint cadence set in a recipe gin file reach the SSFT stage, through the same
  `train_config.TrainingConfig` that `mathft-train` reads."""
  import gin

  from mathft_jax import gin_main, recipe

  def run(run_dir, *lines):
    (tmp_path / "my_recipe.gin").write_text("\n".join(['include "recipes/demo.gin"', *lines]) + "\n")
    gin.clear_config()
    try:
      gin_main.parse([f"--gin_file={tmp_path / 'my_recipe.gin'}", "--gin_file=models/tiny.gin",
                      f"--gin.RUN_DIR='{run_dir}'", "--gin.config.preset.overrides={'num_layers': 1}",
                      "--gin.TRAIN_PROBLEMS='synthetic:train:4:1'", "--gin.TEST_PROBLEMS='synthetic:test:2:1'",
                      "--gin.SSFT_STEPS=3", "--gin.EVALUATOR_STEPS=0", "--gin.NUM_SAMPLES=2", "--gin.BATCH_SIZE=8",
                      "--gin.infer.SamplingConfig.max_new_tokens=8", "--gin.infer.SamplingConfig.batch_size=2"])
      return gin.get_configurable(recipe.run_recipe)()
    finally:
      gin.clear_config()
  with pytest.raises(ValueError, match="batch size 8 is not divisible by accum_steps=3"):
    run(tmp_path / "three", "train_config.TrainingConfig.accum_steps = 3")  # the stage splits its batch
  run(tmp_path / "two", "train_config.TrainingConfig.accum_steps = 2",
      "train_config.TrainingConfig.checkpoint_every = 3")
  assert "accum_steps=2, checkpoint_every=3" in capsys.readouterr().out
  # orbax saves the first step, then every 3rd; the default cadence (a quarter of 3 steps) saves every step
  assert sorted(os.listdir(tmp_path / "two" / "ssft" / "checkpoints")) == ["1", "3"]
  settings = json.load(open(tmp_path / "two" / "recipe_settings.json"))
  assert settings["training.accum_steps"] == 2 and settings["training.checkpoint_every"] == 3


def test_two_hosts_share_the_run_dir(tmp_path):
  """mathft-recipe on 2 processes (jax.distributed on 127.0.0.1): training with per-host data shards, each host
  samples its shard, process 0 alone grades, re-ranks and writes the report, and both hosts finish."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  command = [sys.executable, "-m", "mathft_jax.recipe", "--gin_file=models/tiny.gin", "--gin_file=recipes/demo.gin",
             f"--gin.RUN_DIR='{tmp_path}'", "--gin.config.preset.overrides={'num_layers': 1}",
             "--gin.TRAIN_PROBLEMS='synthetic:train:4:1'", "--gin.TEST_PROBLEMS='synthetic:test:4:1'",
             "--gin.SSFT_STEPS=2", "--gin.EVALUATOR_STEPS=2", "--gin.MULTITASK_STEPS=0", "--gin.NUM_SAMPLES=2",
             "--gin.BATCH_SIZE=8", "--gin.infer.SamplingConfig.max_new_tokens=12",
             "--gin.infer.SamplingConfig.batch_size=2", "--gin.infer.SamplingConfig.chunk_size=2",
             "--gin.recipe.EvaluatorConfig.include_reference_solutions=True"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")

  def run_on_two_hosts(args):
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(env, JAX_PROCESS_ID=str(i))) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    return outs
  outs = run_on_two_hosts(command)
  for stage in ("train_samples", "eval_ssft/greedy", "eval_ssft/samples", "eval_ssft/scores"):
    assert {n for n in os.listdir(tmp_path / stage) if n.endswith(".COMPLETE")} == {
        "shard-0-of-2.COMPLETE", "shard-1-of-2.COMPLETE"}, stage
  chunks = tmp_path / "eval_ssft" / "samples" / "chunks"
  assert sorted(os.listdir(chunks)) == ["chunk-00000.jsonl", "chunk-00001.jsonl"]  # 2 problems a chunk, 1 a host
  assert sum(1 for name in os.listdir(chunks) for _ in open(chunks / name)) == 4 * 2
  assert "| metric | ssft |" in open(tmp_path / "report.md").read()
  assert all("done: " in out for out in outs)
  noise = ("I0000", "W0000", "E0000", "WARNING: All log messages", "uncached FunctionDataset", "cuInit")
  assert not [line for out in outs for line in out.splitlines() if any(n in line for n in noise)]  # a quiet start
  assert outs[0].count("re-ranked ") == 2 and "re-ranked " not in outs[1]  # train grading + eval_ssft, host 0 only
  leftovers = [n for _, _, files in os.walk(tmp_path) for n in files if ".tmp" in n]
  assert not leftovers, leftovers
  shutil.rmtree(tmp_path / "eval_ssft" / "scores")  # resume on 2 hosts: SSFT is done, so sampling comes first
  outs = run_on_two_hosts(command)
  assert all("ssft: done earlier" in out and "evaluator scores for" in out for out in outs)
  assert {n for n in os.listdir(tmp_path / "eval_ssft" / "scores") if n.endswith(".COMPLETE")} == {
      "shard-0-of-2.COMPLETE", "shard-1-of-2.COMPLETE"}


def test_evaluator_loss_options_must_belong_to_the_loss(tmp_path):
  kwargs = dict(run_dir=str(tmp_path), model_config=preset("tiny", {"num_layers": 1}),
                generator_task="ssft_synthetic", task_feature_lengths={"inputs": 64, "targets": 128},
                train_problems="synthetic:train:4", test_problems="synthetic:test:4", ssft_steps=1)
  for loss, options in (("seq", {"lambda": 1.0}), ("ce", {"margin": 1.0})):
    with pytest.raises(ValueError, match="do not apply"):
      run_recipe(evaluator=EvaluatorConfig(steps=1, loss=loss, loss_options=options), **kwargs)
  assert not os.listdir(tmp_path)  # refused before any stage ran
