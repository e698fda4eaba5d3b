"""vLLM's engine on token-id prompts, timed; run by sampling_throughput.py with the vLLM venv's python.

    .venv-vllm/bin/python benchmarks/vllm_peer.py --model_dir DIR --requests requests.json --dtype bfloat16

requests.json: {"prompts": [[ids...], ...], "n": N, "max_tokens": T or [T per sample, prompt-major]}. Prints one
line "RESULT {json}" with tokens, seconds and rss_gib (the process tree's, after the run) for the timed run, after
a warm-up on the first prompt. EOS is ignored, so every sample has exactly its max_tokens; prefix caching is on, as
in a real N-samples run.
"""
import argparse
import json
import resource
import time


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--requests", required=True)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--max_model_len", type=int, default=2048)
  args = parser.parse_args()
  from vllm import LLM, SamplingParams
  from vllm.inputs import TokensPrompt
  spec = json.load(open(args.requests))
  llm = LLM(model=args.model_dir, skip_tokenizer_init=True, dtype=args.dtype, enable_prefix_caching=True,
            max_model_len=args.max_model_len, gpu_memory_utilization=0.3, seed=0)
  n, max_tokens = spec["n"], spec["max_tokens"]
  prompts = [TokensPrompt(prompt_token_ids=p) for p in spec["prompts"]]
  if isinstance(max_tokens, int):
    requests = prompts
    params = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
  else:  # one request per sample, each with its own length
    requests = [prompts[i // n] for i in range(len(max_tokens))]
    # No per-request seeds: vLLM 0.32.0 CPU workers die on them ("CPU Generator does not use offset").
    params = [SamplingParams(n=1, temperature=1.0, max_tokens=t, ignore_eos=True, detokenize=False)
              for t in max_tokens]
  llm.generate([TokensPrompt(prompt_token_ids=list(reversed(spec["prompts"][0])))],
               SamplingParams(n=n, temperature=1.0, max_tokens=16, ignore_eos=True, detokenize=False))  # warm-up
  start = time.perf_counter()
  outputs = llm.generate(requests, params)
  seconds = time.perf_counter() - start
  tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
  import psutil  # the engine runs in child processes: the tree's resident memory, right after the run
  me = psutil.Process()
  rss = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
  print("RESULT", json.dumps({"tokens": tokens, "seconds": seconds, "rss_gib": rss / 2 ** 30,
                              "main_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}),
        flush=True)


if __name__ == "__main__":
  main()
