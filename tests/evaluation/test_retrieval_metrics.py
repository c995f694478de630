"""Retrieval metrics against brute-force Python references: rankings with ties, multi-caption ground truth in both
directions, ITM re-ranking, R@K / MdR / MnR, and the chance level of R@K by exact enumeration."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest
import torch

from umt_cli.evaluation.metrics import (
    chance_recall,
    ground_truth,
    ranking,
    ranks,
    rerank_ranks,
    reranking,
    retrieval_metrics,
    text_to_video_gt,
    video_to_text_gt,
)

SHAPES = [(1, 0), (7, 1), (12, 2), (25, 3)]  # (videos, seed)


# --- brute-force references: explicit loops over Python lists --------------------------------------------------------


def captions_per_video(num_videos: int, seed: int) -> list[int]:
    """Each video owns 1-3 captions; returns the video index of each caption."""
    rng = random.Random(seed)
    return [v for v in range(num_videos) for _ in range(rng.randint(1, 3))]


def tied_scores(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Random scores rounded to one decimal, so most rows hold ties."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, cols, generator=g) * 2 - 1).round(decimals=1)


def ref_order(row: list[float]) -> list[int]:
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def ref_rank(order: list[int], correct: set[int]) -> int:
    return next(position for position, item in enumerate(order) if item in correct)


def ref_ranks(scores: list[list[float]], correct: list[set[int]]) -> list[int]:
    return [ref_rank(ref_order(row), correct[q]) for q, row in enumerate(scores)]


def ref_rerank_order(itc: list[float], itm: list[float], k: int) -> list[int]:
    """Top-k by ITC, re-ordered by ITM (ties: ITC, then index), then the rest by ITC (ties: index)."""
    top = ref_order(itc)[:k]
    rest = [j for j in ref_order(itc) if j not in top]
    return sorted(top, key=lambda j: (-itm[j], -itc[j], j)) + rest


def ref_metrics(query_ranks: list[int]) -> dict[str, float]:
    one_based = [r + 1 for r in query_ranks]
    result = {f"R@{k}": 100.0 * sum(r <= k for r in one_based) / len(one_based) for k in (1, 5, 10)}
    result["MdR"] = statistics.median(one_based)  # the mean of the two middle values for an even count
    result["MnR"] = sum(one_based) / len(one_based)
    return result


def both_directions(num_videos: int, seed: int):
    """(name, scores, gt, correct sets) for T2V and V2T over the same captions and similarity matrix."""
    text_video = captions_per_video(num_videos, seed)
    sims = tied_scores(len(text_video), num_videos, seed)  # (Nt, Nv)
    t2v_correct = [{v} for v in text_video]
    v2t_correct = [{t for t, owner in enumerate(text_video) if owner == v} for v in range(num_videos)]
    yield "t2v", sims, text_to_video_gt(text_video, num_videos), t2v_correct
    yield "v2t", sims.T.contiguous(), video_to_text_gt(text_video, num_videos), v2t_correct


# --- ground truth ----------------------------------------------------------------------------------------------------


def test_ground_truth_matrices_mark_each_caption_and_its_video():
    text_video = captions_per_video(6, seed=4)
    t2v, v2t = text_to_video_gt(text_video, 6), video_to_text_gt(torch.tensor(text_video), 6)
    for t, v in itertools.product(range(len(text_video)), range(6)):
        assert bool(t2v[t, v]) == (text_video[t] == v)
        assert bool(v2t[v, t]) == (text_video[t] == v)


def test_ground_truth_names_an_owner_outside_the_gallery():
    with pytest.raises(ValueError, match="query row 2: gallery index 5"):
        ground_truth([0, 1, 5], 5)


# --- rankings and ranks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_videos", "seed"), SHAPES)
def test_ranking_sorts_by_score_then_ascending_index(num_videos, seed):
    scores = tied_scores(num_videos + 3, num_videos, seed)
    expected = [ref_order(row) for row in scores.tolist()]
    assert ranking(scores).tolist() == expected


@pytest.mark.parametrize(("num_videos", "seed"), SHAPES)
def test_ranks_equal_the_brute_force_reference_in_both_directions(num_videos, seed):
    for direction, scores, gt, correct in both_directions(num_videos, seed):
        got = ranks(scores, gt)
        assert got.tolist() == ref_ranks(scores.tolist(), correct), direction


@pytest.mark.parametrize(("num_videos", "seed"), SHAPES)
def test_metrics_equal_the_brute_force_reference(num_videos, seed):
    for direction, scores, gt, correct in both_directions(num_videos, seed):
        got = retrieval_metrics(ranks(scores, gt))
        expected = ref_metrics(ref_ranks(scores.tolist(), correct))
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (direction, key)
        assert got["count"] == len(correct)


def test_metrics_median_of_an_even_count_averages_the_middle_pair():
    got = retrieval_metrics(torch.tensor([0, 3, 9, 1]))  # one-based 1, 4, 10, 2
    assert got["MdR"] == 3.0
    assert got["MnR"] == 4.25
    assert (got["R@1"], got["R@5"], got["R@10"]) == (25.0, 75.0, 100.0)


def test_a_query_without_ground_truth_is_named():
    gt = torch.zeros(3, 4, dtype=torch.bool)
    gt[0, 1] = gt[2, 3] = True
    with pytest.raises(ValueError, match="query row 1"):
        ranks(torch.rand(3, 4), gt)


def test_nan_scores_are_refused():
    scores = torch.rand(2, 3)
    scores[1, 2] = float("nan")
    with pytest.raises(ValueError, match="row 1 has NaN"):
        ranks(scores, torch.ones(2, 3, dtype=torch.bool))


# --- re-ranking ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_videos", "seed"), SHAPES)
@pytest.mark.parametrize("k", [1, 3, 8, 100])
def test_rerank_ranks_equal_the_brute_force_reference(num_videos, seed, k):
    for direction, itc, gt, correct in both_directions(num_videos, seed):
        itm_full = tied_scores(*itc.shape, seed + 100)  # ties in ITM too, to exercise the ITC tie-break
        kk = min(k, itc.shape[1])
        shuffle = torch.randperm(kk, generator=torch.Generator().manual_seed(seed))  # any order is accepted
        index = torch.tensor([ref_order(row)[:kk] for row in itc.tolist()], dtype=torch.long)[:, shuffle]
        got = rerank_ranks(itc, itm_full.gather(1, index), index, gt)
        expected = [
            ref_rank(ref_rerank_order(itc_row, itm_row, kk), correct[q])
            for q, (itc_row, itm_row) in enumerate(zip(itc.tolist(), itm_full.tolist()))
        ]
        assert got.tolist() == expected, direction


def test_reranking_everything_equals_ranking_by_itm():
    g = torch.Generator().manual_seed(7)
    itc, itm = tied_scores(9, 11, 7), torch.randn(9, 11, generator=g)  # continuous ITM: no ties left to break
    index = ranking(itc)  # k = G
    assert torch.equal(reranking(itc, itm.gather(1, index), index), ranking(itm))


def test_reranking_one_item_keeps_the_itc_order():
    itc = tied_scores(9, 11, 8)
    index = ranking(itc)[:, :1]
    itm = torch.randn(9, 1, generator=torch.Generator().manual_seed(8))
    assert torch.equal(reranking(itc, itm, index), ranking(itc))


def test_reranking_refuses_a_repeated_candidate():
    itc = torch.rand(2, 5)
    index = torch.tensor([[0, 1], [3, 3]])
    with pytest.raises(ValueError, match="row 1 names a gallery item twice"):
        reranking(itc, torch.rand(2, 2), index)


# --- chance level ----------------------------------------------------------------------------------------------------


def enumerated_chance(gt: torch.Tensor, k: int) -> float:
    """Mean over queries of the share of all orderings that put a GT item in the first k, times 100."""
    gallery = gt.shape[1]
    hits = []
    for row in gt.tolist():
        correct = {j for j, flag in enumerate(row) if flag}
        orders = list(itertools.permutations(range(gallery)))
        hits.append(sum(bool(correct & set(order[:k])) for order in orders) / len(orders))
    return 100.0 * sum(hits) / len(hits)


@pytest.mark.parametrize("k", [1, 2, 4, 6, 9])
def test_chance_recall_equals_exact_enumeration(k):
    gt = torch.zeros(4, 6, dtype=torch.bool)
    gt[0, 0] = True  # g = 1
    gt[1, [1, 4]] = True  # g = 2
    gt[2, [0, 2, 5]] = True  # g = 3
    gt[3, :5] = True  # g = 5: any top-2 holds a hit
    assert chance_recall(gt, k) == pytest.approx(enumerated_chance(gt, k), abs=1e-9)


def test_chance_recall_of_one_gt_among_g_is_k_over_g():
    gt = text_to_video_gt(list(range(1000)), 1000)  # MSRVTT-1k-like: one video per caption
    assert chance_recall(gt, 1) == pytest.approx(0.1)
    assert chance_recall(gt, 10) == pytest.approx(1.0)
