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
) -> None:
    """Run the built-in CPU demo: generate the synthetic data set, run the training data pipeline over it (clip
    shapes and throughput), then a short stage-1 distillation of a tiny student and a short stage-2 video-text
    pre-training from it."""
    from umt_cli.quickstart import run_quickstart

    print_summary("umt quickstart", run_quickstart(out))
