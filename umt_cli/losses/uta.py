"""Unmasked token alignment (UTA): student tokens regress the teacher's features on the visible tokens."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

__all__ = ["UtaKind", "uta_loss"]

UtaKind = Literal["cosine", "mse", "smooth_l1"]


def uta_loss(
    student: Tensor,
    teacher: Tensor,
    *,
    kind: UtaKind = "cosine",
    normalize: bool = False,
    beta: float = 1.0,
) -> Tensor:
    """UTA loss between aligned student and teacher tokens.

    - `cosine` (the official `l2`, default): `mean(2 - 2 * <s, t>)` over K, B and Nv, computed as upstream does; on
      unit vectors it is the squared distance summed over channels.
    - `mse`: element-wise mean of `(s - t)^2` (equal to `cosine` / Dt on unit vectors).
    - `smooth_l1`: element-wise smooth L1 with threshold `beta`.

    Stage 1 normalises in the student head and the teacher (`normalize=False`); stage 2 l2-normalises both sides
    here (`normalize=True`).

    Args:
        student: (K, B, Nv, Dt) student head outputs (any leading shape works).
        teacher: same shape, the teacher targets of the same tokens.
        kind: which distance.
        normalize: l2-normalise both sides over the last dim first.
        beta: the smooth L1 threshold (ignored by the other kinds).

    Returns:
        A 0-D tensor.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher shapes differ: {tuple(student.shape)} vs {tuple(teacher.shape)}")
    if normalize:
        student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    if kind == "cosine":
        return (2 - 2 * (student * teacher).sum(dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(student, teacher, beta=beta)
    raise ValueError(f"unknown UTA loss kind {kind!r}; expected 'cosine', 'mse' or 'smooth_l1'")
