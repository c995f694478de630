"""`umt pretrain RECIPE [KEY=VALUE...]`: stage 2, video-text pre-training of the distilled encoder."""

from __future__ import annotations

from umt_cli.cli._common import guard
from umt_cli.cli._training import RecipeArg, ResumeOption, RunDirOption, overrides_arg, train
from umt_cli.recipe import PretrainRecipe

OverridesArg = overrides_arg("loss.mlm.weight=0")


@guard
def pretrain(
    recipe: RecipeArg, overrides: OverridesArg = None, run_dir: RunDirOption = None, resume: ResumeOption = None
) -> None:
    """Stage 2: align the distilled video encoder with a BERT text encoder on video-text corpora (UTA, VTC, VTM,
    MLM)."""
    train("pretrain", PretrainRecipe, recipe, overrides, run_dir, resume)
