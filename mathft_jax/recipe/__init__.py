"""The recipe as one resumable job (`mathft-recipe`): the stage graph and its driver (`driver`), the settings a
run directory is made with (`settings`), the combined report (`report`) and the per-device memory plan of its
stages (`memory`, also `python -m mathft_jax.recipe.memory`)."""
from mathft_jax.recipe.driver import LOSSES, ChangedSettingsError, Sampling, main, memory_plan, run_recipe
