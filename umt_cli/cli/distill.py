"""`umt distill RECIPE [KEY=VALUE...]`: stage 1, masked distillation from a frozen image teacher."""

from __future__ import annotations

from umt_cli.cli._common import guard
from umt_cli.cli._training import RecipeArg, ResumeOption, RunDirOption, overrides_arg, train
from umt_cli.recipe import DistillRecipe

OverridesArg = overrides_arg("data.batch_size=32")


@guard
def distill(
    recipe: RecipeArg, overrides: OverridesArg = None, run_dir: RunDirOption = None, resume: ResumeOption = None
) -> None:
    """Stage 1: distil a video student from a frozen CLIP teacher on the tokens its attention keeps."""
    train("distill", DistillRecipe, recipe, overrides, run_dir, resume)
