"""What a recipe run sets besides the generator's training (`TrainingConfig`) and sampling (`SamplingConfig`): the
evaluator stage and the multi-task stage, as gin-configurable dataclasses (`recipe.EvaluatorConfig.*`,
`recipe.MultitaskConfig.*`)."""
import dataclasses
import functools
import inspect
from typing import Optional

from mathft_jax.evaluator.losses import margin_loss, sequence_contrastive_loss
from mathft_jax.training.train_step import LossFn, next_token_loss

LOSSES = {"ce": next_token_loss, "margin": margin_loss, "seq": sequence_contrastive_loss}


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
  """Stage 2: evaluator fine-tuning from the SSFT checkpoint on graded samples of the training problems.

  steps: 0 = no evaluator (SSFT and its evaluation by majority voting only).
  loss: "ce", "margin" or "seq" (`mathft_jax.evaluator.losses`); loss_options: the loss's keyword arguments, e.g.
    {"margin": 1.0, "alpha": 1.0} for "seq" (refused before any stage if the loss does not take them).
  learning_rate: its peak learning rate; None = the generator's.
  batch_size: examples per step (pairs for "margin" and "seq", each two sequences); None = the generator's.
  feature_lengths: lengths of the "ce"/"margin" task; None = the evaluator prompt (problem + whole candidate +
    question) gets the generator's inputs+targets length and the label 16 tokens. "seq" pairs are generator
    examples and always keep the generator's lengths.
  samples_per_problem: samples drawn per training problem for its data; None = the sampling's num_samples.
  include_reference_solutions: add each training problem's reference solution as a correct candidate (off in the
    paper's setting; for small generators that are rarely right, so that problems with only incorrect samples
    still give pairs).
  """
  steps: int = 0
  loss: str = "ce"
  loss_options: Optional[dict] = None
  learning_rate: Optional[float] = None
  batch_size: Optional[int] = None
  feature_lengths: Optional[dict] = None
  samples_per_problem: Optional[int] = None
  include_reference_solutions: bool = False

  def loss_fn(self) -> LossFn:
    """The loss with its options bound; ValueError for an unknown loss or options it does not take."""
    if self.loss not in LOSSES:
      raise ValueError(f"evaluator loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
    fn = LOSSES[self.loss]
    if not self.loss_options:
      return fn
    unknown = set(self.loss_options) - set(inspect.signature(fn).parameters) - {"apply_fn", "params", "batch"}
    if unknown or self.loss == "ce":
      raise ValueError(f"evaluator loss_options {sorted(self.loss_options)} do not apply to the {self.loss!r} loss")
    return functools.partial(fn, **self.loss_options)

  def lengths(self, generator_lengths: dict) -> dict:
    """The evaluator task's feature lengths (see `feature_lengths`)."""
    if self.loss == "seq":  # pairs of generator examples: the solution must not be cut to the label's length
      return generator_lengths
    return self.feature_lengths or {"inputs": sum(generator_lengths.values()), "targets": 16}

  @property
  def score_field(self) -> str:
    """What its scores are: the label probability ("score") or, for "seq", the per-token likelihood."""
    return "likelihood" if self.loss == "seq" else "score"


@dataclasses.dataclass(frozen=True)
class MultitaskConfig:
  """Stage 3: the generator's SSFT again, from the evaluator checkpoint (multi-task sequential fine-tuning), and
  the control the paper lacked: SSFT continued from stage 1 for as many steps as stages 2 and 3 together.

  steps: 0 = no stage 3 (nor control). learning_rate: None = the generator's. run_control: train the control."""
  steps: int = 0
  learning_rate: Optional[float] = None
  run_control: bool = True
