"""`python -m mathft_jax.recipe`: the `mathft-recipe` binary."""
from mathft_jax.recipe.driver import main

if __name__ == "__main__":
  main()
