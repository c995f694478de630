"""Masker properties: exact counts, seeding, per-sample independence, attention weighting, upstream stream identity."""

from __future__ import annotations

import itertools

import pytest
import torch

from umt_cli.masking.functional import (
    attention_visible,
    invalid_attention_rows,
    random_visible,
    tube_visible,
    visible_per_frame,
)
from umt_cli.utils.seed import generator_for

RATIOS = [0.0, 0.5, 0.75, 0.8, 0.9]


def gen(*keys: int) -> torch.Generator:
    return generator_for(*keys)


def softmax_attention(batch: int, frames: int, hw: int, seed: int = 0) -> torch.Tensor:
    logits = torch.randn(batch, frames, hw, generator=gen(seed)) * 2
    return logits.softmax(dim=-1)  # (B, T, HW)


def official_visible(attn: torch.Tensor, mask_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """The official engine's attention masking, transcribed: True = masked there, inverted here."""
    batch = attn.shape[0]
    attn = attn.flatten(0, 1).float()
    bt, n = attn.shape
    n_vis = n - int(n * mask_ratio)
    importance = torch.multinomial(attn, n, generator=generator)
    bool_masked_pos = torch.ones((bt, n))
    pos1 = torch.arange(bt).view(-1, 1).repeat(1, n_vis)
    pos2 = importance[:, :n_vis]
    bool_masked_pos[pos1, pos2] = 0
    return ~bool_masked_pos.view(batch, -1).to(torch.bool)


def test_visible_per_frame_matches_the_official_rounding():
    assert visible_per_frame(196, 0.8) == 40
    assert visible_per_frame(196, 0.5) == 98
    assert visible_per_frame(1568, 0.8) == 314
    assert visible_per_frame(196, 0.0) == 196
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError):
            visible_per_frame(196, bad)


@pytest.mark.parametrize("ratio", RATIOS)
def test_attention_keeps_exactly_n_keep_per_frame(ratio):
    attn = softmax_attention(3, 4, 196)
    visible = attention_visible(attn, ratio, generators=gen(1))
    assert visible.dtype == torch.bool and visible.shape == (3, 4 * 196)
    assert (visible.view(3, 4, 196).sum(-1) == visible_per_frame(196, ratio)).all()


def test_attention_counts_for_the_released_ratios():
    attn = softmax_attention(2, 8, 196)
    assert (attention_visible(attn, 0.8, generators=gen(0)).view(2, 8, 196).sum(-1) == 40).all()
    assert (attention_visible(attn, 0.5, generators=gen(0)).view(2, 8, 196).sum(-1) == 98).all()


def test_attention_same_seed_same_mask_different_seed_different_mask():
    attn = softmax_attention(2, 4, 196)
    first = attention_visible(attn, 0.8, generators=gen(5))
    assert torch.equal(first, attention_visible(attn, 0.8, generators=gen(5)))
    assert not torch.equal(first, attention_visible(attn, 0.8, generators=gen(6)))


def test_attention_is_stream_identical_to_the_official_algorithm():
    attn = softmax_attention(3, 4, 196).half()  # upstream fed fp16 attention; both sides sample on its fp32 cast
    ours = attention_visible(attn, 0.8, generators=gen(11))
    assert torch.equal(ours, official_visible(attn, 0.8, gen(11)))


def test_per_sample_generators_match_the_official_algorithm_on_each_sample():
    attn = softmax_attention(3, 4, 196)
    ours = attention_visible(attn, 0.8, generators=[gen(7, b) for b in range(3)])
    for b in range(3):
        assert torch.equal(ours[b : b + 1], official_visible(attn[b : b + 1], 0.8, gen(7, b)))


@pytest.mark.parametrize("kind", ["attention", "tube", "random"])
def test_a_samples_mask_does_not_depend_on_its_batch(kind):
    attn = softmax_attention(3, 4, 49)

    def masks(indices: list[int]) -> torch.Tensor:
        generators = [gen(3, b) for b in indices]
        if kind == "attention":
            return attention_visible(attn[indices], 0.75, generators=generators)
        make = tube_visible if kind == "tube" else random_visible
        return make(len(indices), 4, 49, 0.75, generators=generators)

    batch = masks([0, 1, 2])
    assert torch.equal(masks([1])[0], batch[1])
    assert torch.equal(masks([2, 0])[0], batch[2])


def test_one_generator_per_sample_is_required():
    attn = softmax_attention(3, 2, 16)
    with pytest.raises(ValueError, match="one generator per sample"):
        attention_visible(attn, 0.5, generators=[gen(0), gen(1)])
    with pytest.raises(ValueError, match="one generator per sample"):
        tube_visible(3, 2, 16, 0.5, generators=[gen(0)])


