"""T5X-style gin flags for the binaries: `--gin_file=F` (repeatable), `--gin.NAME=VALUE`, `--gin_search_paths=a,b`.

Only binaries' `__main__` code imports this; library modules stay free of gin. Gin files are looked up in the
search paths, then the current directory, then the package's own `mathft_jax/gin/` folder (installed with it).
"""
import logging
import os
import sys
from typing import Callable, Optional, Sequence

import gin

PACKAGE_GIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gin")


class GinConfigError(ValueError):
  """A gin file failed to parse; the message names the file (and gin's or the tokenizer's line)."""


def parse_flags(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
  """argv -> (gin files, bindings, search paths). Unknown flags are an error naming them."""
  files, bindings, paths = [], [], []
  for arg in argv:
    if arg.startswith("--gin_file="):
      files.append(arg.split("=", 1)[1])
    elif arg.startswith("--gin_search_paths="):
      paths.extend(p for p in arg.split("=", 1)[1].split(",") if p)
    elif arg.startswith("--gin."):
      name, _, value = arg[len("--gin."):].partition("=")
      if not value:
        raise SystemExit(f"malformed flag {arg!r}: expected --gin.NAME=VALUE")
      bindings.append(f"{name} = {value}")
    else:
      raise SystemExit(f"unknown flag {arg!r}; expected --gin_file=..., --gin.NAME=VALUE or --gin_search_paths=...")
  return files, bindings, paths


def resolve(path: str, search_paths: Sequence[str]) -> str:
  """The first existing `prefix/path` (or `path` itself); a missing file is an error listing where we looked."""
  candidates = [path] if os.path.isabs(path) else [os.path.join(p, path) for p in search_paths]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise FileNotFoundError(f"gin file {path!r} not found; looked in: {candidates}")


def _quiet_include_probes(record: logging.LogRecord) -> bool:
  """gin logs an ERROR for every search path an `include` misses before the one that has the file."""
  return not str(record.msg).startswith("Path not found")


def parse(argv: Sequence[str]) -> None:
  files, bindings, paths = parse_flags(argv)
  search = paths + [os.getcwd(), PACKAGE_GIN_DIR]
  for path in search:
    gin.add_config_file_search_path(path)
  root = logging.getLogger()
  root.addFilter(_quiet_include_probes)
  try:
    for path in [resolve(f, search) for f in files]:
      try:
        gin.parse_config_file(path)
      except Exception as e:  # gin's parser and Python's tokenizer raise several types; keep their text
        raise GinConfigError(f"{path}: {type(e).__name__}: {e}") from e
  finally:
    root.removeFilter(_quiet_include_probes)
  gin.parse_config_files_and_bindings([], bindings, finalize_config=True)


def run(fn: Callable, argv: Optional[Sequence[str]] = None):
  """Parses gin flags, then calls the gin-configured `fn` (missing REQUIRED macros fail here, before compute)."""
  parse(sys.argv[1:] if argv is None else argv)
  return gin.get_configurable(fn)()
