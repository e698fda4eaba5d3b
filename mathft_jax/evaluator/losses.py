"""Evaluator losses (Liu et al. 2023), for the trainer's loss seam `loss_fn(apply_fn, params, batch)`.

- Token cross-entropy on " correct" / " incorrect": `train_step.next_token_loss` on an `evaluator_ce:` task.
- `margin_loss`: on `evaluator_margin:` pairs [B, 2, L] (row 0 correct), max(0, log S(x-) - log S(x+) + margin)
  with S = p(correct) / (p(correct) + p(incorrect)) read at the first token where the two labels differ; optionally
  plus `ce_weight` x the label cross-entropy.
- `sequence_contrastive_loss`: on `evaluator_seq:` pairs, max(0, log p(x-|P) - log p(x+|P) + margin) + alpha x
  -log p(x+|P). The MLE term is the sequence NLL, on the hinge's scale: it keeps the generator's likelihood
  calibrated. A per-token mean here is ~100x weaker for 100-token solutions, and at demo size it let 100 steps
  at 1e-4 take the model's greedy accuracy from 60% to 14% (docs/benchmarks.md).
Both return per-pair sums with weight_sum = number of pairs, and "correct_sum" = pairs ranked right (reported as
accuracy). `labels` = (shared prefix length, correct id, incorrect id) of the model's tokenizer
(`Tokenizer.evaluator_labels`); the trainer binds them from the tokenizer the model was made with.
"""
import jax
import jax.numpy as jnp

from mathft_jax.training.train_step import token_log_probs


def _flatten_pairs(batch: dict) -> dict:
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def label_log_score(logits: jax.Array, weights: jax.Array, labels: tuple) -> jax.Array:
  """log S per row: logits [N, L, V], weights [N, L] (1 on the label tokens), labels (prefix length, correct id,
  incorrect id) -> [N]."""
  prefix_len, correct_id, incorrect_id = labels
  first = jnp.argmax(weights > 0, axis=1)  # the first label token
  position = first + prefix_len
  logp = jax.nn.log_softmax(jnp.take_along_axis(logits, position[:, None, None], axis=1)[:, 0])
  c, i = logp[:, correct_id], logp[:, incorrect_id]
  return c - jnp.logaddexp(c, i)


def margin_loss(apply_fn, params, batch, margin: float = 1.0, ce_weight: float = 0.0, labels=None):
  if labels is None:
    raise ValueError("margin_loss needs labels=(prefix length, correct id, incorrect id) of the model's tokenizer "
                     "(mathft-train binds them from the tokenizer the model was made with)")
  flat = _flatten_pairs(batch)
  logits = apply_fn(params, flat)
  log_s = label_log_score(logits, flat["decoder_loss_weights"], labels).reshape(-1, 2)
  hinge = jax.nn.relu(log_s[:, 1] - log_s[:, 0] + margin)
  weights = flat["decoder_loss_weights"].astype(jnp.float32)
  logp, _ = token_log_probs(logits, flat["decoder_target_tokens"])
  ce = -(logp * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)
  loss = hinge.sum() + ce_weight * ce.sum()
  return loss, {"loss_sum": loss, "hinge_sum": hinge.sum(), "correct_sum": (log_s[:, 0] > log_s[:, 1]).sum(),
                "score_pos_sum": jnp.exp(log_s[:, 0]).sum(), "weight_sum": jnp.float32(log_s.shape[0])}


def sequence_contrastive_loss(apply_fn, params, batch, margin: float = 1.0, alpha: float = 1.0):
  flat = _flatten_pairs(batch)
  logits = apply_fn(params, flat)
  weights = flat["decoder_loss_weights"].astype(jnp.float32)
  logp, _ = token_log_probs(logits, flat["decoder_target_tokens"])
  seq = (logp * weights).sum(axis=1).reshape(-1, 2)  # log p(x | P) for (x+, x-)
  tokens = weights.sum(axis=1).reshape(-1, 2)
  hinge = jax.nn.relu(seq[:, 1] - seq[:, 0] + margin)
  mle = -seq[:, 0]
  loss = (hinge + alpha * mle).sum()
  return loss, {"loss_sum": loss, "hinge_sum": hinge.sum(), "mle_sum": mle.sum(),
                "mle_per_token_sum": (mle / jnp.maximum(tokens[:, 0], 1.0)).sum(),
                "correct_sum": (seq[:, 0] > seq[:, 1]).sum(), "weight_sum": jnp.float32(seq.shape[0])}
