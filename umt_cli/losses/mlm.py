"""Masked language modelling (MLM) loss: cross-entropy over the selected positions only.

As upstream (`xbert.py::BertForMaskedLM.forward`): `CrossEntropyLoss()` on `logits.view(-1, V)` and
`labels.view(-1)`, i.e. the mean over the positions whose label is not −100 (computed as the sum over the count,
bit-identical). Unlike upstream, a batch with no selected position gives 0 rather than NaN (probability
`(1 − prob)^(selectable tokens)`: rare at real batch sizes, but a NaN would stop the run or poison the weights).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from umt_cli.masking.text import IGNORE_INDEX

__all__ = ["mlm_loss"]


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of the prediction head at the selected positions.

    Args:
        logits: (B, L, V) prediction-head outputs.
        labels: (B, L) long, the original ids at selected positions and −100 elsewhere (`mlm_mask`).

    Returns:
        A 0-D tensor (0, with a zero gradient, when no position is selected).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
