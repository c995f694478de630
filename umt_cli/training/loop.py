"""The training loop every stage runs: `fit(run, step, export)` with the stage's own `step`.

A stage's `step(batch, epoch) -> StepOutput` holds its maths for one micro-batch; `fit` does everything around it:
learning rate, gradient accumulation, the non-finite guard, gradient norm and clipping, logging and progress,
checkpoints, exact resume, the per-epoch data-health report, export of the weights and the run summary.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from umt_cli.data.failures import DataHealth
from umt_cli.data.loaders import iterate_epoch
from umt_cli.training import checkpoints
from umt_cli.training.guards import gradient_norm, stop_if_not_finite
from umt_cli.training.report import MetricsWriter, StepMetrics, all_processes, logged_values, report_skipped
from umt_cli.training.session import Run
from umt_cli.training.state import TrainState
from umt_cli.utils import checkpoint as ckpt
from umt_cli.utils.files import write_json
from umt_cli.utils.optim import set_lr
from umt_cli.utils.progress import Progress, progress

__all__ = ["StepOutput", "StepFn", "WeightsExport", "fit", "optimizer_step"]


@dataclass(frozen=True)
class StepOutput:
    """One micro-batch: the loss to back-propagate, its named parts (logged), and diagnostic counts (summed over
    the micro-batches of a step and logged)."""

    total: Tensor  # 0-D
    parts: dict[str, Tensor] = field(default_factory=dict)  # e.g. {"loss/uta": 0-D, detached}
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"mask_fallback_rows": 0}


StepFn = Callable[[Any, int], StepOutput]
"""A stage's maths for one micro-batch: `(batch, epoch) -> StepOutput`."""
EpochEndFn = Callable[[int], "dict[str, float] | None"]
"""Called by every process after each finished epoch (e.g. validation): `epoch -> values to log, or None`. After a
resume at an epoch's end it is called again for that epoch, so it must skip work it has recorded as done."""


@dataclass(frozen=True)
class WeightsExport:
    """The trained model's weights file in the run directory, and the metadata its safetensors header carries."""

    name: str  # e.g. "student.safetensors"
    metadata: dict[str, str]


