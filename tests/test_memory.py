"""HBM estimator: exact shard sizes, agreement with XLA's compiled peak on fake devices, shipped recipes fit."""
import glob
import math
import os

import gin
import jax
import jax.numpy as jnp
import pytest

from mathft_jax import gin_main, partitioning
from mathft_jax.inference.infer import SamplingConfig
from mathft_jax.models import preset
from mathft_jax.recipe.memory import SLICES, estimate_sampling, estimate_training
from mathft_jax.training.optim import OptimizerConfig
from mathft_jax.training.trainer import Trainer

SMALL = preset("tiny").replace(d_model=256, num_layers=4, num_heads=8, num_kv_heads=2, head_dim=32, mlp_dim=768,
                               scan_layers=True)


def _trainer(cfg, mesh_config):
  n = mesh_config.data * mesh_config.fsdp * mesh_config.tensor
  return Trainer(cfg, OptimizerConfig(name="adamw"), partitioning.make_mesh(mesh_config, jax.devices()[:n]))


def _compiled_peak(trainer, batch, length) -> int:
  """argument + output - aliased (donated) + temporary bytes of the compiled train step, per device."""
  sharding = partitioning.batch_sharding(trainer.mesh)
  abstract_batch = {k: jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=sharding)
                    for k in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
                              "decoder_segment_ids", "decoder_positions")}
  with partitioning.on_mesh(trainer.mesh, trainer.rules):
    stats = trainer._train_step.lower(trainer.abstract_state, abstract_batch).compile().memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
          + stats.temp_size_in_bytes)


def test_shard_bytes_equal_the_trainers_real_shardings():
  mesh_config = partitioning.MeshConfig(data=2, fsdp=2, tensor=2)
  trainer = _trainer(preset("tiny_gemma"), mesh_config)  # one kv head: replicated on tensor, as the rules say
  exact = sum(math.prod(s.sharding.shard_shape(s.shape)) * s.dtype.itemsize
              for s in jax.tree_util.tree_leaves(trainer.abstract_state.params))
  estimate = estimate_training(preset("tiny_gemma"), mesh_config, 8, 8, 16)
  assert estimate.params == exact and estimate.gradients == exact
  opt_exact = sum(math.prod(s.sharding.shard_shape(s.shape)) * s.dtype.itemsize
                  for s in jax.tree_util.tree_leaves(trainer.abstract_state.opt_state))
  assert estimate.optimizer == opt_exact


@pytest.mark.parametrize("remat", ["none", "full", "qkv_mlp"])
@pytest.mark.parametrize("mesh,batch", [((1, 1, 1), 8), ((2, 2, 2), 32)])
def test_estimate_is_within_20_percent_of_the_compiled_peak(remat, mesh, batch):
  """XLA's own buffer assignment for the real train step (8 fake CPU devices) against the estimate."""
  cfg = SMALL.replace(remat=remat)
  mesh_config = partitioning.MeshConfig(*mesh)
  measured = _compiled_peak(_trainer(cfg, mesh_config), batch, 256)
  estimate = estimate_training(cfg, mesh_config, math.prod(mesh), batch, 256).total
  assert abs(estimate - measured) / measured < 0.2, (estimate, measured)


