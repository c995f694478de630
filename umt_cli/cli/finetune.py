"""`umt finetune RECIPE [KEY=VALUE...]`: action-recognition fine-tuning with the official classification recipe."""

from __future__ import annotations

from umt_cli.cli._common import guard
from umt_cli.cli._training import RecipeArg, ResumeOption, RunDirOption, overrides_arg, train
from umt_cli.recipe import FinetuneRecipe

OverridesArg = overrides_arg("init.checkpoint=runs/k710/student.safetensors")


@guard
def finetune(
    recipe: RecipeArg, overrides: OverridesArg = None, run_dir: RunDirOption = None, resume: ResumeOption = None
) -> None:
    """Fine-tune the video encoder for action recognition: layer decay, RandAugment, Mixup/CutMix, validation."""
    train("finetune", FinetuneRecipe, recipe, overrides, run_dir, resume)
