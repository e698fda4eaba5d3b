"""Seqio tasks by name, registered for the model's tokenizer on first use: `task_name(name, tokenizer)`.

The names a run gives (gin's MIXTURE_OR_TASK_NAME, the recipe's GENERATOR_TASK) are the same for every model; the
seqio task registered for them carries the tokenizer's fingerprint (`<name>.tok_<fingerprint>`), so two tokenizers
never share a task. Solution fine-tuning (SSFT): inputs = generator prompt, targets = step-by-step solution.
- `ssft_synthetic`: the embedded synthetic domain (train 20,000 / validation = test 500 generated problems);
  `ssft_synthetic_level<k>` (k = 1..5): one level alone (the demo trains on level 1, 20,000 training problems;
  levels 2-5 have 4,000, as many as each has in `ssft_synthetic`).
- `ssft_math`: MATH, train = `train_prm` (train + the 4,500 non-MATH500 test problems), validation/test = MATH500.
- `ssft_math_train7500`: MATH's own train split (7,500), validation/test = MATH500.
- `ssft_prm800k`: PRM800K's correct step-by-step solutions; `ssft_math_prm800k`: both, mixed by example count.
  These read TFDS datasets prepared offline (`mathft-prepare-data`) in MATHFT_TFDS_DIR (default ~/tensorflow_datasets).
- `problems:<problem set>`: any problem set of `mathft_jax.text.problems` whose records have solutions, e.g.
  `problems:math:/data/MATH:train` or a JSONL file (every split reads it; no TFDS preparation).
- `jsonl:<path>`: lines of {"inputs": ..., "targets": ...} (loss on targets only).
- `evaluator_ce:<graded.jsonl>`, `evaluator_margin:...`, `evaluator_seq:...`: evaluator training data from a run's
  graded samples (`mathft_jax.evaluator.pairs`); the pair tasks give features of shape [2, L].
"""
import hashlib
import os
from typing import Callable, Optional, Sequence

import numpy as np

from mathft_jax import run_io
from mathft_jax.data import synthetic
from mathft_jax.data.features import PAIR_FEATURES
from mathft_jax.data.quiet_tf import seqio, tf
from mathft_jax.data.vocabularies import output_features
from mathft_jax.evaluator import pairs
from mathft_jax.text import prompts
from mathft_jax.text.tokenizer import Tokenizer

SSFT_TASKS = ("ssft_synthetic", "ssft_math", "ssft_math_train7500", "ssft_prm800k") + tuple(
    f"ssft_synthetic_level{k}" for k in range(1, 6))
SSFT_MIXTURES = {"ssft_math_prm800k": ("ssft_math", "ssft_prm800k")}
SPLITS = ("train", "validation", "test")


class TaskNameError(ValueError):
  """A task name this project does not know, or a file it names that cannot serve as data."""


def _generator_columns(records) -> dict:
  """(problem, solution) records -> generator example text columns (`prompts.generator_example`)."""
  examples = [prompts.generator_example(problem, solution) for problem, solution in records]
  return {"inputs": [e["inputs"] for e in examples], "targets": [e["targets"] for e in examples]}


def _ids_dataset(columns: dict) -> tf.data.Dataset:
  """{feature: list of id lists} -> a dataset of {feature: int32 [n]} examples."""
  count = len(next(iter(columns.values())))
  flat = {k: tf.constant(np.concatenate([np.asarray(x, np.int32) for x in v] or [np.zeros(0, np.int32)]))
          for k, v in columns.items()}
  ends = {k: tf.constant(np.cumsum([0] + [len(x) for x in v]), tf.int64) for k, v in columns.items()}
  return tf.data.Dataset.range(count).map(lambda i: {k: flat[k][ends[k][i]:ends[k][i + 1]] for k in columns})


