"""The exceptions the CLI turns into exit codes: `UmtError` exits 1, `RecipeError` (and usage errors) exit 2."""

from __future__ import annotations

import errno

__all__ = [
    "UmtError",
    "UsageError",
    "RecipeError",
    "DataError",
    "CheckpointError",
    "first_line",
    "from_os_error",
]


class UmtError(Exception):
    """A runtime failure the user can act on; printed as one line (plus an optional hint), exit code 1."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(UmtError):
    """Bad command-line usage (missing file, refused directory, malformed override); exit code 2."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe that does not validate. `problems` holds one (key path, message, given value) triple per problem."""

    def __init__(self, source: str, problems: list[tuple[str, str, object]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s)"] + [format_problem(*p) for p in problems]
        super().__init__("\n".join(lines))


class DataError(UmtError):
    """Unusable data: too many bad videos, malformed lists or annotation files."""


class CheckpointError(UmtError):
    """A checkpoint that cannot be loaded as asked (wrong kind, missing or unexpected keys)."""


def format_problem(key: str, message: str, value: object) -> str:
    """One readable line per recipe problem: `key: message (given: value)`."""
    given = "" if value is MISSING else f" (given: {value!r})"
    return f"  {key or '<root>'}: {message}{given}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()
"""Marks a problem with no given value (a missing key, a cross-field check)."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (libraries' messages can run to a page), or its type's name."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (or choose another folder) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free some space (or choose another folder) and run the command again",
    errno.EROFS: "that file system is read-only: choose a writable folder",
    errno.EACCES: "check the permissions of that path, or choose another folder",
    errno.EPERM: "check the permissions of that path, or choose another folder",
    errno.EISDIR: "a folder is there where a file is expected",
    errno.ENOTDIR: "a file is there where a folder is expected",
}


def from_os_error(error: OSError, doing: str | None = None) -> UmtError:
    """A file-system failure (full disk, read-only file system, permissions...) as one line naming the path."""
    reason = error.strerror or str(error) or type(error).__name__
    where = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    message = ": ".join(part for part in (doing, where, reason) if part)
    return UmtError(message, hint=_OS_HINTS.get(error.errno or 0))
