"""Training tokens/s of our trainer next to a transformers+torch AdamW step on the same config and batch.

    .venv/bin/python benchmarks/train_throughput.py --preset tiny --batch 8 --length 256
    .venv/bin/python benchmarks/train_throughput.py --preset gemma_2b --batch 8 --length 2048 --no_torch  # on a GPU

Both sides train a Llama-style decoder (our preset; torch gets the equivalent `LlamaConfig`) in float32 on the
CPU (bfloat16 compute on accelerators for ours), one optimizer step per batch, after warm-up steps. MFU uses
6 x params + attention FLOPs per token over the device's peak: the published bf16 peak on TPU/GPU, and on a CPU
the measured FLOP/s of a large float32 matmul (so the CPU MFU says how close we are to the matmul roofline).
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from mathft_jax import partitioning
from mathft_jax.models import preset
from mathft_jax.training.metrics_logging import model_flops_per_token, peak_flops_per_device
from mathft_jax.training.optim import OptimizerConfig, ScheduleConfig
from mathft_jax.training.trainer import Trainer


def _batch(batch: int, length: int, vocab: int) -> dict:
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab, (batch, length + 1), dtype=np.int32)
  return {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
          "decoder_loss_weights": np.ones((batch, length), np.float32)}


def measured_matmul_flops(n: int = 2048, reps: int = 5) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - start)


def ours(cfg, batch: dict, steps: int, warmup: int) -> float:
  trainer = Trainer(cfg, OptimizerConfig(schedule=ScheduleConfig(peak=1e-4)), partitioning.make_mesh())
  state = trainer.init_state(seed=0)
  for _ in range(warmup):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = trainer.train_step(state, batch)
  jax.block_until_ready(metrics)
  return batch["decoder_input_tokens"].size * steps / (time.perf_counter() - start)


def torch_peer(cfg, batch: dict, steps: int, warmup: int) -> float:
  import torch
  import transformers
  hf_cfg = transformers.LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                                    intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
                                    num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                                    head_dim=cfg.head_dim, tie_word_embeddings=cfg.tie_embeddings,
                                    max_position_embeddings=batch["decoder_input_tokens"].shape[1])
  model = transformers.LlamaForCausalLM(hf_cfg).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
  inputs = torch.tensor(batch["decoder_input_tokens"], dtype=torch.long)
  targets = torch.tensor(batch["decoder_target_tokens"], dtype=torch.long)

  def step():
    logits = model(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

  for _ in range(warmup):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return inputs.numel() * steps / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=256)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--overrides", default="{}", help='JSON field overrides, e.g. {"d_model": 512}')
  parser.add_argument("--no_torch", action="store_true", help="skip the torch peer (e.g. for big configs)")
  args = parser.parse_args()
  on_cpu = jax.devices()[0].platform == "cpu"
  cfg = preset(args.preset, {"dtype": "float32" if on_cpu else "bfloat16", "remat": not on_cpu,
                             **json.loads(args.overrides)})
  batch = _batch(args.batch, args.length, cfg.vocab_size)
  flops_per_token = model_flops_per_token(cfg, args.length)
  peak = peak_flops_per_device()
  peak_label = "published bf16 peak"
  if peak is None:
    peak, peak_label = measured_matmul_flops(), "measured f32 matmul FLOP/s"
  peak *= jax.device_count()
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; preset {args.preset} {args.overrides}; "
        f"batch {args.batch} x {args.length} tokens; {peak_label} {peak / 1e12:.3f} TFLOP/s")
  ours_tps = ours(cfg, batch, args.steps, args.warmup)
  print(f"mathft_jax:          {ours_tps:12,.0f} tokens/s   MFU {ours_tps * flops_per_token / peak:6.2%}")
  if not args.no_torch:
    torch_tps = torch_peer(cfg, batch, args.steps, args.warmup)
    print(f"transformers+torch:  {torch_tps:12,.0f} tokens/s   MFU {torch_tps * flops_per_token / peak:6.2%}")
    print(f"ratio (ours / torch): {ours_tps / torch_tps:.2f}x")


if __name__ == "__main__":
  main()