class _TokenizedSource(seqio.FunctionDataSource):
  """A source of already tokenized examples: `texts(split)` gives text columns (inputs/targets, or their _pos/_neg
  pairs), tokenized once per split in Python by `tokenizer.example_ids`, the function sampling and scoring use.
  (Tokenizing inside tf.data would need py_function, whose pending calls deadlock the deletion of an iterator.)
  permute: with shuffle_files, examples are first put in a seeded random order (real data sets come sorted)."""

  def __init__(self, texts: Callable[[str], dict], tokenizer: Tokenizer, permute: bool = True):
    self._texts, self._tokenizer, self._permute, self._cache = texts, tokenizer, permute, {}
    super().__init__(self._dataset, splits=SPLITS)

  def _encoded(self, split: str) -> dict:
    if split not in self._cache:
      columns = self._texts(split)
      encoded = {}
      for key in columns:
        if key.startswith("inputs"):
          target = "targets" + key[len("inputs"):]
          ids = [self._tokenizer.example_ids(p, t) for p, t in zip(columns[key], columns[target])]
          encoded[key], encoded[target] = [x for x, _ in ids], [y for _, y in ids]
      self._cache[split] = encoded
    return self._cache[split]

  def num_input_examples(self, split: str) -> int:  # mixtures weigh their tasks by it
    return len(next(iter(self._encoded(split).values())))

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed=None, shard_info=None, **unused):
    """As seqio's FunctionDataSource, without its warning about uncached shuffled data: the examples are in memory
    and put in a seeded order here, and the order of batches on resume is exact (`SeqioSource`)."""
    if shard_info and shard_info.num_shards > 1:
      raise ValueError("shard the dataset with tf.data.Dataset.shard")  # seqio does so for this source
    return self._dataset(split, shuffle, seed)

  def _dataset(self, split, shuffle_files, seed=None):
    columns = self._encoded(split)
    if self._permute and shuffle_files:
      order = np.random.default_rng(0 if seed is None else seed).permutation(self.num_input_examples(split))
      columns = {k: [v[i] for i in order] for k, v in columns.items()}
    return _ids_dataset(columns)


def _synthetic_texts(levels=(1, 2, 3, 4, 5), num_train: int = 20_000) -> Callable[[str], dict]:
  def texts(split):
    name = "train" if split == "train" else "test"
    records = synthetic.generate(name, num_train if name == "train" else 500, levels=levels)
    return _generator_columns((r["problem"], r["solution"]) for r in records)
  return texts


def _problems_texts(spec: str) -> Callable[[str], dict]:
  from mathft_jax.text.problems import load_problems
  records = [(r["problem"], r["solution"]) for r in load_problems(spec) if r.get("solution") and r.get("problem")]
  if not records:
    raise TaskNameError(f"problems:{spec}: no record has both a problem and a solution to train on")
  return lambda split: _generator_columns(records)


def _tfds_texts(name: str) -> Callable[[str], dict]:
  """MATH / PRM800K prepared offline by `mathft-prepare-data` (MATHFT_TFDS_DIR), read whole into memory."""
  from mathft_jax.data import math_dataset, prm800k
  math_dataset._tfds_builder()  # defining the builder classes registers them with TFDS
  prm800k._tfds_builder()
  data_dir = os.environ.get("MATHFT_TFDS_DIR")
  test = {"validation": "test500", "test": "test500"}
  if name == "ssft_prm800k":
    source = seqio.TfdsDataSource("mathft_prm800k:1.0.0", tfds_data_dir=data_dir,
                                  splits={"train": "train", "validation": "test", "test": "test"})
  else:
    train = "train_prm" if name == "ssft_math" else "train"
    source = seqio.TfdsDataSource("mathft_math:1.0.0", tfds_data_dir=data_dir, splits={"train": train, **test})

  def texts(split):
    rows = source.get_dataset(split=split, shuffle=False).as_numpy_iterator()
    return _generator_columns((r["problem"].decode(), r["solution"].decode()) for r in rows)
  return texts


def _add(name: str, texts: Callable[[str], dict], tokenizer: Tokenizer, keys: Sequence[str] = ("inputs", "targets"),
         token_preprocessors: Sequence = (), permute: bool = True) -> str:
  seqio.TaskRegistry.add(name, source=_TokenizedSource(texts, tokenizer, permute),
                         output_features=output_features(tokenizer, keys),
                         preprocessors=[*token_preprocessors, seqio.preprocessors.append_eos_after_trim])
  return name


