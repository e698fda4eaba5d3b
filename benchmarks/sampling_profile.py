"""Where a sampling call's time goes: tokens/s of our shared-prompt engine on one workload of
`sampling_throughput.py`, optionally with a part of the step left out (an ablation) and a per-op profile.

    .venv/bin/python benchmarks/sampling_profile.py --workload b --dtype float32 --profile 30
    .venv/bin/python benchmarks/sampling_profile.py --workload b --dtype float32 --ablate attention

--ablate attention: `shared_attention` returns its queries (no attention at all; the KV writes, draws and the dense
part stay); --ablate prompt: the prompt part reads one position instead of the whole prompt. The difference to the
full run is what that part costs a call. These are measurements of the engine's parts, never a way to sample.
--compile_preset NAME: instead, times lowering and compiling both engines for one of our presets (abstract
parameters, nothing allocated): 1 prompt of 512 tokens x 64 samples, --new_tokens T, bfloat16.
--profile N: traces one more call (`jax.profiler`) and prints the N op kinds that took the most time, summed over
the backend's threads and grouped by their JAX source op (layer numbers and `switch` branches folded together).
"""
import argparse
import collections
import functools
import glob
import os
import re
import tempfile
import time

import jax
import numpy as np
import sampling_throughput as bench

from mathft_jax.inference import slot_refill
from mathft_jax.inference.decoding import Temperature, left_pad


def op_table(trace_dir: str, hlo_text: str, top: int) -> list[str]:
  """Rows 'ms per call, share, op kind [shape]' from a trace and the compiled program's HLO text."""
  source = {m.group(1): (m.group(3), m.group(2)) for m in re.finditer(
      r"\n\s*(?:ROOT )?%?([\w.\-]+) = (\S+) [^\n]*?op_name=\"([^\"]+)\"", hlo_text)}
  data = jax.profiler.ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
  spent = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):  # the backend's compute threads
        continue
      for event in line.events:
        if event.name in source:
          op, shape = source[event.name]
          op = re.sub(r"layer_\d+", "L", re.sub(r"branch_\d+_fun", "B", op))
          spent[f"{op.split('/', 1)[-1]} {re.sub(r'{.*', '', shape)}"] += event.duration_ns
  total = sum(spent.values())
  return [f"{ns / 1e6:9.1f} ms {100 * ns / total:5.1f}%  {name}" for name, ns in spent.most_common(top)]


def compile_times(name: str, new_tokens: int) -> None:
  """Prints the seconds to lower and to compile the classic and the shared engine for preset `name`."""
  from mathft_jax.inference.engines import make_generate_fn
  from mathft_jax.models import abstract_params, preset
  cfg = preset(name, {"dtype": "bfloat16"})
  params = jax.tree.map(lambda x: getattr(x, "value", x), abstract_params(cfg), is_leaf=lambda x: hasattr(x, "value"))
  prompt = jax.ShapeDtypeStruct((1, 512), jax.numpy.int32)
  for engine in ("classic", "shared"):
    fn = make_generate_fn(cfg, num_samples=64, max_new_tokens=new_tokens, sampler=Temperature(1.0), engine=engine)
    start = time.perf_counter()
    lowered = fn.lower(params, prompt, prompt, jax.random.PRNGKey(0))
    middle = time.perf_counter()
    lowered.compile()
    print(f"{name}, T={new_tokens}, engine {engine}: lowered in {middle - start:.1f} s, compiled in "
          f"{time.perf_counter() - middle:.1f} s", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workload", default="b", choices=sorted(bench.WORKLOADS))
  parser.add_argument("--dtype", default="float32", choices=["bfloat16", "float32"])
  parser.add_argument("--model", default="512,8,8,4,1536,32000", help="d_model,layers,heads,kv_heads,mlp,vocab")
  parser.add_argument("--block", type=int, default=128, help="generated positions per KV block")
  parser.add_argument("--kv_dtype", default=None, help="the KV cache's dtype (default: the compute dtype)")
  parser.add_argument("--ablate", choices=["attention", "prompt"], help="leave this part of the step out")
  parser.add_argument("--profile", type=int, default=0, help="print the N costliest op kinds of a traced call")
  parser.add_argument("--compile_preset", help="only time lowering and compiling both engines for this preset")
  parser.add_argument("--new_tokens", type=int, default=1024, help="T for --compile_preset")
  args = parser.parse_args()
  if args.compile_preset:
    return compile_times(args.compile_preset, args.new_tokens)
  tmp = tempfile.TemporaryDirectory()
  cfg, params = bench.build_model(os.path.join(tmp.name, "model"), args.model, args.dtype)
  if args.ablate == "attention":
    slot_refill.shared_attention = lambda q, *a, **k: q
  elif args.ablate == "prompt":
    full = slot_refill.shared_attention
    slot_refill.shared_attention = lambda q, pk, pv, pm, *a, **k: full(q, pk[..., :1], pv[..., :1, :], pm[..., :1],
                                                                        *a, **k)
  num_prompts, samples, prompt_len, new = bench.WORKLOADS[args.workload]
  rng = np.random.default_rng(0)
  prompts = [rng.integers(3, cfg.vocab_size, prompt_len).tolist() for _ in range(num_prompts)]
  limits = bench.math_lengths(num_prompts * samples, 512) if new is None else None
  tokens, mask = left_pad(prompts, prompt_len)
  fn = jax.jit(functools.partial(
      slot_refill.generate_shared, cfg=cfg, num_samples=samples, max_new_tokens=max(limits) if limits else new,
      sampler=Temperature(1.0), eos_id=-1, block=args.block, row_max_tokens=limits, kv_dtype=args.kv_dtype))
  call = lambda: fn(params, tokens=tokens, mask=mask, rng=jax.random.PRNGKey(1))  # noqa: E731
  start = time.perf_counter()
  jax.block_until_ready(call())
  compile_and_run = time.perf_counter() - start
  start = time.perf_counter()
  jax.block_until_ready(call())
  seconds = time.perf_counter() - start
  made = sum(limits) if limits else num_prompts * samples * new
  print(f"[{args.workload}] {args.dtype}, block {args.block}, KV {args.kv_dtype or args.dtype}, ablate "
        f"{args.ablate or 'nothing'}: {made / seconds:,.0f} tokens/s ({seconds:.1f} s a call; first call with "
        f"compilation {compile_and_run:.1f} s)")
  if args.profile:
    with tempfile.TemporaryDirectory() as trace_dir:
      with jax.profiler.trace(trace_dir):
        jax.block_until_ready(call())
      hlo = fn.lower(params, tokens=tokens, mask=mask, rng=jax.random.PRNGKey(1)).compile().as_text()
      print(f"op time of a traced call, summed over threads (ms; the traced call is slower than {seconds:.1f} s):")
      print("\n".join(op_table(trace_dir, hlo, args.profile)))


if __name__ == "__main__":
  main()
