"""Registered seqio tasks and mixtures, one per fine-tuning strategy (names a gin file can pick).

Solution fine-tuning (SSFT), inputs = generator prompt, targets = step-by-step solution:
- `ssft_synthetic`: the embedded synthetic domain (train 20,000 / validation = test 500 generated problems);
  `ssft_synthetic_level<k>` (k = 1..5): one level alone (the demo trains on level 1, sums of five one-digit numbers).
- `ssft_math`: MATH, train = `train_prm` (train + the 4,500 non-MATH500 test problems), validation/test = MATH500.
- `ssft_math_train7500`: MATH's own train split (7,500), validation/test = MATH500.
- `ssft_prm800k`: PRM800K's correct step-by-step solutions; `ssft_math_prm800k`: both, mixed by example count.
MATH and PRM800K read TFDS datasets prepared offline (`mathft-prepare-data`) in MATHFT_TFDS_DIR (default
~/tensorflow_datasets). The vocabulary is MATHFT_VOCABULARY ("byte", "sentencepiece:<path>", "hf:<path>");
`register(...)` re-registers everything for another vocabulary or data dir.

Evaluator training tasks are built from a run's graded samples, so they are named by their file:
"evaluator_ce:<graded.jsonl>", "evaluator_margin:<...>", "evaluator_seq:<...>" (see
`mathft_jax.data.evaluator_data`). Multi-task sequential fine-tuning chains these names: stage 1 an `ssft_*`
task, stage 2 an `evaluator_*` task, stage 3 the `ssft_*` task again, each from the previous stage's checkpoint.
"""
import os
from typing import Optional

import seqio
import tensorflow as tf

from mathft_jax.data import math_dataset, prm800k, prompts, synthetic
from mathft_jax.data.vocabularies import get_vocabulary

SSFT_TASKS = ("ssft_synthetic", "ssft_math", "ssft_math_train7500", "ssft_prm800k")
SSFT_MIXTURES = ("ssft_math_prm800k",)


def _output_features(vocabulary: seqio.Vocabulary) -> dict:
  return {"inputs": seqio.Feature(vocabulary, add_eos=False), "targets": seqio.Feature(vocabulary, add_eos=True)}


def to_generator_example(ex: dict) -> dict:
  """TF version of `prompts.generator_example` over MATH-style features (problem, solution)."""
  problem = tf.strings.strip(ex["problem"])
  return {"inputs": tf.strings.join([prompts.GENERATOR_PREFIX, problem, prompts.GENERATOR_SUFFIX]),
          "targets": tf.strings.strip(ex["solution"])}


def _synthetic_source(num_train: int, levels=(1, 2, 3, 4, 5)) -> seqio.DataSource:
  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    name = "train" if split == "train" else "test"
    records = list(synthetic.generate(name, num_train if name == "train" else 500, levels=levels))
    return tf.data.Dataset.from_tensor_slices({k: [r[k] for r in records] for k in ("problem", "solution")})
  return seqio.FunctionDataSource(dataset_fn, splits=("train", "validation", "test"))


def _add_task(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary) -> None:
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(name, source=source,
                         preprocessors=[seqio.map_over_dataset(to_generator_example),
                                        seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
                         output_features=_output_features(vocabulary))


def register(vocabulary: str = "byte", tfds_data_dir: Optional[str] = None, synthetic_train: int = 20_000) -> None:
  """(Re-)registers every task and mixture with the given vocabulary and TFDS data dir."""
  vocab = get_vocabulary(vocabulary)
  math_dataset._tfds_builder()  # defining the builder classes registers them with TFDS
  prm800k._tfds_builder()
  _add_task("ssft_synthetic", _synthetic_source(synthetic_train), vocab)
  for level in range(1, 6):  # one level alone; its problems are "synthetic:<split>:<n>:<level>"
    _add_task(f"ssft_synthetic_level{level}", _synthetic_source(synthetic_train, (level,)), vocab)
  math_splits = {"validation": "test500", "test": "test500"}
  _add_task("ssft_math", seqio.TfdsDataSource("mathft_math:1.0.0", tfds_data_dir=tfds_data_dir,
                                              splits={"train": "train_prm", **math_splits}), vocab)
  _add_task("ssft_math_train7500", seqio.TfdsDataSource("mathft_math:1.0.0", tfds_data_dir=tfds_data_dir,
                                                        splits={"train": "train", **math_splits}), vocab)
  _add_task("ssft_prm800k", seqio.TfdsDataSource("mathft_prm800k:1.0.0", tfds_data_dir=tfds_data_dir,
                                                 splits={"train": "train", "validation": "test", "test": "test"}),
            vocab)
  seqio.MixtureRegistry.remove("ssft_math_prm800k")
  seqio.MixtureRegistry.add("ssft_math_prm800k", ["ssft_math", "ssft_prm800k"], default_rate=seqio.mixing_rate_num_examples)


register(os.environ.get("MATHFT_VOCABULARY", "byte"), os.environ.get("MATHFT_TFDS_DIR"))