def _read_jsonl(path: str) -> dict:
  inputs, targets = [], []
  for where, record in run_io.iter_jsonl(path):
    try:
      inputs.append(str(record["inputs"]))
      targets.append(str(record["targets"]))
    except (KeyError, TypeError) as e:
      raise TaskNameError(f"{where}: expected a JSON object with 'inputs' and 'targets' ({e!r})") from None
  if not inputs:
    raise TaskNameError(f"{path}: no records")
  return {"inputs": inputs, "targets": targets}


def _evaluator_task(name: str, kind: str, graded_path: str, tokenizer: Tokenizer) -> str:
  data = pairs.read_graded(graded_path)
  exs = pairs.examples(pairs.build_pairs(data), kind)
  if not exs:
    raise pairs.GradedFileError(f"{graded_path}: no problem has both a correct and an incorrect sample")
  keys = ("inputs", "targets") if kind == "ce" else PAIR_FEATURES
  trims = (keep_input_tails(tokenizer.start),) if kind in ("ce", "margin") else ()  # "seq": prompts
  columns = {k: [e[k] for e in exs] for k in keys}
  return _add(name, lambda split: columns, tokenizer, keys, trims, permute=False)


def keep_input_tails(start: Sequence[int] = ()):
  """A seqio token preprocessor that cuts over-long evaluator prompts from the left, after the tokenizer's start
  ids (`start`, kept): the question that ends the prompt ("The above candidate solution is") and the end of the
  candidate, where its answer is, always reach the model (the default cut from the right would train the label on
  a prompt without its question)."""
  head = tf.constant(list(start), tf.int32)

  def cut(dataset: tf.data.Dataset, sequence_length: Optional[dict] = None) -> tf.data.Dataset:
    if not sequence_length:
      return dataset

    def one(ex):
      out = dict(ex)
      for k, v in ex.items():
        if k.startswith("inputs") and k in sequence_length and len(start) < sequence_length[k]:
          tail = v[len(start):][-(sequence_length[k] - len(start)):]
          out[k] = tf.concat([head, tail], 0)
      return out
    return dataset.map(one)
  return cut


def _register(name: str, registered: str, tokenizer: Tokenizer) -> None:
  kind, sep, rest = name.partition(":")
  if name in SSFT_MIXTURES:
    parts = [task_name(part, tokenizer) for part in SSFT_MIXTURES[name]]
    seqio.MixtureRegistry.add(registered, parts, default_rate=seqio.mixing_rate_num_examples)
  elif name.startswith("ssft_synthetic"):  # generated in a random order already
    levels = (int(name[-1]),) if name != "ssft_synthetic" else (1, 2, 3, 4, 5)
    _add(registered, _synthetic_texts(levels, 20_000 if levels in ((1,), (1, 2, 3, 4, 5)) else 4_000), tokenizer,
         permute=False)
  elif name in SSFT_TASKS:
    _add(registered, _tfds_texts(name), tokenizer)
  elif sep and kind == "problems":
    _add(registered, _problems_texts(rest), tokenizer)
  elif sep and kind == "jsonl":
    columns = _read_jsonl(rest)
    _add(registered, lambda split: columns, tokenizer, permute=False)
  elif sep and kind.startswith("evaluator_") and kind[len("evaluator_"):] in pairs.KINDS:
    _evaluator_task(registered, kind[len("evaluator_"):], rest, tokenizer)
  else:
    raise TaskNameError(f"unknown task {name!r}: expected one of {sorted(SSFT_TASKS + tuple(SSFT_MIXTURES))}, "
                        f"'problems:<problem set>', 'jsonl:<path>' or 'evaluator_{{ce,margin,seq}}:<graded.jsonl>'")


def task_name(name: str, tokenizer: Tokenizer) -> str:
  """The seqio task or mixture registered for `name` and `tokenizer` (registering it on first use)."""
  key = name if ":" not in name else f"{name.partition(':')[0]}_{hashlib.sha1(name.encode()).hexdigest()[:12]}"
  registered = f"{key}.tok_{tokenizer.fingerprint[:16]}"
  if registered not in seqio.TaskRegistry.names() and registered not in seqio.MixtureRegistry.names():
    _register(name, registered, tokenizer)
  return registered
