"""The house: the base install carries no TensorFlow and its binaries never import it, the package's import graph
has no cycle, and no module outgrows a reader."""
import ast
import os
import subprocess
import sys

import jax
import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "mathft_jax")
TF_LAYER = ("tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text", "clu")
# Installs nothing: makes `import tensorflow` (and the rest of the TF layer) fail, then runs a module as __main__.
BLOCKED_RUN = """
import importlib.abc, runpy, sys
class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in {blocked!r}:
      raise ImportError(f"{{name}} was imported")
sys.meta_path.insert(0, Blocker())
sys.argv = {argv!r}
runpy.run_module({module!r}, run_name="__main__")
"""


def test_the_base_install_has_no_tensorflow_layer():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  names = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]}
  assert not names & {"tensorflow", "seqio", "tensorflow-datasets", "clu", "tensorboard", "torch"}, names
  assert "seqio" in " ".join(project["optional-dependencies"]["data"])


def _run_blocked(module: str, argv: list, cwd: str) -> str:
  code = BLOCKED_RUN.format(blocked=TF_LAYER, argv=[module, *argv], module=module)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  return out.stdout + out.stderr


def test_inference_and_reranking_run_without_tensorflow(tmp_path):
  """mathft-infer (sample and score) on a params folder and mathft-rerank, with TensorFlow and seqio unimportable."""
  from mathft_jax.models import init_params, preset
  from mathft_jax.models.params_io import save_params
  from mathft_jax.text.tokenizer import BYTE
  cfg = preset("tiny", {"num_layers": 1})
  save_params(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(tmp_path / "ckpt"), BYTE)
  flags = ["--gin_file=runs/infer.gin", f"--gin.CHECKPOINT_PATH='{tmp_path / 'ckpt'}'",
           "--gin.PROBLEMS='synthetic:test:3'", "--gin.NUM_SAMPLES=2", "--gin.MAX_NEW_TOKENS=8"]
  _run_blocked("mathft_jax.inference.infer", [*flags, f"--gin.OUTPUT_DIR='{tmp_path / 'samples'}'"], str(tmp_path))
  _run_blocked("mathft_jax.inference.infer", [*flags, f"--gin.OUTPUT_DIR='{tmp_path / 'scores'}'",
                                               "--gin.MODE='score'",
                                               f"--gin.infer.infer.candidates_dir='{tmp_path / 'samples'}'"],
               str(tmp_path))
  out = _run_blocked("mathft_jax.reranking.rerank", ["--candidates", str(tmp_path / "samples"), "--scores",
                                                      str(tmp_path / "scores"), "--references", "synthetic:test:3",
                                                      "--output_dir", str(tmp_path / "report")], str(tmp_path))
  assert "re-ranked 3 problems x 2 samples" in out and (tmp_path / "report" / "metrics.json").exists()
  assert not any(line.startswith(("I0000", "E0000", "W0000", "WARNING")) for line in out.splitlines())  # quiet
  # the same blocker does stop a module that needs TensorFlow, so the runs above prove something
  code = BLOCKED_RUN.format(blocked=TF_LAYER, argv=["x"], module="mathft_jax.data.tasks")
  assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0


def _module_name(path: str) -> str:
  rel = os.path.relpath(path, REPO)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str, module: str) -> set:
  """mathft_jax modules imported anywhere in the file (function bodies included)."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("mathft_jax")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mathft_jax"):
      for alias in node.names:  # `from mathft_jax.x import y`: y may itself be a module
        candidate = f"{node.module}.{alias.name}"
        out.add(candidate if os.path.exists(os.path.join(REPO, *candidate.split("."))) or os.path.exists(
            os.path.join(REPO, *candidate.split(".")) + ".py") else node.module)
  return out - {module}


def test_the_import_graph_has_no_cycle_and_modules_stay_small():
  files = [os.path.join(d, f) for d, _, fs in os.walk(PACKAGE) for f in fs if f.endswith(".py")]
  graph = {_module_name(f): _imports(f, _module_name(f)) for f in files}
  for name, deps in graph.items():  # importing a.b.c runs a/__init__ and a/b/__init__ first
    graph[name] = {p for d in deps for p in [".".join(d.split(".")[:i]) for i in range(2, d.count(".") + 2)]
                   if p in graph and p != name and not name.startswith(p + ".")}
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph[node]):
      assert state.get(dep) != "open", "import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep])
      if dep not in state:
        visit(dep)
    stack.pop()
    state[node] = "done"
  for node in sorted(graph):
    if node not in state:
      visit(node)
  sizes = {f: sum(1 for _ in open(f)) for f in files}
  assert max(sizes.values()) <= 400, {os.path.relpath(f, REPO): n for f, n in sizes.items() if n > 400}
