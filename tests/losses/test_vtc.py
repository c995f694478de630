"""VTC against a brute-force reference written with explicit loops, and against the official operation order."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from umt_cli.losses.vtc import vtc_loss, vtc_similarity, vtc_targets


def brute_force_vtc(vision: torch.Tensor, text: torch.Tensor, idx: torch.Tensor, temp: float) -> float:
    """The VTC definition, one row at a time, in float64: positives share an id, spread evenly over each row."""
    bg, tp, _ = vision.shape
    v = [[vision[m, f].double() / vision[m, f].double().norm() for f in range(tp)] for m in range(bg)]
    t = [text[n].double() / text[n].double().norm() for n in range(bg)]
    sim = [[sum(float(v[m][f] @ t[n]) for f in range(tp)) / tp / temp for n in range(bg)] for m in range(bg)]

    def soft_cross_entropy(rows: list[list[float]]) -> float:
        total = 0.0
        for m, row in enumerate(rows):
            log_z = math.log(sum(math.exp(s) for s in row))
            positives = [n for n in range(bg) if idx[n] == idx[m]]
            total += -sum((row[n] - log_z) / len(positives) for n in positives)
        return total / bg

    transposed = [[sim[n][m] for n in range(bg)] for m in range(bg)]
    return 0.5 * (soft_cross_entropy(sim) + soft_cross_entropy(transposed))


@pytest.mark.parametrize("tp", [1, 3])
def test_matches_the_brute_force_definition_with_repeated_ids(tp):
    generator = torch.Generator().manual_seed(tp)
    vision = torch.randn(6, tp, 5, generator=generator)  # (Bg, Tp, E), raw: normalised inside
    text = torch.randn(6, 5, generator=generator) * 3.0
    idx = torch.tensor([4, 7, 4, 9, 7, 4])  # rows with 3, 2 and 1 positives
    loss = vtc_loss(vision, text, idx, torch.tensor(0.1))
    assert loss.item() == pytest.approx(brute_force_vtc(vision, text, idx, 0.1), rel=1e-5)


def test_unique_ids_reduce_to_symmetric_infonce():
    generator = torch.Generator().manual_seed(0)
    vision, text = torch.randn(5, 1, 8, generator=generator), torch.randn(5, 8, generator=generator)
    sim = F.normalize(vision[:, 0], dim=-1) @ F.normalize(text, dim=-1).T / 0.07
    target = torch.arange(5)
    expected = (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2
    torch.testing.assert_close(vtc_loss(vision, text, torch.arange(5) + 10, torch.tensor(0.07)), expected)


def test_follows_the_official_operation_order_bit_for_bit():
    # get_sim: normalize, einsum("mld,nd->mln").mean(1) / temp; targets eq(idx)/row sum for both directions
    generator = torch.Generator().manual_seed(1)
    vision, text = torch.randn(16, 4, 32, generator=generator), torch.randn(16, 32, generator=generator)
    idx, temp = torch.randint(0, 6, (16,), generator=generator), torch.tensor(0.07)
    v, t = F.normalize(vision, dim=-1), F.normalize(text, dim=-1)
    sim = torch.einsum("mld,nd->mln", v, t).mean(1) / temp
    eq = torch.eq(idx.view(-1, 1), idx.view(-1, 1).T).float()
    targets = eq / eq.sum(1, keepdim=True)
    v2t = -torch.sum(F.log_softmax(sim, dim=1) * targets, dim=1).mean()
    t2v = -torch.sum(F.log_softmax(sim.T, dim=1) * targets, dim=1).mean()
    assert torch.equal(vtc_loss(vision, text, idx, temp), (v2t + t2v) / 2)
    s_v2t, s_t2v = vtc_similarity(vision, text, temp)
    assert torch.equal(s_v2t, sim) and torch.equal(s_t2v, sim.T)


def test_targets_rows_sum_to_one_and_are_symmetric():
    targets = vtc_targets(torch.tensor([1, 2, 1, 1]))
    assert torch.equal(targets.sum(1), torch.ones(4))
    assert torch.equal(targets, targets.T)
    assert targets[0].tolist() == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3])
    assert targets[1].tolist() == [0, 1, 0, 0]


def test_gradient_reaches_projections_and_temperature():
    generator = torch.Generator().manual_seed(2)
    vision = torch.randn(4, 1, 6, generator=generator, requires_grad=True)
    text = torch.randn(4, 6, generator=generator, requires_grad=True)
    temp = torch.tensor(0.07, requires_grad=True)
    vtc_loss(vision, text, torch.arange(4), temp).backward()
    assert vision.grad.abs().sum() > 0 and text.grad.abs().sum() > 0 and temp.grad.abs() > 0


def test_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="disagree on Bg"):
        vtc_loss(torch.randn(4, 1, 6), torch.randn(3, 6), torch.arange(4), torch.tensor(0.07))
    with pytest.raises(ValueError, match="expected vision"):
        vtc_loss(torch.randn(4, 6), torch.randn(4, 6), torch.arange(4), torch.tensor(0.07))
