"""Wall time of `mathft-rerank` on 5,000 problems x 64 candidates (synthetic file), grading vs metric code.

    .venv/bin/python benchmarks/rerank_time.py --problems 5000 --samples 64
Candidates come from `grading_throughput.make_problems` (realistic answer forms); scores are random, so all five
strategies, oracles, CIs, breakdowns, classifier metrics, report and plot are computed.
"""
import argparse
import json
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from grading_throughput import make_problems  # noqa: E402

from mathft_jax.reranking.rerank import rerank  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--problems", type=int, default=5000)
  parser.add_argument("--samples", type=int, default=64)
  args = parser.parse_args()
  d = tempfile.mkdtemp()
  rng = random.Random(0)
  with open(f"{d}/cands.jsonl", "w") as c, open(f"{d}/scores.jsonl", "w") as s, open(f"{d}/refs.jsonl", "w") as r:
    for i, (texts, reference) in enumerate(make_problems(args.problems, args.samples)):
      r.write(json.dumps({"problem_id": f"p{i}", "answer": reference, "level": i % 5 + 1}) + "\n")
      for k, text in enumerate(texts):
        c.write(json.dumps({"problem_id": f"p{i}", "sample_id": k, "text": text}) + "\n")
        s.write(json.dumps({"problem_id": f"p{i}", "sample_id": k, "score": rng.random()}) + "\n")
  rerank(candidates=f"{d}/cands.jsonl", scores=f"{d}/scores.jsonl", references=f"{d}/refs.jsonl",
         output_dir=f"{d}/out")


if __name__ == "__main__":
  main()