def test_higher_attention_is_kept_more_often():
    hw, draws = 20, 4000
    attn = (torch.arange(hw, dtype=torch.float32) + 1).expand(1, draws, hw)  # attention ∝ position index
    rates = attention_visible(attn, 0.75, generators=gen(2)).view(draws, hw).float().mean(0)  # keep 5 of 20
    top, bottom = rates[-2:].mean(), rates[:2].mean()  # top and bottom deciles
    assert top > 3 * bottom
    assert (rates[5:] - rates[:-5] > 0).all()  # increasing, allowing sampling noise between neighbours


def inclusion_probabilities(weights: list[float], keep: int) -> list[float]:
    """P(token i among the first `keep` of a weighted draw without replacement), by enumerating ordered draws."""
    probs = [0.0] * len(weights)
    for order in itertools.permutations(range(len(weights)), keep):
        p, left = 1.0, sum(weights)
        for i in order:
            p *= weights[i] / left
            left -= weights[i]
        for i in order:
            probs[i] += p
    return probs


def test_keep_rates_match_exact_inclusion_probabilities():
    weights, draws = [1.0, 2.0, 3.0, 4.0], 20000
    attn = torch.tensor(weights).expand(1, draws, 4)
    rates = attention_visible(attn, 0.5, generators=gen(4)).view(draws, 4).float().mean(0)
    exact = torch.tensor(inclusion_probabilities(weights, 2))
    assert exact.sum().item() == pytest.approx(2.0)
    assert torch.allclose(rates, exact, atol=0.015)  # ~4 standard errors


def test_invalid_rows_are_detected():
    attn = softmax_attention(1, 5, 8)
    attn[0, 1, 3] = float("nan")
    attn[0, 2] = 0.0
    attn[0, 3, 0] = float("inf")
    attn[0, 4, 2] = -0.5
    assert invalid_attention_rows(attn).tolist() == [[False, True, True, True, True]]


def test_invalid_rows_fall_back_to_uniform():
    attn = softmax_attention(2, 3, 16)
    attn[0, 1] = float("nan")
    attn[1, 2] = 0.0
    uniform = attn.clone()
    uniform[0, 1] = 1.0
    uniform[1, 2] = 1.0
    visible = attention_visible(attn, 0.75, generators=gen(9))
    assert torch.equal(visible, attention_visible(uniform, 0.75, generators=gen(9)))
    assert (visible.view(2, 3, 16).sum(-1) == 4).all()


def test_all_zero_frames_are_sampled_uniformly():
    draws = 4000
    rates = attention_visible(torch.zeros(1, draws, 8), 0.75, generators=gen(8)).view(draws, 8).float().mean(0)
    assert torch.allclose(rates, torch.full((8,), 0.25), atol=0.03)


@pytest.mark.parametrize("ratio", RATIOS)
def test_tube_keeps_the_same_positions_in_every_frame(ratio):
    visible = tube_visible(3, 4, 196, ratio, generators=gen(1)).view(3, 4, 196)
    assert (visible.sum(-1) == visible_per_frame(196, ratio)).all()
    assert (visible == visible[:, :1]).all()


def test_tube_seeding_and_uniformity():
    first = tube_visible(2, 4, 196, 0.8, generators=gen(5))
    assert torch.equal(first, tube_visible(2, 4, 196, 0.8, generators=gen(5)))
    assert not torch.equal(first, tube_visible(2, 4, 196, 0.8, generators=gen(6)))
    assert not torch.equal(first[0], first[1])  # one generator still gives each sample its own tube
    rates = tube_visible(2000, 1, 10, 0.7, generators=gen(7)).float().mean(0)
    assert torch.allclose(rates, torch.full((10,), 0.3), atol=0.05)


@pytest.mark.parametrize("ratio", RATIOS)
def test_random_keeps_n_minus_int_n_ratio_per_sample(ratio):
    visible = random_visible(4, 8, 196, ratio, generators=gen(2))
    assert visible.shape == (4, 1568)
    assert (visible.sum(-1) == visible_per_frame(1568, ratio)).all()


def test_random_per_frame_counts_vary_and_seeding():
    visible = random_visible(4, 8, 196, 0.8, generators=gen(3))
    assert (visible.sum(-1) == 314).all()
    assert visible.view(4, 8, 196).sum(-1).unique().numel() > 1
    assert torch.equal(visible, random_visible(4, 8, 196, 0.8, generators=gen(3)))
    assert not torch.equal(visible, random_visible(4, 8, 196, 0.8, generators=gen(4)))


def test_masks_are_built_on_the_generators_device_by_default():
    assert tube_visible(1, 2, 4, 0.5, generators=gen(0)).device.type == "cpu"
    assert random_visible(1, 2, 4, 0.5, generators=[gen(0)], device="cpu").device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_generators_build_cuda_masks():
    generator = torch.Generator(device="cuda")
    generator.manual_seed(0)
    attn = softmax_attention(2, 4, 196).cuda()
    assert attention_visible(attn, 0.8, generators=generator).device.type == "cuda"
    assert tube_visible(2, 4, 196, 0.8, generators=generator).device.type == "cuda"
    with pytest.raises(ValueError, match="generator on"):
        attention_visible(attn, 0.8, generators=gen(0))
