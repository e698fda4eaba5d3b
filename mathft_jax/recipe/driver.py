"""The whole recipe as one resumable job: `mathft-recipe --gin_file=recipes/multitask_sequential.gin ...`.

Stages (each skipped when its output exists, so a rerun resumes at the first missing one):
  ssft         generator SSFT on `generator_task` (from `initial_checkpoint_path` or random init)
  train_samples / train_graded   N samples per training problem, graded -> evaluator_data.jsonl
  evaluator    evaluator fine-tuning from the SSFT checkpoint (`EvaluatorConfig`: "ce", "margin" or "seq")
  multitask    generator SSFT again from the evaluator checkpoint (`MultitaskConfig`)
  continued    control: SSFT continued from stage 1 for the same number of extra steps as evaluator+multitask
  eval_<gen>   for each generator: greedy and N samples on the test problems, evaluator scores, re-ranking
Then report.md (one column per generator) and accuracy_vs_n.png in run_dir, which may be a gs:// URI.
Every training stage gets `training` (`TrainingConfig`: optimizer, schedule, accumulation, checkpoint cadence,
seed) as it is, with its own steps, peak learning rate and loss; sampling and scoring get `sampling` as it is.
With evaluator.steps=0 only SSFT and its evaluation run (majority voting; the few-shot baseline uses ssft_steps=0
and sampling.prompt_format="few_shot").
"""
import dataclasses
import inspect
import time
from typing import Optional

import jax

from mathft_jax import partitioning, run_io
from mathft_jax.inference.infer import SamplingConfig
from mathft_jax.models import DecoderConfig, params_io
from mathft_jax.partitioning import MeshConfig
from mathft_jax.recipe.configs import EvaluatorConfig, MultitaskConfig
from mathft_jax.recipe.plan import memory_plan
from mathft_jax.recipe.report import write_report
from mathft_jax.recipe.settings import check_settings
from mathft_jax.training.train_config import TrainingConfig

# run_recipe arguments that do not decide a run's numbers (every other one does): where it runs, the mesh layout,
# the memory check. A run may resume on another slice.
_NOT_SETTINGS = ("run_dir", "mesh", "slice_name", "plan_only")


def _log(message: str, start: float) -> None:
  print(f"[recipe {time.time() - start:7.1f}s] {message}", flush=True)


def _on_first_host(label: str, fn, unless_exists: Optional[str] = None) -> None:
  """Runs fn on process 0 only (grading, re-ranking and reports write shared files), then every host waits for
  it. Only process 0 looks at `unless_exists` (skip when that output is there), so every host always reaches the
  barrier: a host that checked after process 0 wrote the file would otherwise skip it and leave the rest waiting."""
  if jax.process_index() == 0 and not (unless_exists and run_io.exists(unless_exists)):
    fn()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"mathft-recipe {label}")


def stage_training(training: TrainingConfig, steps: int, learning_rate: Optional[float] = None,
                   loss_fn=None) -> TrainingConfig:
  """`training` for a stage of `steps` steps: its schedule ends there (warmup at most the stage), its peak is
  `learning_rate` (None: training's), its loss `loss_fn` (None: training's). Everything else is kept."""
  schedule = training.optimizer.schedule
  schedule = dataclasses.replace(schedule, peak=learning_rate or schedule.peak, total_steps=steps,
                                 warmup_steps=min(schedule.warmup_steps, steps))
  return dataclasses.replace(training, optimizer=dataclasses.replace(training.optimizer, schedule=schedule),
                             loss_fn=loss_fn or training.loss_fn)


