"""The strict base classes every recipe table derives from."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

__all__ = ["SCHEMA_VERSION", "FromToml", "TomlPath", "Seed", "Section", "Recipe", "table_classes"]

SCHEMA_VERSION = 1
"""The recipe format this code reads. Bumping it needs a CHANGELOG entry that says how to update old recipes."""

FromToml = Strict(False)
"""Marks a type TOML cannot spell: paths arrive as strings, tuples as arrays. Only that conversion is allowed; the
items of a tuple stay strict (`["1", 2]` is still not a pair of floats)."""

TomlPath = Annotated[Path, FromToml]
"""A path, written in TOML as a string."""

Seed = Annotated[int, Field(ge=0, lt=2**63)]
"""A random seed: any non-negative TOML integer (numpy refuses negative seeds, torch ones of 2**64 and more)."""


class Section(BaseModel):
    """A TOML table: unknown keys are errors, values are frozen, attribute docstrings are the help text.

    Types are strict, as the README promises: `"64"` is not an int, `"yes"` not a bool, `2.0` not an int, `true`
    not a number, while an int where a float is expected is fine (TOML `lr = 1`). `inf` and `nan` are refused
    everywhere: no setting means "infinite", and a NaN would only surface mid-run.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
        strict=True,
        allow_inf_nan=False,
    )


class Recipe(Section):
    """A whole recipe file: `schema_version` and `stage` identify it; the stage's tables follow."""

    schema_version: int
    """Recipe format version; this umt reads version 1."""

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value < SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is older than this umt's {SCHEMA_VERSION}; see CHANGELOG.md to update it"
            )
        if value > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is newer than this umt understands ({SCHEMA_VERSION}); upgrade umt"
            )
        return value


def table_classes(annotation: Any) -> list[type[BaseModel]]:
    """The table classes of a field's (possibly `Annotated`, possibly union) annotation: the variants `kind` picks
    between, a single table, or none for a plain value."""
    return [a for a in _union_members(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


def _union_members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _union_members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _union_members(arg)]
    return [annotation]
