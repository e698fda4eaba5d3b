"""The whole recipe as one resumable job: `mathft-recipe --gin_file=recipes/multitask_sequential.gin ...`.

Stages (each skipped when its output exists, so a rerun resumes at the first missing one):
  ssft         generator SSFT on `generator_task` (from `initial_checkpoint_path` or random init)
  train_samples / train_graded   N samples per training problem, graded -> graded.jsonl
  evaluator    evaluator fine-tuning from the SSFT checkpoint ("ce", "margin" or "seq" loss)
  multitask    generator SSFT again from the evaluator checkpoint (multi-task sequential fine-tuning)
  continued    control: SSFT continued from stage 1 for the same number of extra steps as evaluator+multitask
  eval_<gen>   for each generator: greedy and N samples on the test problems, evaluator scores, re-ranking
Then report.md (one table per generator) and accuracy_vs_n.png (the SSFT generator's curves) in run_dir.
With evaluator_steps=0 only SSFT and its evaluation run (majority voting; the few-shot baseline uses
ssft_steps=0 and prompt_format="few_shot").
"""
import dataclasses
import functools
import inspect
import json
import os
import shutil
import time
from typing import Optional

import jax

from mathft_jax.evaluator.losses import margin_loss, sequence_contrastive_loss
from mathft_jax.models import DecoderConfig, params_io
from mathft_jax.training.optim import OptimizerConfig, ScheduleConfig
from mathft_jax import partitioning
from mathft_jax.partitioning import MeshConfig
from mathft_jax.training.train_step import next_token_loss

LOSSES = {"ce": next_token_loss, "margin": margin_loss, "seq": sequence_contrastive_loss}


@dataclasses.dataclass(frozen=True)
class Sampling:
  num_samples: int = 64
  train_num_samples: Optional[int] = None  # per training problem, for the evaluator's data; None: num_samples
  temperature: float = 0.8
  max_new_tokens: int = 512
  batch_size: int = 4
  chunk_size: int = 16
  prompt_format: str = "generator"
  stop_strings: tuple = ()
  mesh: Optional[MeshConfig] = None  # decode/score over each host's local devices (needed once params outgrow one)


def _log(message: str, start: float) -> None:
  print(f"[recipe {time.time() - start:7.1f}s] {message}", flush=True)


def _done(path: str) -> bool:
  return os.path.exists(path)


def _infer_done(output_dir: str) -> bool:
  """Every host's shard of a mathft-infer output is complete (one shard per process)."""
  n = jax.process_count()
  return all(_done(os.path.join(output_dir, f"shard-{i}-of-{n}.COMPLETE")) for i in range(n))


class ChangedSettingsError(ValueError):
  """A run directory is being resumed with other settings than it was made with."""


SETTINGS_FILE = "recipe_settings.json"
# run_recipe arguments that do not decide a run's numbers (every other one does): where it runs, the mesh layout,
# the memory check. A run may resume on another slice.
_NOT_SETTINGS = ("run_dir", "mesh", "slice_name", "plan_only")


def _flat_settings(settings: dict) -> dict:
  """{"model_config.num_layers": 4, "sampling.temperature": 0.5, ...}: JSON values under dotted names."""
  out = {}

  def walk(name, value):
    if dataclasses.is_dataclass(value):
      value = {k: v for k, v in dataclasses.asdict(value).items() if k not in ("mesh", "remat")}  # layouts
    if isinstance(value, dict) and value:
      for k, v in value.items():
        walk(f"{name}.{k}", v)
    else:
      out[name] = json.loads(json.dumps(value))
  for name, value in settings.items():
    walk(name, value)
  return out


