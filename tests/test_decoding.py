"""Decoding: greedy parity with transformers' generate, sampling distributions, stops, shared-prefix samples."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from mathft_jax.inference.decoding import (
  FINISH_EOS,
  FINISH_LENGTH,
  FINISH_STOP,
  Greedy,
  Temperature,
  TopK,
  TopP,
  bucket_length,
  left_pad,
)
from mathft_jax.inference.engines import make_generate_fn
from mathft_jax.models import Decoder, init_params, preset

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("engine", ["classic", "shared", "refill"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma"])
def test_greedy_matches_transformers_generate(family, engine, tmp_path):
  from test_hf_parity import _build  # the same tiny random HF models as the parity tests

  from mathft_jax.models.hf_import import load_hf_checkpoint
  model = _build(family, str(tmp_path))
  cfg, params = load_hf_checkpoint(str(tmp_path))
  rng = np.random.default_rng(1)
  prompts = [list(rng.integers(3, cfg.vocab_size, n)) for n in (5, 11, 8)]  # different lengths: left padding
  tokens, mask = left_pad(prompts, bucket_length(11, (16,)))
  eos = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else 1
  out = make_generate_fn(cfg, num_samples=1, max_new_tokens=32, eos_id=eos, engine=engine, block=8)(
      params, tokens, mask, jax.random.PRNGKey(0))
  for i, prompt in enumerate(prompts):
    with torch.no_grad():
      hf = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32, eos_token_id=eos,
                          pad_token_id=0)[0, len(prompt):].tolist()
    n = int(out["num_tokens"][i])
    assert out["tokens"][i, :n].tolist() == hf[:n], (family, i)
    assert n == 32 or hf[n - 1] == eos


@pytest.fixture(scope="module")
def tiny():
  cfg = preset("tiny", {"num_layers": 2})
  return cfg, init_params(cfg, jax.random.PRNGKey(3))


def _first_token_probs(cfg, params, prompt, transform):
  logits, _ = Decoder(cfg).apply({"params": params}, jnp.asarray([prompt]))
  return np.asarray(jax.nn.softmax(transform(logits[:, -1]))[0], np.float64)


@pytest.mark.parametrize("sampler,engine", [(Temperature(0.7), "classic"), (TopK(temperature=1.3, k=5), "classic"),
                                            (TopP(temperature=2.0, p=0.6), "classic"), (Temperature(0.7), "shared"),
                                            (TopP(temperature=2.0, p=0.6), "shared"), (Temperature(0.7), "refill")])
def test_first_token_distribution_matches_softmax(tiny, sampler, engine):
  cfg, params = tiny
  prompt = [70, 80, 90, 100]
  tokens, mask = left_pad([prompt], 8)
  draws = 6000
  out = make_generate_fn(cfg, num_samples=draws, max_new_tokens=1, sampler=sampler, engine=engine, slots=1000)(
      params, tokens, mask, jax.random.PRNGKey(0))
  counts = np.bincount(np.asarray(out["tokens"][:, 0]), minlength=cfg.vocab_size)
  probs = _first_token_probs(cfg, params, prompt, sampler.transform)
  support = probs > 0
  assert counts[~support].sum() == 0  # truncation respected: nothing outside top-k / top-p
  if not isinstance(sampler, (TopK, TopP)):
    assert support.sum() == cfg.vocab_size
  keep = probs * draws >= 5  # chi-square on cells with enough expected mass, the rest pooled
  observed = np.append(counts[keep], counts[~keep & support].sum())
  expected = np.append(probs[keep] * draws, probs[~keep & support].sum() * draws)
  observed, expected = observed[expected > 0], expected[expected > 0]
  expected *= observed.sum() / expected.sum()  # float32 probabilities sum to 1 only approximately
  assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3
  if isinstance(sampler, TopK):
    assert support.sum() == 5
  if isinstance(sampler, TopP):  # fails if top-p truncates nothing (whole vocab) or keeps only the argmax (1 token)
    assert 1 < support.sum() < cfg.vocab_size
  if isinstance(sampler, (TopK, TopP)):  # the truncation set, computed independently of the sampler's code
    raw = _first_token_probs(cfg, params, prompt, lambda x: x / sampler.temperature)
    order = np.argsort(-raw)
    if isinstance(sampler, TopK):
      expected_support = set(order[:sampler.k].tolist())
    else:
      mass_before = np.cumsum(raw[order]) - raw[order]
      expected_support = set(order[mass_before < sampler.p].tolist())
    assert set(np.flatnonzero(support).tolist()) == expected_support
    assert set(np.flatnonzero(counts).tolist()) <= expected_support


def test_shared_prefix_samples_and_stops(tiny):
  cfg, params = tiny
  prompts = [[70, 80, 90], [71, 72, 73, 74, 75, 76]]
  tokens, mask = left_pad(prompts, 8)
  greedy = make_generate_fn(cfg, num_samples=3, max_new_tokens=12)(params, tokens, mask, jax.random.PRNGKey(0))
  rows = np.asarray(greedy["tokens"])
  assert (rows[0] == rows[1]).all() and (rows[3] == rows[5]).all()  # N greedy copies of one prompt agree
  for p, prompt in enumerate(prompts):  # the cached decode equals step-by-step argmax of the full forward pass
    seq = list(prompt)
    for _ in range(4):
      logits, _ = Decoder(cfg).apply({"params": params}, jnp.asarray([seq]))
      seq.append(int(jnp.argmax(logits[0, -1])))
    assert rows[3 * p, :4].tolist() == seq[len(prompt):]
  stop = make_generate_fn(cfg, num_samples=1, max_new_tokens=12, stop_sequences=((int(rows[0, 1]), int(rows[0, 2])),))(
      params, tokens, mask, jax.random.PRNGKey(0))
  assert int(stop["finish"][0]) == FINISH_STOP and int(stop["num_tokens"][0]) == 3
  assert (np.asarray(stop["tokens"][0, 3:]) == 0).all()
  # EOS: the last token of the row that does not occur before it; the row must stop right there.
  j = max(i for i in range(12) if rows[0, i] not in rows[0, :i])
  eos = make_generate_fn(cfg, num_samples=1, max_new_tokens=12, eos_id=int(rows[0, j]))(
      params, tokens, mask, jax.random.PRNGKey(0))
  assert int(eos["finish"][0]) == FINISH_EOS and int(eos["num_tokens"][0]) == j + 1
  assert int(eos["finish"][1]) in (FINISH_EOS, FINISH_LENGTH)
  sampled = make_generate_fn(cfg, num_samples=4, max_new_tokens=12, sampler=Temperature(1.0))(
      params, tokens, mask, jax.random.PRNGKey(1))
  assert len({tuple(r) for r in np.asarray(sampled["tokens"][:4]).tolist()}) > 1  # samples differ
  assert np.all(np.asarray(sampled["logprob"]) < 0)


def test_logprob_is_the_model_sequence_likelihood(tiny):
  cfg, params = tiny
  prompt = [70, 80, 90]
  tokens, mask = left_pad([prompt], 4)
  out = make_generate_fn(cfg, num_samples=2, max_new_tokens=6, sampler=TopK(k=3))(params, tokens, mask,
                                                                                  jax.random.PRNGKey(2))
  for row in range(2):
    seq = prompt + np.asarray(out["tokens"][row]).tolist()
    logits, _ = Decoder(cfg).apply({"params": params}, jnp.asarray([seq[:-1]]))
    logp = jax.nn.log_softmax(logits[0])[jnp.arange(len(prompt) - 1, len(seq) - 1), jnp.asarray(seq[len(prompt):])]
    assert float(out["logprob"][row]) == pytest.approx(float(logp.sum()), abs=1e-3)


def test_bucketing_and_padding_errors():
  assert [bucket_length(n) for n in (1, 64, 65, 5000)] == [64, 64, 128, 8192]
  with pytest.raises(ValueError, match="prompt 0 has 9 tokens"):
    left_pad([list(range(9))], 8)


@pytest.mark.parametrize("engine", ["classic", "shared", "refill"])
def test_sharded_decoding_equals_single_device(tiny, engine):
  from mathft_jax import partitioning
  cfg, params = tiny
  assert jax.device_count() == 8
  prompts = [[70, 80, 90], [71, 72, 73, 74, 75], [60], [99, 98, 97, 96]]
  tokens, mask = left_pad(prompts, 8)
  mesh = partitioning.make_mesh(partitioning.MeshConfig(2, 2, 2))
  for sampler in (Greedy(), Temperature(1.0)):
    kwargs = dict(num_samples=2, max_new_tokens=10, sampler=sampler, engine=engine, block=4, slots=4, lane=2)
    single = make_generate_fn(cfg, **kwargs)(params, tokens, mask, jax.random.PRNGKey(4))
    sharded = make_generate_fn(cfg, mesh=mesh, **kwargs)(params, tokens, mask, jax.random.PRNGKey(4))
    assert len(sharded["tokens"].sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(single["tokens"]), np.asarray(sharded["tokens"]))
    np.testing.assert_allclose(np.asarray(single["logprob"]), np.asarray(sharded["logprob"]), atol=1e-4)


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": True}, {"parallel_block": True}, {"dtype": "bfloat16"}])
def test_shared_prompt_engine_equals_the_classic_one(overrides):
  """Greedy: the same tokens and log-probs (to float rounding) over blocks of live length, prompts of several lengths
  and a stop sequence; one prompt decoded beside others samples what it samples alone."""
  cfg = preset("tiny", {"num_layers": 2, **overrides})
  params = init_params(cfg, jax.random.PRNGKey(3))
  rng = np.random.default_rng(5)
  prompts = [list(rng.integers(3, cfg.vocab_size, n)) for n in (3, 13, 7)]
  tokens, mask = left_pad(prompts, 16)
  kwargs = dict(num_samples=3, max_new_tokens=21, eos_id=5, stop_sequences=((7, 8),))
  classic = make_generate_fn(cfg, **kwargs)(params, tokens, mask, jax.random.PRNGKey(0))
  shared = make_generate_fn(cfg, engine="shared", block=8, **kwargs)(params, tokens, mask, jax.random.PRNGKey(0))
  if cfg.dtype == "bfloat16":  # bfloat16 rounds the two layouts' sums apart: a near tie may flip later on
    np.testing.assert_array_equal(np.asarray(classic["tokens"][:, :4]), np.asarray(shared["tokens"][:, :4]))
  else:
    for key in ("tokens", "num_tokens", "finish"):
      np.testing.assert_array_equal(np.asarray(classic[key]), np.asarray(shared[key]), err_msg=key)
    np.testing.assert_allclose(np.asarray(classic["logprob"]), np.asarray(shared["logprob"]), atol=1e-4)
  sample = dict(kwargs, sampler=Temperature(1.0), engine="shared", block=8)
  together = make_generate_fn(cfg, **sample)(params, tokens, mask, jax.random.PRNGKey(1))
  alone = make_generate_fn(cfg, **sample)(params, tokens[:1], mask[:1], jax.random.PRNGKey(1))
  np.testing.assert_array_equal(np.asarray(together["tokens"][:3]), np.asarray(alone["tokens"]))
  assert len({tuple(r) for r in np.asarray(together["tokens"][:3]).tolist()}) > 1  # samples differ from each other


@pytest.mark.parametrize("sampler", [Greedy(), Temperature(1.0)])
def test_slot_refill_samples_do_not_depend_on_the_slot_count(sampler):
  """Per-sample length limits, EOS and a stop sequence end samples at different steps; slots are refilled in lanes
  of several sizes (down to one slot a lane); every sample's tokens, length, finish reason and log-prob are those of
  the shared engine (one slot per sample, nothing to refill)."""
  from mathft_jax.inference.slot_refill import generate_refill, generate_shared
  cfg = preset("tiny", {"num_layers": 2})
  params = init_params(cfg, jax.random.PRNGKey(3))
  rng = np.random.default_rng(5)
  prompts = [list(rng.integers(3, cfg.vocab_size, n)) for n in (3, 13, 7)]
  tokens, mask = left_pad(prompts, 16)
  limits = np.concatenate([[21, 21], rng.integers(1, 22, 3 * 6 - 2)])
  kwargs = dict(num_samples=6, max_new_tokens=21, sampler=sampler, block=8, row_max_tokens=limits)
  run = lambda fn, **kw: jax.jit(lambda p, t, m, r: fn(p, cfg, t, m, r, **kwargs, **kw))(  # noqa: E731
      params, tokens, mask, jax.random.PRNGKey(0))
  free = np.asarray(run(generate_shared, eos_id=-1)["tokens"])  # an EOS and a stop sequence that samples do write
  eos = int(free[0, 3])
  other = next(r for r in range(1, len(free)) if eos not in free[r, :7] and limits[r] > 7)
  kwargs.update(eos_id=eos, stop_sequences=((int(free[other, 5]), int(free[other, 6])),))
  shared = run(generate_shared)
  assert len(set(np.asarray(shared["num_tokens"]).tolist())) > 5  # samples end at many different steps
  assert set(np.asarray(shared["finish"]).tolist()) == {FINISH_EOS, FINISH_STOP, FINISH_LENGTH}
  for slots, lane in ((4, 2), (5, 1), (7, 4)):
    out = run(generate_refill, slots=slots, lane=lane)
    for key in ("tokens", "num_tokens", "finish"):
      np.testing.assert_array_equal(np.asarray(shared[key]), np.asarray(out[key]), err_msg=f"{key} {slots} {lane}")
    np.testing.assert_allclose(np.asarray(shared["logprob"]), np.asarray(out["logprob"]), atol=1e-4)


def test_shared_attention_is_the_softmax_over_prompt_and_generated_keys():
  from mathft_jax.inference.shared_prompt import shared_attention
  from mathft_jax.models.layers import grouped_attention
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  prompts, samples, heads, kv, dim, lp, s = 2, 3, 4, 2, 8, 5, 6
  q = jax.random.normal(keys[0], (prompts * samples, 1, heads, dim))
  pk, pv = (jax.random.normal(k, (prompts, lp, kv, dim)) for k in keys[1:3])
  gk, gv = (jax.random.normal(k, (prompts * samples, s, kv, dim)) for k in keys[3:5])
  pmask = jnp.asarray([[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]], bool)
  gmask = jnp.broadcast_to(jnp.arange(s) < 5, (prompts * samples, s))
  keys_t, values_t = (lambda x: x.transpose(0, 2, 3, 1)), (lambda x: x.transpose(0, 2, 1, 3))  # noqa: E731
  pkh, pvh, gkh, gvh = keys_t(pk), values_t(pv), keys_t(gk), values_t(gv)  # [.., K, D, S] and [.., K, S, D]
  out = shared_attention(q, pkh, pvh, pmask, (gkh[..., :4], gkh[..., 4:]), (gvh[:, :, :4], gvh[:, :, 4:]),
                         (gmask[:, :4], gmask[:, 4:]), dim ** -0.5)  # generated keys in two blocks
  # The classic layout: each row's prompt keys copied next to its own generated keys.
  rep = lambda x: jnp.repeat(x, samples, axis=0)  # noqa: E731
  k_all, v_all = jnp.concatenate([rep(pk), gk], 1), jnp.concatenate([rep(pv), gv], 1)
  m_all = jnp.concatenate([rep(pmask), gmask], 1)[:, None, None, :]
  np.testing.assert_allclose(np.asarray(out), np.asarray(grouped_attention(q, k_all, v_all, m_all, dim ** -0.5)),
                             atol=1e-5)
  # Rows in any order, each naming its prompt (a narrowed stage): the same outputs, row by row.
  perm = jnp.asarray([3, 0, 4, 1, 5, 2])
  mixed = shared_attention(q[perm], pkh, pvh, pmask, (gkh[perm][..., :4], gkh[perm][..., 4:]),
                           (gvh[perm][:, :, :4], gvh[perm][:, :, 4:]), (gmask[perm][:, :4], gmask[perm][:, 4:]),
                           dim ** -0.5, row_prompt=perm // samples)
  np.testing.assert_allclose(np.asarray(mixed), np.asarray(out)[np.asarray(perm)], atol=1e-5)


def test_inverse_cdf_draw_is_exact_and_never_draws_impossible_tokens():
  from mathft_jax.inference.shared_prompt import inverse_cdf_draw
  logits = jnp.log(jnp.asarray([0.5, 0.0, 0.2, 0.3, 0.0] + [0.0] * 7, jnp.float32))  # V = 12: 3 blocks of 5
  draws = 20000
  u = jax.random.uniform(jax.random.PRNGKey(0), (draws,))
  u = u.at[:3].set(jnp.asarray([0.0, 0.9999999, np.nextafter(np.float32(1), np.float32(0))]))
  tokens = np.asarray(inverse_cdf_draw(jnp.broadcast_to(logits, (draws, 12)), u, block=5))
  counts = np.bincount(tokens, minlength=12)
  assert counts[[1, 4, 5, 6, 7, 8, 9, 10, 11]].sum() == 0 and tokens[0] == 0 and tokens[2] == 3
  assert scipy.stats.chisquare(counts[[0, 2, 3]], np.asarray([0.5, 0.2, 0.3]) * draws).pvalue > 1e-3
