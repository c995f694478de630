"""VTM hard negatives (never a positive, weighted by similarity, upstream's draw order), pair layout and loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from umt_cli.losses.vtc import vtc_similarity
from umt_cli.losses.vtm import HardNegatives, hard_negative_weights, hard_negatives, vtm_labels, vtm_loss, vtm_pairs


def similarities(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    vision, text = torch.randn(batch, 1, 16, generator=generator), torch.randn(batch, 16, generator=generator)
    return vtc_similarity(vision, text, torch.tensor(0.07))


def test_never_draws_a_negative_with_the_same_id():
    idx = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])  # repeated ids: several positives per row
    same = idx.view(-1, 1) == idx.view(1, -1)
    rows = torch.arange(8)
    for seed in range(300):
        s_v2t, s_t2v = similarities(8, seed)
        drawn = hard_negatives(s_v2t, s_t2v, idx, generator=torch.Generator().manual_seed(seed))
        assert drawn.video_for_text.shape == drawn.text_for_video.shape == (8,)
        assert drawn.video_for_text.dtype == torch.long
        assert not same[rows, drawn.video_for_text].any()
        assert not same[rows, drawn.text_for_video].any()


def test_draws_follow_the_weights():
    # row i's peak: text (i + 1) % 4 for video i; video (i + 2) % 4 for text i (these logits are not transposes)
    s_v2t = torch.full((4, 4), -50.0)
    s_t2v = torch.full((4, 4), -50.0)
    for i in range(4):
        s_v2t[i, (i + 1) % 4] = 50.0
        s_t2v[i, (i + 2) % 4] = 50.0
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        drawn = hard_negatives(s_v2t, s_t2v, torch.arange(4), generator=generator)
        assert drawn.text_for_video.tolist() == [1, 2, 3, 0]
        assert drawn.video_for_text.tolist() == [2, 3, 0, 1]


def test_weights_follow_the_official_order():
    s_v2t, s_t2v = similarities(6, 3)
    idx = torch.tensor([5, 5, 6, 7, 6, 8])
    w_v2t, w_t2v = hard_negative_weights(s_v2t, s_t2v, idx)
    same = idx.view(-1, 1) == idx.view(1, -1)
    assert torch.equal(w_v2t, F.softmax(s_v2t + 1e-4, dim=1).masked_fill(same, 0))
    assert torch.equal(w_t2v, F.softmax(s_t2v + 1e-4, dim=1).masked_fill(same, 0))
    nan_logits = s_v2t.clone()
    nan_logits[1] = float("nan")  # a NaN row: its free entries become 1e-2, the masked ones stay 0
    w_nan, _ = hard_negative_weights(nan_logits, s_t2v, idx)
    assert torch.equal(w_nan[1], torch.tensor([0.0, 0.0, 1e-2, 1e-2, 1e-2, 1e-2]))


def reference_draws(s_v2t, s_t2v, idx, generator):
    """Upstream's VTM sampling as read in criterions.py: shift, softmax, mask, nan_to_num, texts' videos first."""
    w_v2t = F.softmax(s_v2t + 1e-4, dim=1)
    w_t2v = F.softmax(s_t2v + 1e-4, dim=1)
    mask = torch.eq(idx.view(-1, 1), idx.view(-1, 1).T).float().bool()
    w_v2t.masked_fill_(mask, 0)
    w_t2v.masked_fill_(mask, 0)
    w_v2t = torch.nan_to_num_(w_v2t, nan=1e-2, posinf=1e-2, neginf=1e-2)
    w_t2v = torch.nan_to_num_(w_t2v, nan=1e-2, posinf=1e-2, neginf=1e-2)
    video_neg = torch.multinomial(w_t2v, 1, generator=generator).squeeze()
    text_neg = torch.multinomial(w_v2t, 1, generator=generator).squeeze()
    return video_neg, text_neg


def test_same_draws_as_the_official_order_from_the_same_generator_state():
    idx = torch.tensor([0, 1, 0, 2, 1, 3, 4, 5, 6, 3])
    for seed in range(50):
        s_v2t, s_t2v = similarities(10, seed)
        ours = hard_negatives(s_v2t, s_t2v, idx, generator=torch.Generator().manual_seed(seed))
        video_neg, text_neg = reference_draws(s_v2t, s_t2v, idx, torch.Generator().manual_seed(seed))
        assert torch.equal(ours.video_for_text, video_neg)
        assert torch.equal(ours.text_for_video, text_neg)


def test_reproduces_the_global_rng_stream_with_the_default_generator():
    s_v2t, s_t2v = similarities(8, 9)
    idx = torch.arange(8) // 2
    torch.manual_seed(123)
    expected = reference_draws(s_v2t, s_t2v, idx, None)
    after_expected = torch.rand(2)
    torch.manual_seed(123)
    ours = hard_negatives(s_v2t, s_t2v, idx, generator=torch.default_generator)
    assert torch.equal(ours.video_for_text, expected[0]) and torch.equal(ours.text_for_video, expected[1])
    assert torch.equal(torch.rand(2), after_expected)  # the same number of draws was consumed


def test_a_batch_of_one_id_has_no_candidate():
    s_v2t, s_t2v = similarities(3, 0)
    with pytest.raises(ValueError, match="no hard-negative candidate"):
        hard_negatives(s_v2t, s_t2v, torch.tensor([7, 7, 7]), generator=torch.Generator().manual_seed(0))


def test_pairs_are_positives_then_negative_videos_then_negative_texts():
    negatives = HardNegatives(video_for_text=torch.tensor([2, 0, 1]), text_for_video=torch.tensor([1, 2, 0]))
    pairs = vtm_pairs(negatives)
    assert pairs.video.tolist() == [0, 1, 2, 2, 0, 1, 0, 1, 2]
    assert pairs.text.tolist() == [0, 1, 2, 0, 1, 2, 1, 2, 0]
    # indexing equals upstream's concatenation
    vision = torch.randn(3, 4, 5)
    assert torch.equal(vision[pairs.video], torch.cat([vision, vision[negatives.video_for_text], vision]))


def test_loss_labels_one_for_the_first_third():
    assert vtm_labels(2).tolist() == [1, 1, 0, 0, 0, 0]
    logits = torch.randn(6, 2)
    expected = F.cross_entropy(logits, torch.tensor([1, 1, 0, 0, 0, 0]))
    assert torch.equal(vtm_loss(logits), expected)
    confident = torch.tensor([[-20.0, 20.0]] * 2 + [[20.0, -20.0]] * 4)
    assert vtm_loss(confident).item() < 1e-8
    with pytest.raises(ValueError, match=r"expected \(3B, 2\)"):
        vtm_loss(torch.randn(5, 2))
