"""Batched ITM re-ranking: the candidates follow the ranking rule, chunked scoring equals a gather of the full ITM
matrix whatever the batch size (with ceil(pairs / batch) real calls), and the model scorer equals `match_logits` on
one pair at a time."""

from __future__ import annotations

import math

import pytest
import torch

from umt_cli.evaluation.rerank import VIDEO_SIDE, match_scorer, pair_count, rerank_scores, topk_pairs
from umt_cli.models.config import TextConfig, VideoTextConfig, VisionConfig, build_video_text


def tied_scores(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, cols, generator=g).round(decimals=1)  # ties in most rows


class LookupScorer:
    """A fake `score_pairs`: looks pairs up in a fixed matrix and records every call."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix
        self.calls: list[tuple[list[int], list[int]]] = []

    def __call__(self, query_rows: torch.Tensor, gallery_rows: torch.Tensor) -> torch.Tensor:
        self.calls.append((query_rows.tolist(), gallery_rows.tolist()))
        return self.matrix[query_rows, gallery_rows]


class Counter:
    def __init__(self) -> None:
        self.done = 0

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n


@pytest.mark.parametrize(("queries", "gallery", "k"), [(6, 9, 4), (5, 3, 8), (1, 7, 7), (8, 8, 1)])
def test_topk_pairs_are_the_best_by_score_then_index(queries, gallery, k):
    itc = tied_scores(queries, gallery, seed=queries)
    expected = [sorted(range(gallery), key=lambda j: (-row[j], j))[:k] for row in itc.tolist()]
    assert topk_pairs(itc, k).tolist() == expected


@pytest.mark.parametrize("group_by", ["query", "gallery"])
@pytest.mark.parametrize(("queries", "gallery", "k"), [(6, 9, 4), (5, 3, 8), (7, 13, 5)])
def test_chunked_scores_equal_a_gather_of_the_full_matrix(queries, gallery, k, group_by):
    itc = tied_scores(queries, gallery, seed=1)
    itm = torch.randn(queries, gallery, generator=torch.Generator().manual_seed(2))
    pairs = queries * min(k, gallery)
    expected = itm.gather(1, topk_pairs(itc, k))  # (Q, k')
    for batch_size in (1, 3, pairs, pairs + 5):
        scorer, counter = LookupScorer(itm), Counter()
        got = rerank_scores(scorer, itc, k, batch_size=batch_size, group_by=group_by, progress=counter)
        assert torch.equal(got, expected), batch_size
        assert len(scorer.calls) == math.ceil(pairs / batch_size)
        assert all(len(q) <= batch_size for q, _ in scorer.calls)
        assert counter.done == pairs == pair_count(itc, k)
        scored = sorted((q, g) for rows, cols in scorer.calls for q, g in zip(rows, cols))
        assert len(set(scored)) == len(scored) == pairs  # every pair exactly once


@pytest.mark.parametrize("group_by", ["query", "gallery"])
def test_pairs_sharing_the_grouped_side_are_adjacent(group_by):
    itc = tied_scores(10, 6, seed=3)
    scorer = LookupScorer(torch.zeros(10, 6))
    rerank_scores(scorer, itc, 4, batch_size=7, group_by=group_by)
    side = [q if group_by == "query" else g for rows, cols in scorer.calls for q, g in zip(rows, cols)]
    assert side == sorted(side)  # one run per query / gallery item across all chunks


def test_a_scorer_returning_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match="score_pairs returned shape"):
        rerank_scores(lambda q, g: torch.zeros(len(q) + 1), torch.rand(3, 4), 2, batch_size=2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        rerank_scores(LookupScorer(torch.zeros(2, 2)), torch.rand(2, 2), 1, batch_size=0)
    with pytest.raises(ValueError, match="group_by"):
        rerank_scores(LookupScorer(torch.zeros(2, 2)), torch.rand(2, 2), 1, batch_size=1, group_by="video")
    with pytest.raises(ValueError, match="k must be"):
        topk_pairs(torch.rand(2, 2), 0)


# --- the model scorer ------------------------------------------------------------------------------------------------


def tiny_model():
    torch.manual_seed(0)
    config = VideoTextConfig(
        vision=VisionConfig(dim=64, depth=2, num_heads=4, patch_size=16, img_size=32, num_frames=2),
        text=TextConfig(vocab_size=50, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, fusion_layer=1),
        embed_dim=16,
    )
    return build_video_text(config).eval()


def features(model, num_texts: int, num_videos: int):
    """Text hidden states with padded captions of varied length, and vision tokens, from the model itself."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 50, (num_texts, 8), generator=g)
    lengths = torch.randint(2, 9, (num_texts,), generator=g)
    mask = (torch.arange(8)[None, :] < lengths[:, None]).long()  # (Nt, L)
    video = torch.randn(num_videos, 3, 2, 32, 32, generator=g)
    with torch.no_grad():
        text_hidden, text_embed = model.encode_text(ids * mask, mask)
        vision_tokens, frame_embed = model.encode_video(video)
    itc = (text_embed @ frame_embed.mean(1).T).round(decimals=1)  # (Nt, Nv), rounded so ties occur
    return text_hidden, mask, vision_tokens, itc


@pytest.mark.parametrize("direction", ["t2v", "v2t"])
def test_model_scorer_equals_match_logits_one_pair_at_a_time(direction):
    model = tiny_model()
    text_hidden, mask, vision_tokens, itc_t2v = features(model, num_texts=7, num_videos=5)
    itc = itc_t2v if direction == "t2v" else itc_t2v.T.contiguous()
    k = 3
    scorer = match_scorer(model, text_hidden, mask, vision_tokens, direction)
    got = rerank_scores(scorer, itc, k, batch_size=4, group_by=VIDEO_SIDE[direction])  # (Q, k')
    index = topk_pairs(itc, k)
    for q in range(len(itc)):
        for slot, item in enumerate(index[q].tolist()):
            t, v = (q, item) if direction == "t2v" else (item, q)
            with torch.no_grad():
                one = model.match_logits(text_hidden[t : t + 1], mask[t : t + 1], vision_tokens[v : v + 1])
            assert float(got[q, slot]) == pytest.approx(float(one), abs=1e-5), (q, slot)


@pytest.mark.parametrize("direction", ["t2v", "v2t"])
def test_model_scorer_passes_each_video_once_per_chunk(direction, monkeypatch):
    model = tiny_model()
    text_hidden, mask, vision_tokens, itc_t2v = features(model, num_texts=6, num_videos=4)
    itc = itc_t2v if direction == "t2v" else itc_t2v.T.contiguous()
    seen = []
    original = model.match_logits

    def spy(hidden, attention_mask, tokens, vision_rows=None):
        distinct = len(torch.unique(tokens.flatten(1), dim=0))  # different videos have different tokens
        seen.append((len(hidden), len(tokens), distinct))
        return original(hidden, attention_mask, tokens, vision_rows=vision_rows)

    monkeypatch.setattr(model, "match_logits", spy)
    rerank_scores(match_scorer(model, text_hidden, mask, vision_tokens, direction), itc, 3, batch_size=5,
                  group_by=VIDEO_SIDE[direction])  # fmt: skip
    assert sum(pairs for pairs, _, _ in seen) == pair_count(itc, 3)
    assert all(videos == distinct for _, videos, distinct in seen)  # no video token set sent twice