def run_recipe(*, run_dir: str, model_config: DecoderConfig, generator_task: str, task_feature_lengths: dict,
               train_problems: str, test_problems: str, ssft_steps: int, batch_size: int = 16,
               training: TrainingConfig = TrainingConfig(), evaluator: EvaluatorConfig = EvaluatorConfig(),
               multitask: MultitaskConfig = MultitaskConfig(), sampling: SamplingConfig = SamplingConfig(),
               initial_checkpoint_path: Optional[str] = None, tokenizer: Optional[str] = None,
               k_clusters: int = 8, mesh: MeshConfig = MeshConfig(), slice_name: Optional[str] = None,
               plan_only: bool = False) -> dict:
  """Runs every stage (see the module doc); returns {generator name: metrics.json dict}.

  batch_size: sequences per generator step. training.optimizer.schedule.peak is SSFT's peak learning rate;
    the evaluator and stage 3 have their own (default: the same). training.seed seeds training, data and sampling.
  tokenizer: the model's tokenizer comes with initial_checkpoint_path (a params folder); a tokenizer given here must
    be that one. Without an initial checkpoint it is the tokenizer of the model trained from scratch (default
    "byte"). Every stage's checkpoint carries it, sampling and scoring read it from there, and recipe_settings.json
    records its fingerprint.
  slice_name: the accelerator slice the run is sized for (a key of `mathft_jax.recipe.memory.SLICES`): before any
    compute the per-device memory of each stage is printed, and the run stops if one would not fit.
    plan_only: only that check; returns {stage: MemoryEstimate}.
  """
  if slice_name or plan_only:
    plan = memory_plan(model_config, mesh, batch_size, task_feature_lengths, evaluator, sampling, slice_name)
    if plan_only:
      return plan
  from mathft_jax.data.seqio_source import SeqioSource
  from mathft_jax.evaluator.pairs import write_evaluator_data
  from mathft_jax.inference.infer import infer
  from mathft_jax.reranking.rerank import rerank
  from mathft_jax.training.train import train
  evaluator_loss = evaluator.loss_fn()  # unknown losses and options are refused before any stage
  partitioning.maybe_initialize_distributed()  # before anything asks JAX about processes (a resumed run samples first)
  run_tokenizer = params_io.starting_tokenizer(initial_checkpoint_path, tokenizer)
  params_io.check_vocab_fits(run_tokenizer, model_config, "the recipe's model_config")
  check_settings(run_dir, {**{k: v for k, v in locals().items()
                              if k in inspect.signature(run_recipe).parameters and k not in _NOT_SETTINGS},
                           "tokenizer_fingerprint": run_tokenizer.fingerprint})
  start, seed = time.time(), training.seed
  path = lambda *parts: run_io.join(run_dir, *parts)  # noqa: E731

  def train_stage(name: str, task: str, steps: int, init: Optional[str], stage: TrainingConfig,
                  lengths: Optional[dict] = None, batch: int = batch_size) -> str:
    export = path(name, "export")
    if run_io.exists(run_io.join(export, params_io.MANIFEST)):
      _log(f"{name}: done earlier ({export})", start)
      return export
    _log(f"{name}: {steps} steps on {task} from {init or 'random init'}", start)
    train(model_dir=path(name), model_config=model_config, train_steps=steps, training=stage, mesh=mesh,
          train_data=SeqioSource(task, lengths or task_feature_lengths, batch, seed=seed),
          initial_checkpoint_path=init, tokenizer=run_tokenizer)
    return export

  def sample(name: str, checkpoint: str, problems: str, config: SamplingConfig) -> str:
    out = path(name)
    if not run_io.ChunkedOutput(out).complete(jax.process_count()):
      what = "greedy" if config.temperature == 0 else f"{config.num_samples} samples"
      _log(f"{name}: {what} on {problems}", start)
      infer(mode="sample", output_dir=out, checkpoint_path=checkpoint, problems=problems, sampling=config,
            seed=seed, tokenizer=tokenizer)
    return out

  def score(name: str, checkpoint: str, candidates: str) -> str:
    out = path(name)
    if not run_io.ChunkedOutput(out).complete(jax.process_count()):
      _log(f"{name}: evaluator scores for {candidates}", start)
      infer(mode="score", output_dir=out, checkpoint_path=checkpoint, problems=test_problems, sampling=sampling,
            candidates_dir=candidates, score_fields=("loglik",) if evaluator.loss == "seq" else ("score",))
    return out

  greedy_sampling = dataclasses.replace(sampling, num_samples=1, temperature=0.0)
  if ssft_steps:
    ssft = train_stage("ssft", generator_task, ssft_steps, initial_checkpoint_path,
                       stage_training(training, ssft_steps))
  elif initial_checkpoint_path:
    ssft = initial_checkpoint_path
  else:
    raise ValueError("ssft_steps=0 needs initial_checkpoint_path (a pretrained model for the few-shot baseline)")
  generators, evaluator_export = {"ssft": ssft}, None
  if evaluator.steps:
    samples = sample("train_samples", ssft, train_problems,
                     dataclasses.replace(sampling, num_samples=evaluator.samples_per_problem or sampling.num_samples))
    data = path("train_graded", "evaluator_data.jsonl")

    def grade():
      _log("train_graded: grading training samples", start)
      rerank(candidates=samples, references=train_problems, output_dir=path("train_graded"), k_clusters=k_clusters)
      write_evaluator_data(path("train_graded", "graded.jsonl"), data, train_problems,
                           evaluator.include_reference_solutions)
    _on_first_host("train_graded", grade, unless_exists=data)
    evaluator_export = train_stage(
        "evaluator", f"evaluator_{evaluator.loss}:{run_io.absolute(data)}", evaluator.steps, ssft,
        stage_training(training, evaluator.steps, evaluator.learning_rate, evaluator_loss),
        evaluator.lengths(task_feature_lengths), evaluator.batch_size or batch_size)
    if multitask.steps:
      generators["multitask"] = train_stage("multitask", generator_task, multitask.steps, evaluator_export,
                                            stage_training(training, multitask.steps, multitask.learning_rate))
      if multitask.run_control:
        control_steps = evaluator.steps + multitask.steps
        generators["continued"] = train_stage("continued", generator_task, control_steps, ssft,
                                              stage_training(training, control_steps, multitask.learning_rate))
  results = {}
  for name, checkpoint in generators.items():
    greedy = sample(f"eval_{name}/greedy", checkpoint, test_problems, greedy_sampling)
    samples = sample(f"eval_{name}/samples", checkpoint, test_problems, sampling)
    scores = score(f"eval_{name}/scores", evaluator_export, samples) if evaluator_export else None
    report = path(f"eval_{name}", "report")

    def rerank_generator(name=name, samples=samples, scores=scores, greedy=greedy, report=report):
      _log(f"eval_{name}: re-ranking", start)
      rerank(candidates=samples, scores=scores, greedy=greedy, references=test_problems, output_dir=report,
             k_clusters=k_clusters, score_field=evaluator.score_field)
    _on_first_host(f"eval_{name}", rerank_generator, unless_exists=run_io.join(report, "metrics.json"))
    results[name] = run_io.read_json(run_io.join(report, "metrics.json"))
  _on_first_host("report", lambda: write_report(run_dir, results, sampling.num_samples, k_clusters))
  _log(f"done: {path('report.md')}", start)
  return results


def main() -> None:
  from mathft_jax import gin_main
  gin_main.run(run_recipe)  # `python -m mathft_jax.recipe` runs recipe/__main__.py: this module is never __main__
