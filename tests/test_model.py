"""Decoder model: published parameter counts, logical axes, packing, KV cache, dtypes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from mathft_jax.models import Decoder, abstract_params, init_cache, init_params, logical_axes, param_count, preset
from mathft_jax.models.decoder import stack_layers, unstack_layers

# Parameter counts published by the model authors (HF model cards / safetensors metadata).
PUBLISHED = {
    "llama3_8b": 8_030_261_248,
    "llama3_1_8b": 8_030_261_248,
    "qwen2_5_1_5b": 1_543_714_304,
    "qwen2_5_7b": 7_615_616_512,
    "gemma_2b": 2_506_172_416,
    "gemma_7b": 8_537_680_896,
}
LOGICAL_NAMES = {"embed", "heads", "kv_heads", "head_dim", "mlp", "vocab"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_count_matches_published(name):
  count = param_count(preset(name))
  assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 1e-3, (name, count)


def test_eval_shape_allocates_nothing():
  tree = abstract_params(preset("llama3_8b"))
  assert all(isinstance(x.value, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(
      tree, is_leaf=lambda x: hasattr(x, "names")))


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma", "tiny_palm", "qwen2_5_1_5b"])
def test_every_param_has_logical_axes(name):
  specs = jax.tree_util.tree_leaves(logical_axes(preset(name)), is_leaf=lambda x: isinstance(x, PartitionSpec))
  shapes = jax.tree_util.tree_leaves(abstract_params(preset(name)))
  assert len(specs) == len(shapes)
  for spec, shape in zip(specs, shapes):
    assert len(spec) == len(shape.shape) and set(spec) <= LOGICAL_NAMES, (spec, shape.shape)


@pytest.fixture(scope="module", params=["tiny", "tiny_gemma", "tiny_palm"])
def model(request):
  cfg = preset(request.param)
  return cfg, init_params(cfg, jax.random.PRNGKey(0))


def test_packed_segments_do_not_see_each_other(model):
  """Two sequences packed in one row give the same logits as each alone (positions restart per segment)."""
  cfg, params = model
  rng = np.random.default_rng(1)
  a, b = rng.integers(3, 259, 5), rng.integers(3, 259, 7)
  packed = np.concatenate([a, b, [0, 0]])[None]
  segments = np.array([[1] * 5 + [2] * 7 + [0, 0]])
  positions = np.array([list(range(5)) + list(range(7)) + [0, 0]])
  out, _ = Decoder(cfg).apply({"params": params}, packed, positions, segments)
  alone_a, _ = Decoder(cfg).apply({"params": params}, a[None])
  alone_b, _ = Decoder(cfg).apply({"params": params}, b[None])
  np.testing.assert_allclose(out[0, :5], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(out[0, 5:12], alone_b[0], atol=1e-5)


def test_cache_steps_equal_full_forward(model):
  cfg, params = model
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 9), 3, 259)
  decoder = Decoder(cfg)
  full, _ = decoder.apply({"params": params}, tokens)
  logits, cache = decoder.apply({"params": params}, tokens[:, :4], cache=init_cache(cfg, 2, 12))
  pieces = [logits]
  for i in range(4, 9):
    logits, cache = decoder.apply({"params": params}, tokens[:, i:i + 1], cache=cache)
    pieces.append(logits)
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=1e-5)
  # Slots past the written ones stay empty and unattended.
  assert int(cache.index) == 9 and int(cache.segment_ids[:, 9:].sum()) == 0


def test_bfloat16_compute_keeps_float32_params(model):
  cfg, params = model
  tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 8), 3, 259)
  full, _ = Decoder(cfg).apply({"params": params}, tokens)
  low, _ = Decoder(cfg.replace(dtype="bfloat16")).apply({"params": params}, tokens)
  assert low.dtype == jnp.float32 and all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  # bf16 logits track float32 ones closely but not exactly.
  err = float(jnp.abs(low - full).max())
  assert 0 < err < 0.1 * float(jnp.abs(full).max())


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch", "qkv_mlp"])
@pytest.mark.parametrize("scan", [False, True])
def test_remat_policies_and_layer_scan_change_nothing_but_memory(model, remat, scan):
  """Loss and every gradient equal the plain loop's, for each remat policy, with and without nn.scan."""
  cfg, params = model
  tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 8), 3, 259)
  segments = jnp.array([[1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])

  def loss(p, c):
    logits, _ = Decoder(c).apply({"params": p}, tokens, segment_ids=segments)
    return jax.nn.log_softmax(logits).mean()

  l1, g1 = jax.value_and_grad(loss)(params, cfg)
  variant = cfg.replace(remat=remat, scan_layers=scan)
  stacked = stack_layers(params, cfg.num_layers) if scan else params
  l2, g2 = jax.value_and_grad(loss)(stacked, variant)
  if scan:
    assert "layers" in g2 and not any(k.startswith("layer_") for k in g2)
    g2 = unstack_layers(g2)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  assert jax.tree_util.tree_structure(g1) == jax.tree_util.tree_structure(g2)
  for x, y in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
    np.testing.assert_allclose(x, y, atol=1e-6)


def test_scanned_params_carry_a_layers_axis_and_decode_like_the_loop(model):
  cfg, params = model
  scanned = cfg.replace(scan_layers=True)
  specs = logical_axes(scanned)
  assert specs["layers"]["attn"]["q_kernel"] == PartitionSpec("layers", "embed", "heads", "head_dim")
  assert jax.tree_util.tree_structure(unstack_layers(stack_layers(params, cfg.num_layers))) == \
      jax.tree_util.tree_structure(params)
  tokens = jax.random.randint(jax.random.PRNGKey(5), (2, 6), 3, 259)
  outs = []
  for c, p in ((cfg, params), (scanned, stack_layers(params, cfg.num_layers))):
    cache = init_cache(c, 2, 8)
    prefill, cache = Decoder(c).apply({"params": p}, tokens[:, :5], cache=cache)
    step, cache = Decoder(c).apply({"params": p}, tokens[:, 5:], cache=cache)
    outs.append((prefill, step, cache.keys[-1]))
  for a, b in zip(*outs):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_old_boolean_remat_reads_as_a_policy():
  assert preset("tiny", {"remat": True}).remat == "full" and preset("tiny", {"remat": False}).remat == "none"
  with pytest.raises(ValueError, match="remat must be one of"):
    preset("tiny", {"remat": "some"})


def test_bad_configs_fail_clearly():
  with pytest.raises(ValueError, match="not a multiple of num_kv_heads"):
    preset("tiny", {"num_kv_heads": 3})
  with pytest.raises(ValueError, match="activation must be one of"):
    preset("tiny", {"activation": "relu"})
  with pytest.raises(KeyError, match="unknown model preset 'gpt5'"):
    preset("gpt5")
