"""The offline re-ranking job `mathft-rerank`: candidate (and score) files -> the paper's table.

    mathft-rerank --candidates runs/x/samples --scores runs/x/scores --greedy runs/x/greedy \\
        --references synthetic:test:500 --output_dir runs/x/report

Inputs: candidates from `mathft-infer mode=sample` (an output dir with chunks/, or a JSONL file), optional scores
from `mode=score` (same forms), references as JSONL (problem_id or unique_id, answer, and optionally level,
subject, problem), "math:<manual_dir>:<split>" or "synthetic:<split>:<count>". Candidates missing scores:
score-based strategies are skipped (and said so in the report). Outputs in output_dir (local or gs://):
metrics.json (every number with its 95% bootstrap CI and the inputs' provenance; written last), report.md,
accuracy_vs_n.png, graded.jsonl (candidates + answer, cluster, correct, problem: what the evaluator tasks read).
No JAX or TensorFlow needed.
"""
import argparse
import collections
import io
import json
import time
from typing import Optional

import numpy as np

from mathft_jax import run_io
from mathft_jax.grading.batch import CandidateFileError, grade_problems, group_candidates
from mathft_jax.grading.symbolic import STRICT
from mathft_jax.reranking import metrics as rm
from mathft_jax.text.problems import load_problems

LABELS = {"maj1": "Maj1@{n}", "rr_all": "RR.All@{n}", "rr_topk": "RR.Top-{k}@{n}", "wrr": "W.RR@{n}",
          "wrr_majk": "W.RR.Maj{k}@{n}", "pass": "pass@{n}", "majk": "maj{k}@{n}",
          "generator_rr_all": "RR.All@{n}, generator likelihood (control)"}


def _per_token_probability(log_prob, num_tokens) -> float:
  """exp(log p / tokens): a sequence's per-token probability, in (0, 1]."""
  return float(np.exp(float(log_prob) / max(int(num_tokens), 1)))


def _generator_likelihoods(records: list[dict]):
  """The generator's own per-token probability of each sample it drew (from the logprob and num_tokens of
  mathft-infer's sample records); None when a record lacks them."""
  try:
    return np.array([_per_token_probability(r["logprob"], r["num_tokens"]) for r in records])
  except (KeyError, TypeError, ValueError):
    return None


def read_references(spec: str) -> dict[str, dict]:
  """Reference answers by problem id (see `mathft_jax.text.problems`); each needs an answer."""
  refs = {r["problem_id"]: r for r in load_problems(spec)}
  missing = [pid for pid, r in refs.items() if "answer" not in r]
  if missing:
    raise CandidateFileError(f"{spec}: {len(missing)} references have no 'answer', e.g. {missing[:3]}")
  return refs


def _read_records(path: str) -> dict[str, list[dict]]:
  """JSONL file or an infer output dir (local or gs://) -> records by problem, sorted by sample_id."""
  try:
    return group_candidates(run_io.iter_records(path))
  except run_io.RunFileError as e:  # a line that is not JSON at all
    raise CandidateFileError(str(e)) from None


SCORE_FIELDS = ("score", "likelihood")


def _read_scores(path: str, field: str = "score") -> dict[tuple, float]:
  """Scores by (problem_id, sample_id): "score" = the evaluator's p(correct) / (p(correct) + p(incorrect));
  "likelihood" = exp(loglik / num_tokens), the per-token probability of the solution under a
  sequence-likelihood evaluator (the "seq" loss), in (0, 1]."""
  if field not in SCORE_FIELDS:
    raise ValueError(f"score_field must be one of {SCORE_FIELDS}, got {field!r}")
  out = {}
  for where, r in run_io.iter_records(path):
    try:
      value = float(r["score"]) if field == "score" else _per_token_probability(r["loglik"], r["num_tokens"])
      out[(str(r["problem_id"]), int(r["sample_id"]))] = value
    except (ValueError, KeyError, TypeError) as e:
      raise CandidateFileError(f"{where}: malformed score record ({e!r})") from None
  return out


def _summary(per_problem: np.ndarray, seed: int, resamples: int) -> dict:
  low, high = rm.bootstrap_ci(per_problem, resamples, seed)
  return {"mean": float(per_problem.mean()), "ci95": [low, high]}


