"""Write a validated recipe back to TOML: for run directories (resolved) and `umt recipe show --explain`."""

from __future__ import annotations

import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel

__all__ = ["render_toml"]


def render_toml(model: BaseModel, *, explain: bool = False, absolute_paths: bool = False) -> str:
    """Render every field (defaults included) as TOML; `explain` adds each field's help text as a comment above it."""
    lines: list[str] = []
    _render_table(model, [], lines, explain=explain, absolute=absolute_paths)
    return "\n".join(lines).strip() + "\n"


def _render_table(model: BaseModel, path: list[str], lines: list[str], *, explain: bool, absolute: bool) -> None:
    fields = type(model).model_fields
    tables = [(n, getattr(model, n)) for n in fields if isinstance(getattr(model, n), BaseModel)]
    for name, field in fields.items():  # scalars first: TOML puts a table's own keys before its sub-tables
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            continue
        if explain:
            lines.extend(_comment(field.description, field.annotation, field.default))
        if value is None:
            lines.append(f"# {name} = (unset)")
        else:
            lines.append(f"{name} = {_value(_plain(value, absolute))}")
    for name, value in tables:
        lines.append("")
        if explain:
            lines.extend(_comment(fields[name].description, None, None))
        lines.append(f"[{'.'.join([*path, name])}]")
        _render_table(value, [*path, name], lines, explain=explain, absolute=absolute)


def _value(value: Any) -> str:
    """A TOML value on one line (tomli_w spreads arrays over several lines)."""
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def _comment(doc: str | None, annotation: Any, default: Any) -> list[str]:
    text = " ".join((doc or "").split())
    if annotation is not None:
        shown = "" if default is None or _is_undefined(default) else f"; default {_plain(default, False)!r}"
        text += f" [{_type_name(annotation)}{shown}]"
    return [f"# {line}" for line in textwrap.wrap(text, 116)] if text else []


def _type_name(annotation: Any) -> str:
    """Readable type: `one of a, b` for literals, `X or unset` for optionals, `path`, `list of float`..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(named) + (" or unset" if type(None) in args else "")
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}" if args else "list"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _is_undefined(value: Any) -> bool:
    return type(value).__name__ == "PydanticUndefinedType"


def _plain(value: Any, absolute: bool) -> Any:
    if isinstance(value, Path):
        return str(value.expanduser().resolve() if absolute else value)
    if isinstance(value, (tuple, list)):
        return [_plain(v, absolute) for v in value]
    return value
