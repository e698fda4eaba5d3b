"""`make demo`: the whole recipe on the embedded default, on a laptop CPU.

Runs `mathft-recipe --gin_file=models/tiny.gin --gin_file=recipes/demo.gin` (extra `--gin.X=Y` flags pass
through): SSFT of the tiny byte-level model on level 1 of the synthetic domain -> N samples per training problem,
graded -> evaluator fine-tuning -> multi-task sequential generator and the continued-SSFT control -> greedy, N
samples, evaluator scores and re-ranking on held-out problems for each generator. A progress line per stage shows
the elapsed time; a rerun resumes at the first missing stage. Prints runs/demo/report.md at the end (also written:
runs/demo/accuracy_vs_n.png and a full report per generator under runs/demo/eval_<generator>/report/).
"""
import sys

import gin

from mathft_jax import gin_main, recipe, run_io


def main() -> None:
  gin_main.run(recipe.run_recipe, ["--gin_file=models/tiny.gin", "--gin_file=recipes/demo.gin", *sys.argv[1:]])
  run_dir = gin.query_parameter("%RUN_DIR")
  print(run_io.path(run_io.join(run_dir, "report.md")).read_text())
  print(f"written: {run_dir}/report.md, {run_dir}/accuracy_vs_n.png, {run_dir}/eval_*/report/")


if __name__ == "__main__":
  main()
