"""What every command shares: error-to-exit-code handling, recipe loading, summaries."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from umt_cli.errors import RecipeError, UmtError, from_os_error
from umt_cli.recipe import Recipe
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.recipe.load import apply_overrides, read_toml, validate_recipe
from umt_cli.utils.files import write_json

__all__ = ["guard", "load_recipe_or_exit", "recipe_table", "validate_table", "print_summary", "err_console"]

F = TypeVar("F", bound=Callable[..., Any])


def err_console() -> Any:
    """A rich console on stderr (created lazily so `umt --help` stays fast)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def guard(command: F) -> F:
    """Turn failures a user can cause into one readable `error:` line and the documented exit code.

    `UmtError`s carry their own exit code; an `OSError` that reaches here (a full disk, a read-only file system,
    a folder where a file belongs) is the user's environment, not a bug, so it gets one line naming the path and exits
    1. Set UMT_DEBUG=1 to see the traceback instead.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_warning
        try:
            return command(*args, **kwargs)
        except (UmtError, OSError) as error:
            if os.environ.get("UMT_DEBUG"):
                raise
            umt_error = error if isinstance(error, UmtError) else from_os_error(error)
            _report(umt_error)
            raise typer.Exit(umt_error.exit_code) from None
        except KeyboardInterrupt:
            err_console().print("interrupted", style="red")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Warnings as one `warning:` line: the source line Python prints with them means nothing to a user."""
    print(f"warning: {message}", file=sys.stderr)


def _report(error: UmtError) -> None:
    """Print an error without interpreting rich markup: paths and key lists may contain `[...]`."""
    from rich.text import Text

    console = err_console()
    lines = str(error).splitlines() or [type(error).__name__]
    if isinstance(error, RecipeError):
        lines = [f"{error.source}: invalid recipe ({len(error.problems)} problem(s))", *lines[1:]]
    console.print(Text.assemble(("error:", "bold red"), " ", lines[0]))
    for line in lines[1:]:
        console.print(Text(line))
    if error.hint:
        console.print(Text(f"hint: {error.hint}", style="dim"))


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
    from rich.text import Text  # plain text: values are paths and may contain `[...]`

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # long paths and hashes wrap instead of ending in an ellipsis
    for key, value in summary.items():
        table.add_row(Text(str(key)), Text(_short(value)))
    Console(file=sys.stdout, soft_wrap=True).print(table)
    if path is not None:
        write_json(path, summary)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
