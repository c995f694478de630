"""Bad samples: a per-sample deadline, and the counters that decide when too many clips fail."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from umt_cli.data.decode import FAILURE_REASONS, DecodeFailure
from umt_cli.errors import DataError

__all__ = ["Failure", "deadline", "DataHealth"]


@dataclass(frozen=True)
class Failure:
    """One sample that could not be used and was replaced."""

    index: int
    reason: str
    path: str


@contextmanager
def deadline(seconds: float, path: str) -> Iterator[None]:
    """Raise `DecodeFailure("timeout")` when the block runs longer than `seconds`.

    In a process's main thread (DataLoader workers, or the main process without workers) a SIGALRM timer
    interrupts Python-level work such as PyAV's frame loop; a native call that holds the GIL is only noticed when
    it returns (the DataLoader `timeout` watchdog covers true hangs). Elsewhere the elapsed time is checked after.
    """
    start = time.monotonic()
    use_alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if use_alarm:

        def _expired(signum: int, frame: object) -> None:
            raise DecodeFailure("timeout", path, f"took longer than {seconds:g}s")

        previous = signal.signal(signal.SIGALRM, _expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if time.monotonic() - start > seconds:
        raise DecodeFailure("timeout", path, f"took {time.monotonic() - start:.1f}s > {seconds:g}s")


@dataclass
class DataHealth:
    """Counts delivered and failed samples, keeps a few example paths per reason, and stops the run when failures
    exceed `max_fail_ratio`.

    The ratio is failures / (delivered + failures). It is enforced continuously once `min_count` samples were
    drawn (so one unlucky early batch does not abort a run) and always at the end of an epoch. Each process counts
    its own samples; `merged` combines the `state_dict()`s of all processes into one report.
    """

    max_fail_ratio: float = 0.01
    min_count: int = 1000
    max_examples: int = 5
    """Example paths kept per reason."""
    delivered: int = 0
    by_reason: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    """reason -> up to `max_examples` distinct paths, in the order they first failed."""

    @property
    def failed(self) -> int:
        return sum(self.by_reason.values())

    @property
    def ratio(self) -> float:
        drawn = self.delivered + self.failed
        return self.failed / drawn if drawn else 0.0

    def update(self, delivered: int, failures: list[Failure]) -> None:
        """Record a batch: `delivered` good samples and the failures replaced while building it."""
        self.delivered += delivered
        for failure in failures:
            self.by_reason[failure.reason] += 1
            self._example(failure.reason, failure.path)

    def _example(self, reason: str, path: str) -> None:
        paths = self.examples.setdefault(reason, [])
        if len(paths) < self.max_examples and path not in paths:
            paths.append(path)

    def check(self, *, final: bool = False) -> None:
        """Raise `DataError` when too many samples failed."""
        if (final or self.delivered + self.failed >= self.min_count) and self.ratio > self.max_fail_ratio:
            first = next((f"{r}: {paths[0]}" for r, paths in self.examples.items() if paths), "none recorded")
            raise DataError(
                f"{self.failed} of {self.delivered + self.failed} clips failed to load ({self.ratio:.1%} > "
                f"decode.max_fail_ratio {self.max_fail_ratio:.1%}): {dict(self.by_reason)}; first: {first}",
                hint="run `umt prepare-data ... --verify` to find and drop bad files",
            )

    def state_dict(self) -> dict[str, object]:
        """Counters and examples as plain data (checkpoints restore them, so a resumed run reports what an unbroken
        one would; `merged` combines those of several processes)."""
        return {
            "delivered": self.delivered,
            "by_reason": dict(self.by_reason),
            "examples": {reason: list(paths) for reason, paths in self.examples.items()},
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore `state_dict()` output (also the flat `["reason: path", ...]` examples of older checkpoints)."""
        self.delivered = int(state["delivered"])  # type: ignore[call-overload]
        self.by_reason = Counter(state["by_reason"])  # type: ignore[arg-type]
        self.examples = {}
        self._add_examples(state.get("examples", {}))

    def _add_examples(self, examples: object) -> None:
        if isinstance(examples, dict):
            pairs = [(reason, path) for reason, paths in examples.items() for path in paths]
        else:  # before per-reason examples: "reason: path" strings
            pairs = [tuple(line.split(": ", 1)) for line in examples if ": " in line]  # type: ignore[union-attr]
        for reason, path in pairs:
            self._example(reason, path)

    @classmethod
    def merged(cls, states: Iterable[Mapping[str, object]], **settings: Any) -> DataHealth:
        """One `DataHealth` holding the sum of several processes' `state_dict()`s.

        Counts add up; examples are taken per reason in the order of `states` (rank order), without repeats, up to
        `max_examples`. `settings` are the constructor's thresholds (`max_fail_ratio`, `min_count`, `max_examples`).
        """
        total = cls(**settings)
        for state in states:
            total.delivered += int(state["delivered"])  # type: ignore[call-overload]
            total.by_reason.update(state["by_reason"])  # type: ignore[arg-type]
            total._add_examples(state.get("examples", {}))
        return total

    def summary(self) -> dict[str, object]:
        """Plain counts for logs and metrics files."""
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            **{f"failed/{r}": self.by_reason.get(r, 0) for r in FAILURE_REASONS},
        }

    def line(self) -> str:
        """One human-readable line of counts."""
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.by_reason.items())) or "none"
        return f"{self.delivered} clips loaded, {self.failed} skipped ({reasons})"

    def report(self) -> list[str]:
        """The end-of-epoch report: no lines when nothing was skipped, else a headline and one line per reason with
        its distinct example paths (`...` when there may be more), e.g.

            skipped 3 of 120 clips (2.5%):
              open_fail 2: /data/a.mp4, /data/b.mp4
              missing 1: /data/c.mp4
        """
        if not self.failed:
            return []
        lines = [f"skipped {self.failed} of {self.delivered + self.failed} clips ({self.ratio:.1%}):"]
        for reason, count in sorted(self.by_reason.items(), key=lambda item: (-item[1], item[0])):
            paths = self.examples.get(reason, [])
            # Paths are distinct and capped: at the cap, more files may have failed for this reason.
            shown = paths + ["..."] if len(paths) >= self.max_examples and count > len(paths) else paths
            lines.append(f"  {reason} {count}: {', '.join(shown) or 'no path recorded'}")
        return lines
