"""The recipe as one resumable job (`mathft-recipe`): the stage graph and its driver (`driver`), the evaluator and
multi-task stage configs (`configs`), the settings a run directory is made with (`settings`), the combined report
(`report`) and the per-device memory plan of its stages (`plan`, from the estimates of `memory`, also
`python -m mathft_jax.recipe.memory`). Gin names: `recipe.run_recipe`, `recipe.EvaluatorConfig`,
`recipe.MultitaskConfig`."""
from mathft_jax.recipe.configs import LOSSES, EvaluatorConfig, MultitaskConfig
from mathft_jax.recipe.driver import main, run_recipe, stage_training
from mathft_jax.recipe.plan import memory_plan
from mathft_jax.recipe.settings import ChangedSettingsError

__all__ = ["LOSSES", "ChangedSettingsError", "EvaluatorConfig", "MultitaskConfig", "main", "memory_plan", "run_recipe",
           "stage_training"]
