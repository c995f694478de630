"""Pure, seeded token maskers. Each returns `visible` (B, N) bool in (t, h, w) order, True = kept.

All randomness comes from the generators passed in, never from a global RNG. `generators` is either one
`torch.Generator` for the whole batch or a sequence of B generators, one per sample: with the per-sample form a
sample's mask depends only on its own generator, not on which batch or process the sample lands in.

Kept counts follow the official code: `HW - int(HW * mask_ratio)` per frame for attention and tube masking
(196 -> 40 at r = 0.8, 98 at r = 0.5), `N - int(N * mask_ratio)` per clip for random masking (1568 -> 314).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "Generators",
    "attention_visible",
    "invalid_attention_rows",
    "random_visible",
    "tube_visible",
    "visible_per_frame",
]

Generators = torch.Generator | Sequence[torch.Generator]


def visible_per_frame(hw: int, mask_ratio: float) -> int:
    """Tokens kept out of `hw` at `mask_ratio`: `hw - int(hw * mask_ratio)`, the official rounding (down on masked).

    Also used for random masking with `hw = N`, the tokens of a whole clip.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return hw - int(hw * mask_ratio)


def invalid_attention_rows(cls_attn: Tensor) -> Tensor:
    """Frames whose attention cannot be sampled from: a non-finite or negative value, or a non-positive sum.

    Args:
        cls_attn: (B, T, HW) CLS -> patch attention.

    Returns:
        (B, T) bool, True = the frame falls back to uniform sampling (stages count these).
    """
    weights = cls_attn.float()  # (B, T, HW)
    bad_value = (~torch.isfinite(weights) | (weights < 0)).any(dim=-1)  # (B, T); multinomial raises on these
    return bad_value | ~(weights.sum(dim=-1) > 0)  # `~(s > 0)` also catches a NaN sum


def attention_visible(cls_attn: Tensor, mask_ratio: float, *, generators: Generators) -> Tensor:
    """Attention-guided masking: per frame, a weighted sample without replacement proportional to the attention.

    Exactly the official engine's draw: `order = multinomial(A, HW, replacement=False)` over the (B·T, HW) rows
    and keep `order[:, :n_keep]`, so with the same generator state and rows the kept set is stream-identical to
    upstream (a single generator) or to upstream run on each sample's T rows (one generator per sample). The
    attention is cast to float32 first (upstream fed fp16 under autocast). Invalid rows (`invalid_attention_rows`)
    are replaced by uniform weights, which keeps the generator stream aligned with the valid case.

    Args:
        cls_attn: (B, T, HW) CLS -> patch attention of the teacher's last block, on the generators' device.
        mask_ratio: fraction of each frame's tokens to mask, in [0, 1).
        generators: one generator for the batch, or B generators (sample b's T rows drawn with generator b).

    Returns:
        (B, T·HW) bool, True = kept; exactly `HW - int(HW * mask_ratio)` True per frame.
    """
    if cls_attn.ndim != 3:
        raise ValueError(f"cls_attn must be (B, T, HW), got shape {tuple(cls_attn.shape)}")
    batch, frames, hw = cls_attn.shape
    n_keep = visible_per_frame(hw, mask_ratio)
    per_sample = _sample_generators(generators, batch, cls_attn.device)
    weights = cls_attn.detach().float()  # (B, T, HW)
    weights = torch.where(invalid_attention_rows(weights)[..., None], torch.ones_like(weights), weights)
    if isinstance(generators, torch.Generator):  # one call over all rows, as upstream
        order = torch.multinomial(weights.flatten(0, 1), hw, replacement=False, generator=generators)  # (B·T, HW)
    else:
        draws = [torch.multinomial(w, hw, replacement=False, generator=g) for w, g in zip(weights, per_sample)]
        order = torch.cat(draws)  # (B·T, HW)
    visible = torch.zeros(batch * frames, hw, dtype=torch.bool, device=cls_attn.device)
    visible.scatter_(1, order[:, :n_keep], True)  # (B·T, HW)
    return visible.view(batch, frames * hw)


def tube_visible(
    batch: int,
    frames: int,
    hw: int,
    mask_ratio: float,
    *,
    generators: Generators,
    device: torch.device | str | None = None,
) -> Tensor:
    """Tube masking: per sample one uniform random set of `hw - int(hw * mask_ratio)` positions, kept in every frame.

    Args:
        batch, frames, hw: B, T and HW.
        mask_ratio: fraction of each frame's tokens to mask, in [0, 1).
        generators: one generator for the batch (used for the samples in order) or B generators.
        device: where the mask is built; None = the generators' device.

    Returns:
        (B, T·HW) bool, True = kept; the same spatial pattern in each of the T frames.
    """
    n_keep = visible_per_frame(hw, mask_ratio)
    device = _mask_device(generators, device)
    sample_generators = _sample_generators(generators, batch, device)
    spatial = torch.stack([_uniform_subset(hw, n_keep, g, device) for g in sample_generators])  # (B, HW)
    return spatial.unsqueeze(1).expand(batch, frames, hw).reshape(batch, frames * hw)


def random_visible(
    batch: int,
    frames: int,
    hw: int,
    mask_ratio: float,
    *,
    generators: Generators,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random masking: per sample a uniform subset of `N - int(N * mask_ratio)` of all N = T·HW tokens.

    Per-frame counts vary; only the per-clip count is fixed (1568 -> 314 at r = 0.8).

    Args:
        batch, frames, hw: B, T and HW.
        mask_ratio: fraction of the clip's tokens to mask, in [0, 1).
        generators: one generator for the batch (used for the samples in order) or B generators.
        device: where the mask is built; None = the generators' device.

    Returns:
        (B, T·HW) bool, True = kept.
    """
    tokens = frames * hw
    n_keep = visible_per_frame(tokens, mask_ratio)
    device = _mask_device(generators, device)
    sample_generators = _sample_generators(generators, batch, device)
    return torch.stack([_uniform_subset(tokens, n_keep, g, device) for g in sample_generators])  # (B, N)


def _uniform_subset(n: int, k: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """(n,) bool with a uniformly random set of `k` True entries (the first `k` of a random permutation)."""
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    keep[torch.randperm(n, generator=generator, device=device)[:k]] = True
    return keep


def _mask_device(generators: Generators, device: torch.device | str | None) -> torch.device:
    """`device` if given, else the generators' device (a mask must be built where its generator draws)."""
    if device is not None:
        return torch.device(device)
    first = generators if isinstance(generators, torch.Generator) else next(iter(generators), None)
    return first.device if first is not None else torch.device("cpu")


def _sample_generators(generators: Generators, batch: int, device: torch.device) -> list[torch.Generator]:
    """One generator per sample (a single generator is reused in turn), each checked to live on `device`."""
    listed = [generators] * batch if isinstance(generators, torch.Generator) else list(generators)
    if len(listed) != batch:
        raise ValueError(f"need one generator per sample: got {len(listed)} for a batch of {batch}")
    for generator in listed:
        if generator.device.type != device.type:
            raise ValueError(f"generator on {generator.device} but the mask is built on {device}")
    return listed
