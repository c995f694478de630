"""Masked-language-modelling corruption of token ids (BERT's 80/10/10 rule), drawn in the official order.

Follows `multi_modality/models/criterions.py::MLMLoss.mask` with `probability_matrix = full((B, L), prob)`:

1. `selected = bernoulli(full((B, L), prob))` — every position, then `[PAD]` and `[CLS]` are cleared **after** the
   draw (`[SEP]` stays selectable);
2. `labels` = a copy of the original ids with −100 where not selected;
3. `replaced = bernoulli(full((B, L), 0.8)) & selected` → `[MASK]`;
4. `randomised = bernoulli(full((B, L), 0.5)) & selected & ~replaced` → `randint(V, (B, L))` at those positions,
   uniform over the **whole** vocabulary (special ids included); the rest of the selected positions stay unchanged.

Upstream draws these four full-size tensors (float32 probabilities, long random ids) on the CPU global RNG whatever
the ids' device; passing `generator=torch.default_generator` in the same state reproduces its ids and labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["IGNORE_INDEX", "MlmBatch", "mlm_mask"]

IGNORE_INDEX = -100  # the label of positions the loss skips (cross-entropy's default ignore_index)
MASK_TOKEN_PROB = 0.8  # of the selected positions, the share replaced by [MASK]
RANDOM_TOKEN_PROB = 0.5  # of the selected positions not replaced, the share given a random id (10 % overall)


@dataclass(frozen=True)
class MlmBatch:
    """Corrupted ids and their MLM labels.

    Attributes:
        ids: (B, L) long, the input ids with the selected positions corrupted.
        labels: (B, L) long, the original id at selected positions, −100 elsewhere.
    """

    ids: Tensor
    labels: Tensor


def _bernoulli(shape: torch.Size, prob: float, generator: torch.Generator) -> Tensor:
    """(B, L) bool drawn on the generator's device from a float32 probability matrix (upstream's dtype)."""
    probs = torch.full(shape, prob, dtype=torch.float32, device=generator.device)  # (B, L)
    return torch.bernoulli(probs, generator=generator).bool()


def mlm_mask(
    ids: Tensor,
    *,
    vocab_size: int,
    mask_id: int,
    pad_id: int,
    cls_id: int,
    prob: float = 0.5,
    generator: torch.Generator,
) -> MlmBatch:
    """Select positions with probability `prob` and corrupt them 80 % [MASK] / 10 % random id / 10 % unchanged.

    Args:
        ids: (B, L) long token ids; not modified.
        vocab_size: V; random ids are uniform in [0, V).
        mask_id: The `[MASK]` id.
        pad_id: The `[PAD]` id; never selected.
        cls_id: The `[CLS]` id; never selected.
        prob: The selection probability (0.5 in UMT pre-training).
        generator: The only source of randomness; its device is where the draws happen (CPU for upstream parity).

    Returns:
        `MlmBatch` with (B, L) ids and labels on the device of `ids`.
    """
    if ids.ndim != 2:
        raise ValueError(f"expected ids (B, L), got {tuple(ids.shape)}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    shape, device = ids.shape, ids.device
    selected = _bernoulli(shape, prob, generator).to(device)  # (B, L); drawn before the special tokens are cleared
    selected &= (ids != pad_id) & (ids != cls_id)
    labels = ids.masked_fill(~selected, IGNORE_INDEX)  # (B, L)

    replaced = _bernoulli(shape, MASK_TOKEN_PROB, generator).to(device) & selected  # (B, L)
    corrupted = ids.masked_fill(replaced, mask_id)  # (B, L)

    randomised = _bernoulli(shape, RANDOM_TOKEN_PROB, generator).to(device) & selected & ~replaced  # (B, L)
    # drawn for every position, as upstream does, so the stream stays aligned with it
    random_ids = torch.randint(vocab_size, shape, dtype=torch.long, generator=generator, device=generator.device)
    corrupted = torch.where(randomised, random_ids.to(device), corrupted)  # (B, L)
    return MlmBatch(ids=corrupted, labels=labels)
