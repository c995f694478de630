"""The root `umt` command: registers every sub-command; `main()` is the console entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from umt_cli import __version__
from umt_cli.cli import distill, evaluate, export, finetune, prepare_data, pretrain, quickstart, recipe, score
from umt_cli.cli._help import CONTEXT, Command, Group

HELP = (
    "Unmasked Teacher video foundation models: prepare data, distill (stage 1), pre-train (stage 2), evaluate "
    "and export."
)

app = typer.Typer(
    name="umt",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help=HELP,
    cls=Group,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)
app.add_typer(prepare_data.app, name="prepare-data")
app.command("distill", cls=Command)(distill.distill)
app.command("pretrain", cls=Command)(pretrain.pretrain)
app.command("finetune", cls=Command)(finetune.finetune)
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(evaluate.app, name="eval", help="Alias of `umt evaluate`.")
app.command("export", cls=Command, short_help=export.SHORT_HELP)(export.export)
app.add_typer(score.app, name="score")
app.add_typer(recipe.app, name="recipe")
app.command(
    "quickstart",
    cls=Command,
    short_help="The whole chain on CPU on synthetic data: distill, pretrain, evaluate, export.",
)(quickstart.quickstart)

COMMANDS = (
    "prepare-data",
    "distill",
    "pretrain",
    "finetune",
    "evaluate",
    "eval",
    "export",
    "score",
    "recipe",
    "quickstart",
)
"""Every top-level command; a test checks the registered commands against this list."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"umt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Unmasked Teacher video foundation models: prepare data, distill (stage 1), pre-train (stage 2), evaluate and
    export."""


def main() -> None:
    """Console entry point (`umt`, `python -m umt_cli`)."""
    app()
