"""What a run reports: `metrics.jsonl` (and TensorBoard), step values reduced over processes, skipped files."""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from umt_cli.data.failures import DataHealth
from umt_cli.training.session import Run, warn
from umt_cli.utils.files import atomic_path, to_json, write_json

__all__ = ["StepMetrics", "MetricsWriter", "logged_values", "all_processes", "report_skipped"]


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step as this process saw it, before reduction over processes."""

    loss: Tensor  # 0-D, mean over the micro-batches
    parts: dict[str, Tensor]  # named 0-D loss parts, means over the micro-batches
    lr: float
    grad_norm: Tensor  # 0-D, before clipping
    counts: dict[str, int]  # diagnostics summed over the micro-batches
    seconds: float  # wall time of the step
    data_wait: float  # seconds of it spent waiting for batches


def logged_values(run: Run, metrics: StepMetrics, health: DataHealth) -> dict[str, float]:
    """A step's values for the log, losses averaged and data counters summed over processes (collective: every
    process calls it at the same steps)."""
    acc = run.accelerator
    losses = torch.stack([metrics.loss, *metrics.parts.values()]).float()  # (1 + parts,)
    data = torch.tensor([health.failed, health.delivered], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        losses, data = acc.reduce(losses, reduction="mean"), acc.reduce(data, reduction="sum")
    seconds = max(metrics.seconds, 1e-9)
    return {
        "loss": float(losses[0]),
        **{name: float(value) for name, value in zip(metrics.parts, losses[1:].tolist(), strict=True)},
        "lr": metrics.lr,
        "grad_norm": float(metrics.grad_norm),
        "clips_per_s": run.plan.global_batch / seconds,
        "data_wait": metrics.data_wait / seconds,
        **metrics.counts,
        "data/failed": int(data[0]),
        "data/delivered": int(data[1]),
    }


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
        """Flush and close TensorBoard's files."""
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


def all_processes(run: Run, health: DataHealth) -> DataHealth:
    """Every process's data-health counters and skipped files together (collective: every process calls it)."""
    if run.accelerator.num_processes == 1:
        return health
    from accelerate.utils import gather_object

    return DataHealth.merged(gather_object([health.state_dict()]), max_fail_ratio=health.max_fail_ratio)


def report_skipped(run: Run, everyone: DataHealth) -> None:
    """Name the skipped files (a few per reason) on the console and in `skipped.json` of the run directory."""
    if not run.main or not everyone.failed:
        return
    headline, *reasons = everyone.report()
    warn(headline)
    for line in reasons:
        print(line, file=sys.stderr, flush=True)
    write_json(run.run_dir / "skipped.json", everyone.state_dict())
