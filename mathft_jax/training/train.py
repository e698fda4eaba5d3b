"""The train binary: `mathft-train --gin_file=runs/ssft.gin --gin.MODEL_DIR="'/tmp/m'" ...`.

`train(...)` is a plain typed function; gin is attached only under `__main__` (see `gin_main`). A run resumes
from the latest checkpoint in MODEL_DIR (state and data position, so it continues exactly); otherwise it starts
from INITIAL_CHECKPOINT_PATH's params (an imported HF model) or from random weights. SIGTERM saves the current
step before exiting.
"""
import functools
import inspect
import sys
import time
from typing import Callable, Optional, Union

import jax
from jax.sharding import NamedSharding, PartitionSpec

from mathft_jax import partitioning, run_io
from mathft_jax.models import DecoderConfig, param_count, params_io
from mathft_jax.models.decoder import stack_layers, unstack_layers
from mathft_jax.text.tokenizer import SPEC_FILE, Tokenizer, TokenizerError, load_tokenizer
from mathft_jax.training.checkpointing import Checkpointer, PreemptionGuard
from mathft_jax.training.metrics_logging import MetricLogger, model_flops_per_token, peak_flops_per_device
from mathft_jax.training.train_config import TrainingConfig
from mathft_jax.training.train_step import LossFn, TrainState, summarize
from mathft_jax.training.trainer import BatchSource, Trainer, host_batches, params_fingerprint


def _initial_params(path: str, cfg: DecoderConfig, trainer: Trainer) -> dict:
  """Params from a params folder (`mathft-import-hf` output or an export), restored onto the trainer's shardings."""
  import orbax.checkpoint as ocp
  saved = params_io.model_config(path)
  arch = lambda c: c.replace(dtype="float32", param_dtype="float32", remat="none", scan_layers=False)  # noqa: E731
  if arch(saved) != arch(cfg):
    raise ValueError(f"{path}/{params_io.MANIFEST} describes a different architecture than the run's model config:"
                     f"\n  checkpoint: {saved}\n  run:        {cfg}")
  target = trainer.abstract_state.params
  restore = lambda t: ocp.StandardCheckpointer().restore(run_io.join(run_io.absolute(path), "params"), t)  # noqa
  if not cfg.scan_layers:
    return restore(target)
  # Exports hold layer_0..layer_{N-1}: restore each onto its slice of the stacked sharding, then stack in place.
  shardings = jax.tree_util.tree_map(lambda s: s.sharding, target)
  with jax.set_mesh(trainer.mesh):
    return jax.jit(lambda p: stack_layers(p, cfg.num_layers), out_shardings=shardings)(restore(_unstacked(target)))


def _run_tokenizer(model_dir: str, initial_checkpoint_path: Optional[str], tokenizer=None) -> Tokenizer:
  """The tokenizer a run trains with (`params_io.starting_tokenizer`), which must be the one MODEL_DIR recorded
  when the run started, if it did (TokenizerError names both)."""
  recorded = run_io.join(model_dir, "tokenizer")
  chosen = params_io.starting_tokenizer(initial_checkpoint_path, tokenizer)
  if run_io.exists(run_io.join(recorded, SPEC_FILE)) and load_tokenizer(recorded) != chosen:
    raise TokenizerError(f"{recorded}: this run started with another tokenizer ({load_tokenizer(recorded)}) than "
                         f"the one given now ({chosen}); use a new model_dir")
  return chosen


def bind_tokenizer(loss_fn: LossFn, data: BatchSource, tokenizer: Tokenizer) -> tuple[LossFn, BatchSource]:
  """The loss and data source of a run, reading `tokenizer`: a loss with a `labels` parameter (the evaluator's
  margin loss) gets the tokenizer's evaluator label ids; a source with `with_tokenizer` (seqio) its ids."""
  if "labels" in inspect.signature(loss_fn).parameters:
    prefix, correct, incorrect = tokenizer.evaluator_labels()
    loss_fn = functools.partial(loss_fn, labels=(len(prefix), correct, incorrect))
  if hasattr(data, "with_tokenizer"):
    data = data.with_tokenizer(tokenizer)
  return loss_fn, data


