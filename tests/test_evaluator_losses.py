"""Evaluator losses: the score formula, hinge behaviour, learning on real pair batches, sharding."""
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mathft_jax import partitioning
from mathft_jax.evaluator.losses import label_log_score, margin_loss, sequence_contrastive_loss
from mathft_jax.models import Decoder, preset
from mathft_jax.text.tokenizer import BYTE
from mathft_jax.training.optim import OptimizerConfig, ScheduleConfig
from mathft_jax.training.trainer import Trainer

CFG = preset("tiny", {"num_layers": 2})
_PREFIX, _CORRECT, _INCORRECT = BYTE.evaluator_labels()
BYTE_LABELS = (len(_PREFIX), _CORRECT, _INCORRECT)  # " correct" / " incorrect": the space, then 'c' vs 'i'


def test_byte_labels_are_the_space_then_c_or_i():
  assert BYTE_LABELS == (1, ord("c") + 3, ord("i") + 3) and _PREFIX == [ord(" ") + 3]


def test_label_log_score_formula():
  logits = np.zeros((1, 4, 300), np.float32)
  logits[0, 2, BYTE_LABELS[1]], logits[0, 2, BYTE_LABELS[2]] = 2.0, 0.5
  weights = np.array([[0, 1, 1, 1]])  # label tokens start at 1; the distinguishing token is at 1 + 1
  expected = math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5)))
  score = label_log_score(jnp.asarray(logits), jnp.asarray(weights), BYTE_LABELS)[0]
  assert float(score) == pytest.approx(expected, abs=1e-5)


def test_hinge_is_zero_exactly_when_the_margin_holds():
  # A fake apply_fn that returns fixed logits: pair 0 ranked right by 2 nats, pair 1 ranked wrong.
  logits = np.zeros((4, 3, 300), np.float32)
  for row, (c, i) in enumerate([(3.0, 0.0), (0.0, 0.0), (0.0, 0.0), (1.0, 0.0)]):
    logits[row, 2, BYTE_LABELS[1]], logits[row, 2, BYTE_LABELS[2]] = c, i
  batch = {"decoder_target_tokens": np.ones((2, 2, 3), np.int32),
           "decoder_loss_weights": np.tile(np.array([0, 1, 1]), (2, 2, 1))}
  _, sums = margin_loss(lambda p, b: jnp.asarray(logits), None, batch, margin=0.1, labels=BYTE_LABELS)
  log_s = [math.log(1 / (1 + math.exp(i - c))) for c, i in [(3.0, 0.0), (0.0, 0.0), (0.0, 0.0), (1.0, 0.0)]]
  expected = max(0, log_s[1] - log_s[0] + 0.1) + max(0, log_s[3] - log_s[2] + 0.1)
  assert float(sums["hinge_sum"]) == pytest.approx(expected, abs=1e-5)
  assert max(0, log_s[1] - log_s[0] + 0.1) == 0 and float(sums["correct_sum"]) == 1  # pair 1 ranked wrong


def _pair_batch(tmp_path, kind):
  from mathft_jax.data.seqio_source import SeqioSource
  rows = []
  for p in range(6):
    for k in range(4):
      ok = k < 2
      rows.append({"problem_id": f"p{p}", "sample_id": k, "problem": f"Compute {p} + {k}.", "correct": ok,
                   "text": f"So the answer is $\\boxed{{{10 + p + k if ok else 50 + p + k}}}$."})  # same length
  path = tmp_path / f"graded_{kind}.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  source = SeqioSource(f"evaluator_{kind}:{path}", {"inputs": 96, "targets": 48}, batch_size=8, seed=0)
  return next(source.host_batches(0))


BYTE_MARGIN_LOSS = functools.partial(margin_loss, labels=BYTE_LABELS)  # what mathft-train binds for byte models


@pytest.mark.parametrize("kind,loss_fn", [("margin", BYTE_MARGIN_LOSS), ("seq", sequence_contrastive_loss)])
def test_losses_learn_to_rank_real_pairs(tmp_path, kind, loss_fn):
  batch = _pair_batch(tmp_path, kind)
  assert batch["decoder_input_tokens"].shape == (8, 2, 144)
  trainer = Trainer(CFG, OptimizerConfig(schedule=ScheduleConfig(peak=3e-3)), partitioning.make_mesh(
      partitioning.MeshConfig(1, 1, 1), jax.devices()[:1]), loss_fn=loss_fn)
  state = trainer.init_state(seed=0)
  history = []
  for _ in range(40):
    state, metrics = trainer.train_step(state, batch)
    history.append((float(metrics["hinge"]), float(metrics["accuracy"])))
  assert history[-1][0] < 0.5 * history[0][0]
  assert history[-1][1] == 1.0  # every pair ranked right after fitting


def test_sequence_loss_is_the_hinge_plus_alpha_times_the_sequence_nll(tmp_path):
  batch = _pair_batch(tmp_path, "seq")
  model = Decoder(CFG)
  params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 8), jnp.int32))["params"]

  def apply_fn(p, features):
    return model.apply({"params": p}, features["decoder_input_tokens"], features["decoder_positions"],
                       features["decoder_segment_ids"])[0]
  loss, metrics = sequence_contrastive_loss(apply_fn, params, batch, margin=0.5, alpha=2.0)
  expected = 0.0
  for pair in range(batch["decoder_input_tokens"].shape[0]):
    logp = []
    for row in range(2):
      f = {k: v[pair, row][None] for k, v in batch.items()}
      lp = np.asarray(jax.nn.log_softmax(apply_fn(params, f)[0]))
      targets, weights = f["decoder_target_tokens"][0], f["decoder_loss_weights"][0]
      logp.append(sum(lp[t, targets[t]] for t in range(len(targets)) if weights[t]))
    expected += max(0.0, logp[1] - logp[0] + 0.5) - 2.0 * logp[0]
  assert float(loss) == pytest.approx(expected, rel=1e-4)
  assert float(metrics["mle_sum"]) > float(metrics["mle_per_token_sum"]) * 10  # the sum, not a per-token mean


def test_pair_losses_shard_like_single_device(tmp_path):
  batch = _pair_batch(tmp_path, "margin")
  sgd = OptimizerConfig(name="sgd", schedule=ScheduleConfig(peak=1.0), clip_norm=0.0)
  results = []
  for mesh in (partitioning.make_mesh(partitioning.MeshConfig(1, 1, 1), jax.devices()[:1]),
               partitioning.make_mesh(partitioning.MeshConfig(2, 2, 2))):
    trainer = Trainer(CFG, sgd, mesh, loss_fn=BYTE_MARGIN_LOSS)
    state = trainer.init_state(seed=0)
    before = jax.device_get(state.params)
    state, metrics = trainer.train_step(state, batch)
    results.append((float(metrics["loss"]), jax.tree_util.tree_map(lambda b, a: b - a, before,
                                                                   jax.device_get(state.params))))
  assert results[0][0] == pytest.approx(results[1][0], abs=1e-5)
  for g1, g8 in zip(jax.tree_util.tree_leaves(results[0][1]), jax.tree_util.tree_leaves(results[1][1])):
    np.testing.assert_allclose(g1, g8, atol=1e-5)
