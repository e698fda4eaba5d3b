"""Selection strategies and accuracy estimators for re-ranking N samples per problem (numpy only).

Per problem the inputs are arrays over its N samples: clusters [N] (answer cluster id, -1 = no answer; ids are
numbered in order of first appearance), correct [N] bool, scores [N] float (evaluator scores) or None.

Strategies pick one sample of a subset (all returns are "is the pick correct"):
- maj1: a sample of the largest cluster.                    - rr_all: the highest-scored sample.
- rr_topk: the highest-scored sample among the K largest clusters (solution-cluster re-ranking, RR.Top-K).
- wrr: the cluster with the largest sum of scores.          - wrr_majk: the same, among the K largest clusters.
Oracles: pass (any correct), majk (a correct answer among the K largest clusters).
Ties: between clusters, the smaller cluster id (first seen in the full sample list) wins; between samples, the
earlier sample. Samples without an answer form no cluster, so cluster strategies never pick them; rr_all can.

Accuracy@k for k < N averages a strategy over random size-k subsets of the N samples (all subsets when there are
at most `num_subsets` of them), which brute-force enumeration matches in expectation; pass@k uses the unbiased
estimator 1 - C(n-c, k) / C(n, k).
"""
import itertools
import math
from typing import Optional

import numpy as np
import scipy.stats

STRATEGIES = ("maj1", "rr_all", "rr_topk", "wrr", "wrr_majk")
ORACLES = ("pass", "majk")
SCORED = ("rr_all", "rr_topk", "wrr", "wrr_majk")


def subsets(n: int, k: int, num_subsets: int, rng: np.random.Generator) -> np.ndarray:
  """[M, k] sample indices: every k-subset if C(n, k) <= num_subsets, else num_subsets random ones."""
  if math.comb(n, k) <= num_subsets:
    return np.array(list(itertools.combinations(range(n), k)), np.int64).reshape(-1, k)
  return np.argsort(rng.random((num_subsets, n)), axis=1)[:, :k]


def _cluster_rank_keys(counts: np.ndarray) -> np.ndarray:
  """Sort keys so that larger clusters come first and ties go to the smaller id: [M, C]."""
  c = counts.shape[1]
  return counts * (c + 1) - np.arange(c)[None, :]


def select(clusters: np.ndarray, correct: np.ndarray, scores: Optional[np.ndarray], idx: np.ndarray,
           k_clusters: int) -> dict:
  """Correctness [M] of each strategy's pick on the subsets idx [M, k] (scored strategies need scores)."""
  num_clusters = int(clusters.max()) + 1 if clusters.size and clusters.max() >= 0 else 0
  sub_clusters, sub_correct = clusters[idx], correct[idx]  # [M, k]
  m = idx.shape[0]
  out = {"pass": sub_correct.any(axis=1)}
  if num_clusters == 0:
    zeros = np.zeros(m, bool)
    out.update({name: zeros for name in STRATEGIES + ("majk",)})
    if scores is not None:
      out["rr_all"] = sub_correct[np.arange(m), np.argmax(scores[idx], axis=1)]
    return out
  onehot = (sub_clusters[..., None] == np.arange(num_clusters)).astype(np.float64)  # [M, k, C]
  counts = onehot.sum(axis=1)  # [M, C]
  cluster_correct = np.zeros(num_clusters, bool)
  for c in range(num_clusters):
    cluster_correct[c] = correct[clusters == c][0]
  keys = _cluster_rank_keys(counts)
  order = np.argsort(-keys, axis=1)  # clusters by size, ties to smaller id
  present = np.take_along_axis(counts, order, axis=1) > 0
  top = order[:, :k_clusters]
  top_present = present[:, :k_clusters]
  out["maj1"] = np.where(present[:, 0], cluster_correct[order[:, 0]], False)
  out["majk"] = (cluster_correct[top] & top_present).any(axis=1)
  if scores is None:
    return out
  sub_scores = scores[idx]
  out["rr_all"] = sub_correct[np.arange(m), np.argmax(sub_scores, axis=1)]
  in_top = np.zeros((m, num_clusters), bool)
  np.put_along_axis(in_top, top, top_present, axis=1)
  sample_in_top = (sub_clusters >= 0) & np.take_along_axis(in_top, np.maximum(sub_clusters, 0), axis=1)
  masked = np.where(sample_in_top, sub_scores, -np.inf)
  pick = np.argmax(masked, axis=1)
  out["rr_topk"] = np.where(sample_in_top.any(axis=1), sub_correct[np.arange(m), pick], False)
  sums = np.einsum("mkc,mk->mc", onehot, sub_scores)
  for name, allowed in (("wrr", counts > 0), ("wrr_majk", in_top)):
    best = np.argmax(np.where(allowed, sums, -np.inf), axis=1)  # argmax: ties to the smaller id
    out[name] = np.where(allowed.any(axis=1), cluster_correct[best], False)
  return out


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
  if n - c < k:
    return 1.0
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def problem_curves(clusters, correct, scores, ks, k_clusters: int = 8, num_subsets: int = 100,
                   seed: int = 0, control_scores=None) -> dict:
  """{strategy: [accuracy at each k]} for one problem (estimates for k < N, exact at k = N). control_scores [N]
  (e.g. the generator's own likelihoods) add "generator_rr_all": RR.All by them on the same subsets."""
  clusters, correct = np.asarray(clusters), np.asarray(correct, bool)
  scores = None if scores is None else np.asarray(scores, np.float64)
  rng = np.random.default_rng(seed)
  names = ("maj1", "majk") + (SCORED if scores is not None else ())
  curves = {name: [] for name in names}
  curves["pass"] = [pass_at_k(len(correct), int(correct.sum()), k) for k in ks]
  if control_scores is not None:
    control_scores = np.asarray(control_scores, np.float64)
    curves["generator_rr_all"] = []
  for k in ks:
    idx = subsets(len(correct), k, num_subsets, rng)
    picks = select(clusters, correct, scores, idx, k_clusters)
    for name in names:
      curves[name].append(float(np.mean(picks[name])))
    if control_scores is not None:
      best = np.argmax(control_scores[idx], axis=1)
      curves["generator_rr_all"].append(float(np.mean(correct[idx][np.arange(len(idx)), best])))
  return curves


