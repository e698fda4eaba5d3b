"""MATH (Hendrycks et al. 2021) from local files, and its TFDS builder (`manual_dir`, no downloads).

Accepted layouts in the manual dir: `train.jsonl` + `test.jsonl` (fields unique_id, problem, level, type,
solution); the original release folder `MATH/{train,test}/<subject>/<n>.json` (or `{train,test}/...` directly);
or its tarball `MATH.tar`/`MATH.tar.gz`. Splits: train (7,500), test (5,000), test500 (the MATH500 ids of
PRM800K, shipped in `math500_ids.txt`), train_prm (train + the other 4,500 test problems).
"""
import functools
import json
import os
import re
import tarfile
from typing import Iterable

import numpy as np

from mathft_jax.grading.extract import last_boxed

IDS_FILE = os.path.join(os.path.dirname(__file__), "math500_ids.txt")
WHERE = ("Put one of these into {d}:\n"
         "  - train.jsonl and test.jsonl (one problem per line: unique_id, problem, level, type, solution), or\n"
         "  - the original release folder MATH/ (MATH/train/algebra/1.json, ...), or\n"
         "  - its tarball MATH.tar.gz (https://github.com/hendrycks/math).")


class MathDataError(ValueError):
  """Missing or malformed MATH files; the message names the file (and line) or says where files go."""


def math500_ids() -> list[str]:
  with open(IDS_FILE) as f:
    return [line.strip() for line in f if line.strip()]


def _record(raw: dict, unique_id: str, where: str) -> dict:
  try:
    level = raw["level"]
    solution = raw["solution"]
    problem = raw["problem"]
    subject = raw.get("type", raw.get("subject"))
  except KeyError as e:
    raise MathDataError(f"{where}: missing field {e}") from None
  match = re.fullmatch(r"Level (\d)", str(level).strip())
  return {"unique_id": unique_id, "problem": problem, "solution": solution, "answer": last_boxed(solution),
          "level": int(match.group(1)) if match else 0, "subject": subject or ""}


def _read_jsonl(path: str) -> list[dict]:
  out = []
  with open(path) as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        raw = json.loads(line)
      except ValueError as e:
        raise MathDataError(f"{path}:{line_no}: not JSON ({e})") from None
      if "unique_id" not in raw:
        raise MathDataError(f"{path}:{line_no}: missing field 'unique_id'")
      out.append(_record(raw, raw["unique_id"], f"{path}:{line_no}"))
  return out


def _read_tree(root: str, split: str) -> list[dict]:
  out = []
  for subject in sorted(os.listdir(os.path.join(root, split))):
    folder = os.path.join(root, split, subject)
    for name in sorted(os.listdir(folder), key=lambda n: (len(n), n)):
      if name.endswith(".json"):
        path = os.path.join(folder, name)
        with open(path) as f:
          try:
            raw = json.load(f)
          except ValueError as e:
            raise MathDataError(f"{path}: not JSON ({e})") from None
        out.append(_record(raw, f"{split}/{subject}/{name}", path))
  return out


def _read_tar(path: str) -> dict[str, list[dict]]:
  splits = {"train": [], "test": []}
  with tarfile.open(path) as tar:
    for member in tar:
      m = re.search(r"(?:^|/)(train|test)/([^/]+)/([^/]+\.json)$", member.name)
      if member.isfile() and m:
        where = f"{path}:{member.name}"
        try:
          raw = json.load(tar.extractfile(member))
        except ValueError as e:
          raise MathDataError(f"{where}: not JSON ({e})") from None
        splits[m.group(1)].append(_record(raw, f"{m.group(1)}/{m.group(2)}/{m.group(3)}", where))
  return splits


def read_math(manual_dir: str) -> dict[str, list[dict]]:
  """{"train": [...], "test": [...]} from whichever supported layout `manual_dir` holds."""
  manual_dir = os.fspath(manual_dir)
  if all(os.path.isfile(os.path.join(manual_dir, f"{s}.jsonl")) for s in ("train", "test")):
    return {s: _read_jsonl(os.path.join(manual_dir, f"{s}.jsonl")) for s in ("train", "test")}
  for root in (os.path.join(manual_dir, "MATH"), manual_dir):
    if all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test")):
      return {s: _read_tree(root, s) for s in ("train", "test")}
  for name in ("MATH.tar.gz", "MATH.tar", "MATH.tgz"):
    if os.path.isfile(os.path.join(manual_dir, name)):
      return _read_tar(os.path.join(manual_dir, name))
  raise MathDataError(f"MATH not found in {manual_dir}. " + WHERE.format(d=manual_dir))


def math_splits(data: dict[str, list[dict]]) -> dict[str, list[dict]]:
  """train, test, test500 and train_prm (train + test minus MATH500)."""
  ids = set(math500_ids())
  test500 = [r for r in data["test"] if r["unique_id"] in ids]
  if len(test500) != len(ids):
    missing = sorted(ids - {r["unique_id"] for r in test500})[:3]
    raise MathDataError(f"{len(ids) - len(test500)} MATH500 ids are absent from the test split, e.g. {missing}")
  rest = [r for r in data["test"] if r["unique_id"] not in ids]
  return {"train": data["train"], "test": data["test"], "test500": test500, "train_prm": data["train"] + rest}


@functools.lru_cache(maxsize=None)  # one class per process: TFDS registers builders by name
def _tfds_builder():
  """Defined lazily so that importing this module does not import TensorFlow."""
  import tensorflow_datasets as tfds

  from mathft_jax.data import quiet_tf  # noqa: F401  TensorFlow first, quietly

  class MathftMath(tfds.core.GeneratorBasedBuilder):
    """MATH with the PRM800K splits (test500, train_prm)."""
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = WHERE.format(d="the manual_dir")

    def _info(self):
      text = tfds.features.Text()
      return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
          "unique_id": text, "problem": text, "solution": text, "answer": text, "level": tfds.features.Scalar(
              np.int32), "subject": text}))

    def _split_generators(self, dl_manager):
      splits = math_splits(read_math(os.fspath(dl_manager.manual_dir)))
      return {name: self._generate_examples(records) for name, records in splits.items()}

    def _generate_examples(self, records: Iterable[dict]):
      for r in records:
        yield r["unique_id"], r

  return MathftMath


def prepare_offline(builder_cls, manual_dir: str, data_dir: str):
  """Builds a manual-dir TFDS dataset into data_dir without any download (GCS look-ups off); returns the builder."""
  import tensorflow_datasets as tfds

  from mathft_jax.data import quiet_tf  # noqa: F401  TensorFlow first, quietly
  builder = builder_cls(data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                                            try_download_gcs=False))
  return builder


def prepare(manual_dir: str, data_dir: str):
  """Builds the TFDS dataset `mathft_math` into data_dir from manual_dir (offline); returns the builder."""
  return prepare_offline(_tfds_builder(), manual_dir, data_dir)
