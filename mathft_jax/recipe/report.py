"""`RUN_DIR/report.md`: one column per generator (the paper's table with 95% CIs, the evaluator's AUCs against the
generator-likelihood control), and `RUN_DIR/accuracy_vs_n.png` (the first generator's curves)."""
from mathft_jax import run_io

ROWS = (("pass@1 (greedy)", "greedy_pass@1", None), ("pass@1 (sampled)", "pass", "1"), ("maj1@{n}", "maj1", "n"),
        ("RR.All@{n}", "rr_all", "n"), ("RR.Top-{k}@{n}", "rr_topk", "n"), ("W.RR.Maj{k}@{n}", "wrr_majk", "n"),
        ("pass@{n}", "pass", "n"),
        ("RR.All@{n}, generator likelihood (control)", "generator_rr_all", "n"))


def write_report(run_dir: str, results: dict, n: int, k: int) -> None:
  """results: {generator name: its metrics.json dict}; n samples per problem; k clusters of RR.Top-K."""
  lines = ["# Recipe report", "", "Accuracy on the test problems, 95% bootstrap CIs over problems.", "",
           "| metric | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
  for label, key, at in ROWS:
    cells = []
    for metrics in results.values():
      series = metrics.get(key) if at is None else metrics["strategies"].get(key, {}).get(str(n) if at == "n" else at)
      cells.append("n/a" if not series else f"{series['mean']:.1%} [{series['ci95'][0]:.1%}, {series['ci95'][1]:.1%}]")
    lines.append(f"| {label.format(n=n, k=k)} | " + " | ".join(cells) + " |")
  for name, metrics in results.items():
    if "evaluator" in metrics:
      e = metrics["evaluator"]
      lines.append(f"\nEvaluator on {name}'s test samples: AUC {e['auc']:.3f}, within a problem "
                   f"{e['within_problem_auc']:.3f} ({e['within_problem_count']} problems "
                   "with correct and incorrect samples).")
    if "generator_likelihood" in metrics:
      e = metrics["generator_likelihood"]
      lines.append(f"\nControl, {name}'s own per-token likelihood of its samples as the score (no evaluator): AUC "
                   f"{e['auc']:.3f}, within a problem {e['within_problem_auc']:.3f}.")
  run_io.write_atomic(run_io.join(run_dir, "report.md"), "\n".join(lines) + "\n")
  first = next(iter(results))
  run_io.copy_file(run_io.join(run_dir, f"eval_{first}", "report", "accuracy_vs_n.png"),
                   run_io.join(run_dir, "accuracy_vs_n.png"))
