"""The recipes shipped with umt: inside the wheel (`umt_cli/_recipes`) or, from a source checkout, `recipes/`."""

from __future__ import annotations

from pathlib import Path

from umt_cli.errors import UsageError

__all__ = ["recipes_dir", "shipped_recipes", "resolve_recipe", "not_a_recipe_file"]


def recipes_dir() -> Path:
    """The folder holding the shipped recipes of this installation."""
    package = Path(__file__).resolve().parents[1]
    bundled = package / "_recipes"
    return bundled if bundled.is_dir() else package.parent / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """Recipe name (path below the recipes folder, without `.toml`) -> file."""
    root = recipes_dir()
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.toml"))}


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A path that exists wins; otherwise a shipped recipe name (`k710`, `quickstart/distill`, `recipes/k710.toml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    key = path.as_posix().removeprefix("recipes/").removesuffix(".toml")
    if key in shipped:
        return shipped[key]
    if path.is_dir():
        raise not_a_recipe_file(path)
    raise UsageError(
        f"recipe not found: {name_or_path} (neither a file nor a shipped recipe)",
        hint="`umt recipe ls` lists the shipped recipes",
    )


def not_a_recipe_file(folder: Path) -> UsageError:
    """The error for a folder given where a recipe file belongs."""
    return UsageError(f"{folder}: is a directory, not a recipe file", hint="give the path of a .toml file")
