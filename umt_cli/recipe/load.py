"""Read a recipe file, merge `key.path=value` overrides, validate, and report every problem by its dotted key."""

from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from umt_cli.errors import MISSING, RecipeError, UsageError
from umt_cli.recipe.base import Recipe, table_classes
from umt_cli.recipe.catalog import not_a_recipe_file
from umt_cli.recipe.recipes import RECIPE_TYPES
from umt_cli.utils.files import not_utf8_message

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "read_toml",
    "read_recipe_text",
    "parse_override",
    "OverriddenTable",
    "apply_overrides",
    "validate_recipe",
    "load_recipe",
    "dump_resolved",
]

_DELETE = object()


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable or non-UTF-8 file is a usage error, bad syntax a recipe error."""
    try:
        return tomllib.loads(read_recipe_text(path))
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(str(path), [("", f"not valid TOML: {error}", MISSING)]) from None


def read_recipe_text(path: Path) -> str:
    """A recipe file's text; a folder, a missing or unreadable file, or one that is not UTF-8 is a `UsageError`."""
    path = Path(path)
    if path.is_dir():
        raise not_a_recipe_file(path)
    if not path.is_file():
        raise UsageError(f"recipe file not found: {path}", hint="`umt recipe ls` lists the shipped recipes")
    try:
        data = path.read_bytes()
    except OSError as error:  # a recipe that cannot be read is bad input (exit 2), not a failed run
        raise UsageError(f"{path}: {error.strerror or error}") from None
    return _utf8(data, path)


def _utf8(data: bytes, path: Path) -> str:
    """The file's text; TOML is UTF-8, so any other byte is reported by its line, the way an editor shows it."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(not_utf8_message(path, data, error.start), hint="save the recipe as UTF-8") from None


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


class OverriddenTable(dict):
    """A recipe table with overrides merged in; `restored` keeps the `~key` paths, which leave no trace in the table
    itself, so validation can still refuse a restored key that does not exist."""

    restored: list[list[str]]


def apply_overrides(table: dict[str, Any], overrides: list[str]) -> OverriddenTable:
    """Return a copy of `table` with the overrides merged in (before validation, so they get the same checks)."""
    merged = OverriddenTable(copy.deepcopy(table))
    merged.restored = list(getattr(table, "restored", []))
    seen: dict[str, str] = {}
    for token in overrides:
        keys, value = parse_override(token)
        _refuse_repeats(keys, token, seen)
        if value is _DELETE:
            _restore(merged, keys, token)
            merged.restored.append(keys)
        else:
            _parent_table(merged, keys, token, create=True)[keys[-1]] = value
    return merged


def _parent_table(table: dict[str, Any], keys: list[str], token: str, *, create: bool) -> dict[str, Any] | None:
    """The table holding `keys[-1]`; missing tables are made (`create`) or mean None."""
    node = table
    for key in keys[:-1]:
        child = node.setdefault(key, {}) if create else node.get(key)
        if child is None:
            return None
        if not isinstance(child, dict):
            raise UsageError(f"override {token!r}: {key} is a value, not a table")
        node = child
    return node


def _restore(table: dict[str, Any], keys: list[str], token: str) -> None:
    # A missing parent table already means defaults; making an empty one would drop a variant's `kind`.
    parent = _parent_table(table, keys, token, create=False)
    if parent is not None:
        parent.pop(keys[-1], None)


def keys_overlap(a: str, b: str) -> bool:
    """Whether two dotted keys set the same value: equal, or one is a table holding the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _refuse_repeats(keys: list[str], token: str, seen: dict[str, str]) -> None:
    """Two overrides of one key (or of a table and a key inside it) are an error: which one wins is a guess."""
    dotted = ".".join(keys)
    for other, earlier in seen.items():
        if keys_overlap(dotted, other):
            raise UsageError(f"{dotted} is set twice: {earlier} and {token}", hint="give each key once")
    seen[dotted] = token


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
    problems = _unknown_restored(table, model)
    try:
        recipe = model.model_validate(table)
    except ValidationError as error:
        problems += _problems(error, model)
    if problems:
        raise RecipeError(source, problems)
    return recipe


def load_recipe(path: Path, overrides: list[str] | None = None, expect: type[Recipe] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    table = apply_overrides(read_toml(path), overrides or [])
    return validate_recipe(table, str(path), expect)


def dump_resolved(recipe: Recipe, path: Path) -> None:
    """Write the recipe with defaults filled in and paths made absolute, so a run records exactly what it used."""
    from umt_cli.recipe.render import render_toml

    Path(path).write_text(render_toml(recipe, absolute_paths=True), encoding="utf-8")


# --- `~key` on a key the schema does not have -------------------------------------------------------------------


def _unknown_restored(table: dict[str, Any], model: type[BaseModel]) -> list[tuple[str, str, object]]:
    """`~data.batch_sise` removes nothing and would restore nothing: report it like an unknown key being set."""
    problems = []
    for keys in getattr(table, "restored", []):
        cls, node = model, table
        for depth, key in enumerate(keys):
            if key not in cls.model_fields:
                if not (isinstance(node, dict) and key in node):  # a key present in the table: validation reports it
                    dotted = ".".join(keys[: depth + 1])
                    problems.append((dotted, "unknown key" + _suggestion(key, cls, dotted), MISSING))
                break
            cls, node = _restored_child(cls.model_fields[key], node.get(key) if isinstance(node, dict) else None)
            if cls is None:  # a value, or a variant the table does not name: validation reports those
                break
    return problems


def _restored_child(field: Any, value: Any) -> tuple[type[BaseModel] | None, Any]:
    """The table class one level down a `~key` path (a discriminated union resolved by the table's `kind`)."""
    tag = value.get(field.discriminator) if field.discriminator and isinstance(value, dict) else None
    if tag is None and field.discriminator and isinstance(field.default, BaseModel):
        tag = getattr(field.default, field.discriminator)  # the variant used when the table leaves `kind` out
    cls, _ = _field_model(field, tag)
    return cls, value


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
            message, given = _missing(item["loc"]), MISSING
        elif item["type"] == "union_tag_not_found":
            message = f"missing `kind`; {message[0].lower()}{message[1:]}"
        elif item["type"] == "value_error":
            problems.extend(_split_value_error(key, message.removeprefix("Value error, ")))
            continue
        else:
            message = message.replace("Tuple should", "array should")  # TOML has arrays; tuples are Python's
            message = message[0].lower() + message[1:]
        problems.append((key, message, given if _is_scalar(given) else MISSING))
    return problems


def _missing(loc: tuple) -> str:
    return "too few items in the array" if loc and isinstance(loc[-1], int) else "missing required key"


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
    models = table_classes(field.annotation)
    if field.discriminator and isinstance(next_item, str):
        for candidate in models:
            tag = candidate.model_fields[field.discriminator].default
            if tag == next_item:
                return candidate, True
    return (models[0], False) if len(models) == 1 else (None, False)
