"""Gathering tensors from every process along the batch dim, with the two backward conventions stage 2 needs.

VTC compares every video with every text of the global batch, so each process gathers the projections of all
processes (`Bg = B × processes`) and computes the same global loss. What the gather's backward returns decides how
much of that loss's gradient reaches each process's parameters:

- `full` (our default): the backward all-reduces (sums) the incoming gradient over the processes and returns this
  process's slice. N processes followed by DDP's gradient average then compute exactly the gradient one process
  holding the whole global batch would (see `gather_with_grad` for the factor).
- `local_grad`: the ALBEF/VINDLU convention the official code uses (`models/utils.py::AllGather`): the backward returns
  only this process's slice of its own incoming gradient, so after DDP's average the gradient is `1 / N` of the
  single-process one (docs/pitfalls.md, P24).

Every function is the identity when torch.distributed is not initialised or the world has one process.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["GatherMode", "gather_no_grad", "gather_with_grad", "gather_rows", "gather_objects", "is_distributed"]

GatherMode = Literal["full", "local_grad"]
_MODES = ("full", "local_grad")


def is_distributed(group: Any = None) -> bool:
    """True when torch.distributed is initialised and `group` (default: the world) has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _all_gather(x: Tensor, group: Any) -> Tensor:
    """Every process's `x` concatenated along dim 0 in rank order; all processes must pass the same shape."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns this process's slice of the (optionally summed) gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, mode: str, group: Any) -> Tensor:  # type: ignore[override]
        ctx.mode, ctx.group = mode, group
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank(group)
        return _all_gather(x, group)  # (N·B, ...)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        if ctx.mode == "full":
            # every process holds dL/dX of its own copy of the loss; their sum is the total gradient of the slice
            grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce is in place; the buffer is not ours
            dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None, None  # (B, ...)


def gather_with_grad(x: Tensor, *, mode: GatherMode = "full", group: Any = None) -> Tensor:
    """Every process's `x` concatenated along dim 0 (rank order), differentiable.

    The factor, for N processes each computing the same global loss `L` from the gathered tensor: process r's
    incoming gradient is `dL/dX` (Bg rows); the true gradient of its own rows is needed once, but DDP then *averages*
    the parameter gradients over the N processes, i.e. divides by N. `full` therefore returns the **sum** over the
    processes of the incoming gradients, sliced to this process's rows (`N · dL/dx_r` when the copies agree); after
    DDP's `1/N` each parameter receives `Σ_r dL/dx_r · dx_r/dθ`, exactly the single-process gradient of `L` over the
    whole global batch. `local_grad` returns `dL/dx_r` alone (upstream), which DDP's average turns into `1/N` of it.

    The sum also stays right when the processes' losses differ (it is then the gradient of their mean).

    Args:
        x: (B, ...) this process's rows; every process must pass the same shape and dtype.
        mode: `full` (all-reduce in the backward, the default) or `local_grad` (upstream's local slice).
        group: The process group; None = the world.

    Returns:
        (Bg, ...) with Bg = B × processes; `x` itself when not distributed.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
    if not is_distributed(group):
        return x
    return _GatherWithGrad.apply(x, mode, group)


@torch.no_grad()
def gather_no_grad(x: Tensor, *, group: Any = None) -> Tensor:
    """Every process's `x` concatenated along dim 0 (rank order), without gradient (sample ids, diagnostics).

    Args:
        x: (B, ...) this process's rows; every process must pass the same shape and dtype.
        group: The process group; None = the world.

    Returns:
        (Bg, ...); `x` itself when not distributed.
    """
    if not is_distributed(group):
        return x
    return _all_gather(x, group)


@torch.no_grad()
def gather_rows(local: Tensor, rows: Tensor, total: int, *, group: Any = None) -> Tensor:
    """Assemble a (total, ...) tensor whose rows were computed on different processes (uneven shards allowed).

    Args:
        local: (n, ...) the rows this process computed (n may differ between processes, and be 0).
        rows: (n,) long, their positions in the result.
        total: Rows of the result; every position must be covered by exactly one process.

    Returns:
        (total, ...) on `local`'s device, the same on every process; `local` placed by `rows` when not distributed.
    """
    out = local.new_zeros((total, *local.shape[1:]))
    if not is_distributed(group):
        out[rows.to(local.device)] = local
        return out
    counts = _all_gather(torch.tensor([local.shape[0]], device=local.device), group).tolist()
    width = max(counts)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: local.shape[0]] = local
    index = torch.full((width,), -1, dtype=torch.long, device=local.device)
    index[: local.shape[0]] = rows.to(local.device)
    values, positions = _all_gather(padded, group), _all_gather(index, group)  # (P·width, ...), (P·width,)
    kept = positions >= 0
    out[positions[kept]] = values[kept]
    return out


def gather_objects(value: Any, *, group: Any = None) -> list[Any]:
    """Every process's picklable `value`, in rank order (`[value]` when not distributed)."""
    if not is_distributed(group):
        return [value]
    values: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(values, value, group=group)
    return values
