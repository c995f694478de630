"""UTA loss kinds against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from umt_cli.losses.uta import uta_loss

# One layer, one sample, two tokens, two channels; all rows are unit vectors.
STUDENT = torch.tensor([[[[1.0, 0.0], [0.6, 0.8]]]])  # (K=1, B=1, Nv=2, D=2)
TEACHER = torch.tensor([[[[0.6, 0.8], [0.6, 0.8]]]])


def test_cosine_is_the_official_l2_formula():
    # dots 0.6 and 1.0 -> (2 - 1.2 + 2 - 2) / 2
    assert uta_loss(STUDENT, TEACHER).item() == pytest.approx(0.4)
    assert uta_loss(STUDENT, TEACHER, kind="cosine").item() == pytest.approx(0.4)


def test_mse_is_the_element_wise_mean():
    # differences (0.4, -0.8), (0, 0) -> (0.16 + 0.64) / 4; equals cosine / D on unit vectors
    assert uta_loss(STUDENT, TEACHER, kind="mse").item() == pytest.approx(0.2)


def test_smooth_l1_with_beta():
    # |d| = 0.4, 0.8, 0, 0.  beta 1: 0.5 d^2 -> (0.08 + 0.32) / 4
    assert uta_loss(STUDENT, TEACHER, kind="smooth_l1").item() == pytest.approx(0.1)
    # beta 0.5: 0.4 < beta -> 0.5 * 0.16 / 0.5 = 0.16; 0.8 >= beta -> 0.8 - 0.25 = 0.55
    assert uta_loss(STUDENT, TEACHER, kind="smooth_l1", beta=0.5).item() == pytest.approx(0.1775)


def test_normalize_l2_normalises_both_sides_first():
    student = torch.tensor([[[[3.0, 4.0]]]])  # -> (0.6, 0.8)
    teacher = torch.tensor([[[[0.0, 2.0]]]])  # -> (0, 1)
    assert uta_loss(student, teacher).item() == pytest.approx(2 - 2 * 8.0)  # raw dot product 8
    assert uta_loss(student, teacher, normalize=True).item() == pytest.approx(0.4)  # 2 - 2 * 0.8
    assert uta_loss(student, teacher, kind="mse", normalize=True).item() == pytest.approx(0.2)  # (0.36 + 0.04) / 2


def test_averages_over_k_b_and_tokens():
    student = torch.nn.functional.normalize(torch.randn(3, 2, 5, 8), dim=-1)
    teacher = torch.nn.functional.normalize(torch.randn(3, 2, 5, 8), dim=-1)
    per_token = 2 - 2 * (student * teacher).sum(-1)  # (K, B, Nv)
    assert torch.equal(uta_loss(student, teacher), per_token.mean())
    assert uta_loss(student, teacher, kind="mse").item() == pytest.approx(per_token.mean().item() / 8, rel=1e-5)


def test_rejects_unknown_kinds_and_mismatched_shapes():
    with pytest.raises(ValueError, match="unknown loss.kind .l1.; valid: cosine, mse, smooth_l1"):
        uta_loss(STUDENT, TEACHER, kind="l1")
    with pytest.raises(ValueError, match="shapes differ"):
        uta_loss(STUDENT, TEACHER[..., :1, :])
