"""`make demo`: the recipe on the embedded default (synthetic math domain, tiny byte-level model, CPU).

Interim: the stages that exist so far run end to end: solution fine-tuning (SSFT) of the tiny model on
`ssft_synthetic` -> greedy and N-sample decoding of held-out test problems (`mathft-infer`'s function) ->
grading, clustering and the report of `mathft-rerank` (pass@1 greedy and sampled, maj1@N, majK@N, pass@N, with
CIs). Evaluator training (hence score-based re-ranking) and multi-task sequential fine-tuning are still to come. Outputs go to runs/demo/; a rerun
resumes at the first stage whose outputs are missing. MATHFT_DEMO_STEPS overrides the training steps.
"""
import os
import time

from mathft_jax.data.seqio_source import SeqioSource
from mathft_jax.infer import infer
from mathft_jax.models import preset
from mathft_jax.optim import OptimizerConfig, ScheduleConfig
from mathft_jax.partitioning import MeshConfig
from mathft_jax.rerank import rerank
from mathft_jax.train import train

RUN_DIR = os.path.join("runs", "demo")
TEST_PROBLEMS = 100
NUM_SAMPLES = 8


def _stage(name: str, start: float) -> None:
  print(f"[demo {time.time() - start:6.1f}s] {name}", flush=True)


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
  _stage("stage 3/3: grading, answer clustering and the report (mathft-rerank)", start)
  rerank(candidates=os.path.join(RUN_DIR, "samples"), greedy=os.path.join(RUN_DIR, "greedy"), references=problems,
         output_dir=RUN_DIR, num_workers=2)
  with open(os.path.join(RUN_DIR, "report.md")) as f:
    print(f.read())
  _stage(f"done; {RUN_DIR}/report.md and accuracy_vs_n.png written. Evaluator training and score-based "
         f"re-ranking are not in the demo yet.", start)


if __name__ == "__main__":
  main()
