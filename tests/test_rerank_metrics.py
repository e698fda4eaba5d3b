"""Re-ranking strategies and estimators: hand-built cases and brute-force enumeration."""
import collections
import itertools
import math

import numpy as np
import pytest

from mathft_jax.reranking.metrics import bootstrap_ci, classifier_metrics, pass_at_k, problem_curves, select, subsets

# 6 samples: clusters c0 (2, correct), c1 (3, wrong), c2 (1, correct).
CLUSTERS = np.array([0, 0, 1, 1, 1, 2])
CORRECT = np.array([True, True, False, False, False, True])
SCORES = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.95])


def test_hand_built_full_set():
  picks = select(CLUSTERS, CORRECT, SCORES, np.arange(6)[None], k_clusters=2)
  expected = {"maj1": False,     # the largest cluster c1 is wrong
              "rr_all": True,    # best score 0.95 is sample 5 (c2)
              "rr_topk": True,   # top-2 clusters c1, c0: best score 0.9 is sample 0 (c0)
              "wrr": True,       # score sums c0 1.0 > c2 0.95 > c1 0.9
              "wrr_majk": True,  # among c1, c0: c0
              "pass": True, "majk": True}
  assert {k: bool(v[0]) for k, v in picks.items()} == expected
  assert not select(CLUSTERS, CORRECT, SCORES, np.arange(6)[None], k_clusters=1)["majk"][0]
  assert not select(CLUSTERS, CORRECT, SCORES, np.arange(6)[None], k_clusters=1)["rr_topk"][0]


def test_ties_and_missing_answers():
  # Two clusters of equal size: the first seen (id 0) wins majority voting.
  picks = select(np.array([0, 1, 1, 0]), np.array([False, True, True, False]), None, np.arange(4)[None], 8)
  assert not picks["maj1"][0]
  # No sample has an answer: cluster strategies are wrong, rr_all may still pick (a wrong) sample.
  none = select(np.array([-1, -1]), np.array([False, False]), np.array([0.2, 0.7]), np.arange(2)[None], 8)
  assert not any(v[0] for v in none.values())
  # Samples without an answer never win a cluster vote, however many.
  picks = select(np.array([-1, -1, -1, 0]), np.array([False, False, False, True]), None, np.arange(4)[None], 8)
  assert picks["maj1"][0]


def _brute(clusters, correct, scores, k, kc):
  """Plain re-implementation: the average over all k-subsets of each strategy's correctness."""
  totals = collections.Counter()
  combos = list(itertools.combinations(range(len(clusters)), k))
  for combo in combos:
    sizes = collections.Counter(clusters[i] for i in combo if clusters[i] >= 0)
    ranked = sorted(sizes, key=lambda c: (-sizes[c], c))
    top = set(ranked[:kc])
    verdict = {c: correct[list(clusters).index(c)] for c in sizes}
    totals["maj1"] += bool(ranked) and verdict[ranked[0]]
    totals["majk"] += any(verdict[c] for c in top)
    totals["pass"] += any(correct[i] for i in combo)
    best = max(combo, key=lambda i: (scores[i], -i))
    totals["rr_all"] += correct[best]
    in_top = [i for i in combo if clusters[i] in top]
    totals["rr_topk"] += bool(in_top) and correct[max(in_top, key=lambda i: (scores[i], -i))]
    sums = collections.defaultdict(float)
    for i in combo:
      if clusters[i] >= 0:
        sums[clusters[i]] += scores[i]
    for name, allowed in (("wrr", list(sums)), ("wrr_majk", [c for c in sums if c in top])):
      totals[name] += bool(allowed) and verdict[max(allowed, key=lambda c: (sums[c], -c))]
  return {name: v / len(combos) for name, v in totals.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimators_match_brute_force_enumeration(seed):
  rng = np.random.default_rng(seed)
  n = 7
  answers = rng.integers(-1, 4, n)  # -1: no answer
  clusters = np.full(n, -1)
  for i, a in enumerate(answers):  # ids by first appearance
    if a >= 0:
      seen = [answers[j] for j in range(i) if answers[j] >= 0]
      clusters[i] = sorted(set(seen), key=seen.index).index(a) if a in seen else len(set(seen))
  right = rng.integers(0, 4)
  correct = answers == right
  scores = rng.random(n).round(1)  # rounding makes score ties happen
  ks = [1, 2, 3, 5, 7]
  curves = problem_curves(clusters, correct, scores, ks, k_clusters=2, num_subsets=1000)
  for j, k in enumerate(ks):
    brute = _brute(clusters, correct, scores, k, 2)
    for name, value in brute.items():
      assert curves[name][j] == pytest.approx(value, abs=1e-12), (name, k)


def test_pass_at_k_is_the_subset_average():
  for n, c in ((10, 3), (8, 0), (5, 5), (64, 1)):
    for k in (1, 2, 5):
      if k <= n:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k) if n - c >= k else 1.0
        assert pass_at_k(n, c, k) == pytest.approx(exact)
  combos = list(itertools.combinations(range(6), 3))
  correct = [True, False, False, True, False, False]
  assert pass_at_k(6, 2, 3) == pytest.approx(sum(any(correct[i] for i in s) for s in combos) / len(combos))


def test_random_subsets_estimate_converges():
  rng = np.random.default_rng(0)
  idx = subsets(64, 8, 500, rng)
  assert idx.shape == (500, 8) and all(len(set(row)) == 8 for row in idx.tolist())
  assert subsets(6, 3, 100, rng).shape == (20, 3)  # exhaustive when small


def test_classifier_metrics():
  labels = np.array([1, 1, 0, 0], bool)
  assert classifier_metrics(np.array([0.9, 0.8, 0.2, 0.1]), labels)["auc"] == 1.0
  assert classifier_metrics(np.array([0.1, 0.2, 0.8, 0.9]), labels)["auc"] == 0.0
  assert classifier_metrics(np.array([0.5, 0.5, 0.5, 0.5]), labels)["auc"] == 0.5
  m = classifier_metrics(np.array([0.9, 0.3, 0.6, 0.1]), labels)  # pairs: (.9>.6 .9>.1 .3<.6 .3>.1) -> 3/4
  assert m["auc"] == 0.75 and m["accuracy_at_0.5"] == 0.5
  assert sum(b["count"] for b in m["reliability"]) == 4


def test_within_problem_auc_ignores_problem_difficulty():
  # a is easy (mostly correct, high scores), b is hard (low scores): the pooled AUC rewards telling a from b,
  # yet within a the incorrect sample scores highest and within b all scores tie; c (all correct) does not count.
  scores = np.array([0.9, 0.9, 0.9, 0.95, 0.1, 0.1, 0.1, 0.1, 0.5, 0.6])
  labels = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1, 1], bool)
  groups = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 2)
  m = classifier_metrics(scores, labels, groups)
  # pooled: correct {.9 x3, .1, .5, .6} vs incorrect {.95, .1 x3}: (3 x 3 + 1.5 + 3 + 3) / 24
  assert m["auc"] == 16.5 / 24
  assert m["within_problem_auc"] == 0.25 and m["within_problem_count"] == 2
  assert "within_problem_auc" not in classifier_metrics(scores, labels)


def test_bootstrap_ci_brackets_the_mean():
  values = np.random.default_rng(0).random(400) < 0.3
  low, high = bootstrap_ci(values)
  assert low < values.mean() < high and high - low < 0.12
  low_small, high_small = bootstrap_ci(values[:40])
  assert high_small - low_small > high - low
