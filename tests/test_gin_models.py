"""Every gin model file parses and names a real preset."""
import glob
import os

import gin
import pytest

from mathft_jax import gin_main
from mathft_jax.models import DecoderConfig, param_count, preset

GIN_DIR = os.path.join(gin_main.PACKAGE_GIN_DIR, "models")
FILES = sorted(f for f in glob.glob(os.path.join(GIN_DIR, "*.gin")) if not f.endswith("from_checkpoint.gin"))


def _model_config(bindings: str) -> DecoderConfig:
  gin.clear_config()
  try:
    gin.parse_config(bindings)
    return gin.query_parameter("%MODEL_CONFIG").scoped_configurable_fn()
  finally:
    gin.clear_config()


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_gin_model_file_builds_its_preset(path):
  with open(path) as f:
    cfg = _model_config(f.read())
  name = os.path.basename(path)[:-len(".gin")]
  assert cfg == preset(name) and param_count(cfg) > 0


def test_gin_overrides_reach_the_config():
  with open(os.path.join(GIN_DIR, "tiny.gin")) as f:
    cfg = _model_config(f.read() + "\nconfig.preset.overrides = {'remat': True, 'num_layers': 2}\n")
  assert cfg.remat and cfg.num_layers == 2 and cfg.d_model == preset("tiny").d_model


def test_model_files_cover_the_issue_families():
  names = {os.path.basename(p)[:-4] for p in FILES}
  assert {"tiny", "gemma_2b", "llama3_8b", "qwen2_5_1_5b", "qwen2_5_7b", "tiny_palm"} <= names


RECIPES = sorted(glob.glob(os.path.join(GIN_DIR, "..", "recipes", "*.gin")))


@pytest.mark.parametrize("path", [p for p in RECIPES if not p.endswith("base.gin")], ids=os.path.basename)
def test_recipe_files_parse_and_bind(path):
  from mathft_jax import gin_main
  name = os.path.basename(path)
  required = [] if name == "demo.gin" else ["--gin.RUN_DIR='/tmp/r'", "--gin.GENERATOR_TASK='ssft_synthetic'",
                                            "--gin.TRAIN_PROBLEMS='synthetic:train:8'",
                                            "--gin.TEST_PROBLEMS='synthetic:test:8'"]
  if name == "fewshot_baseline.gin":
    required.append("--gin.INITIAL_CHECKPOINT_PATH='/tmp/ckpt'")
  gin.clear_config()
  try:
    gin_main.parse(["--gin_file=models/tiny.gin", f"--gin_file=recipes/{name}", *required])
    assert gin.query_parameter("recipe.run_recipe.run_dir") is not None
    if name.startswith("evaluator_"):
      assert gin.query_parameter("%EVALUATOR_LOSS") == name[len("evaluator_"):-len(".gin")]
  finally:
    gin.clear_config()
  if name != "demo.gin":  # demo.gin binds every macro itself
    with pytest.raises(ValueError, match="set to `%gin.REQUIRED`"):
      gin_main.parse(["--gin_file=models/tiny.gin", f"--gin_file=recipes/{name}"])
    gin.clear_config()


def test_from_checkpoint_reads_the_params_folder_config(tmp_path):
  import jax

  from mathft_jax.models import init_params
  from mathft_jax.models.params_io import save_params
  from mathft_jax.text.tokenizer import BYTE
  saved = preset("tiny", {"num_layers": 1})
  save_params(init_params(saved, jax.random.PRNGKey(0)), saved, str(tmp_path), BYTE)
  with open(os.path.join(GIN_DIR, "from_checkpoint.gin")) as f:
    cfg = _model_config(f"{f.read()}\nINITIAL_CHECKPOINT_PATH = '{tmp_path}'\n"
                        "params_io.from_checkpoint.overrides = {'remat': 'full'}\n")
  assert cfg == saved.replace(remat="full")
