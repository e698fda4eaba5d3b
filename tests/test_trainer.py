"""Trainer: sharded == single-device, accumulation, schedules, initial checkpoints (in-process)."""
import os
import re

import jax
import numpy as np
import pytest

from mathft_jax import partitioning
from mathft_jax.models import init_params, preset
from mathft_jax.models.params_io import save_params
from mathft_jax.text.tokenizer import BYTE
from mathft_jax.training.optim import OptimizerConfig, ScheduleConfig, make_schedule
from mathft_jax.training.token_source import RandomTokenSource
from mathft_jax.training.train_config import TrainingConfig
from mathft_jax.training.train_step import next_token_loss
from mathft_jax.training.trainer import Trainer, host_batches

CFG = preset("tiny", {"num_layers": 2})
SGD = OptimizerConfig(name="sgd", schedule=ScheduleConfig(peak=1.0), clip_norm=0.0)  # update == -gradient


def _batch(seed=0, batch=8, length=16):
  rng = np.random.default_rng(seed)
  return {"decoder_input_tokens": rng.integers(3, 300, (batch, length)),
          "decoder_target_tokens": rng.integers(3, 300, (batch, length)),
          "decoder_loss_weights": (rng.random((batch, length)) > 0.3).astype(np.float32)}


def _grads_and_loss(mesh_config, devices=None, accum_steps=1, loss_fn=next_token_loss):
  trainer = Trainer(CFG, SGD, partitioning.make_mesh(mesh_config, devices), loss_fn=loss_fn,
                    accum_steps=accum_steps)
  state = trainer.init_state(seed=0)
  before = jax.device_get(state.params)
  state, metrics = trainer.train_step(state, _batch())
  grads = jax.tree_util.tree_map(lambda b, a: b - a, before, jax.device_get(state.params))
  return grads, float(metrics["loss"]), state


def test_sharded_step_equals_single_device():
  assert jax.device_count() == 8
  grads1, loss1, _ = _grads_and_loss(partitioning.MeshConfig(1, 1, 1), jax.devices()[:1])
  grads8, loss8, state = _grads_and_loss(partitioning.MeshConfig(2, 2, 2))
  q = state.params["layer_0"]["attn"]["q_kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)  # really sharded
  assert abs(loss1 - loss8) < 1e-5
  for g1, g8 in zip(jax.tree_util.tree_leaves(grads1), jax.tree_util.tree_leaves(grads8)):
    np.testing.assert_allclose(g1, g8, atol=1e-5)
  assert max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(grads1)) > 1e-3  # non-trivial grads


def test_a_batch_that_does_not_divide_over_the_mesh_is_named():
  trainer = Trainer(CFG, SGD, partitioning.make_mesh(partitioning.MeshConfig(4, 1, 2)))
  state = trainer.init_state(seed=0)
  with pytest.raises(ValueError, match=r"global batch of 6 rows .* multiple of 4"):
    trainer.train_step(state, _batch(batch=6))
  trainer.train_step(state, _batch(batch=4))  # 4 rows over data=4 are fine


def test_gradient_accumulation_equals_full_batch():
  grads1, loss1, _ = _grads_and_loss(partitioning.MeshConfig(1, 1, 1), jax.devices()[:1])
  grads4, loss4, _ = _grads_and_loss(partitioning.MeshConfig(1, 1, 1), jax.devices()[:1], accum_steps=4)
  assert abs(loss1 - loss4) < 1e-5
  for a, b in zip(jax.tree_util.tree_leaves(grads1), jax.tree_util.tree_leaves(grads4)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_z_loss_changes_loss_not_nll():
  z = lambda apply_fn, p, b: next_token_loss(apply_fn, p, b, z_loss=1e-2)  # noqa: E731
  _, plain, _ = _grads_and_loss(partitioning.MeshConfig(1, 1, 1), jax.devices()[:1])
  _, with_z, _ = _grads_and_loss(partitioning.MeshConfig(1, 1, 1), jax.devices()[:1], loss_fn=z)
  assert with_z > plain + 1e-4


def test_mqa_kv_heads_stay_replicated_when_tensor_does_not_divide():
  mesh = partitioning.make_mesh(partitioning.MeshConfig(2, 2, 2))
  trainer = Trainer(preset("tiny_gemma", {"num_layers": 1}), SGD, mesh)
  k = trainer.state_shardings.params["layer_0"]["attn"]["k_kernel"]
  assert k.spec == jax.sharding.PartitionSpec("fsdp", None, None)


@pytest.mark.parametrize("kind", ["constant", "cosine", "rsqrt"])
def test_schedules_warm_up_then_follow_their_shape(kind):
  fn = make_schedule(ScheduleConfig(kind=kind, peak=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1))
  values = [float(fn(s)) for s in (0, 4, 9, 60, 110, 500)]
  assert values[0] < values[1] < values[2] == pytest.approx(1.0)
  expected_mid = {"constant": 1.0, "cosine": 0.55, "rsqrt": np.sqrt(10 / 61)}[kind]
  assert values[3] == pytest.approx(expected_mid, rel=1e-3)
  if kind == "cosine":
    assert values[4] == pytest.approx(0.1) and values[5] == pytest.approx(0.1)


def test_bad_mesh_and_optimizer_configs_fail_clearly():
  with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
    partitioning.make_mesh(partitioning.MeshConfig(-1, -1, 1))
  with pytest.raises(ValueError, match="needs 12 devices, have 8"):
    partitioning.make_mesh(partitioning.MeshConfig(2, 2, 3))
  with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
    Trainer(CFG, OptimizerConfig(name="lion"), partitioning.make_mesh())


def test_host_batches_union_of_shards_is_the_global_batch():
  source = RandomTokenSource(batch_size=8, length=4, vocab_size=50, seed=3)
  whole = next(source.host_batches(5))
  two = next(host_batches(source, 5, num_data_shards=2))
  for k in whole:
    np.testing.assert_array_equal(whole[k], two[k])


def test_initial_checkpoint_params_are_the_starting_point(tmp_path):
  params = init_params(CFG, jax.random.PRNGKey(42))
  save_params(params, CFG, str(tmp_path / "init"), BYTE)
  from mathft_jax.training.train import _initial_params
  trainer = Trainer(CFG, SGD, partitioning.make_mesh(partitioning.MeshConfig(2, 2, 2)))
  restored = _initial_params(str(tmp_path / "init"), CFG, trainer)
  state = trainer.init_state(seed=0, params=restored)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(jax.device_get(state.params))):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="different architecture"):
    _initial_params(str(tmp_path / "init"), CFG.replace(num_layers=3), trainer)


