"""Metric logging to stdout and TensorBoard, and FLOP accounting for tokens/s -> MFU.

TensorBoard goes through `clu.metric_writers` when clu and TensorFlow are importable (the TPU/CPU install);
without them (a GPU box with JAX alone) only stdout logging happens. Only process 0 writes.
"""
import os
from typing import Optional

import jax
import numpy as np

from mathft_jax.models import DecoderConfig, param_count

# Dense bf16 peak FLOP/s per device, by `device_kind` substring.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
              "TPU v6": 918e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops_per_device() -> Optional[float]:
  """Peak bf16 FLOP/s of this accelerator, or None (e.g. CPU; set MATHFT_PEAK_FLOPS to override)."""
  if os.environ.get("MATHFT_PEAK_FLOPS"):
    return float(os.environ["MATHFT_PEAK_FLOPS"])
  kind = jax.devices()[0].device_kind
  return next((v for k, v in PEAK_FLOPS.items() if k in kind), None)


def model_flops_per_token(cfg: DecoderConfig, seq_len: int = 0) -> float:
  """Training FLOPs per token: 6 x matmul params (embedding lookups excluded) + causal attention 6 x L x H x D."""
  embed = cfg.vocab_size * cfg.d_model
  matmul_params = param_count(cfg) - (embed if not cfg.tie_embeddings else 0)
  attention = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim  # 12 L H D / 2 for the causal half
  return 6 * matmul_params + attention


class MetricLogger:
  """Writes scalars to stdout (and TensorBoard under model_dir/{train,eval} when available)."""

  def __init__(self, model_dir: str):
    self.enabled = jax.process_index() == 0
    self.model_dir = model_dir
    self.writers = {}

  def _writer(self, collection: str):
    if collection not in self.writers:
      try:
        from clu import metric_writers
        self.writers[collection] = metric_writers.SummaryWriter(os.path.join(self.model_dir, collection))
      except ImportError:
        self.writers[collection] = None
    return self.writers[collection]

  def scalars(self, step: int, metrics: dict, collection: str) -> None:
    if not self.enabled:
      return
    values = {k: float(np.asarray(v)) for k, v in metrics.items()}
    print(f"[{collection}] step {step}: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(values.items())),
          flush=True)
    writer = self._writer(collection)
    if writer is not None:
      writer.write_scalars(step, values)
      writer.flush()

  def text(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    for writer in self.writers.values():
      if writer is not None:
        writer.close()
