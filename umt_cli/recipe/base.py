"""The strict base classes every recipe table derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["SCHEMA_VERSION", "Section", "Recipe"]

SCHEMA_VERSION = 1
"""The recipe format this code reads. Bumping it needs a CHANGELOG entry that says how to update old recipes."""


class Section(BaseModel):
    """A TOML table: unknown keys are errors, values are frozen, attribute docstrings are the help text."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
        strict=False,
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
