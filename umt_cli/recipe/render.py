"""Write a validated recipe back to TOML: for run directories (resolved) and `umt recipe show --explain`."""

from __future__ import annotations

import textwrap
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
            lines.append(tomli_w.dumps({name: _plain(value, absolute)}).rstrip("\n"))
    for name, value in tables:
        lines.append("")
        if explain:
            lines.extend(_comment(fields[name].description, None, None))
        lines.append(f"[{'.'.join([*path, name])}]")
        _render_table(value, [*path, name], lines, explain=explain, absolute=absolute)


def _comment(doc: str | None, annotation: Any, default: Any) -> list[str]:
    text = " ".join((doc or "").split())
    if annotation is not None:
        kind = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        text += f" [{kind}" + ("" if default is None or _is_undefined(default) else f"; default {default!r}") + "]"
    return [f"# {line}" for line in textwrap.wrap(text, 116)] if text else []


def _is_undefined(value: Any) -> bool:
    return type(value).__name__ == "PydanticUndefinedType"


def _plain(value: Any, absolute: bool) -> Any:
    if isinstance(value, Path):
        return str(value.expanduser().resolve() if absolute else value)
    if isinstance(value, (tuple, list)):
        return [_plain(v, absolute) for v in value]
    return value