def rerank(*, candidates: str, references: str, output_dir: str, scores: Optional[str] = None,
           greedy: Optional[str] = None, k_clusters: int = 8, num_subsets: int = 100, num_workers: int = 0,
           bootstrap: int = 1000, seed: int = 0, score_field: str = "score", rel_tol: float = STRICT) -> dict:
  """Grades, clusters and re-ranks; writes the outputs (see the module doc) and returns metrics.json's dict.
  `rel_tol`: the grader's numeric tolerance (relative; default strict, MATH's exact answers)."""
  t0 = time.time()
  refs = read_references(references)
  by_problem = _read_records(candidates)
  unknown = sorted(set(by_problem) - set(refs))
  if unknown:
    raise CandidateFileError(f"{candidates}: {len(unknown)} problem ids are not in {references}, e.g. {unknown[:3]}")
  ids = sorted(by_problem)
  score_map = _read_scores(scores, score_field) if scores else {}
  missing = sum((pid, int(r["sample_id"])) not in score_map for pid in ids for r in by_problem[pid]) if scores else 0
  use_scores = bool(scores) and missing == 0
  graded = list(grade_problems([([r["text"] for r in by_problem[p]], refs[p]["answer"]) for p in ids],
                               num_workers=num_workers, rel_tol=rel_tol))
  t_grade = time.time() - t0
  n = min(len(by_problem[p]) for p in ids)
  ks = sorted({2 ** i for i in range(int(np.log2(n)) + 1)} | {n})
  generator_scores = {p: _generator_likelihoods(by_problem[p]) for p in ids}
  use_generator = all(v is not None for v in generator_scores.values())
  curves = {}
  for j, (pid, g) in enumerate(zip(ids, graded)):
    s = np.array([score_map[(pid, int(r["sample_id"]))] for r in by_problem[pid]][:n]) if use_scores else None
    control = generator_scores[pid][:n] if use_generator else None  # would the generator's likelihood do as well?
    curves[pid] = rm.problem_curves(g["clusters"][:n], g["correct"][:n], s, ks, k_clusters, num_subsets, seed + j,
                                    control_scores=control)
  names = list(curves[ids[0]])
  metrics = {"strategies": {}, "by_level": {}, "by_subject": {}, "grading": {"rel_tol": rel_tol}}
  for name in names:
    table = np.array([curves[p][name] for p in ids])  # [P, len(ks)]
    metrics["strategies"][name] = {str(k): _summary(table[:, i], seed, bootstrap) for i, k in enumerate(ks)}
  for field, key in (("level", "by_level"), ("subject", "by_subject")):
    groups = collections.defaultdict(list)
    for i, p in enumerate(ids):
      if field in refs[p]:
        groups[str(refs[p][field])].append(i)
    for group, rows in sorted(groups.items()):
      metrics[key][group] = {name: float(np.mean([curves[ids[i]][name][-1] for i in rows])) for name in names}
      metrics[key][group]["num_problems"] = len(rows)
  if greedy:
    g_records = _read_records(greedy)
    g_ids = [p for p in ids if p in g_records]
    g_graded = grade_problems([([g_records[p][0]["text"]], refs[p]["answer"]) for p in g_ids], num_workers,
                              rel_tol=rel_tol)
    metrics["greedy_pass@1"] = _summary(np.array([r["correct"][0] for r in g_graded], float), seed, bootstrap)
  flat_labels = np.array([c for g in graded for c in g["correct"]])
  flat_groups = [p for p in ids for _ in by_problem[p]]
  if use_scores:
    flat_scores = [score_map[(p, int(r["sample_id"]))] for p in ids for r in by_problem[p]]
    metrics["evaluator"] = rm.classifier_metrics(np.array(flat_scores), flat_labels, flat_groups)
  if use_generator:
    metrics["generator_likelihood"] = rm.classifier_metrics(
        np.concatenate([generator_scores[p] for p in ids]), flat_labels, flat_groups)
  why = "no scores given" if not scores else f"{missing} candidates have no score"
  metrics["skipped"] = [] if use_scores else [f"score-based strategies: {why}"]
  metrics["provenance"] = {"candidates": run_io.absolute(candidates), "scores": scores and run_io.absolute(scores),
                           "score_field": score_field,
                           "greedy": greedy and run_io.absolute(greedy), "references": references,
                           "num_problems": len(ids), "samples_per_problem": n, "ks": ks, "k_clusters": k_clusters,
                           "num_subsets": num_subsets, "bootstrap_resamples": bootstrap, "seed": seed,
                           "degraded_problems": sum(bool(g.get("degraded")) for g in graded)}
  _write_graded(run_io.join(output_dir, "graded.jsonl"), ids, by_problem, graded, refs)
  _write_report(run_io.join(output_dir, "report.md"), metrics, n, k_clusters)
  _plot(run_io.join(output_dir, "accuracy_vs_n.png"), metrics, ks, k_clusters)
  t_total = time.time() - t0
  metrics["provenance"]["seconds"] = {"grading": round(t_grade, 2), "total": round(t_total, 2)}
  run_io.write_json(run_io.join(output_dir, "metrics.json"), metrics, indent=2)  # last: the job's "done" mark
  print(f"re-ranked {len(ids)} problems x {n} samples in {t_total:.1f}s (grading {t_grade:.1f}s, metrics and "
        f"report {t_total - t_grade:.1f}s); report: {run_io.join(output_dir, 'report.md')}")
  return metrics


