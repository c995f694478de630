"""Atomic file writes (readers see the old file or the whole new one, never half of it) and strict JSON."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "sha256_file", "not_utf8_message", "json_safe", "to_json", "write_json"]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (parents created); it replaces `path` with `os.replace` only if the block
    finishes without error, and is removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def not_utf8_message(path: str | Path, data: bytes, offset: int) -> str:
    """`<path> line L: not UTF-8 text (byte 0xNN at column C)` for the first bad byte of `data` at `offset`, placed
    the way an editor shows it (columns count characters)."""
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8")) + 1
    return f"{path} line {line}: not UTF-8 text (byte 0x{data[offset]:02x} at column {column})"


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None: strict JSON parsers reject `NaN` and `Infinity`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def to_json(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text (non-finite floats become null; anything else unserialisable becomes its `str`)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False, default=str)


def write_json(path: Path, value: Any) -> None:
    """Write `value` as indented strict JSON, atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(to_json(value, indent=2) + "\n", encoding="utf-8")
