"""Sampling tokens/s of our KV-cache sampler next to transformers' `generate` on the same weights and prompts.

    .venv/bin/python benchmarks/sampling_throughput.py --prompts 4 --samples 16 --new_tokens 128
    .venv/bin/python benchmarks/sampling_throughput.py --preset gemma_2b --no_torch   # on a GPU, random weights

A random Llama-style model (our tiny preset shape unless --d_model etc. are given) is built with transformers,
saved, and imported with our converter, so both sides run the same weights. Both sample at temperature 1 with a
fixed output length (EOS disabled): P prompts x N samples x T new tokens per call, timed after a warm-up call.
"""
import argparse
import tempfile
import time

import jax
import numpy as np

from mathft_jax.inference.decoding import Temperature, left_pad, make_generate_fn


def _hf_model(args):
  import torch
  import transformers
  config = transformers.LlamaConfig(vocab_size=384, hidden_size=args.d_model, intermediate_size=3 * args.d_model,
                                    num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                    num_key_value_heads=args.heads // 2, max_position_embeddings=4096)
  torch.manual_seed(0)
  return transformers.LlamaForCausalLM(config).eval()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompts", type=int, default=4)
  parser.add_argument("--samples", type=int, default=16)
  parser.add_argument("--prompt_len", type=int, default=64)
  parser.add_argument("--new_tokens", type=int, default=128)
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--preset", help="random weights of one of our presets instead (e.g. gemma_2b on a GPU)")
  parser.add_argument("--no_torch", action="store_true")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  if args.preset:
    from mathft_jax.models import init_params, preset
    cfg = preset(args.preset, {"dtype": "bfloat16" if jax.devices()[0].platform != "cpu" else "float32"})
    params, model = init_params(cfg, jax.random.PRNGKey(0)), None
  else:
    from mathft_jax.models.hf_import import load_hf_checkpoint
    model = _hf_model(args)
    with tempfile.TemporaryDirectory() as d:
      model.save_pretrained(d)
      cfg, params = load_hf_checkpoint(d)
  prompts = [list(rng.integers(3, 259, args.prompt_len)) for _ in range(args.prompts)]
  tokens, mask = left_pad(prompts, args.prompt_len)
  total = args.prompts * args.samples * args.new_tokens
  fn = make_generate_fn(cfg, num_samples=args.samples, max_new_tokens=args.new_tokens, sampler=Temperature(1.0),
                        eos_id=-1)
  jax.block_until_ready(fn(params, tokens, mask, jax.random.PRNGKey(0)))
  start = time.perf_counter()
  jax.block_until_ready(fn(params, tokens, mask, jax.random.PRNGKey(1)))
  ours = total / (time.perf_counter() - start)
  print(f"device {jax.devices()[0].device_kind}; {args.prompts} prompts x {args.samples} samples x "
        f"{args.new_tokens} new tokens (prompt {args.prompt_len})")
  print(f"mathft_jax sampler:     {ours:12,.0f} tokens/s")
  if model is not None and not args.no_torch:
    import torch
    inputs = torch.tensor(prompts)

    def run():
      with torch.no_grad():
        model.generate(inputs, do_sample=True, temperature=1.0, top_k=0, num_return_sequences=args.samples,
                       max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)
    run()
    start = time.perf_counter()
    run()
    theirs = total / (time.perf_counter() - start)
    print(f"transformers generate:  {theirs:12,.0f} tokens/s")
    print(f"ratio (ours / transformers): {ours / theirs:.2f}x")


if __name__ == "__main__":
  main()
