"""What the training benchmarks share: a tft training recipe timed on its training loop alone."""

from __future__ import annotations

import time


def timed_training(cfg):
    """Set up tft's recipe for `cfg` with no saving or evaluation inside the loop; -> (recipe, result, seconds)."""
    from tft.train.recipe import TrainRecipe

    recipe = TrainRecipe(cfg)
    recipe.setup()
    recipe.args.save_strategy = "no"
    recipe.args.eval_strategy = "no"
    recipe.args.load_best_model_at_end = False
    start = time.perf_counter()
    result = recipe.fit()  # the loop `tft train` runs, under its CPU step modes
    return recipe, result, time.perf_counter() - start
