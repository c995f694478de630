"""`umt quickstart`: the built-in CPU demo: synthetic data -> the data pipeline -> short stage-1 and stage-2 runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from umt_cli.cli._common import guard, print_summary


@guard
def quickstart(
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Working folder for the data and runs.")] = Path(
        "umt-quickstart"
    ),
    size: Annotated[
        str, typer.Option("--size", metavar="default|small", help="`small` is the same chain, shorter (CI).")
    ] = "default",
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="run.seed of both training stages (the data stay the same).")
    ] = 0,
) -> None:
    """Run the whole chain on CPU on the built-in synthetic data set, in a fresh run directory: generate the data,
    a stage-1 distillation of a tiny student, a stage-2 video-text pre-training from it, retrieval and zero-shot
    classification on the held-out test split, a fine-tuning of the video encoder as a direction-of-motion
    classifier, and an export; then a table of what each step produced and whether the model learned (text-to-video
    R@1 against chance, direction of motion against a frame-averaged baseline)."""
    from umt_cli.errors import UsageError
    from umt_cli.quickstart import SIZES, run_quickstart

    if size not in SIZES:
        raise UsageError(f"--size {size!r}: expected one of {', '.join(SIZES)}")
    summary = run_quickstart(out, size=size, seed=seed)
    seconds = summary.pop("seconds")
    summary.pop("verdict")  # the `learned` row says it in words
    summary["step seconds"] = ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
    print_summary("umt quickstart", summary)
