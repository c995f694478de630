"""Write a validated recipe back to TOML: for run directories (resolved) and `umt recipe show --explain`."""

from __future__ import annotations

import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel

from umt_cli.recipe.base import table_classes
from umt_cli.registry import Registry

__all__ = ["render_toml"]


def render_toml(model: BaseModel, *, explain: bool = False, absolute_paths: bool = False) -> str:
    """Render every field (defaults included) as TOML; `explain` adds each field's help text as a comment above it."""
    lines: list[str] = []
    _render_table(model, [], lines, explain=explain, absolute=absolute_paths)
    return "\n".join(lines).strip() + "\n"


def _render_table(
    model: BaseModel,
    path: list[str],
    lines: list[str],
    *,
    explain: bool,
    absolute: bool,
    variants: tuple[type, ...] = (),
) -> None:
    """One table's keys, then its sub-tables; `variants` are the classes a `kind`-selected table can be."""
    fields = type(model).model_fields
    tables = [(n, getattr(model, n)) for n in fields if _is_table(getattr(model, n))]
    for name, field in fields.items():  # scalars first: TOML puts a table's own keys before its sub-tables
        value = getattr(model, name)
        if _is_table(value):
            continue
        if explain and name == "kind" and variants:
            lines.extend(_kind_comment(type(model), variants))
        elif explain:
            lines.extend(_comment(field.description, field.annotation, field.default, field.metadata))
        if value is None:
            lines.append(f"# {name} = (unset)")
        else:
            lines.append(f"{name} = {_value(_plain(value, absolute))}")
    if explain and len(variants) > 1:
        lines.extend(_other_variants(type(model), variants))
    for name, value in tables:
        named = value.items() if isinstance(value, dict) else [(None, value)]  # a dict field: one table per entry
        for key, table in named:
            here = [*path, name] if key is None else [*path, name, key]
            lines.append("")
            if explain:
                lines.extend(_comment(fields[name].description, None, None))
            lines.append(f"[{'.'.join(here)}]")
            table_variants = _variants(fields[name])
            _render_table(table, here, lines, explain=explain, absolute=absolute, variants=table_variants)


def _is_table(value: Any) -> bool:
    """A sub-table, or a dict of them (named tables such as `[data.corpora.NAME]`)."""
    if isinstance(value, dict):
        return bool(value) and all(isinstance(v, BaseModel) for v in value.values())
    return isinstance(value, BaseModel)


def _variants(field: Any) -> tuple[type, ...]:
    """The classes of a discriminated-union field (the variants `kind` chooses between); () for a plain table."""
    if not field.discriminator:
        return ()
    return tuple(table_classes(field.annotation))


def _kind_comment(chosen: type, variants: tuple[type, ...]) -> list[str]:
    kinds = ", ".join(_kind(v) for v in variants)
    return _wrapped(f"Variant: one of {kinds}. This one: {' '.join((chosen.__doc__ or '').split())}")


def _other_variants(chosen: type, variants: tuple[type, ...]) -> list[str]:
    """The variants not chosen, each with its keys and defaults, so switching `kind` needs no other reference."""
    lines = ["# Other variants (set `kind` to switch), with their keys and defaults:"]
    for variant in variants:
        if variant is chosen:
            continue
        keys = [_default_entry(n, f) for n, f in variant.model_fields.items() if n != "kind"]
        lines.extend(_packed(f'# kind = "{_kind(variant)}": ', keys or ["no other keys"], indent="#     "))
        lines.extend(_wrapped(" ".join((variant.__doc__ or "").split()), first="#   ", indent="#   "))
    return lines


def _default_entry(name: str, field: Any) -> str:
    if field.is_required():
        return f"{name} = (required)"
    if field.default is None:
        return f"{name} = (unset)"
    if isinstance(field.default, BaseModel):
        return f"[{name}] (a table)"
    return f"{name} = {_value(_plain(field.default, False))}"


def _packed(head: str, items: list[str], *, indent: str) -> list[str]:
    """`head` then the comma-separated items, wrapped between items only (a `key = value` is never split)."""
    pieces = [item + "," for item in items[:-1]] + items[-1:]
    lines, line, fresh = [], head, True
    for piece in pieces:
        if not fresh and len(line) + 1 + len(piece) > 118:
            lines.append(line)
            line, fresh = indent, True
        line += piece if fresh else " " + piece
        fresh = False
    return [*lines, line]


def _kind(variant: type) -> str:
    return variant.model_fields["kind"].default


def _wrapped(text: str, *, first: str = "# ", indent: str = "# ") -> list[str]:
    return textwrap.wrap(text, 118, initial_indent=first, subsequent_indent=indent) if text.strip() else []


def _value(value: Any) -> str:
    """A TOML value on one line (tomli_w spreads arrays over several lines)."""
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def _comment(doc: str | None, annotation: Any, default: Any, metadata: list[Any] = ()) -> list[str]:
    text = " ".join((doc or "").split())
    if annotation is not None:  # defaults as TOML spells them (`true`, not Python's `True`)
        shown = "" if default is None or _is_undefined(default) else f"; default {_value(_plain(default, False))}"
        registries = [meta for meta in metadata if isinstance(meta, Registry)]  # names read now: plug-ins included
        kind = f"one of {', '.join(registries[0])}" if registries else _type_name(annotation)
        text += f" [{kind}{shown}]"
    return _wrapped(text)


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