def _check_settings(run_dir: str, settings: dict) -> None:
  """The first run writes run_dir/recipe_settings.json; a rerun with other settings stops before any stage,
  naming what changed (resuming would mix stages made with the old settings into the new report)."""
  now = _flat_settings(settings)
  file = os.path.join(run_dir, SETTINGS_FILE)
  if os.path.exists(file):
    with open(file) as f:
      before = json.load(f)
    shown = lambda d, k: repr(d[k]) if k in d else "(not set)"  # noqa: E731
    changed = sorted(k for k in set(before) | set(now) if k not in before or k not in now or before[k] != now[k])
    if changed:
      raise ChangedSettingsError(
          f"{file}: {run_dir} was made with other settings ("
          + "; ".join(f"{k}: {shown(before, k)} -> {shown(now, k)}" for k in changed)
          + "). Use a new run_dir (finished stage directories copied into it are reused) or remove this one.")
  elif jax.process_index() == 0:
    os.makedirs(run_dir, exist_ok=True)
    with open(file + ".tmp", "w") as f:
      json.dump(now, f, indent=1, sort_keys=True)
    os.replace(file + ".tmp", file)


def _on_first_host(label: str, fn, unless_exists: Optional[str] = None) -> None:
  """Runs fn on process 0 only (grading, re-ranking and reports write shared files), then every host waits for
  it. Only process 0 looks at `unless_exists` (skip when that output is there), so every host always reaches the
  barrier: a host that checked after process 0 wrote the file would otherwise skip it and leave the rest waiting."""
  if jax.process_index() == 0 and not (unless_exists and _done(unless_exists)):
    fn()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"mathft-recipe {label}")


