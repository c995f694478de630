"""The run plan: steps and learning rates of the official stage-1 schedule."""

import pytest

from umt_cli.recipe import DistillRecipe, load_recipe
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.training.plan import make_plan


def test_plan_matches_the_official_schedule():
    recipe = load_recipe(resolve_recipe("k710"), ["teacher.weights=random"], expect=DistillRecipe)
    plan = make_plan(658_340, batch_size=recipe.data.batch_size, world_size=32, optim=recipe.optim,
                     schedule=recipe.schedule)  # fmt: skip
    assert plan.global_batch == 2048
    assert plan.steps_per_epoch == 321 and plan.total_steps == 201 * 321 and plan.warmup_steps == 40 * 321
    assert plan.peak_lr == pytest.approx(1.2e-3) and plan.final_lr == pytest.approx(8e-5)
    assert plan.lr(0) == 0.0 and plan.lr(40 * 321 - 1) == pytest.approx(1.2e-3)
    assert plan.lr(plan.total_steps - 1) == pytest.approx(8e-5, rel=1e-3)


def test_too_few_samples_for_one_step_is_a_data_error():
    from umt_cli.errors import DataError

    recipe = load_recipe(resolve_recipe("k710"), ["teacher.weights=random"], expect=DistillRecipe)
    with pytest.raises(DataError, match="100 training clips do not fill one step of 2048"):
        make_plan(100, batch_size=64, world_size=32, optim=recipe.optim, schedule=recipe.schedule)
