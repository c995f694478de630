"""Opening a run (accelerator, run directory, resume point) and assembling what the loop drives.

`accelerate` is used here and in the other engine modules only: under `torchrun` or `accelerate launch` the
Accelerator reads the launcher's environment and wraps the model for data-parallel training; models, maskers,
losses and data stay plain PyTorch.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from umt_cli.data.loaders import ShardedSampler, build_loader
from umt_cli.errors import UsageError
from umt_cli.training.plan import Plan
from umt_cli.training.state import rank_file_name
from umt_cli.utils import checkpoint as ckpt
from umt_cli.utils.rundir import check_run_dir, write_run_files
from umt_cli.utils.seed import derive_seed

__all__ = ["Session", "open_session", "Run", "assemble", "warn"]


@dataclass(frozen=True)
class Session:
    """A run before its parts are built: the recipe, where it writes, the processes, and where it resumes from."""

    recipe: Any  # a training recipe: [data], [decode], [optim], [schedule], [checkpoint], [log], [run]
    run_dir: Path
    accelerator: Accelerator
    resume_from: ckpt.ResumePoint | None  # the checkpoint read in full, or None for a fresh run

    @property
    def main(self) -> bool:
        """Whether this process writes the shared files and prints (rank 0)."""
        return self.accelerator.is_main_process

    @contextmanager
    def main_warns(self) -> Iterator[None]:
        """Every process builds the same things; only the main one says what it noticed."""
        with warnings.catch_warnings():
            if not self.main:
                warnings.simplefilter("ignore")
            yield

    def seed_process(self) -> None:
        """Seed the global torch RNG (drop path, dropout) differently on each process, from `run.seed`."""
        torch.manual_seed(derive_seed(self.recipe.run.seed, self.accelerator.process_index))

    def decoding_status_dir(self) -> Path | None:
        """Where data workers name the file they decode, so a hung decoder can be reported; None without workers."""
        if not self.recipe.data.num_workers:
            return None
        return self.run_dir / ".decoding" / f"rank{self.accelerator.process_index}"

    def train_loader(self, dataset: Dataset) -> tuple[ShardedSampler, DataLoader]:
        """This process's seeded, resumable sampler over `dataset` and its loader (`[data]`, `[decode]`)."""
        data, acc = self.recipe.data, self.accelerator
        sampler = ShardedSampler(
            len(dataset),  # type: ignore[arg-type]
            batch_size=data.batch_size,
            seed=self.recipe.run.seed,
            rank=acc.process_index,
            world_size=acc.num_processes,
        )
        loader = build_loader(
            dataset,
            sampler,
            num_workers=data.num_workers,
            prefetch_factor=data.prefetch_factor,
            pin_memory=data.pin_memory and acc.device.type == "cuda",
            timeout_s=self.recipe.decode.loader_timeout_s,
            persistent=self.recipe.decode.cache_mb > 0,
        )
        return sampler, loader


def open_session(recipe: Any, run_dir: Path, *, resume: str | None, unused_parameters: bool = False) -> Session:
    """The accelerator for `[run]` and `[optim]`; the run directory checked (nothing written yet); the resume point.

    `unused_parameters`: some parameters may get no gradient in a step (stage 2: a loss weighted 0, or a head the
    batch's media type does not use), which data parallelism must be told about.

    Raises:
        UsageError: fp16 without a GPU; a run directory that is a file, or not empty without `--resume`.
        CheckpointError: A resume point that cannot be read.
    """
    accelerator = _accelerator(recipe.run.precision, recipe.optim.grad_accum, unused_parameters)
    check_run_dir(run_dir, resume)  # every process looks before any process writes
    rank_file = rank_file_name(accelerator.process_index)
    resume_from = ckpt.open_resume_point(
        run_dir, resume, rank_file=rank_file, warn=warn if accelerator.is_main_process else lambda _: None
    )
    return Session(recipe, run_dir, accelerator, resume_from)


def _accelerator(precision: str, grad_accum: int, unused_parameters: bool) -> Accelerator:
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    if precision == "fp16" and not cuda:
        raise UsageError("run.precision = 'fp16' needs a GPU", hint="use run.precision=bf16 or run.precision=fp32")
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    ddp = [DistributedDataParallelKwargs(find_unused_parameters=True)] if unused_parameters else []
    return Accelerator(mixed_precision=mixed, gradient_accumulation_steps=grad_accum, cpu=not cuda, kwargs_handlers=ddp)


@dataclass(frozen=True)
class Run:
    """Everything the loop drives; built once by `assemble`."""

    recipe: Any
    run_dir: Path
    accelerator: Accelerator
    resume_from: ckpt.ResumePoint | None
    model: torch.nn.Module  # the trainable model, wrapped for data parallelism when several processes run
    optimizer: torch.optim.Optimizer
    sampler: ShardedSampler
    loader: DataLoader
    plan: Plan
    status_dir: Path | None  # where data workers name the file they decode (see `Session.decoding_status_dir`)

    @property
    def main(self) -> bool:
        """Whether this process writes the shared files and prints (rank 0)."""
        return self.accelerator.is_main_process


def assemble(
    session: Session,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: ShardedSampler,
    loader: DataLoader,
    plan: Plan,
    overrides: list[str],
) -> Run:
    """Write the run directory (only now: everything that can fail on a bad input has been built) and prepare the
    model and optimizer for the processes."""
    acc = session.accelerator
    acc.wait_for_everyone()
    if session.main and session.resume_from is None:
        write_run_files(session.run_dir, session.recipe, overrides, world_size=acc.num_processes)
    if session.main:
        ckpt.remove_partial_saves(session.run_dir / "checkpoints")
    acc.wait_for_everyone()
    status_dir = session.decoding_status_dir()
    if status_dir is not None:
        status_dir.mkdir(parents=True, exist_ok=True)
    model, optimizer = acc.prepare(model, optimizer)
    return Run(session.recipe, session.run_dir, acc, session.resume_from, model, optimizer, sampler, loader, plan,
               status_dir)  # fmt: skip


def warn(message: str) -> None:
    """One `warning:` line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
