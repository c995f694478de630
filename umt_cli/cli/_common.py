"""What every command shares: error-to-exit-code handling, recipe loading, summaries."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from umt_cli.errors import RecipeError, UmtError
from umt_cli.recipe import Recipe
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.recipe.load import apply_overrides, read_toml, validate_recipe

__all__ = ["guard", "load_recipe_or_exit", "recipe_table", "validate_table", "print_summary", "err_console"]

F = TypeVar("F", bound=Callable[..., Any])


def err_console() -> Any:
    """A rich console on stderr (created lazily so `umt --help` stays fast)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def guard(command: F) -> F:
    """Turn `UmtError`s raised by a command into one readable message and the documented exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UmtError as error:
            _report(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err_console().print("[red]interrupted[/red]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _report(error: UmtError) -> None:
    console = err_console()
    if isinstance(error, RecipeError):
        console.print(f"[red bold]error:[/] {error.source}: invalid recipe ({len(error.problems)} problem(s))")
        for line in str(error).splitlines()[1:]:
            console.print(line, markup=False)
    else:
        console.print(f"[red bold]error:[/] {error}", markup=True)
    if error.hint:
        console.print(f"[dim]hint: {error.hint}[/dim]")


def recipe_table(recipe: str | Path | None, default: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The parsed recipe file (a path or shipped name), or `default` when none is given; plus its display name."""
    if recipe is None:
        return dict(default or {}), "<command line>"
    path = resolve_recipe(recipe)
    return read_toml(path), str(path)


def validate_table(
    table: dict[str, Any], source: str, overrides: list[str], expect: type[Recipe] | None = None
) -> Recipe:
    """Merge overrides into a parsed recipe and validate it (against the stage a command needs, if given)."""
    return validate_recipe(apply_overrides(table, overrides), source, expect)


def load_recipe_or_exit(recipe: str | Path, overrides: list[str], expect: type[Recipe]) -> Recipe:
    """Read, override and validate a recipe (raises `RecipeError`, which `guard` turns into exit code 2)."""
    table, source = recipe_table(recipe)
    return validate_table(table, source, overrides, expect)


def print_summary(title: str, summary: dict[str, Any], path: Path | None = None) -> None:
    """Print a command's closing summary (and write it as JSON when `path` is given)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in summary.items():
        table.add_row(str(key), _short(value))
    Console(file=sys.stdout, soft_wrap=True).print(table)
    if path is not None:
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