def test_train_function_evaluates_logs_and_exports(tmp_path, capsys):
  from mathft_jax.models.params_io import load_params, read_manifest
  from mathft_jax.training.train import train
  model_dir = str(tmp_path / "run")
  source = RandomTokenSource(batch_size=8, length=32, vocab_size=300, seed=1)
  held_out = RandomTokenSource(batch_size=8, length=32, vocab_size=300, seed=2)
  training = TrainingConfig(optimizer=OptimizerConfig(schedule=ScheduleConfig(peak=1e-3)), eval_every=2,
                            eval_batches=2, log_every=2, checkpoint_every=2)
  state = train(model_dir=model_dir, model_config=CFG, train_data=source, train_steps=4, training=training,
                eval_data=held_out)
  out = capsys.readouterr().out
  assert int(state.step) == 4
  assert re.search(r"\[eval\] step 2: .*loss=", out) and re.search(r"\[eval\] step 4: .*loss=", out)
  assert re.search(r"\[train\] step 4: .*tokens_per_second=", out)
  for collection in ("train", "eval"):
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(model_dir, collection)))
  cfg, params = load_params(os.path.join(model_dir, "export"))
  assert cfg == CFG
  assert read_manifest(os.path.join(model_dir, "export"))["provenance"]["step"] == 4  # mathft-infer records it
  np.testing.assert_array_equal(params["embedding"], jax.device_get(state.params["embedding"]))


def test_adafactor_trains_on_a_sharded_mesh():
  opt = OptimizerConfig(name="adafactor", schedule=ScheduleConfig(peak=1e-2))
  trainer = Trainer(CFG, opt, partitioning.make_mesh(partitioning.MeshConfig(2, 2, 2)))
  state = trainer.init_state(seed=0)
  losses = []
  for _ in range(5):
    state, metrics = trainer.train_step(state, _batch())
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_scanned_remat_training_from_an_unstacked_checkpoint_matches_the_loop(tmp_path):
  """Layer scan + remat as run options: same losses as the plain loop from the same imported params on a 2x2x2
  mesh (the stacked params sharded with a leading 'layers' axis), and the export is the unstacked layout."""
  from mathft_jax.models.params_io import load_params
  from mathft_jax.training.train import train
  init = str(tmp_path / "init")
  save_params(init_params(CFG, jax.random.PRNGKey(7)), CFG, init, BYTE)
  states = {}
  for name, cfg in (("loop", CFG), ("scan", CFG.replace(scan_layers=True, remat="qkv_mlp"))):
    states[name] = train(model_dir=str(tmp_path / name), model_config=cfg, train_steps=3, initial_checkpoint_path=init,
                         train_data=RandomTokenSource(batch_size=8, length=16, vocab_size=300, seed=3),
                         training=TrainingConfig(OptimizerConfig(name="sgd", schedule=ScheduleConfig(peak=0.5)),
                                                 log_every=1, checkpoint_every=3),
                         mesh=partitioning.MeshConfig(2, 2, 2))
  q = states["scan"].params["layers"]["attn"]["q_kernel"]
  assert q.shape[0] == CFG.num_layers and q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  cfg_loop, loop = load_params(str(tmp_path / "loop" / "export"))
  cfg_scan, scan = load_params(str(tmp_path / "scan" / "export"))
  assert not cfg_scan.scan_layers and cfg_scan.remat == "qkv_mlp"
  assert jax.tree_util.tree_structure(loop) == jax.tree_util.tree_structure(scan)
  moved = 0.0
  for a, b, c in zip(jax.tree_util.tree_leaves(loop), jax.tree_util.tree_leaves(scan),
                     jax.tree_util.tree_leaves(init_params(CFG, jax.random.PRNGKey(7)))):
    np.testing.assert_allclose(a, b, atol=1e-5)
    moved = max(moved, float(np.abs(a - c).max()))
  assert moved > 1e-3  # the three steps really changed the params
