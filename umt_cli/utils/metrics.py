"""Run metrics: `metrics.jsonl` (one JSON object per logged step), optional TensorBoard, and console progress."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from umt_cli.utils.files import atomic_path, to_json

__all__ = ["MetricsWriter", "ConsoleProgress"]


class MetricsWriter:
    """Appends `{"step": s, ...}` lines to `metrics.jsonl`. On resume, lines past the resumed step are dropped first,
    so the file continues exactly as an uninterrupted run would have written it."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, resume_step: int | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            self._truncate_after(resume_step)
        self._tb = _tensorboard_writer(run_dir / "tb", resume_step) if tensorboard else None

    def _truncate_after(self, step: int) -> None:
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines() if self.path.is_file() else []
        kept = [line for line in lines if _logged_step(line) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    def write(self, step: int, values: dict[str, Any]) -> None:
        """Record the values of one step (numbers, strings)."""
        with self.path.open("a", encoding="utf-8") as file:
            file.write(to_json({"step": step, **values}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _logged_step(line: str) -> float:
    """The step of a metrics line; infinity for a line that is not a JSON record (half-written when a run was
    killed), so it is dropped."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return float("inf")
    return record.get("step", 0) if isinstance(record, dict) else float("inf")


def _tensorboard_writer(folder: Path, resume_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("log.tensorboard is on but tensorboard is not installed: pip install tensorboard", stacklevel=3)
        return None
    return SummaryWriter(str(folder), purge_step=None if resume_step is None else resume_step + 1)


class ConsoleProgress:
    """Rank-0 console output: a rich progress bar on a terminal, else a plain line every `every` steps
    (`step 120/5000 loss 0.8312 lr 1.2e-04 2.31 it/s`), so SLURM and CI logs stay free of escape codes."""

    def __init__(self, total: int, start: int, *, every: int, enabled: bool) -> None:
        self.total, self.every, self.enabled = total, every, enabled
        self.start_step, self.start_time = start, time.monotonic()
        self._bar = self._task = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (
                TextColumn("distill"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            )
            self._bar = Progress(*columns)
            self._bar.start()
            self._task = self._bar.add_task("distill", total=total, completed=start, info="")

    def update(self, step: int, values: dict[str, float]) -> None:
        """Report optimizer step `step` (1-based count of finished steps)."""
        if not self.enabled:
            return
        rate = (step - self.start_step) / max(time.monotonic() - self.start_time, 1e-9)
        info = f"loss {values.get('loss', float('nan')):.4f} lr {values.get('lr', 0.0):.2e} {rate:.2f} it/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif step % self.every == 0 or step == self.total:
            print(f"step {step}/{self.total} {info}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