def bootstrap_ci(per_problem: np.ndarray, num_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
  """95% percentile interval of the mean over problems, by resampling problems with replacement."""
  per_problem = np.asarray(per_problem, np.float64)
  if per_problem.size == 0:
    return (float("nan"), float("nan"))
  rng = np.random.default_rng(seed)
  means = per_problem[rng.integers(0, per_problem.size, (num_resamples, per_problem.size))].mean(axis=1)
  return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
  if not (pos.size and neg.size):
    return float("nan")
  ranks = scipy.stats.rankdata(np.concatenate([pos, neg]))  # Mann-Whitney U with average ranks for ties
  return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def classifier_metrics(scores: np.ndarray, labels: np.ndarray, groups=None, bins: int = 10) -> dict:
  """The evaluator as a classifier of correctness: pooled AUC, accuracy at 0.5, reliability bins; with `groups`
  (a problem id per sample) also the within-problem AUC, the mean AUC over problems that have both correct and
  incorrect samples: what re-ranking uses (a score that only tells easy problems from hard ones has a high pooled
  AUC and a within-problem AUC of 0.5)."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
  auc = _auc(scores[labels], scores[~labels])
  within = {}
  if groups is not None:
    groups = np.asarray(groups)
    per = [_auc(scores[(groups == g) & labels], scores[(groups == g) & ~labels]) for g in np.unique(groups)]
    per = [a for a in per if not np.isnan(a)]
    within = {"within_problem_auc": float(np.mean(per)) if per else float("nan"), "within_problem_count": len(per)}
  edges = np.linspace(0, 1, bins + 1)
  which = np.clip(np.digitize(scores, edges) - 1, 0, bins - 1)
  reliability = [{"low": float(edges[b]), "high": float(edges[b + 1]), "count": int((which == b).sum()),
                  "mean_score": float(scores[which == b].mean()) if (which == b).any() else None,
                  "fraction_correct": float(labels[which == b].mean()) if (which == b).any() else None}
                 for b in range(bins)]
  ece = sum(r["count"] * abs(r["mean_score"] - r["fraction_correct"]) for r in reliability if r["count"])
  return {"auc": auc, **within, "accuracy_at_0.5": float(((scores >= 0.5) == labels).mean()),
          "expected_calibration_error": float(ece / max(len(scores), 1)), "reliability": reliability,
          "num_correct": int(labels.sum()), "num_incorrect": int((~labels).sum())}
