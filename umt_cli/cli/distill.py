"""`umt distill RECIPE [KEY=VALUE...]`: stage 1, masked distillation from a frozen CLIP teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from umt_cli.cli._common import guard, load_recipe_or_exit, print_summary
from umt_cli.recipe import DistillRecipe


@guard
def distill(
    recipe: Annotated[
        str, typer.Argument(metavar="RECIPE", help="Recipe file or shipped name, e.g. recipes/k710.toml or k710.")
    ],
    overrides: Annotated[
        list[str] | None, typer.Argument(metavar="KEY=VALUE", help="Overrides, e.g. data.batch_size=32.")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Run directory (default: runs/<recipe name>).")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="auto|PATH", help="'auto' (the latest checkpoint, if any), or a checkpoint or run directory."
        ),
    ] = None,
) -> None:
    """Stage 1: distil a video student from a frozen CLIP teacher on the tokens its attention keeps."""
    cfg = load_recipe_or_exit(recipe, overrides or [], DistillRecipe)
    folder = run_dir or Path("runs") / Path(recipe).stem
    from umt_cli.stages import distill as stage  # heavy imports start here

    summary = stage.run(cfg, folder, resume=resume, overrides=overrides or [])
    if stage.is_main_process():
        print_summary("umt distill", summary)
