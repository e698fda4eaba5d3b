"""`make demo`: the recipe on the embedded default (synthetic math domain, tiny byte-level model, CPU).

Interim: the stages that exist so far run end to end: solution fine-tuning (SSFT) of the tiny model on
`ssft_synthetic` -> greedy and N-sample decoding of held-out test problems with `mathft-infer`'s function ->
grading and answer clustering -> a small table (pass@1 greedy, pass@1 sampled, maj1@N, pass@N). Evaluator
training, re-ranking and multi-task sequential fine-tuning are still to come. Outputs go to runs/demo/; a rerun
resumes at the first stage whose outputs are missing. MATHFT_DEMO_STEPS overrides the training steps.
"""
import collections
import json
import os
import time

from mathft_jax.data.seqio_source import SeqioSource
from mathft_jax.data.synthetic import generate
from mathft_jax.grading.batch import grade_problems
from mathft_jax.infer import infer, read_candidate_chunks
from mathft_jax.models import preset
from mathft_jax.optim import OptimizerConfig, ScheduleConfig
from mathft_jax.partitioning import MeshConfig
from mathft_jax.train import train

RUN_DIR = os.path.join("runs", "demo")
TEST_PROBLEMS = 100
NUM_SAMPLES = 8


def _stage(name: str, start: float) -> None:
  print(f"[demo {time.time() - start:6.1f}s] {name}", flush=True)


def _metrics(graded: list[dict]) -> dict:
  """pass@1 (mean correctness), maj1@N (the largest answer cluster's verdict; ties: first seen), pass@N."""
  maj = 0
  for g in graded:
    clusters = [c for c in g["clusters"] if c >= 0]
    if clusters:
      top = collections.Counter(clusters).most_common(1)[0][0]
      maj += g["correct"][g["clusters"].index(top)]
  return {"pass@1": sum(sum(g["correct"]) / len(g["correct"]) for g in graded) / len(graded),
          "maj1@N": maj / len(graded), "pass@N": sum(any(g["correct"]) for g in graded) / len(graded)}


def _grade(output_dir: str, references: dict) -> list[dict]:
  by_problem = collections.defaultdict(list)
  for record in sorted(read_candidate_chunks(output_dir), key=lambda r: r["sample_id"]):
    by_problem[record["problem_id"]].append(record["text"])
  return list(grade_problems([(by_problem[pid], references[pid]) for pid in references], num_workers=2))


def main() -> None:
  start = time.time()
  steps = int(os.environ.get("MATHFT_DEMO_STEPS", "400"))
  model_dir = os.path.join(RUN_DIR, "ssft")
  export = os.path.join(model_dir, "export")
  _stage(f"stage 1/3: SSFT of the tiny model on ssft_synthetic, {steps} steps -> {model_dir}", start)
  if not os.path.exists(os.path.join(export, "model_config.json")):
    data = SeqioSource("ssft_synthetic", {"inputs": 128, "targets": 256}, batch_size=16)
    optimizer = OptimizerConfig(schedule=ScheduleConfig(kind="cosine", peak=3e-3, warmup_steps=50,
                                                        total_steps=steps))
    train(model_dir=model_dir, model_config=preset("tiny"), train_data=data, train_steps=steps,
          optimizer=optimizer, mesh=MeshConfig(), checkpoint_every=100, log_every=50)
  problems = f"synthetic:test:{TEST_PROBLEMS}"
  _stage(f"stage 2/3: greedy and {NUM_SAMPLES} samples (T=0.8) per test problem ({TEST_PROBLEMS} problems)", start)
  common = dict(mode="sample", checkpoint_path=export, problems=problems, max_new_tokens=256, chunk_size=50)
  infer(output_dir=os.path.join(RUN_DIR, "greedy"), num_samples=1, temperature=0.0, batch_size=25, **common)
  infer(output_dir=os.path.join(RUN_DIR, "samples"), num_samples=NUM_SAMPLES, temperature=0.8, batch_size=10,
        **common)
  _stage("stage 3/3: grading and answer clustering", start)
  references = {r["unique_id"]: r["answer"] for r in generate("test", TEST_PROBLEMS)}
  greedy = _metrics(_grade(os.path.join(RUN_DIR, "greedy"), references))
  sampled = _metrics(_grade(os.path.join(RUN_DIR, "samples"), references))
  rows = [("pass@1 (greedy)", greedy["pass@1"]), ("pass@1 (sampled, T=0.8)", sampled["pass@1"]),
          (f"maj1@{NUM_SAMPLES}", sampled["maj1@N"]), (f"pass@{NUM_SAMPLES}", sampled["pass@N"])]
  table = "| metric (SSFT generator, synthetic test) | accuracy |\n|---|---|\n" + "".join(
      f"| {name} | {value:.1%} |\n" for name, value in rows)
  with open(os.path.join(RUN_DIR, "report.md"), "w") as f:
    f.write(f"# Demo report (interim)\n\n{steps} SSFT steps, {TEST_PROBLEMS} test problems.\n\n{table}")
  with open(os.path.join(RUN_DIR, "metrics.json"), "w") as f:
    json.dump(dict(rows), f, indent=2)
  print(table)
  _stage(f"done; report in {os.path.join(RUN_DIR, 'report.md')}. Evaluator training and re-ranking are not in "
         f"the demo yet.", start)


if __name__ == "__main__":
  main()
