"""The per-device memory plan of a recipe's stages (SSFT, evaluator training, sampling) on a named slice: printed
before any compute, and a stage over 90% of a chip's HBM stops the run (`mathft_jax.recipe.memory` estimates)."""
from typing import Optional

import jax

from mathft_jax.inference.infer import SamplingConfig
from mathft_jax.models import DecoderConfig
from mathft_jax.partitioning import MeshConfig
from mathft_jax.recipe import memory
from mathft_jax.recipe.configs import EvaluatorConfig


def memory_plan(model_config: DecoderConfig, mesh: MeshConfig, batch_size: int, task_feature_lengths: dict,
                evaluator: EvaluatorConfig, sampling: SamplingConfig, slice_name: Optional[str]) -> dict:
  """{stage: per-device MemoryEstimate}; prints the tables and raises ValueError when a stage exceeds 90% of a
  chip's HBM on `slice_name` (None: this machine's devices, no limit)."""
  slice_ = memory.SLICES[slice_name] if slice_name else None
  devices = slice_.chips if slice_ else len(jax.devices())
  host_devices = slice_.chips_per_host if slice_ else len(jax.local_devices())
  pairs = 2 if evaluator.loss in ("margin", "seq") else 1  # pair batches hold [B, 2, L]
  samples = max(sampling.num_samples, evaluator.samples_per_problem or 0)
  plan = {
      "ssft": memory.estimate_training(model_config, mesh, devices, batch_size, sum(task_feature_lengths.values())),
      "evaluator": memory.estimate_training(model_config, mesh, devices, (evaluator.batch_size or batch_size) * pairs,
                                            sum(evaluator.lengths(task_feature_lengths).values())),
      "sampling": memory.estimate_sampling(model_config, sampling.mesh or MeshConfig(1, 1, 1),
                                           host_devices if sampling.mesh else 1, sampling.batch_size, samples,
                                           task_feature_lengths["inputs"] + sampling.max_new_tokens,
                                           engine=sampling.engine, prompt_length=task_feature_lengths["inputs"],
                                           decode_slots=sampling.slots)}
  too_big = []
  for stage, estimate in plan.items():
    print(f"[memory] {stage}, per device:\n{estimate.table(slice_)}", flush=True)
    if slice_ and estimate.total > 0.9 * slice_.hbm_bytes:
      too_big.append(stage)
  if too_big:
    raise ValueError(f"{', '.join(too_big)} would not fit on {slice_name} (estimates above); lower the per-device "
                     f"batch, shorten sequences, use remat='full' or a larger mesh")
  return plan