def run_recipe(*, run_dir: str, model_config: DecoderConfig, generator_task: str, task_feature_lengths: dict,
               train_problems: str, test_problems: str, ssft_steps: int, evaluator_steps: int = 0,
               multitask_steps: int = 0, evaluator_loss: str = "ce", run_control: bool = True,
               batch_size: int = 16, evaluator_batch_size: Optional[int] = None, learning_rate: float = 1e-5,
               evaluator_learning_rate: Optional[float] = None,
               multitask_learning_rate: Optional[float] = None, evaluator_loss_options: Optional[dict] = None,
               warmup_steps: int = 0, initial_checkpoint_path: Optional[str] = None,
               sampling: Sampling = Sampling(), mesh: MeshConfig = MeshConfig(), k_clusters: int = 8,
               include_reference_solutions: bool = False, evaluator_feature_lengths: Optional[dict] = None,
               seed: int = 0, tokenizer: Optional[str] = None, slice_name: Optional[str] = None,
               plan_only: bool = False) -> dict:
  """Runs every stage (see the module doc); returns {generator name: metrics.json dict}.

  slice_name: the accelerator slice the run is sized for (a key of `mathft_jax.recipe.memory.SLICES`): before any
  compute, the per-device memory of SSFT, evaluator training and sampling is estimated and printed, and the run
  stops with the table if a stage would not fit. plan_only: only that check; returns {stage: MemoryEstimate}.

  evaluator_loss_options: keyword arguments of the evaluator loss, e.g. {"margin": 1.0, "alpha": 1.0} for "seq"
    (see `mathft_jax.evaluator.losses`).
  evaluator_batch_size: examples per evaluator step (pairs for "margin" and "seq", each two sequences); defaults to
    batch_size.
  learning_rate: peak learning rate of SSFT; evaluator_learning_rate and multitask_learning_rate (stage 3 and the
  continued control, which start from trained models) default to it.
  include_reference_solutions: add each training problem's reference solution to the evaluator's data as a
  correct candidate (off in the paper's setting; for small generators that are rarely right, so that problems
  with only incorrect samples still give pairs).
  tokenizer: the model's tokenizer comes with initial_checkpoint_path (a params folder); a tokenizer given here must
    be that one. Without an initial checkpoint it is the tokenizer of the model trained from scratch (default
    "byte"). Every stage's checkpoint carries it, sampling and scoring read it from there, and recipe_settings.json
    records its fingerprint.
  evaluator_feature_lengths: lengths of the "ce"/"margin" evaluator task; by default the evaluator prompt
  (problem + whole candidate solution + question) gets the generator's inputs+targets length and the label 16
  tokens. "seq" pairs are generator examples and always use task_feature_lengths (this setting is ignored).
  """
  evaluator_feature_lengths = _evaluator_lengths(evaluator_feature_lengths, task_feature_lengths, evaluator_loss)
  evaluator_batch_size = evaluator_batch_size or batch_size
  if slice_name or plan_only:
    plan = memory_plan(model_config, mesh, batch_size, task_feature_lengths, evaluator_feature_lengths,
                       evaluator_loss, sampling, slice_name, evaluator_batch_size)
    if plan_only:
      return plan
  from mathft_jax.data.seqio_source import SeqioSource
  from mathft_jax.inference.infer import infer
  from mathft_jax.reranking.rerank import rerank
  from mathft_jax.training.train import train
  if evaluator_loss not in LOSSES:
    raise ValueError(f"evaluator_loss must be one of {sorted(LOSSES)}, got {evaluator_loss!r}")
  evaluator_loss_fn = LOSSES[evaluator_loss]
  if evaluator_loss_options:
    unknown = set(evaluator_loss_options) - set(inspect.signature(evaluator_loss_fn).parameters) - {
        "apply_fn", "params", "batch"}
    if unknown or evaluator_loss == "ce":
      raise ValueError(f"evaluator_loss_options {sorted(evaluator_loss_options)} do not apply to the "
                       f"{evaluator_loss!r} loss")
    evaluator_loss_fn = functools.partial(evaluator_loss_fn, **evaluator_loss_options)
  partitioning.maybe_initialize_distributed()  # before anything asks JAX about processes (a resumed run samples first)
  run_tokenizer = params_io.starting_tokenizer(initial_checkpoint_path, tokenizer)
  params_io.check_vocab_fits(run_tokenizer, model_config, "the recipe's model_config")
  _check_settings(run_dir, {**{k: v for k, v in locals().items()
                               if k in inspect.signature(run_recipe).parameters and k not in _NOT_SETTINGS},
                            "tokenizer_fingerprint": run_tokenizer.fingerprint})
  start = time.time()
  path = lambda *parts: os.path.join(run_dir, *parts)  # noqa: E731

  def train_stage(name: str, task: str, steps: int, init: Optional[str], lr: float, loss_fn=next_token_loss,
                  lengths: Optional[dict] = None, batch: int = batch_size) -> str:
    export = path(name, "export")
    if _done(os.path.join(export, params_io.MANIFEST)):
      _log(f"{name}: done earlier ({export})", start)
      return export
    _log(f"{name}: {steps} steps on {task} from {init or 'random init'}", start)
    schedule = ScheduleConfig(kind="cosine", peak=lr, warmup_steps=min(warmup_steps, steps), total_steps=steps)
    train(model_dir=path(name), model_config=model_config, train_steps=steps, seed=seed, mesh=mesh,
          train_data=SeqioSource(task, lengths or task_feature_lengths, batch, seed=seed),
          optimizer=OptimizerConfig(schedule=schedule), loss_fn=loss_fn, initial_checkpoint_path=init,
          checkpoint_every=max(steps // 4, 1), log_every=max(steps // 8, 1), tokenizer=run_tokenizer)
    return export

  def sample(name: str, checkpoint: str, problems: str, greedy: bool,
             num_samples: int = sampling.num_samples) -> str:
    out = path(name)
    if not _infer_done(out):
      _log(f"{name}: {'greedy' if greedy else f'{num_samples} samples'} on {problems}", start)
      infer(mode="sample", output_dir=out, checkpoint_path=checkpoint, problems=problems,
            num_samples=1 if greedy else num_samples, temperature=0.0 if greedy else sampling.temperature,
            max_new_tokens=sampling.max_new_tokens, batch_size=sampling.batch_size, chunk_size=sampling.chunk_size,
            seed=seed, mesh=sampling.mesh, prompt_format=sampling.prompt_format, stop_strings=sampling.stop_strings,
            tokenizer=tokenizer)
    return out

  def score(name: str, evaluator: str, candidates: str) -> str:
    out = path(name)
    if not _infer_done(out):
      _log(f"{name}: evaluator scores for {candidates}", start)
      infer(mode="score", output_dir=out, checkpoint_path=evaluator, problems=test_problems,
            candidates_dir=candidates, batch_size=sampling.batch_size, mesh=sampling.mesh,
            num_samples=sampling.num_samples, chunk_size=sampling.chunk_size * sampling.num_samples,
            score_fields=("loglik",) if evaluator_loss == "seq" else ("score",))
    return out

  if ssft_steps:
    ssft = train_stage("ssft", generator_task, ssft_steps, initial_checkpoint_path, learning_rate)
  else:
    if not initial_checkpoint_path:
      raise ValueError("ssft_steps=0 needs initial_checkpoint_path (a pretrained model for the few-shot baseline)")
    ssft = initial_checkpoint_path
  generators = {"ssft": ssft}
  evaluator = None
  if evaluator_steps:
    samples = sample("train_samples", ssft, train_problems, greedy=False,
                     num_samples=sampling.train_num_samples or sampling.num_samples)
    graded = path("train_graded", "evaluator_data.jsonl")

    def grade():
      _log("train_graded: grading training samples", start)
      rerank(candidates=samples, references=train_problems, output_dir=path("train_graded"), k_clusters=k_clusters)
      _evaluator_data(path("train_graded", "graded.jsonl"), graded, train_problems, include_reference_solutions)
    _on_first_host("train_graded", grade, unless_exists=graded)
    evaluator = train_stage("evaluator", f"evaluator_{evaluator_loss}:{os.path.abspath(graded)}", evaluator_steps,
                            ssft, evaluator_learning_rate or learning_rate, evaluator_loss_fn,
                            evaluator_feature_lengths, evaluator_batch_size)
    stage3_lr = multitask_learning_rate or learning_rate
    if multitask_steps:
      generators["multitask"] = train_stage("multitask", generator_task, multitask_steps, evaluator, stage3_lr)
    if run_control and multitask_steps:
      generators["continued"] = train_stage("continued", generator_task, evaluator_steps + multitask_steps, ssft,
                                            stage3_lr)
  results = {}
  for name, checkpoint in generators.items():
    greedy = sample(f"eval_{name}/greedy", checkpoint, test_problems, greedy=True)
    samples = sample(f"eval_{name}/samples", checkpoint, test_problems, greedy=False)
    scores = score(f"eval_{name}/scores", evaluator, samples) if evaluator else None
    report = path(f"eval_{name}", "report")

    def rerank_generator():  # called right away, so the loop's current values are the ones it sees
      _log(f"eval_{name}: re-ranking", start)
      rerank(candidates=samples, scores=scores, greedy=greedy, references=test_problems, output_dir=report,
             k_clusters=k_clusters, score_field="likelihood" if evaluator_loss == "seq" else "score")
    _on_first_host(f"eval_{name}", rerank_generator, unless_exists=os.path.join(report, "metrics.json"))
    with open(os.path.join(report, "metrics.json")) as f:
      results[name] = json.load(f)
  _on_first_host("report", lambda: _write_report(run_dir, results, sampling.num_samples, k_clusters))
  _log(f"done: {path('report.md')}", start)
  return results


def _evaluator_lengths(lengths: Optional[dict], generator_lengths: dict, loss: str) -> dict:
  if loss == "seq":  # pairs of generator examples: the solution must not be cut to the label's length
    return generator_lengths
  return lengths if lengths is not None else {"inputs": sum(generator_lengths.values()), "targets": 16}


def memory_plan(model_config: DecoderConfig, mesh: MeshConfig, batch_size: int, task_feature_lengths: dict,
                evaluator_feature_lengths: Optional[dict], evaluator_loss: str, sampling: Sampling,
                slice_name: Optional[str], evaluator_batch_size: Optional[int] = None) -> dict:
  """{stage: per-device MemoryEstimate} for SSFT, evaluator training and sampling on `slice_name`; prints the
  tables and raises ValueError when a stage exceeds 90% of a chip's HBM. evaluator_batch_size defaults to
  batch_size."""
  from mathft_jax.recipe import memory
  slice_ = memory.SLICES[slice_name] if slice_name else None
  devices = slice_.chips if slice_ else len(__import__("jax").devices())
  host_devices = slice_.chips_per_host if slice_ else len(__import__("jax").local_devices())
  evaluator_lengths = _evaluator_lengths(evaluator_feature_lengths, task_feature_lengths, evaluator_loss)
  pairs = 2 if evaluator_loss in ("margin", "seq") else 1  # pair batches hold [B, 2, L]
  plan = {
      "ssft": memory.estimate_training(model_config, mesh, devices, batch_size,
                                       sum(task_feature_lengths.values())),
      "evaluator": memory.estimate_training(model_config, mesh, devices, (evaluator_batch_size or batch_size) * pairs,
                                            sum(evaluator_lengths.values())),
      "sampling": memory.estimate_sampling(model_config, sampling.mesh or MeshConfig(1, 1, 1),
                                           host_devices if sampling.mesh else 1, sampling.batch_size,
                                           max(sampling.num_samples, sampling.train_num_samples or 0),
                                           task_feature_lengths["inputs"] + sampling.max_new_tokens)}
  too_big = []
  for stage, estimate in plan.items():
    print(f"[memory] {stage}, per device:\n{estimate.table(slice_)}", flush=True)
    if slice_ and estimate.total > 0.9 * slice_.hbm_bytes:
      too_big.append(stage)
  if too_big:
    raise ValueError(f"{', '.join(too_big)} would not fit on {slice_name} (estimates above); lower the per-device "
                     f"batch, shorten sequences, use remat='full' or a larger mesh")
  return plan


def _evaluator_data(graded_path: str, out_path: str, problems: str, add_references: bool) -> None:
  """graded.jsonl (+ one correct candidate per problem: its reference solution) -> out_path, atomically."""

  from mathft_jax.text.problems import load_problems
  with open(graded_path) as f:
    records = [json.loads(line) for line in f]
  next_id = {}
  for r in records:
    next_id[r["problem_id"]] = max(next_id.get(r["problem_id"], -1), int(r["sample_id"])) + 1
  extra = [{"problem_id": p["problem_id"], "sample_id": next_id[p["problem_id"]], "text": p["solution"],
            "answer": p.get("answer"), "cluster": -2, "correct": True, "problem": p["problem"], "reference": True}
           for p in load_problems(problems) if add_references and p["problem_id"] in next_id and p.get("solution")]
  with open(out_path + ".tmp", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records + extra)
  os.replace(out_path + ".tmp", out_path)


ROWS = (("pass@1 (greedy)", "greedy_pass@1", None), ("pass@1 (sampled)", "pass", "1"), ("maj1@{n}", "maj1", "n"),
        ("RR.All@{n}", "rr_all", "n"), ("RR.Top-{k}@{n}", "rr_topk", "n"), ("W.RR.Maj{k}@{n}", "wrr_majk", "n"),
        ("pass@{n}", "pass", "n"),
        ("RR.All@{n}, generator likelihood (control)", "generator_rr_all", "n"))


def _write_report(run_dir: str, results: dict, n: int, k: int) -> None:
  lines = ["# Recipe report", "", "Accuracy on the test problems, 95% bootstrap CIs over problems.", "",
           "| metric | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
  for label, key, at in ROWS:
    cells = []
    for metrics in results.values():
      series = metrics.get(key) if at is None else metrics["strategies"].get(key, {}).get(str(n) if at == "n" else at)
      cells.append("n/a" if not series else f"{series['mean']:.1%} [{series['ci95'][0]:.1%}, {series['ci95'][1]:.1%}]")
    lines.append(f"| {label.format(n=n, k=k)} | " + " | ".join(cells) + " |")
  for name, metrics in results.items():
    if "evaluator" in metrics:
      e = metrics["evaluator"]
      lines.append(f"\nEvaluator on {name}'s test samples: AUC {e['auc']:.3f}, within a problem "
                   f"{e['within_problem_auc']:.3f} ({e['within_problem_count']} problems "
                   "with correct and incorrect samples).")
    if "generator_likelihood" in metrics:
      e = metrics["generator_likelihood"]
      lines.append(f"\nControl, {name}'s own per-token likelihood of its samples as the score (no evaluator): AUC "
                   f"{e['auc']:.3f}, within a problem {e['within_problem_auc']:.3f}.")
  with open(os.path.join(run_dir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  first = next(iter(results))
  shutil.copy(os.path.join(run_dir, f"eval_{first}", "report", "accuracy_vs_n.png"),
              os.path.join(run_dir, "accuracy_vs_n.png"))


def main() -> None:
  from mathft_jax import gin_main
  from mathft_jax import recipe as recipe_module  # the importable module, whatever __main__ is
  gin_main.run(recipe_module.run_recipe)


if __name__ == "__main__":
  main()
