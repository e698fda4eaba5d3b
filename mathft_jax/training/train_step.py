"""Train state, loss functions and the jitted train/eval steps.

Batches use seqio's decoder feature names, each [B, L]: decoder_input_tokens, decoder_target_tokens,
decoder_loss_weights (0 on prompt and padding tokens), and for packed batches decoder_segment_ids and
decoder_positions.

A loss function is the seam for the recipe's objectives: `loss_fn(apply_fn, params, batch) -> (loss_sum, sums)`
where `sums` holds at least "weight_sum". Losses are sums over the batch; the step divides by the summed weight of
the whole (accumulated, sharded) batch, so gradient accumulation and sharding do not change the result.
"""
from typing import Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mathft_jax.models import Decoder, DecoderConfig

LossFn = Callable[[Callable, dict, dict], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32
  params: dict
  opt_state: optax.OptState
  rng: jax.Array  # [2] uint32, folded with the step for any randomness in the loss


def model_apply_fn(cfg: DecoderConfig) -> Callable:
  """(params, batch) -> logits [B, L, V] float32."""
  model = Decoder(cfg)

  def apply(params, batch):
    logits, _ = model.apply({"params": params}, batch["decoder_input_tokens"], batch.get("decoder_positions"),
                            batch.get("decoder_segment_ids"))
    return logits
  return apply


def token_log_probs(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """logits [B, L, V], targets [B, L] -> (log p(target) [B, L], log-partition [B, L])."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return target_logits - log_z, log_z


def next_token_loss(apply_fn: Callable, params: dict, batch: dict, z_loss: float = 0.0) -> tuple[jax.Array, dict]:
  """Weighted token cross-entropy (+ z_loss * log(Z)^2), as sums over the batch."""
  logits = apply_fn(params, batch)
  targets = batch["decoder_target_tokens"]
  weights = batch["decoder_loss_weights"].astype(jnp.float32)
  logp, log_z = token_log_probs(logits, targets)
  nll = -(logp * weights).sum()
  loss = nll + z_loss * (jnp.square(log_z) * weights).sum()
  correct = ((jnp.argmax(logits, -1) == targets) * weights).sum()
  return loss, {"loss_sum": loss, "nll_sum": nll, "correct_sum": correct, "weight_sum": weights.sum()}


def _split_microbatches(batch: dict, accum_steps: int) -> dict:
  def split(x):
    if x.shape[0] % accum_steps:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by accum_steps={accum_steps}")
    return x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:])
  return jax.tree_util.tree_map(split, batch)


def _grads_and_sums(loss_fn: LossFn, apply_fn, params, batch, accum_steps: int):
  grad_fn = jax.value_and_grad(lambda p, b: loss_fn(apply_fn, p, b), has_aux=True)
  if accum_steps == 1:
    (_, sums), grads = grad_fn(params, batch)
    return grads, sums

  def body(carry, micro):
    grads, sums = carry
    (_, s), g = grad_fn(params, micro)
    return (jax.tree_util.tree_map(jnp.add, grads, g), jax.tree_util.tree_map(jnp.add, sums, s)), None

  micro = _split_microbatches(batch, accum_steps)
  first = jax.tree_util.tree_map(lambda x: x[0], micro)
  (_, sums0), grads0 = grad_fn(params, first)
  rest = jax.tree_util.tree_map(lambda x: x[1:], micro)
  (grads, sums), _ = jax.lax.scan(body, (grads0, sums0), rest)
  return grads, sums


def summarize(sums: dict) -> dict:
  """Sums -> means: loss, token accuracy (for token losses), plus every other "*_sum" divided by weight_sum."""
  denom = jnp.maximum(sums["weight_sum"], 1.0)
  out = {k[:-len("_sum")]: v / denom for k, v in sums.items() if k.endswith("_sum") and k != "weight_sum"}
  if "correct" in out:
    out["accuracy"] = out.pop("correct")
  out["weight_sum"] = sums["weight_sum"]
  return out


def make_train_step(apply_fn: Callable, optimizer: optax.GradientTransformation, loss_fn: LossFn,
                    schedule: Callable, accum_steps: int = 1) -> Callable:
  """(state, batch) -> (state, metrics): mean-loss gradients over the whole batch, one optimizer update."""

  def step(state: TrainState, batch: dict):
    grads, sums = _grads_and_sums(loss_fn, apply_fn, state.params, batch, accum_steps)
    denom = jnp.maximum(sums["weight_sum"], 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = summarize(sums)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def make_eval_step(apply_fn: Callable, loss_fn: LossFn) -> Callable:
  """(params, batch) -> sums (add them up over eval batches, then `summarize`)."""
  return lambda params, batch: loss_fn(apply_fn, params, batch)[1]


def abstract_train_state(cfg: DecoderConfig, optimizer: optax.GradientTransformation):
  """Shape-only TrainState with flax `Partitioned` boxes on params and on the optimizer's param-shaped state."""
  def init(rng):
    boxed = Decoder(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))["params"]
    return TrainState(step=jnp.array(0, jnp.int32), params=boxed, opt_state=optimizer.init(boxed), rng=rng)
  return jax.eval_shape(init, jax.random.PRNGKey(0))


def init_train_state(cfg: DecoderConfig, optimizer: optax.GradientTransformation, rng: jax.Array,
                     params: dict = None) -> TrainState:
  """A fresh TrainState (unboxed); `params` (e.g. an imported checkpoint) replaces the random init."""
  if params is None:
    params = nn.unbox(Decoder(cfg).init(rng, jnp.zeros((1, 1), jnp.int32))["params"])
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=optimizer.init(params),
                    rng=jax.random.fold_in(rng, 1))
