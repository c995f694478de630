"""Run directories: refuse to overwrite a finished run, record what ran, and check a resumed recipe."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from umt_cli import __version__
from umt_cli.errors import UsageError
from umt_cli.recipe import Recipe, dump_resolved
from umt_cli.utils.files import write_json

__all__ = ["check_run_dir", "write_run_files", "recipe_changes", "RESUMABLE_CHANGES"]

RESUMABLE_CHANGES = (
    "log.",
    "checkpoint.",
    "data.num_workers",
    "data.prefetch_factor",
    "data.pin_memory",
    "decode.sample_timeout_s",
    "decode.loader_timeout_s",
)
"""Recipe keys that may differ when a run is resumed: they change how it is observed or fed, not what it computes."""


def check_run_dir(run_dir: Path, resume: str | None) -> None:
    """A non-empty run directory is refused unless the run is resumed (a finished run is never overwritten); a
    file in its place is refused always."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} is a file, not a folder", hint="choose another --run-dir")
    if resume is None and run_dir.is_dir() and any(run_dir.iterdir()):
        raise UsageError(
            f"run directory {run_dir} is not empty",
            hint="pass --resume auto to continue that run, or choose another --run-dir",
        )


def write_run_files(run_dir: Path, recipe: Recipe, overrides: list[str], *, world_size: int) -> None:
    """`recipe.toml` (resolved), `overrides.txt` (the command line's KEY=VALUE tokens) and `env.json` (versions)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_resolved(recipe, run_dir / "recipe.toml")
    (run_dir / "overrides.txt").write_text("".join(f"{token}\n" for token in overrides), encoding="utf-8")
    write_json(run_dir / "env.json", _environment(world_size))


def _environment(world_size: int) -> dict[str, Any]:
    import torch

    return {
        "umt": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "world_size": world_size,
        "git_sha": _git_sha(),
        "argv": sys.argv,
    }


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def recipe_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two recipe dumps, except the resumable ones."""
    before, after = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new and not key.startswith(RESUMABLE_CHANGES):
            changes.append(f"{key}: {old!r} -> {new!r}")
    return changes


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat
