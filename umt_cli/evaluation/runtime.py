"""Where evaluation runs: this process's rank among those of an `accelerate launch` (or the only one), the device,
and the autocast context of the requested precision."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch

from umt_cli.errors import UsageError

__all__ = ["Runtime", "WorkSettings", "eval_runtime", "end_runtime"]

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    device: str
    autocast: Callable[[], AbstractContextManager]

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class WorkSettings:
    """How an evaluation runs, with no effect on its numbers: decoding, this process's place, device, precision."""

    num_workers: int = 0
    backend: str = "auto"
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    autocast: Callable[[], AbstractContextManager] = nullcontext
    show_progress: bool = True

    @property
    def main(self) -> bool:
        return self.rank == 0


def eval_runtime(device: Device = "auto", precision: Precision = "fp32") -> Runtime:
    """Start (or join) the process group and pick the device: `auto` = CUDA when available.

    Raises:
        UsageError: `cuda` without a GPU, or half precision on the CPU (slow and not what the protocol used).
    """
    from accelerate import PartialState

    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UsageError("--device cuda: no CUDA device is available", hint="use --device cpu")
    use_cuda = cuda and device != "cpu"
    if precision != "fp32" and not use_cuda:
        raise UsageError(f"--precision {precision} needs a GPU; on the CPU use --precision fp32")
    state = PartialState(cpu=not use_cuda)
    autocast: Callable[[], AbstractContextManager] = nullcontext
    if precision != "fp32":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        autocast = partial(torch.autocast, device_type="cuda", dtype=dtype)
    return Runtime(state.process_index, state.num_processes, str(state.device), autocast)


def end_runtime() -> None:
    """Wait for every process, then end the process group (when there is one). A process that leaves while others
    still write can otherwise abort at exit ("terminate called without an active exception": the collective
    backend's threads outlive the interpreter)."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        state.wait_for_everyone()
        state.destroy_process_group()
