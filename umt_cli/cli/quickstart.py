"""`umt quickstart`: the whole chain on a built-in synthetic data set, on CPU, in about a minute."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from umt_cli.cli._common import guard, print_summary


@guard
def quickstart(
    out: Annotated[Path, typer.Option("--out", help="Working folder for the data and runs.")] = Path("umt-quickstart"),
) -> None:
    """Prepare the synthetic data set and show decoded, augmented clips (shapes and timing)."""
    from umt_cli.quickstart import run_quickstart

    print_summary("umt quickstart", run_quickstart(out))
