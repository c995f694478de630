"""What the training commands (`distill`, `pretrain`) share: their arguments and how a run is started."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated

import typer

from umt_cli.cli._common import load_recipe_or_exit, print_summary
from umt_cli.recipe import Recipe

__all__ = ["RecipeArg", "overrides_arg", "RunDirOption", "ResumeOption", "train"]

RecipeArg = Annotated[
    str, typer.Argument(metavar="RECIPE", help="Recipe file or shipped name, e.g. recipes/k710.toml or k710.")
]


def overrides_arg(example: str) -> object:
    """The KEY=VALUE arguments of a training command, with an example valid for its recipes."""
    return Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE", help=f"Overrides, e.g. {example}.")]


RunDirOption = Annotated[Path | None, typer.Option(metavar="DIR", help="Run directory (default: runs/<recipe name>).")]
ResumeOption = Annotated[
    str | None,
    typer.Option(metavar="auto|PATH", help="'auto' (the latest checkpoint, if any), or a checkpoint or run directory."),
]


def train(
    stage: str, expect: type[Recipe], recipe: str, overrides: list[str] | None, run_dir: Path | None, resume: str | None
) -> None:
    """Validate the recipe, run `umt_cli.stages.<stage>.run` and print its summary (on the main process only)."""
    cfg = load_recipe_or_exit(recipe, overrides or [], expect)
    folder = run_dir or Path("runs") / Path(recipe).stem
    module = importlib.import_module(f"umt_cli.stages.{stage}")  # heavy imports start here
    summary = module.run(cfg, folder, resume=resume, overrides=overrides or [])
    if int(os.environ.get("RANK", "0")) == 0:  # rank 0 of a launcher, or the only process
        print_summary(f"umt {stage}", summary)
