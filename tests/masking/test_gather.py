"""gather_visible keeps each sample's visible tokens in ascending order, with or without a leading K."""

from __future__ import annotations

import pytest
import torch

from umt_cli.masking.functional import attention_visible, random_visible
from umt_cli.masking.gather import gather_visible


def gen(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def test_keeps_ascending_positions_per_sample():
    batch, tokens, dim = 3, 12, 2
    x = torch.arange(batch * tokens * dim, dtype=torch.float32).view(batch, tokens, dim)  # (B, N, D)
    visible = random_visible(batch, 3, 4, 0.5, generators=gen(0))  # (B, 12), 6 kept each
    out = gather_visible(x, visible)
    assert out.shape == (batch, 6, dim)
    for b in range(batch):
        positions = visible[b].nonzero().squeeze(1)  # ascending
        assert torch.equal(out[b], x[b, positions])


def test_works_with_a_leading_k_dimension():
    k, batch, frames, hw, dim = 2, 3, 4, 16, 5
    x = torch.randn(k, batch, frames * hw, dim, generator=gen(1))  # (K, B, N, D)
    visible = attention_visible(torch.rand(batch, frames, hw, generator=gen(2)), 0.75, generators=gen(3))
    out = gather_visible(x, visible)
    assert out.shape == (k, batch, frames * 4, dim)
    for i in range(k):
        assert torch.equal(out[i], gather_visible(x[i], visible))


def test_gradients_flow_to_the_visible_tokens_only():
    x = torch.randn(2, 6, 3, requires_grad=True)
    visible = torch.tensor([[True, False, True, False, False, False], [False, False, False, True, True, False]])
    gather_visible(x, visible).sum().backward()
    assert torch.equal(x.grad[..., 0] != 0, visible)


def test_rejects_unequal_counts_non_bool_masks_and_bad_shapes():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="same number"):
        gather_visible(x, torch.tensor([[True, True, False, False], [True, False, False, False]]))
    with pytest.raises(ValueError, match="bool"):
        gather_visible(x, torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="need x"):
        gather_visible(x, torch.ones(2, 5, dtype=torch.bool))
