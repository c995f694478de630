"""Progress reporting: a rich bar (done, rate, ETA) on a terminal, plain periodic lines in logs and CI."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["Progress", "progress"]


class Progress(Protocol):
    """What long-running work reports to."""

    def advance(self, n: int = 1) -> None:
        """Mark `n` more items done."""


class _Plain:
    """Prints `description: done/total (rate/s, ETA)` at most every `every_s` seconds; no escape codes."""

    def __init__(self, description: str, total: int, every_s: float) -> None:
        self.description, self.total, self.every_s = description, total, every_s
        self.done, self.start, self.last = 0, time.monotonic(), time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"{self.description}: {self.done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f}s)", file=sys.stderr)


class _Rich:
    """Advances a rich task and shows its average rate since the start."""

    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task, self.start = bar, task, time.monotonic()

    def advance(self, n: int = 1) -> None:
        done = self.bar.tasks[0].completed + n
        self.bar.update(self.task, advance=n, rate=f"{done / max(time.monotonic() - self.start, 1e-9):.1f}/s")


@contextmanager
def progress(description: str, total: int, *, every_s: float = 30.0) -> Iterator[Progress]:
    """Report progress over `total` items: a rich bar on a TTY, else a plain line every `every_s` seconds."""
    if not sys.stderr.isatty():
        yield _Plain(description, total, every_s)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as RichProgress

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[progress.data.speed]{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, console=Console(stderr=True)) as bar:
        yield _Rich(bar, bar.add_task(description, total=total, rate=""))