def fit(
    run: Run,
    step: StepFn,
    export: WeightsExport,
    on_epoch_end: EpochEndFn | None = None,
    on_end: Callable[[], dict[str, object]] | None = None,
) -> dict[str, object]:
    """Train (resuming when the run was opened with a resume point), checkpoint, export; return the run summary,
    also written to `summary.json`. Resuming a run that already finished changes nothing and returns its summary.
    `on_epoch_end(epoch)` runs after every epoch (see `EpochEndFn`); `on_end()` after the export, on every process
    while they still form a group (e.g. a final test), and what it returns joins the summary."""
    started = time.monotonic()
    state, health = TrainState(), DataHealth(max_fail_ratio=run.recipe.decode.max_fail_ratio)
    if run.resume_from is not None:
        checkpoints.restore(run, state, health)
        finished = _finished_summary(run, state, export)
        if finished is not None:
            return finished
    metrics = _metrics_writer(run, state) if run.main else None
    plan = run.plan
    try:
        with progress(run.recipe.stage, plan.total_steps, start=state.steps_done, enabled=run.main) as bar:
            _train(run, step, state, health, metrics, bar, on_epoch_end)
    finally:
        if metrics is not None:
            metrics.close()
    weights = run.run_dir / export.name
    if run.main:
        ckpt.save_weights(weights, run.accelerator.unwrap_model(run.model).state_dict(), export.metadata)
    everyone = all_processes(run, health)
    run.accelerator.wait_for_everyone()
    summary = {
        "run_dir": str(run.run_dir),
        "steps": state.steps_done,
        "epochs": state.steps_done / plan.steps_per_epoch,
        "global_batch": plan.global_batch,
        "final_loss": state.last_loss,
        "weights": str(weights),
        "data": everyone.line(),
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    if on_end is not None:
        summary |= on_end()
    if run.main:
        write_json(run.run_dir / "summary.json", summary)
    run.accelerator.end_training()
    return summary


def _metrics_writer(run: Run, state: TrainState) -> MetricsWriter:
    resumed = state.steps_done if run.resume_from is not None else None
    return MetricsWriter(run.run_dir, tensorboard=run.recipe.log.tensorboard, resume_step=resumed)


def _train(
    run: Run,
    step: StepFn,
    state: TrainState,
    health: DataHealth,
    metrics: MetricsWriter | None,
    bar: Progress,
    on_epoch_end: EpochEndFn | None = None,
) -> None:
    plan = run.plan
    if state.steps_done and state.steps_done % plan.steps_per_epoch == 0:  # resumed at an epoch's end
        _epoch_end(run, state, metrics, on_epoch_end)
    run.model.train()
    while state.steps_done < plan.total_steps:
        epoch, offset = divmod(state.steps_done, plan.steps_per_epoch)
        run.sampler.set_epoch(epoch, offset * run.recipe.optim.grad_accum)
        batches = iterate_epoch(run.loader, health, status_dir=run.status_dir)
        for _ in range(offset, plan.steps_per_epoch):
            result = optimizer_step(run, step, batches, epoch, state)
            state.steps_done += 1
            info = None
            if state.steps_done % run.recipe.log.every == 0 or state.steps_done == plan.total_steps:
                values = logged_values(run, result, health)
                state.last_loss, info = values["loss"], f"loss {values['loss']:.4f} lr {values['lr']:.2e}"
                if metrics is not None:
                    metrics.write(state.steps_done, {"epoch": epoch, **values})
            bar.advance(1, info)
            if checkpoints.should_save(run, state):
                checkpoints.save(run, state, health)
            if state.steps_done >= plan.total_steps:
                break
        batches.close()
        if state.steps_done % plan.steps_per_epoch == 0:
            report_skipped(run, all_processes(run, health))
            health.check(final=True)
            _epoch_end(run, state, metrics, on_epoch_end)


def _epoch_end(run: Run, state: TrainState, metrics: MetricsWriter | None, on_epoch_end: EpochEndFn | None) -> None:
    """The stage's end-of-epoch work for the epoch just finished, its values logged at this step."""
    if on_epoch_end is None:
        return
    epoch = state.steps_done // run.plan.steps_per_epoch - 1
    values = on_epoch_end(epoch)
    if values and metrics is not None:
        metrics.write(state.steps_done, {"epoch": epoch, **values})
    run.model.train()


def optimizer_step(run: Run, step: StepFn, batches: Iterator[Any], epoch: int, state: TrainState) -> StepMetrics:
    """One optimizer step over `optim.grad_accum` micro-batches of `batches` (each with `.index`, the samples)."""
    lr = run.plan.lr(state.steps_done)
    set_lr(run.optimizer, lr)
    acc = run.accelerator
    started, waited, outputs, grad_norm = time.monotonic(), 0.0, [], None
    for _ in range(run.recipe.optim.grad_accum):
        before = time.monotonic()
        batch = next(batches)
        waited += time.monotonic() - before
        with acc.accumulate(run.model):
            out = step(batch, epoch)
            stop_if_not_finite(run, out.total, state.steps_done, batch.index)
            acc.backward(out.total)
            if acc.sync_gradients:
                grad_norm = gradient_norm(run)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        outputs.append(out)
    return StepMetrics(
        loss=torch.stack([out.total.detach() for out in outputs]).mean(),
        parts={name: torch.stack([out.parts[name] for out in outputs]).mean() for name in outputs[0].parts},
        lr=lr,
        grad_norm=grad_norm,
        counts={name: sum(out.counts[name] for out in outputs) for name in outputs[0].counts},
        seconds=time.monotonic() - started,
        data_wait=waited,
    )


def _finished_summary(run: Run, state: TrainState, export: WeightsExport) -> dict[str, object] | None:
    """The recorded summary of a run that already finished (resumed at its last step), else None."""
    path = run.run_dir / "summary.json"
    if state.steps_done < run.plan.total_steps or not path.is_file() or not (run.run_dir / export.name).is_file():
        return None  # not finished, or killed between the last checkpoint and the export: finish it
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # an unreadable summary is rewritten
    if run.main:
        print(f"{run.run_dir} already finished at step {state.steps_done} of {run.plan.total_steps}: nothing to do",
              file=sys.stderr)  # fmt: skip
    run.accelerator.end_training()
    return summary
