"""Dense matmul rates of this machine's two CPU backends, side by side: XLA:CPU (our engines) and PyTorch (vLLM's CPU
engine), float32 and bfloat16, on the lm_head shape of the sampling benchmark's steps ([256, 512] x [512, 32,000]).

    .venv/bin/python benchmarks/matmul_rates.py

Prints GFLOP/s for each (backend, dtype): the ceiling every dense step of `sampling_throughput.py` works under.
"""
import argparse
import time

import jax
import jax.numpy as jnp


def rate(fn, a, b, repeats: int) -> float:
  """GFLOP/s of fn(a, b) = a @ b, the mean of `repeats` calls after a warm-up."""
  (m, k), n = a.shape, b.shape[1]
  fn(a, b)
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(a, b)
  if hasattr(out, "block_until_ready"):
    out.block_until_ready()
  return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="256,512,32000", help="m,k,n")
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  m, k, n = map(int, args.shape.split(","))
  xla = jax.jit(lambda a, b: a @ b)
  for dtype in ("float32", "bfloat16"):
    gflops = rate(xla, jnp.ones((m, k), dtype), jnp.ones((k, n), dtype), args.repeats)
    line = f"{dtype:9s} XLA:CPU {gflops:6.0f} GFLOP/s"
    try:
      import torch
      a, b = torch.ones(m, k, dtype=getattr(torch, dtype)), torch.ones(k, n, dtype=getattr(torch, dtype))
      line += f"   PyTorch {rate(lambda x, y: x @ y, a, b, args.repeats):6.0f} GFLOP/s"
    except ImportError:
      line += "   (PyTorch not installed)"
    print(line, flush=True)


if __name__ == "__main__":
  main()
