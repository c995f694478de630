"""Video-text matching (VTM): hard-negative draws, the layout of the 3B fused pairs, and the matching loss.

Follows `multi_modality/models/criterions.py::VTC_VTM_Loss.vtm_loss` on the **local** batch (no gather):

1. without gradient, `W_v2t = softmax(S_v2t + 1e-4, dim=1)` and `W_t2v = softmax(S_t2v + 1e-4, dim=1)` from the
   local VTC similarities (`vtc_similarity`, same temperature); the order is add 1e-4, softmax, zero the entries with
   equal ids (the diagonal included), then `nan_to_num(nan=posinf=neginf=1e-2)`;
2. one batched draw per direction, **text → video first**: `multinomial(W_t2v, 1)` gives a negative video for every
   text, then `multinomial(W_v2t, 1)` a negative text for every video;
3. the fusion layers see 3B pairs in the order positives `(v_i, t_i)`, negative videos `(v_neg(i), t_i)`, negative
   texts `(v_i, t_neg(i))`; labels are `[1]·B + [0]·2B`; cross-entropy on the `itm_head` logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "HardNegatives",
    "VtmPairs",
    "hard_negative_weights",
    "hard_negatives",
    "vtm_labels",
    "vtm_loss",
    "vtm_pairs",
]

WEIGHT_SHIFT = 1e-4  # upstream adds it to the logits before the softmax (a no-op for the softmax up to rounding)
NAN_WEIGHT = 1e-2  # upstream's replacement for NaN / inf weights


@dataclass(frozen=True)
class HardNegatives:
    """One hard negative per sample of the local batch.

    Attributes:
        video_for_text: (B,) long, the negative video paired with text i.
        text_for_video: (B,) long, the negative text paired with video i.
    """

    video_for_text: Tensor
    text_for_video: Tensor


@dataclass(frozen=True)
class VtmPairs:
    """Which video and which text make each of the 3B fused pairs (positives, negative videos, negative texts).

    Attributes:
        video: (3B,) long, rows of the video tokens: `[0..B), video_for_text, [0..B)`.
        text: (3B,) long, rows of the text tokens and their padding mask: `[0..B), [0..B), text_for_video`.
    """

    video: Tensor
    text: Tensor


@torch.no_grad()
def hard_negative_weights(sim_v2t: Tensor, sim_t2v: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """The sampling weights of the hard negatives, in upstream's order of operations.

    Args:
        sim_v2t: (B, B) video-to-text logits (cosine / temp).
        sim_t2v: (B, B) text-to-video logits (the transpose).
        idx: (B,) sample ids; pairs with equal ids are never negatives.

    Returns:
        `(W_v2t, W_t2v)`, each (B, B), rows not normalised after masking (multinomial does not need it).
    """
    weights_v2t = F.softmax(sim_v2t + WEIGHT_SHIFT, dim=1)  # (B, B)
    weights_t2v = F.softmax(sim_t2v + WEIGHT_SHIFT, dim=1)  # (B, B)
    same = torch.eq(idx.view(-1, 1), idx.view(1, -1))  # (B, B), symmetric, diagonal True
    weights_v2t = weights_v2t.masked_fill(same, 0)
    weights_t2v = weights_t2v.masked_fill(same, 0)
    weights_v2t = torch.nan_to_num(weights_v2t, nan=NAN_WEIGHT, posinf=NAN_WEIGHT, neginf=NAN_WEIGHT)
    weights_t2v = torch.nan_to_num(weights_t2v, nan=NAN_WEIGHT, posinf=NAN_WEIGHT, neginf=NAN_WEIGHT)
    return weights_v2t, weights_t2v


def _draw(weights: Tensor, generator: torch.Generator) -> Tensor:
    """One index per row of `weights` (B, B), drawn on the generator's device; (B,) long on the weights' device."""
    if not bool((weights.sum(dim=1) > 0).all()):
        raise ValueError("a sample has no hard-negative candidate: every sample of the batch shares its id")
    drawn = torch.multinomial(weights.to(generator.device), 1, generator=generator)  # (B, 1)
    return drawn.squeeze(1).to(weights.device)


@torch.no_grad()
def hard_negatives(sim_v2t: Tensor, sim_t2v: Tensor, idx: Tensor, *, generator: torch.Generator) -> HardNegatives:
    """Draw one hard negative video per text and one hard negative text per video.

    Stream-identical to upstream when `generator` is the default generator of the device upstream drew on
    (`torch.cuda.default_generators[i]` for CUDA similarities, `torch.default_generator` on CPU) in the same state:
    two batched `multinomial(·, 1)` calls, videos for the texts first. A generator on another device than the
    similarities also works (the weights move to it; the result comes back).

    Args:
        sim_v2t: (B, B) video-to-text logits of the local batch (`vtc_similarity`).
        sim_t2v: (B, B) text-to-video logits (its transpose).
        idx: (B,) sample ids; negatives never share the anchor's id.
        generator: The only source of randomness.

    Returns:
        `HardNegatives` with (B,) long indices into the local batch.

    Raises:
        ValueError: a row has no candidate (all samples of the batch share one id).
    """
    weights_v2t, weights_t2v = hard_negative_weights(sim_v2t, sim_t2v, idx)  # (B, B) each
    video_for_text = _draw(weights_t2v, generator)  # (B,); upstream draws this one first
    text_for_video = _draw(weights_v2t, generator)  # (B,)
    return HardNegatives(video_for_text=video_for_text, text_for_video=text_for_video)


def vtm_pairs(negatives: HardNegatives) -> VtmPairs:
    """Row indices of the 3B fused pairs, in upstream's order: positives, negative videos, negative texts.

    `vision_embeds[pairs.video]` equals upstream's `cat([v, v[video_for_text], v])` (and likewise for the texts and
    their padding masks). The forward values are identical; gradients reach the same rows, summed in another order.

    Args:
        negatives: The draws of `hard_negatives`, (B,) each.

    Returns:
        `VtmPairs` with (3B,) long indices on the negatives' device.
    """
    local = torch.arange(negatives.video_for_text.shape[0], device=negatives.video_for_text.device)  # (B,)
    video = torch.cat([local, negatives.video_for_text, local])  # (3B,)
    text = torch.cat([local, local, negatives.text_for_video])  # (3B,)
    return VtmPairs(video=video, text=text)


def vtm_labels(batch: int, device: torch.device | str | None = None) -> Tensor:
    """(3B,) long: 1 for the B positives, then 0 for the 2B negatives (the order of `vtm_pairs`)."""
    labels = torch.zeros(3 * batch, dtype=torch.long, device=device)  # (3B,)
    labels[:batch] = 1
    return labels


def vtm_loss(itm_logits: Tensor) -> Tensor:
    """Cross-entropy of the matching head on the 3B pairs laid out by `vtm_pairs`.

    Args:
        itm_logits: (3B, 2) logits, class 1 = match; rows ordered positives, negative videos, negative texts.

    Returns:
        A 0-D tensor, the mean over the 3B pairs.
    """
    if itm_logits.ndim != 2 or itm_logits.shape[1] != 2 or itm_logits.shape[0] % 3:
        raise ValueError(f"expected (3B, 2) logits, got {tuple(itm_logits.shape)}")
    return F.cross_entropy(itm_logits, vtm_labels(itm_logits.shape[0] // 3, itm_logits.device))
