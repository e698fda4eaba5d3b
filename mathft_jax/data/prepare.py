"""`mathft-prepare-data`: builds the MATH and PRM800K TFDS datasets from local files (no downloads).

    mathft-prepare-data --math_dir /data/MATH_or_jsonl --prm800k_dir /data/prm800k --data_dir ~/tensorflow_datasets
Then point the tasks at it: MATHFT_TFDS_DIR=~/tensorflow_datasets (the default).
"""
import argparse
import os

from mathft_jax.data import math_dataset, prm800k


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--math_dir", help="MATH as train/test JSONL, the MATH/ folder, or MATH.tar.gz")
  parser.add_argument("--prm800k_dir", help="folder with phase1/phase2 *_train.jsonl / *_test.jsonl "
                                            "(MATH under <prm800k_dir>/math attaches MATH ids)")
  parser.add_argument("--data_dir", default=os.environ.get("MATHFT_TFDS_DIR",
                                                           os.path.expanduser("~/tensorflow_datasets")))
  args = parser.parse_args(argv)
  if not (args.math_dir or args.prm800k_dir):
    parser.error("give --math_dir and/or --prm800k_dir")
  if args.math_dir:
    builder = math_dataset.prepare(args.math_dir, args.data_dir)
    print(f"mathft_math: {dict((k, v.num_examples) for k, v in builder.info.splits.items())} in {args.data_dir}")
  if args.prm800k_dir:
    builder = prm800k.prepare(args.prm800k_dir, args.data_dir)
    print(f"mathft_prm800k: {dict((k, v.num_examples) for k, v in builder.info.splits.items())}")


if __name__ == "__main__":
  main()
