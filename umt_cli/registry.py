"""Registries: named variants of a component (maskers, losses, teachers), kept as data.

A `Registry` is a dict from the name a recipe uses to the implementation. Built-in entries name it as
`"package.module:attribute"`, imported on first use, so checking a recipe (which needs only the names) never imports
torch; an entry added at run time (a plug-in, a test) may be the object itself. The recipe's allowed names are the
registry's keys, read when a recipe is validated, so adding a variant is one entry plus its implementation.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator

__all__ = ["Registry", "load_target"]


class Registry(dict[str, Any]):
    """Name -> implementation (or `"module:attribute"` naming it) for the recipe key `key` (e.g. `masking.kind`)."""

    def __init__(self, key: str, entries: Mapping[str, Any]) -> None:
        super().__init__(entries)
        self.key = key

    def check(self, name: str) -> str:
        """`name` if registered, else a `ValueError` listing the registered names (pydantic reports it per key)."""
        if name not in self:
            raise ValueError(f"unknown {self.key} {name!r}; valid: {', '.join(self)}")
        return name

    def resolve(self, name: str) -> Any:
        """The implementation registered under `name`, imported if given by name."""
        return load_target(self[self.check(name)])

    def field(self) -> Any:
        """A recipe field type: a string that must be one of the registered names when the recipe is validated."""
        return Annotated[str, AfterValidator(self.check), self]

    def __repr__(self) -> str:
        return f"Registry({self.key!r}, {list(self)})"

    __hash__ = object.__hash__  # usable as `Annotated` metadata (a plain dict is not hashable)


def load_target(target: Any) -> Any:
    """`target` itself, or the attribute a `"package.module:attribute"` string names."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
