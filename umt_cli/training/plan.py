"""How long a run is and how its learning rate moves, in optimizer steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from umt_cli.errors import DataError
from umt_cli.utils.optim import cosine_floor_lr, cosine_lr, scaled_lr

__all__ = ["Plan", "make_plan", "plan_steps"]


@dataclass(frozen=True)
class Plan:
    """Steps and learning rates of a run."""

    global_batch: int  # samples per optimizer step: all processes and accumulated micro-batches together
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    final_lr: float
    shape: str = "cosine"  # "cosine": stage 1's schedule; "cosine_floor": stage 2's (final_lr is the floor)

    def lr(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based), as the official schedule of the stage gives it."""
        if self.shape == "cosine_floor":
            return cosine_floor_lr(step, base=self.peak_lr, floor=self.final_lr, warmup_steps=self.warmup_steps,
                                   total_steps=self.total_steps)  # fmt: skip
        return cosine_lr(
            step, base=self.peak_lr, final=self.final_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps
        )


def make_plan(num_samples: int, *, batch_size: int, world_size: int, optim: Any, schedule: Any) -> Plan:
    """The plan for `num_samples` training samples, `batch_size` per process and micro-batch.

    Args:
        num_samples: Samples in the training set (one epoch).
        batch_size: Samples per process per micro-batch (`data.batch_size`).
        world_size: Processes.
        optim: The recipe's `[optim]` (lr, min_lr, scale_lr, grad_accum).
        schedule: The recipe's `[schedule]` (epochs, warmup_epochs, max_steps).

    Raises:
        DataError: The data do not fill one optimizer step.
    """
    global_batch = batch_size * world_size * optim.grad_accum
    steps_per_epoch = num_samples // global_batch
    if steps_per_epoch == 0:
        raise DataError(
            f"{num_samples} training clips do not fill one step of {global_batch} "
            "(data.batch_size x processes x optim.grad_accum)"
        )
    return plan_steps(steps_per_epoch, global_batch=global_batch, optim=optim, schedule=schedule)


def plan_steps(steps_per_epoch: int, *, global_batch: int, optim: Any, schedule: Any) -> Plan:
    """The plan for `steps_per_epoch` optimizer steps of `global_batch` samples (on average) per epoch.

    The learning rates are scaled by `global_batch / 256` when `optim.scale_lr`; the schedule's `lr_shape` picks
    the curve.
    """
    total = schedule.epochs * steps_per_epoch
    if schedule.max_steps is not None:
        total = min(total, schedule.max_steps)
    scale = global_batch if optim.scale_lr else 256
    return Plan(
        global_batch=global_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=min(int(schedule.warmup_epochs * steps_per_epoch), total),
        peak_lr=scaled_lr(optim.lr, scale),
        final_lr=scaled_lr(optim.min_lr, scale),
        shape=schedule.lr_shape,
    )
