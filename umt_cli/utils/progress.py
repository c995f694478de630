"""Progress reporting for every long job (data preparation, training, evaluation): a rich bar (done, rate, ETA and a
status text) on a terminal, plain periodic lines on stderr in logs and CI, so stdout keeps only results."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["Progress", "progress"]


class Progress(Protocol):
    """What long-running work reports to."""

    def advance(self, n: int = 1, info: str | None = None) -> None:
        """Mark `n` more items done; `info` (e.g. `loss 0.83 lr 1.2e-04`) replaces the status text when given."""


class _Silent:
    """For processes that do not report (every rank but the main one)."""

    def advance(self, n: int = 1, info: str | None = None) -> None:
        """Nothing."""


class _Plain:
    """Prints `description: done/total (rate/s, ETA) info` at most every `every_s` seconds and at the end."""

    def __init__(self, description: str, total: int, start: int, every_s: float) -> None:
        self.description, self.total, self.every_s = description, total, every_s
        self.done = self.first = start
        self.start = self.last = time.monotonic()
        self.info = ""

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        self.info = self.info if info is None else info
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = (self.done - self.first) / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            line = f"{self.description}: {self.done}/{self.total} ({rate:.2f}/s, ETA {eta:.0f}s)"
            print(f"{line} {self.info}".rstrip(), file=sys.stderr, flush=True)


class _Rich:
    """Advances a rich task, showing its average rate since the start and the status text."""

    def __init__(self, bar: Any, task: Any, start: int) -> None:
        self.bar, self.task, self.first, self.start = bar, task, start, time.monotonic()

    def advance(self, n: int = 1, info: str | None = None) -> None:
        done = self.bar.tasks[0].completed + n
        rate = f"{(done - self.first) / max(time.monotonic() - self.start, 1e-9):.2f}/s"
        fields = {"rate": rate} if info is None else {"rate": rate, "info": info}
        self.bar.update(self.task, advance=n, **fields)


@contextmanager
def progress(
    description: str, total: int, *, start: int = 0, every_s: float = 30.0, enabled: bool = True
) -> Iterator[Progress]:
    """Report progress over `total` items, `start` of them already done (a resumed run): a rich bar on a TTY, else
    a plain line on stderr every `every_s` seconds; nothing when not `enabled`."""
    if not enabled:
        yield _Silent()
        return
    if not sys.stderr.isatty():
        yield _Plain(description, total, start, every_s)
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
        TextColumn("{task.fields[info]}", markup=False),
    )
    with RichProgress(*columns, console=Console(stderr=True)) as bar:
        yield _Rich(bar, bar.add_task(description, total=total, completed=start, rate="", info=""), start)
