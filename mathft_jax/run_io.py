"""Run files on a local disk or on Cloud Storage with the same code: every binary reads and writes them here.

Paths are `etils.epath` paths, so `gs://bucket/...` works for RUN_DIR, OUTPUT_DIR, MODEL_DIR and params folders
without a FUSE mount; `gs://` goes through gcsfs (set EPATH_USE_TF=1 for TensorFlow's gfile instead), so an
inference host needs no TensorFlow, and listings are never cached (other hosts write into the same folders).
Tests run it against a Cloud Storage emulator on localhost (`tests/test_run_io.py`; STORAGE_EMULATOR_HOST, and
TENSORSTORE_GCS_HTTP_URL for orbax's arrays).

- `write_atomic(p, data)`: a reader never sees part of a file. Locally a temp file beside it is renamed over it;
  on Cloud Storage the object itself is written (an upload becomes visible whole when it is finalized), so a writer
  killed midway leaves nothing, not even a temp object.
- `read_jsonl(p)` / `iter_jsonl(p)`: records (with their "file:line"); a bad line is a RunFileError naming it.
- `ChunkedOutput(dir)`: the output of `mathft-infer`: manifest.json (the settings it was made with; another run
  refuses to write into it), chunks/chunk-<c>.jsonl and shard-<s>-of-<S>.COMPLETE, read back in chunk order.
- `iter_records(p)`: the records of a JSONL file or of a ChunkedOutput folder, with their "file:line".
"""
import json
import os
from typing import Iterator, Sequence, Union

os.environ.setdefault("EPATH_USE_TF", "false")  # before etils decides: gs:// through gcsfs, not TensorFlow
from etils import epath  # noqa: E402

try:  # other hosts write into the same folders: a listing must be read fresh, not from gcsfs's cache
  import fsspec.config
  fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)
except ImportError:  # without fsspec there is no gs:// at all
  pass

PathLike = Union[str, os.PathLike]


class RunFileError(ValueError):
  """A malformed run file, or one that belongs to another run; the message names the file (and line)."""


def path(p: PathLike) -> epath.Path:
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  return "://" not in os.fspath(p)


def absolute(p: PathLike) -> str:
  """An absolute local path, or the URI as it is (for manifests and provenance)."""
  return os.path.abspath(p) if is_local(p) else os.fspath(p)


def join(*parts: PathLike) -> str:
  return os.fspath(path(parts[0]).joinpath(*parts[1:]))


def exists(p: PathLike) -> bool:
  return path(p).exists()


def makedirs(p: PathLike) -> None:
  path(p).mkdir(parents=True, exist_ok=True)


def write_atomic(p: PathLike, data: Union[str, bytes]) -> None:
  """Writes `data` so that `p` holds either its old content or all of `data` (see the module doc)."""
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  write = (lambda f, d: f.write_bytes(d)) if isinstance(data, bytes) else (lambda f, d: f.write_text(d))
  if not is_local(target):
    write(target, data)
    return
  tmp = target.parent / f"{target.name}.tmp-{os.getpid()}"
  write(tmp, data)
  os.replace(tmp, target)


def write_json(p: PathLike, obj, **dump_kwargs) -> None:
  write_atomic(p, json.dumps(obj, **dump_kwargs))


def read_json(p: PathLike):
  try:
    return json.loads(path(p).read_text())
  except ValueError as e:
    raise RunFileError(f"{p}: not valid JSON ({e})") from None


def iter_jsonl(p: PathLike) -> Iterator[tuple[str, dict]]:
  """("file:line", record) for every non-empty line of a JSONL file."""
  for line_no, line in enumerate(path(p).read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      yield f"{p}:{line_no}", json.loads(line)
    except ValueError as e:
      raise RunFileError(f"{p}:{line_no}: not JSON ({e})") from None


def read_jsonl(p: PathLike) -> list[dict]:
  return [record for _, record in iter_jsonl(p)]


def copy_file(src: PathLike, dst: PathLike) -> None:
  write_atomic(dst, path(src).read_bytes())


class ChunkedOutput:
  """The files of one `mathft-infer` output directory (see the module doc)."""

  def __init__(self, directory: PathLike):
    self.directory = path(directory)

  @property
  def manifest(self) -> epath.Path:
    return self.directory / "manifest.json"

  def claim(self, settings: dict, write: bool = True) -> None:
    """Refuses a directory made with other settings; records them (when `write`, i.e. on one host) if new."""
    if self.manifest.exists():
      existing = read_json(self.manifest)
      if existing != settings:
        diff = {k: (existing.get(k), settings.get(k)) for k in set(existing) | set(settings)
                if existing.get(k) != settings.get(k)}
        raise RunFileError(f"{self.manifest} belongs to a different run (existing vs this run: {diff}); use a new "
                           f"output_dir")
    elif write:
      write_json(self.manifest, settings, indent=2, sort_keys=True)

  def chunk(self, index: int) -> epath.Path:
    return self.directory / "chunks" / f"chunk-{index:05d}.jsonl"

  def has_chunk(self, index: int) -> bool:
    return self.chunk(index).exists()

  def write_chunk(self, index: int, lines: Sequence[str]) -> None:
    write_atomic(self.chunk(index), "".join(lines))

  def _shard_marker(self, shard: int, num_shards: int) -> epath.Path:
    return self.directory / f"shard-{shard}-of-{num_shards}.COMPLETE"

  def mark_shard_complete(self, shard: int, num_shards: int, num_chunks: int) -> None:
    write_atomic(self._shard_marker(shard, num_shards), f"{num_chunks}\n")

  def complete(self, num_shards: int) -> bool:
    """Every one of `num_shards` shards has finished."""
    return all(self._shard_marker(i, num_shards).exists() for i in range(num_shards))

  def chunk_files(self) -> list[epath.Path]:
    folder = self.directory / "chunks"
    if not folder.exists():
      raise RunFileError(f"{folder}: not found ({self.directory} is not a mathft-infer output directory)")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".jsonl")), key=lambda f: f.name)

  def records(self) -> list[dict]:
    """Every record, in chunk order."""
    return [r for f in self.chunk_files() for r in read_jsonl(f)]


def iter_records(p: PathLike) -> Iterator[tuple[str, dict]]:
  """("file:line", record) of a JSONL file, or of every chunk of a `mathft-infer` output directory in order."""
  files = [path(p)] if path(p).is_file() else ChunkedOutput(p).chunk_files()
  for f in files:
    yield from iter_jsonl(f)
