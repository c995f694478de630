"""Bad samples: a per-sample deadline, and the counters that decide when too many clips fail."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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
    """Counts delivered and failed samples; stops the run when failures exceed `max_fail_ratio`.

    The ratio is failures / (delivered + failures). It is enforced continuously once `min_count` samples were
    drawn (so one unlucky early batch does not abort a run) and always at the end of an epoch.
    """

    max_fail_ratio: float = 0.01
    min_count: int = 1000
    max_examples: int = 20
    delivered: int = 0
    by_reason: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

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
            if len(self.examples) < self.max_examples:
                self.examples.append(f"{failure.reason}: {failure.path}")

    def check(self, *, final: bool = False) -> None:
        """Raise `DataError` when too many samples failed."""
        if (final or self.delivered + self.failed >= self.min_count) and self.ratio > self.max_fail_ratio:
            raise DataError(
                f"{self.failed} of {self.delivered + self.failed} clips failed to load ({self.ratio:.1%} > "
                f"decode.max_fail_ratio {self.max_fail_ratio:.1%}): {dict(self.by_reason)}; first: {self.examples[0]}",
                hint="run `umt prepare-data ... --verify` to find and drop bad files",
            )

    def state_dict(self) -> dict[str, object]:
        """Counters as plain data (checkpoints restore them, so a resumed run reports what an unbroken one would)."""
        return {"delivered": self.delivered, "by_reason": dict(self.by_reason), "examples": list(self.examples)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore `state_dict()` output."""
        self.delivered = int(state["delivered"])  # type: ignore[arg-type]
        self.by_reason = Counter(state["by_reason"])  # type: ignore[arg-type]
        self.examples = list(state["examples"])  # type: ignore[arg-type]

    def summary(self) -> dict[str, object]:
        """Plain counts for logs and metrics files."""
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            **{f"failed/{r}": self.by_reason.get(r, 0) for r in FAILURE_REASONS},
        }

    def line(self) -> str:
        """One human-readable line."""
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.by_reason.items())) or "none"
        return f"{self.delivered} clips loaded, {self.failed} skipped ({reasons})"
