"""The one place tokens are selected with a `visible` mask (True = kept)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gather_visible"]


def gather_visible(x: Tensor, visible: Tensor) -> Tensor:
    """Keep the visible tokens of every sample, in ascending position order.

    Student tokens and teacher targets go through this same function with the same mask, so they stay aligned.

    Args:
        x: (..., B, N, D) tokens, e.g. (B, N, D) student tokens or (K, B, N, Dt) teacher features.
        visible: (B, N) bool, True = kept; every sample must keep the same number Nv.

    Returns:
        (..., B, Nv, D).
    """
    if visible.dtype != torch.bool:
        raise ValueError(f"visible must be a bool mask (True = kept), got {visible.dtype}")
    if x.ndim < 3 or visible.ndim != 2 or x.shape[-3:-1] != visible.shape:
        raise ValueError(f"need x (..., B, N, D) and visible (B, N), got {tuple(x.shape)} and {tuple(visible.shape)}")
    counts = visible.sum(dim=-1)  # (B,)
    if bool((counts != counts[:1]).any()):  # one host sync; a ragged mask would silently mix samples below
        raise ValueError(f"every sample must keep the same number of tokens, got counts {counts.tolist()}")
    batch = visible.shape[0]
    # Boolean indexing walks positions row-major, so each sample's tokens stay in ascending order.
    return x[..., visible, :].unflatten(-2, (batch, -1))  # (..., B, Nv, D)
