"""MLM loss: cross-entropy averaged over the selected positions only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from umt_cli.losses.mlm import mlm_loss


def test_mean_over_selected_positions_only():
    logits = torch.zeros(1, 3, 4)  # uniform over V = 4 at every position
    logits[0, 1, 2] = 10.0  # a confident right answer at position 1
    labels = torch.tensor([[0, 2, -100]])
    per_position = [math.log(4), -math.log(math.exp(10) / (math.exp(10) + 3))]
    assert mlm_loss(logits, labels).item() == pytest.approx(sum(per_position) / 2, rel=1e-6)


def test_unselected_logits_do_not_matter():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=generator)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 4] = 3, 7
    changed = logits.clone()
    changed[0, 0] += 100.0
    assert torch.equal(mlm_loss(logits, labels), mlm_loss(changed, labels))


def test_equals_the_official_flattened_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 8, 50, generator=generator)
    labels = torch.randint(0, 50, (4, 8), generator=generator)
    labels[torch.rand(4, 8, generator=generator) < 0.5] = -100
    expected = torch.nn.CrossEntropyLoss()(logits.view(-1, 50), labels.view(-1))
    assert torch.equal(mlm_loss(logits, labels), expected)
    assert torch.equal(expected, F.cross_entropy(logits.view(-1, 50), labels.view(-1)))


def test_nothing_selected_is_zero_not_upstreams_nan():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    loss = mlm_loss(logits, torch.full((1, 3), -100))
    assert loss.item() == 0.0  # upstream: NaN, which would stop the run (or poison the weights)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_the_mean_is_bit_identical_to_upstreams_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 12, 50, generator=generator)
    labels = torch.randint(50, (4, 12), generator=generator)
    labels[torch.rand(4, 12, generator=generator) < 0.6] = -100
    assert torch.equal(
        mlm_loss(logits, labels), torch.nn.functional.cross_entropy(logits.view(-1, 50), labels.view(-1))
    )


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        mlm_loss(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
