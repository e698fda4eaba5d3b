"""How a model trains, apart from its model, data and length: the one config `mathft-train` and every recipe stage
pass to `train` (a recipe gin file sets these as `train_config.TrainingConfig.*`, the train binary too)."""
import dataclasses
import functools
from typing import Optional

from mathft_jax.training.optim import OptimizerConfig
from mathft_jax.training.train_step import LossFn, next_token_loss


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """optimizer: optimizer and learning-rate schedule (a recipe sets each stage's peak and total steps).
  loss_fn: the loss seam (`train_step`); the evaluator's losses come from `mathft_jax.evaluator.losses`.
  accum_steps: micro-batches a step is split into (the gradient is the whole batch's either way).
  checkpoint_every / log_every: in steps; None = a quarter / an eighth of the run (at least 1).
  keep_checkpoints, async_checkpoints: orbax's; eval_every (0 = never) and eval_batches: held-out evaluation.
  seed: parameter initialisation and the train state's RNG."""
  optimizer: OptimizerConfig = OptimizerConfig()
  loss_fn: LossFn = next_token_loss
  accum_steps: int = 1
  checkpoint_every: Optional[int] = None
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  log_every: Optional[int] = None
  eval_every: int = 0
  eval_batches: int = 10
  seed: int = 0

  def cadence(self, steps: int) -> tuple[int, int]:
    """(checkpoint_every, log_every) for a run of `steps` steps."""
    return self.checkpoint_every or max(steps // 4, 1), self.log_every or max(steps // 8, 1)

  def describe(self) -> str:
    """One line for the run's log: what changes what the run does."""
    schedule = self.optimizer.schedule
    loss = self.loss_fn.func if isinstance(self.loss_fn, functools.partial) else self.loss_fn
    return (f"{self.optimizer.name}, {schedule.kind} schedule to {schedule.peak:g} (warmup {schedule.warmup_steps}), "
            f"loss {getattr(loss, '__name__', loss)}, accum_steps={self.accum_steps}, "
            f"checkpoint_every={self.checkpoint_every}, seed={self.seed}")