def _unstacked(target: dict) -> dict:
  """Abstract stacked params -> abstract layer_i params, each sharded like one slice of the stacked array."""
  def one(s: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
    spec = tuple(s.sharding.spec) + (None,) * (len(s.shape) - len(s.sharding.spec))
    return jax.ShapeDtypeStruct(s.shape[1:], s.dtype, sharding=NamedSharding(s.sharding.mesh, PartitionSpec(*spec[1:])))
  layer = jax.tree_util.tree_map(one, target["layers"])
  out = {k: v for k, v in target.items() if k != "layers"}
  out.update({f"layer_{i}": layer for i in range(jax.tree_util.tree_leaves(target["layers"])[0].shape[0])})
  return out


def train(*, model_dir: str, model_config: DecoderConfig, train_data: BatchSource, train_steps: int,
          training: TrainingConfig = TrainingConfig(), mesh: partitioning.MeshConfig = partitioning.MeshConfig(),
          rules: tuple = partitioning.DEFAULT_RULES, initial_checkpoint_path: Optional[str] = None,
          eval_data: Optional[BatchSource] = None, num_data_shards: Optional[int] = None,
          tokenizer: Union[None, str, Tokenizer] = None,
          on_start: Optional[Callable[[str], None]] = None) -> TrainState:
  """Trains `model_config` on `train_data` for `train_steps` steps as `training` says; returns the final state.

  tokenizer: the model's tokenizer (a source of `mathft_jax.text.tokenizer.load_tokenizer`). By default the initial
    checkpoint's, or the byte vocabulary for a model trained from scratch; one given explicitly must be the same as
    the checkpoint's. It is recorded in MODEL_DIR/tokenizer when the run starts and exported with the params.
  num_data_shards: pipeline shards forming a global batch (default: one per process); fix it to compare runs
  with different process counts on identical batches.
  """
  partitioning.maybe_initialize_distributed()
  tokenizer = _run_tokenizer(model_dir, initial_checkpoint_path, tokenizer)
  params_io.check_vocab_fits(tokenizer, model_config, model_dir)
  loss_fn, train_data = bind_tokenizer(training.loss_fn, train_data, tokenizer)
  if eval_data is not None:
    eval_data = bind_tokenizer(loss_fn, eval_data, tokenizer)[1]
  run_io.makedirs(model_dir)
  if jax.process_index() == 0:
    tokenizer.save(run_io.join(model_dir, "tokenizer"))
    if on_start is not None:
      on_start(model_dir)
  trainer = Trainer(model_config, training.optimizer, partitioning.make_mesh(mesh), rules, loss_fn,
                    training.accum_steps)
  checkpoint_every, log_every = training.cadence(train_steps)
  checkpointer = Checkpointer(model_dir, checkpoint_every, training.keep_checkpoints, training.async_checkpoints)
  logger = MetricLogger(model_dir)
  logger.text(f"training: {training.describe()}; checkpoints every {checkpoint_every} steps")

  latest = checkpointer.latest_step()
  if latest is not None:
    state, data_state = checkpointer.restore(trainer.abstract_state)
    start = int(data_state["batches_consumed"])
    logger.text(f"resumed from {checkpointer.directory} at step {latest}")
  else:
    params = _initial_params(initial_checkpoint_path, model_config, trainer) if initial_checkpoint_path else None
    state = trainer.init_state(training.seed, params)
    start = 0
    logger.text(f"started from {initial_checkpoint_path or 'random init'}; {param_count(model_config):,} params")

  batches = host_batches(train_data, start, num_data_shards)
  global_tokens = flops_per_token = None
  peak = peak_flops_per_device()
  window_start, window_steps = time.time(), 0
  step = start
  with PreemptionGuard() as guard:
    while step < train_steps:
      host_batch = next(batches)
      if global_tokens is None:
        global_tokens = host_batch["decoder_input_tokens"].size * jax.process_count()
        flops_per_token = model_flops_per_token(model_config, host_batch["decoder_input_tokens"].shape[-1])
      state, metrics = trainer.train_step(state, host_batch)
      step += 1
      window_steps += 1
      checkpointer.save(step, state, {"batches_consumed": step})
      if step % log_every == 0 or step == train_steps:
        metrics = jax.device_get(metrics)
        elapsed = time.time() - window_start
        tokens_per_s = global_tokens * window_steps / elapsed
        metrics["tokens_per_second"] = tokens_per_s
        if peak:
          metrics["mfu"] = tokens_per_s * flops_per_token / (peak * jax.device_count())
        logger.scalars(step, metrics, "train")
        window_start, window_steps = time.time(), 0
      if eval_data is not None and training.eval_every and step % training.eval_every == 0:
        evaluate(trainer, state, eval_data, training.eval_batches, step, logger, num_data_shards)
      if guard.should_stop():
        checkpointer.save(step, state, {"batches_consumed": step}, force=True)
        checkpointer.close()
        logger.text(f"preempted: saved step {step} to {checkpointer.directory}")
        logger.close()
        return state
  if checkpointer.latest_step() != step:
    checkpointer.save(step, state, {"batches_consumed": step}, force=True)
  checkpointer.close()
  params, export_config = state.params, model_config
  if model_config.scan_layers:  # exports are always in the unstacked layout (HF imports, mathft-infer)
    with jax.set_mesh(trainer.mesh):
      params = jax.jit(unstack_layers)(params)
    export_config = model_config.replace(scan_layers=False)
  hf = params_io.hf_source(initial_checkpoint_path) if initial_checkpoint_path else {}
  params_io.save_params(params, export_config, run_io.join(model_dir, "export"), tokenizer, overwrite=True, hf=hf,
                        provenance={"step": step, "model_dir": run_io.absolute(model_dir),
                                    "initial_checkpoint_path": initial_checkpoint_path})
  logger.text(f"done at step {step}; params fingerprint {params_fingerprint(state.params)}; "
              f"params exported to {run_io.join(model_dir, 'export')} (for mathft-infer)")
  logger.close()
  return state


def evaluate(trainer: Trainer, state: TrainState, data: BatchSource, num_batches: int, step: int,
             logger: MetricLogger, num_data_shards: Optional[int] = None) -> dict:
  """Mean eval loss/accuracy over the first `num_batches` batches of `data`."""
  batches = host_batches(data, 0, num_data_shards)
  sums = trainer.eval_sums(state.params, (b for _, b in zip(range(num_batches), batches)))
  metrics = jax.device_get(summarize(sums))
  logger.scalars(step, metrics, "eval")
  return metrics


def main() -> None:
  import gin

  from mathft_jax import gin_main
  from mathft_jax.training import train as train_module  # the importable module, whatever __main__ is

  def write_config(model_dir: str) -> None:
    run_io.write_atomic(run_io.join(model_dir, "config.gin"), gin.config_str())

  gin_main.parse(sys.argv[1:])
  configured = gin.get_configurable(train_module.train)
  configured(on_start=write_config)


if __name__ == "__main__":
  main()

