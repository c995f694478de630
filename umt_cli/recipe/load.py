"""Read a recipe file, merge `key.path=value` overrides, validate, and report every problem by its dotted key."""

from __future__ import annotations

import copy
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from umt_cli.errors import MISSING, RecipeError, UsageError
from umt_cli.recipe.base import Recipe
from umt_cli.recipe.stages import RECIPE_TYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["read_toml", "parse_override", "apply_overrides", "validate_recipe", "load_recipe", "dump_resolved"]

_DELETE = object()


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file is a usage error, bad syntax a recipe error."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"recipe file not found: {path}", hint="`umt recipe ls` lists the shipped recipes")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise RecipeError(str(path), [("", f"not valid TOML: {error}", MISSING)]) from None


def parse_override(token: str) -> tuple[list[str], Any]:
    """`a.b=1e-4` -> (["a", "b"], 0.0001); `~a.b` -> (["a", "b"], <delete>). Values are TOML literals, else strings."""
    if token.startswith("~"):
        return _split_key(token[1:], token), _DELETE
    key, sep, raw = token.partition("=")
    if not sep:
        raise UsageError(f"malformed override {token!r}: expected KEY=VALUE (or ~KEY to restore the default)")
    keys = _split_key(key.strip(), token)
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings (paths, names) need no quotes
    return keys, value


def _split_key(key: str, token: str) -> list[str]:
    keys = key.split(".")
    if not key or any(not k for k in keys):
        raise UsageError(f"malformed override {token!r}: empty key")
    return keys


def apply_overrides(table: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `table` with the overrides merged in (before validation, so they get the same checks)."""
    merged = copy.deepcopy(table)
    for token in overrides:
        keys, value = parse_override(token)
        node = merged
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise UsageError(f"override {token!r}: {key} is a value, not a table")
            node = child
        if value is _DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return merged


def validate_recipe(table: dict[str, Any], source: str, expect: type[Recipe] | None = None) -> Recipe:
    """Validate a parsed recipe against the model its `stage` names (and `expect`, when a command needs one)."""
    stage = table.get("stage", MISSING)
    if stage not in RECIPE_TYPES:
        msg = "missing" if stage is MISSING else "unknown stage"
        raise RecipeError(source, [("stage", f"{msg}; expected one of: {', '.join(RECIPE_TYPES)}", stage)])
    model = RECIPE_TYPES[stage]
    if expect is not None and model is not expect:
        wanted = expect.model_fields["stage"].default
        raise RecipeError(source, [("stage", f"this command needs a stage = {wanted!r} recipe", stage)])
    try:
        return model.model_validate(table)
    except ValidationError as error:
        raise RecipeError(source, _problems(error, model)) from None


def load_recipe(path: Path, overrides: list[str] | None = None, expect: type[Recipe] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    table = apply_overrides(read_toml(path), overrides or [])
    return validate_recipe(table, str(path), expect)


def dump_resolved(recipe: Recipe, path: Path) -> None:
    """Write the recipe with defaults filled in and paths made absolute, so a run records exactly what it used."""
    from umt_cli.recipe.render import render_toml

    Path(path).write_text(render_toml(recipe, absolute_paths=True), encoding="utf-8")


# --- turning pydantic errors into one line per dotted key ---------------------------------------------------------


def _problems(error: ValidationError, model: type[BaseModel]) -> list[tuple[str, str, object]]:
    problems = []
    for item in error.errors(include_url=False):
        key, parent = _dotted(item["loc"], model)
        message = item["msg"]
        given = item.get("input", MISSING)
        if item["type"] == "extra_forbidden":
            message = "unknown key" + _suggestion(item["loc"][-1], parent, key)
        elif item["type"] == "missing":
            message, given = "missing required key", MISSING
        elif item["type"] == "union_tag_not_found":
            message = f"missing `kind`; {message[0].lower()}{message[1:]}"
        elif item["type"] == "value_error":
            problems.extend(_split_value_error(key, message.removeprefix("Value error, ")))
            continue
        else:
            message = message[0].lower() + message[1:]
        problems.append((key, message, given if _is_scalar(given) else MISSING))
    return problems


def _split_value_error(key: str, message: str) -> list[tuple[str, str, object]]:
    # Cross-field validators write "other.key: problem" lines so every problem names its own key.
    out = []
    for line in message.split("\n"):
        head, sep, rest = line.partition(": ")
        if sep and " " not in head and "." in head:
            out.append((head, rest, MISSING))
        else:
            out.append((key, line, MISSING))
    return out


def _suggestion(name: object, parent: type[BaseModel] | None, key: str) -> str:
    if parent is None or not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(parent.model_fields), n=1, cutoff=0.6)
    if not close:
        return f"; valid keys here: {', '.join(parent.model_fields)}"
    prefix = key.rpartition(".")[0]
    return f" — did you mean {prefix + '.' if prefix else ''}{close[0]}?"


def _is_scalar(value: object) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    return isinstance(value, (list, tuple)) and len(value) <= 8 and all(_is_scalar(v) for v in value)


def _dotted(loc: tuple, model: type[BaseModel]) -> tuple[str, type[BaseModel] | None]:
    """Map a pydantic error location to a dotted recipe key, skipping union tags; also return the last table class."""
    parts: list[str] = []
    cls: type[BaseModel] | None = model
    parent: type[BaseModel] | None = model
    i = 0
    while i < len(loc):
        item = loc[i]
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            else:
                parts.append(f"[{item}]")
            i += 1
            continue
        parts.append(str(item))
        parent = cls
        field = cls.model_fields.get(item) if cls is not None else None
        cls, skip_tag = _field_model(field, loc[i + 1] if i + 1 < len(loc) else None)
        i += 2 if skip_tag else 1
    return ".".join(parts), parent


def _field_model(field: Any, next_item: object) -> tuple[type[BaseModel] | None, bool]:
    """The table class behind a field (resolving a discriminated union by its tag), and whether loc holds that tag."""
    if field is None:
        return None, False
    models = [a for a in _flatten(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if field.discriminator and isinstance(next_item, str):
        for candidate in models:
            tag = candidate.model_fields[field.discriminator].default
            if tag == next_item:
                return candidate, True
    return (models[0], False) if len(models) == 1 else (None, False)


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]
