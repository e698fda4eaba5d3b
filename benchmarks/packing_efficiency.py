"""Packing efficiency of the SSFT feature pipeline: share of non-padding tokens in batches, packed vs not.

    .venv/bin/python benchmarks/packing_efficiency.py --manual_dir ../shared/data/math --task ssft_math \\
        --inputs 512 --targets 1024 --batches 50

Prepares the MATH TFDS dataset from local files into a temporary data dir (offline), then reads `--batches`
batches of 32 through the next-token feature converter (`mathft_jax.data.features`) with the byte vocabulary, or
with a model's tokenizer (`--tokenizer`: a params folder or a Hugging Face folder).
"""
import argparse
import os
import tempfile

from mathft_jax.data import math_dataset
from mathft_jax.data.seqio_source import SeqioSource


def efficiency(task: str, lengths: dict, pack: bool, batches: int, tokenizer: str) -> tuple[float, float]:
  source = SeqioSource(task, lengths, batch_size=32, pack=pack, shuffle=False, num_epochs=1, tokenizer=tokenizer)
  used = total = examples = 0
  for _, batch in zip(range(batches), source.host_batches(0)):
    seg = batch.get("decoder_segment_ids")
    nonpad = (seg > 0) if seg is not None else (batch["decoder_target_tokens"] > 0)
    used += int(nonpad.sum())
    total += nonpad.size
    examples += int(seg.max(axis=1).sum()) if seg is not None else len(nonpad)
  return used / total, examples / (batches * 32)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--manual_dir", required=True)
  parser.add_argument("--task", default="ssft_math")
  parser.add_argument("--inputs", type=int, default=512)
  parser.add_argument("--targets", type=int, default=1024)
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--tokenizer", default="byte")
  args = parser.parse_args()
  data_dir = tempfile.mkdtemp()
  math_dataset.prepare(args.manual_dir, data_dir)
  os.environ["MATHFT_TFDS_DIR"] = data_dir
  lengths = {"inputs": args.inputs, "targets": args.targets}
  for pack in (False, True):
    eff, per_row = efficiency(args.task, lengths, pack, args.batches, args.tokenizer)
    print(f"{args.task} {args.tokenizer} tokenizer, lengths {lengths}, pack={pack}: {eff:.1%} non-padding tokens, "
          f"{per_row:.2f} examples per row")


if __name__ == "__main__":
  main()
