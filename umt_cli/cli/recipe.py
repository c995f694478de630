"""`umt recipe ls | show | validate | cp`: browse, explain, check and copy recipes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from umt_cli.cli._common import guard, recipe_table, validate_table
from umt_cli.cli._help import Command, Group
from umt_cli.errors import UsageError
from umt_cli.recipe.catalog import resolve_recipe, shipped_recipes
from umt_cli.recipe.load import read_recipe_text

app = typer.Typer(
    cls=Group, rich_markup_mode=None, no_args_is_help=True, help="Browse, explain, check and copy recipes."
)

Overrides = Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE", help="Overrides, e.g. run.seed=1.")]
RecipeArg = Annotated[
    str, typer.Argument(metavar="RECIPE", help="A recipe file, or a shipped recipe name from `umt recipe ls`.")
]


@app.command("ls", cls=Command)
@guard
def ls() -> None:
    """List the shipped recipes with their stage and first comment line."""
    for name, path in shipped_recipes().items():
        header = next((ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        stage = _stage_of(path)
        typer.echo(f"{name:<28} {stage:<13} {header}")


def _stage_of(path: Path) -> str:
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "stage":
            return value.strip().strip("\"'")
    return "?"


@app.command("show", cls=Command)
@guard
def show(
    recipe: RecipeArg,
    overrides: Overrides = None,
    explain: Annotated[bool, typer.Option("--explain", help="Every key with its default and help text.")] = False,
) -> None:
    """Print a recipe; with --explain, the fully resolved recipe with each key's help text."""
    if not explain and not overrides:
        typer.echo(read_recipe_text(resolve_recipe(recipe)), nl=False)
        return
    from umt_cli.recipe.render import render_toml

    typer.echo(render_toml(validate_table(*recipe_table(recipe), overrides or []), explain=explain), nl=False)


@app.command("validate", cls=Command)
@guard
def validate(recipe: RecipeArg, overrides: Overrides = None) -> None:
    """Check a recipe (with overrides); exit 2 and list every problem by its dotted key if it is invalid."""
    table, source = recipe_table(recipe)
    parsed = validate_table(table, source, overrides or [])
    typer.echo(f"ok: {source} (stage = {parsed.stage!r}, schema_version = {parsed.schema_version})")


@app.command("cp", cls=Command)
@guard
def cp(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="A shipped recipe name from `umt recipe ls`.")],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Destination file or folder.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Copy a shipped recipe to edit it."""
    source = resolve_recipe(recipe)
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise UsageError(f"{target} exists", hint="pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    typer.echo(f"copied {source} -> {target}")