def _write_graded(path, ids, by_problem, graded, refs) -> None:
  run_io.write_atomic(path, "".join(
      json.dumps({**record, "answer": g["answers"][k], "cluster": g["clusters"][k], "correct": g["correct"][k],
                  "problem": refs[pid].get("problem", "")}) + "\n"
      for pid, g in zip(ids, graded) for k, record in enumerate(by_problem[pid])))


def _cell(summary: dict) -> str:
  low, high = summary["ci95"]
  return f"{summary['mean']:.1%} [{low:.1%}, {high:.1%}]"


def _write_report(path: str, metrics: dict, n: int, k: int) -> None:
  lines = ["# Re-ranking report", "", f"{metrics['provenance']['num_problems']} problems x {n} samples; "
           "95% bootstrap CIs over problems.", "", "| metric | accuracy |", "|---|---|"]
  if "greedy_pass@1" in metrics:
    lines.append(f"| pass@1 (greedy) | {_cell(metrics['greedy_pass@1'])} |")
  lines.append(f"| pass@1 (sampled) | {_cell(metrics['strategies']['pass']['1'])} |")
  for name in ("maj1", "rr_all", "rr_topk", "wrr", "wrr_majk", "majk", "pass", "generator_rr_all"):
    if name in metrics["strategies"]:
      lines.append(f"| {LABELS[name].format(n=n, k=k)} | {_cell(metrics['strategies'][name][str(n)])} |")
  if "evaluator" in metrics:
    e = metrics["evaluator"]
    lines += ["", f"Evaluator as a classifier: AUC {e['auc']:.3f} (within a problem {e['within_problem_auc']:.3f} over "
              f"{e['within_problem_count']} problems with both), accuracy at 0.5 {e['accuracy_at_0.5']:.1%}, "
              f"expected calibration error {e['expected_calibration_error']:.3f}."]
  if "generator_likelihood" in metrics:
    e = metrics["generator_likelihood"]
    lines += ["", f"The generator's own per-token likelihood as a classifier (control): AUC {e['auc']:.3f} (within a "
              f"problem {e['within_problem_auc']:.3f})."]
  for reason in metrics["skipped"]:
    lines += ["", f"Skipped: {reason}."]
  run_io.write_atomic(path, "\n".join(lines) + "\n")


def _plot(path: str, metrics: dict, ks: list, k: int) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, series in metrics["strategies"].items():
    ax.plot(ks, [series[str(x)]["mean"] for x in ks], marker="o", label=LABELS[name].format(n="N", k=k))
  ax.set_xscale("log", base=2)
  ax.set_xlabel("N (samples per problem)")
  ax.set_ylabel("accuracy")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format="png", dpi=120)
  plt.close(fig)
  run_io.write_atomic(path, image.getvalue())


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--candidates", required=True)
  p.add_argument("--references", required=True)
  p.add_argument("--output_dir", required=True)
  p.add_argument("--scores")
  p.add_argument("--greedy")
  p.add_argument("--k_clusters", type=int, default=8)
  p.add_argument("--num_subsets", type=int, default=100)
  p.add_argument("--num_workers", type=int, default=0)
  p.add_argument("--score_field", default="score", choices=SCORE_FIELDS,
                 help="score: the evaluator's label probability; likelihood: per-token solution probability (seq)")
  p.add_argument("--rel_tol", type=float, default=STRICT,
                 help="numeric tolerance of the grader, relative (default: strict, MATH's exact answers)")
  a = p.parse_args(argv)
  rerank(candidates=a.candidates, references=a.references, output_dir=a.output_dir, scores=a.scores,
         greedy=a.greedy, k_clusters=a.k_clusters, num_subsets=a.num_subsets, num_workers=a.num_workers,
         score_field=a.score_field, rel_tol=a.rel_tol)


if __name__ == "__main__":
  main()