def test_remat_and_sharding_lower_the_estimate_in_the_expected_order():
  one = partitioning.MeshConfig(1, 1, 1)
  by_policy = {p: estimate_training(SMALL.replace(remat=p), one, 1, 8, 256).activations
               for p in ("none", "dots", "qkv_mlp", "full")}
  assert by_policy["none"] > by_policy["dots"] > by_policy["qkv_mlp"] > by_policy["full"]
  fsdp = estimate_training(SMALL, partitioning.MeshConfig(1, 8, 1), 8, 64, 256)
  single = estimate_training(SMALL, one, 1, 8, 256)
  assert fsdp.params * 8 == single.params and fsdp.activations == single.activations
  cache = estimate_sampling(preset("llama3_8b"), partitioning.MeshConfig(1, 1, 4), 4, 4, 16, 2048).kv_cache
  assert cache == 32 * 2 * 64 * 2048 * 2 * 128 * 2  # layers x (k, v) x rows x slots x kv heads/4 x head_dim x bf16
  shared = estimate_sampling(preset("llama3_8b"), partitioning.MeshConfig(1, 1, 4), 4, 4, 16, 2048, engine="shared",
                             prompt_length=1024).kv_cache
  assert shared == 32 * 2 * (4 * 1024 + 64 * 1024) * 2 * 128 * 2  # 4 prompts once, 64 rows of 1,024 new tokens
  refill = estimate_sampling(preset("llama3_8b"), partitioning.MeshConfig(1, 1, 4), 4, 4, 16, 2048, engine="refill",
                             prompt_length=1024, decode_slots=24).kv_cache
  assert refill == 32 * 2 * (4 * 1024 + 24 * 1024) * 2 * 128 * 2  # 24 slots of 1,024 new tokens


SCALE_RECIPES = sorted(glob.glob(os.path.join(gin_main.PACKAGE_GIN_DIR, "recipes", "scale", "*.gin")))


@pytest.mark.parametrize("path", SCALE_RECIPES, ids=os.path.basename)
def test_shipped_real_size_recipes_fit_their_slices(path):
  from mathft_jax import recipe
  gin.clear_config()
  try:
    gin_main.parse([f"--gin_file=recipes/scale/{os.path.basename(path)}", "--gin.RUN_DIR='/tmp/r'",
                    "--gin.GENERATOR_TASK='ssft_math'", "--gin.TRAIN_PROBLEMS='x.jsonl'",
                    "--gin.TEST_PROBLEMS='y.jsonl'", "--gin.INITIAL_CHECKPOINT_PATH='/ckpt'"])
    slice_name = gin.query_parameter("%SLICE")
    estimates = gin.get_configurable(recipe.run_recipe)(plan_only=True)
  finally:
    gin.clear_config()
  assert slice_name in SLICES and set(estimates) == {"ssft", "evaluator", "sampling"}
  for stage, estimate in estimates.items():
    assert estimate.total < 0.9 * SLICES[slice_name].hbm_bytes, (path, stage, estimate.table(SLICES[slice_name]))


def test_scale_recipes_cover_the_issue_models_and_slices():
  names = " ".join(os.path.basename(p) for p in SCALE_RECIPES)
  for model in ("gemma_2b", "llama3_8b", "qwen2_5_7b"):
    assert model in names
  for slice_name in ("v4_32", "v5e_16", "v5p_8"):
    assert slice_name in names


def test_a_run_that_does_not_fit_stops_before_compute():
  from mathft_jax import recipe
  cfg = preset("llama3_8b", {"dtype": "bfloat16", "remat": "full", "scan_layers": True})
  with pytest.raises(ValueError, match="ssft, evaluator, sampling would not fit on v5e-16"):
    recipe.memory_plan(cfg, partitioning.MeshConfig(4, 4, 1), 32, {"inputs": 512, "targets": 1024},
                       recipe.EvaluatorConfig(), SamplingConfig(), "v5e-16")


def test_sampling_is_planned_for_the_larger_of_test_and_training_samples():
  from mathft_jax import recipe
  cfg = preset("tiny")

  def plan(num_samples, samples_per_training_problem=None):
    evaluator = recipe.EvaluatorConfig(samples_per_problem=samples_per_training_problem)
    return recipe.memory_plan(cfg, partitioning.MeshConfig(), 8, {"inputs": 64, "targets": 64}, evaluator,
                              SamplingConfig(num_samples=num_samples, max_new_tokens=64), None)["sampling"]
  few_test = plan(4, samples_per_training_problem=64)
  assert few_test == plan(64)
  assert few_test != plan(4)
