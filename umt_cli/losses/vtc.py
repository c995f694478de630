"""Video-text contrastive loss (VTC) over the global batch, in the official operation order.

The caller gathers the projections and sample ids from every process first (`umt_cli.utils.dist`), so `Bg` rows
reach this module; the functions here are pure. They follow `multi_modality/models/criterions.py` (`get_sim`,
`VTC_VTM_Loss.vtc_loss`, `get_mask`) step by step so float32 results agree with upstream to the last bit:

1. l2-normalise the raw `vision_proj(pooled)` and `text_proj(cls)` (after the gather, as upstream);
2. `S = einsum("mld,nd->mln", v, t).mean(1) / temp` — per-frame dot products, averaged over the `Tp` pooled
   frames, then divided by the temperature; `Sᵀ` is the text-to-video matrix;
3. targets `Y[m, n] = 1[idx_m = idx_n] / Σ_n' 1[idx_m = idx_n']`, the **same** `Y` for both directions (it is
   symmetric, since equal ids have equal counts);
4. `L = ½ (mean_m −Σ_n log_softmax(S)[m, n] Y[m, n] + mean_m −Σ_n log_softmax(Sᵀ)[m, n] Y[m, n])`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["vtc_loss", "vtc_similarity", "vtc_targets"]


def vtc_similarity(vision: Tensor, text: Tensor, temp: Tensor | float) -> tuple[Tensor, Tensor]:
    """Video-to-text and text-to-video similarity logits (official `get_sim`).

    Args:
        vision: (Bg, Tp, E) raw video projections, `Tp` pooled frames (1 in pre-training); normalised here.
        text: (Bg, E) raw text projections; normalised here.
        temp: The temperature, 0-D (or a float).

    Returns:
        `(S_v2t (Bg, Bg), S_t2v (Bg, Bg))`; `S_t2v` is the transpose (a view) of `S_v2t`.
    """
    if vision.ndim != 3 or text.ndim != 2:
        shapes = f"{tuple(vision.shape)}, {tuple(text.shape)}"
        raise ValueError(f"expected vision (Bg, Tp, E) and text (Bg, E), got {shapes}")
    vision = F.normalize(vision, dim=-1)  # (Bg, Tp, E)
    text = F.normalize(text, dim=-1)  # (Bg, E)
    # einsum then mean over frames, then / temp: the official order (rounding differs from mean-then-dot)
    sim_v2t = torch.einsum("mld,nd->mln", vision, text).mean(1) / temp  # (Bg, Bg)
    return sim_v2t, sim_v2t.T


@torch.no_grad()
def vtc_targets(idx: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Soft targets: row m spreads 1 evenly over the columns whose id equals `idx[m]` (the diagonal included).

    Args:
        idx: (Bg,) sample ids; equal ids mark the same video-text pair (or caption of the same video).
        dtype: The targets' dtype (upstream: the similarity's).

    Returns:
        (Bg, Bg) rows summing to 1, symmetric.
    """
    idx = idx.view(-1, 1)  # (Bg, 1)
    positives = torch.eq(idx, idx.T).to(dtype)  # (Bg, Bg)
    return positives / positives.sum(1, keepdim=True)


def vtc_loss(vision: Tensor, text: Tensor, idx: Tensor, temp: Tensor | float) -> Tensor:
    """VTC loss over already-gathered projections, as upstream computes it.

    Args:
        vision: (Bg, Tp, E) raw `vision_proj` outputs (not normalised; this function normalises, as upstream).
        text: (Bg, E) raw `text_proj` outputs of the text `[CLS]`.
        idx: (Bg,) sample ids (see docs/pitfalls.md, P14 for which ids count as positives).
        temp: The temperature, 0-D; the loss is differentiable in it.

    Returns:
        A 0-D tensor: the mean of the video-to-text and text-to-video soft cross-entropies.
    """
    if idx.shape != (vision.shape[0],) or text.shape[0] != vision.shape[0]:
        raise ValueError(
            f"vision {tuple(vision.shape)}, text {tuple(text.shape)} and idx {tuple(idx.shape)} disagree on Bg"
        )
    sim_v2t, sim_t2v = vtc_similarity(vision, text, temp)  # (Bg, Bg) each
    targets = vtc_targets(idx, sim_v2t.dtype)  # (Bg, Bg), used for both directions as upstream does
    loss_v2t = -torch.sum(F.log_softmax(sim_v2t, dim=1) * targets, dim=1).mean()
    loss_t2v = -torch.sum(F.log_softmax(sim_t2v, dim=1) * targets, dim=1).mean()
    return (loss_v2t + loss_t2v) / 2
