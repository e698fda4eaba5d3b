"""The settings a run directory is made with (`RUN_DIR/recipe_settings.json`): the first run writes them, and a
rerun with other settings stops before any stage, naming what changed, because resuming would mix stages made with
the old settings into the new report. Layouts (meshes, `remat`) may change between runs."""
import dataclasses
import functools
import json

import jax

from mathft_jax import run_io

SETTINGS_FILE = "recipe_settings.json"
_LAYOUT_FIELDS = ("mesh", "remat")


class ChangedSettingsError(ValueError):
  """A run directory is being resumed with other settings than it was made with."""


def _name(fn) -> str:
  if isinstance(fn, functools.partial):
    options = ", ".join(f"{k}={v!r}" for k, v in sorted(fn.keywords.items()))
    return f"{_name(fn.func)}({options})"
  return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def flat_settings(settings: dict) -> dict:
  """{"model_config.num_layers": 4, "sampling.temperature": 0.5, ...}: JSON values under dotted names (functions,
  such as a loss, by their qualified names and bound options)."""
  out = {}

  def walk(name, value):
    if dataclasses.is_dataclass(value):
      value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in _LAYOUT_FIELDS}
    if isinstance(value, dict) and value:
      for k, v in value.items():
        walk(f"{name}.{k}", v)
    elif callable(value):
      out[name] = _name(value)
    else:
      out[name] = json.loads(json.dumps(value))
  for name, value in settings.items():
    walk(name, value)
  return out


def check_settings(run_dir: str, settings: dict) -> None:
  """Writes run_dir/recipe_settings.json on the first run; raises ChangedSettingsError on a rerun with others."""
  now = flat_settings(settings)
  file = run_io.join(run_dir, SETTINGS_FILE)
  if run_io.exists(file):
    before = run_io.read_json(file)
    shown = lambda d, k: repr(d[k]) if k in d else "(not set)"  # noqa: E731
    changed = sorted(k for k in set(before) | set(now) if k not in before or k not in now or before[k] != now[k])
    if changed:
      raise ChangedSettingsError(
          f"{file}: {run_dir} was made with other settings ("
          + "; ".join(f"{k}: {shown(before, k)} -> {shown(now, k)}" for k in changed)
          + "). Use a new run_dir (finished stage directories copied into it are reused) or remove this one.")
  elif jax.process_index() == 0:
    run_io.write_json(file, now, indent=1, sort_keys=True)
