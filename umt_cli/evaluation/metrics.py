"""Retrieval metrics (SPEC §4.1): ground-truth matrices, rankings with and without ITM re-ranking, R@K, MdR, MnR
and the chance level of R@K. Pure torch, no model.

Conventions shared by every function here:

- A score matrix is (Q, G): one row per query, one column per gallery item. Text-to-video (T2V, upstream `img_r*`)
  has texts as queries and videos as the gallery; video-to-text (V2T, upstream `txt_r*`) the reverse.
- Ground truth is a bool matrix `gt` (Q, G), True = a correct item. A row may hold several (a video with several
  captions in V2T, an SSv2 label caption shared by many videos in T2V); a row with none is an error.
- **Ranking rule.** A query's ranked list sorts the gallery by score, highest first; equal scores keep ascending
  gallery index. The rule is total and deterministic, so a tie never depends on the sort kernel (upstream's
  `topk`/`argsort` leave ties to the backend), and `umt_cli.evaluation.rerank.topk_pairs` uses the same rule.
- **Rank** of a query = the 0-based position of its first ground-truth item in the ranked list; R@K counts the
  queries with rank < K.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ground_truth",
    "text_to_video_gt",
    "video_to_text_gt",
    "ranking",
    "reranking",
    "first_gt_position",
    "ranks",
    "rerank_ranks",
    "retrieval_metrics",
    "chance_recall",
]

RECALL_KS = (1, 5, 10)
"""The K of the R@K every report shows (upstream's `r1`, `r5`, `r10`)."""


# --- ground truth ----------------------------------------------------------------------------------------------------


def ground_truth(owner: Sequence[int] | Tensor, num_gallery: int) -> Tensor:
    """The ground truth of queries that each own exactly one gallery item: `gt[q, owner[q]] = True`.

    Use it directly when the query side is the many-to-one side: T2V with several captions per video (each caption
    owns its video), or V2T on SSv2-label/template (each video owns its label caption).

    Args:
        owner: (Q,) the gallery index of each query's item.
        num_gallery: G, the gallery size.

    Returns:
        (Q, G) bool.

    Raises:
        ValueError: An owner outside [0, G), named by its query row.
    """
    owner = torch.as_tensor(owner, dtype=torch.long)
    if owner.dim() != 1:
        raise ValueError(f"owner must be 1-D (one gallery index per query), got shape {tuple(owner.shape)}")
    bad = ((owner < 0) | (owner >= num_gallery)).nonzero()
    if len(bad):
        row = int(bad[0])
        raise ValueError(f"query row {row}: gallery index {int(owner[row])} is outside [0, {num_gallery})")
    gt = torch.zeros(len(owner), num_gallery, dtype=torch.bool, device=owner.device)
    gt[torch.arange(len(owner), device=owner.device), owner] = True  # (Q, G)
    return gt


def text_to_video_gt(text_video: Sequence[int] | Tensor, num_videos: int) -> Tensor:
    """T2V ground truth when each caption belongs to one video: (Nt, Nv) bool, `gt[t, text_video[t]]`.

    Args:
        text_video: (Nt,) the video index of each caption (several captions may share a video).
        num_videos: Nv.
    """
    return ground_truth(text_video, num_videos)


def video_to_text_gt(text_video: Sequence[int] | Tensor, num_videos: int) -> Tensor:
    """V2T ground truth for the same captions: (Nv, Nt) bool, each video's GT = all of its captions.

    A video with no caption leaves an empty row, which `ranks` refuses: drop such videos before ranking.
    """
    return text_to_video_gt(text_video, num_videos).T.contiguous()


# --- rankings --------------------------------------------------------------------------------------------------------


def _check_scores(scores: Tensor, name: str) -> None:
    if scores.dim() != 2:
        raise ValueError(f"{name} must be (queries, gallery), got shape {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        row = int(torch.isnan(scores).any(1).nonzero()[0])
        raise ValueError(f"{name}: query row {row} has NaN scores")


def _stable_by(order: Tensor, key: Tensor) -> Tensor:
    """Re-sort the rankings `order` (Q, G) by `key` (Q, G, indexed by gallery item), highest first; items with equal
    keys keep their current relative order (a stable sort), so earlier sorts act as tie-breakers."""
    positions = torch.sort(key.gather(1, order), dim=1, descending=True, stable=True).indices  # (Q, G)
    return order.gather(1, positions)


def ranking(scores: Tensor) -> Tensor:
    """Each query's ranked gallery: (Q, G) long, by score descending, equal scores by ascending gallery index.

    Args:
        scores: (Q, G) any real dtype; no NaN.
    """
    _check_scores(scores, "scores")
    # A stable sort of the identity order keeps ascending index among equal scores.
    return torch.sort(scores, dim=1, descending=True, stable=True).indices  # (Q, G)


def _check_topk(itc: Tensor, itm_topk: Tensor, topk_index: Tensor) -> None:
    if itm_topk.shape != topk_index.shape or itm_topk.dim() != 2 or len(itm_topk) != len(itc):
        raise ValueError(
            f"itm_topk {tuple(itm_topk.shape)} and topk_index {tuple(topk_index.shape)} must both be "
            f"(queries={len(itc)}, k)"
        )
    if topk_index.numel() and (topk_index.min() < 0 or topk_index.max() >= itc.shape[1]):
        raise ValueError(f"topk_index holds gallery indices outside [0, {itc.shape[1]})")
    repeated = (topk_index.sort(dim=1).values.diff(dim=1) == 0).any(1)  # (Q,)
    if repeated.any():
        raise ValueError(f"topk_index: query row {int(repeated.nonzero()[0])} names a gallery item twice")
    _check_scores(itm_topk, "itm_topk")


def reranking(itc: Tensor, itm_topk: Tensor, topk_index: Tensor) -> Tensor:
    """Each query's ranked gallery after ITM re-ranking (SPEC §4.1 steps 4-5): (Q, G) long.

    The k re-scored items come first, by ITM logit descending (equal logits by ITC, then by index); every other
    item follows by ITC descending (equal ITC by index). Upstream gives the others a flat -100 and leaves their order
    to the sort kernel; ordering them by ITC makes ranks beyond k meaningful (MdR, MnR) and deterministic.

    Args:
        itc: (Q, G) embedding similarities.
        itm_topk: (Q, k) the ITM logits of the re-scored items; k = G re-scores everything.
        topk_index: (Q, k) long, their gallery indices (distinct within a row), in any order.
    """
    _check_scores(itc, "itc")
    _check_topk(itc, itm_topk, topk_index)
    rescored = torch.zeros_like(itc, dtype=torch.bool).scatter_(1, topk_index, True)  # (Q, G)
    itm = torch.zeros_like(itc, dtype=itm_topk.dtype).scatter_(1, topk_index, itm_topk)  # (Q, G), 0 if not re-scored
    order = ranking(itc)  # innermost tie-breakers: ITC, then index
    order = _stable_by(order, itm)  # the others all share key 0, so their ITC order survives
    return _stable_by(order, rescored.to(torch.uint8))  # re-scored first, each group keeping its order


def first_gt_position(order: Tensor, gt: Tensor) -> Tensor:
    """The 0-based position of each query's first ground-truth item in its ranked list `order`: (Q,) long.

    Args:
        order: (Q, G) long, rankings from `ranking` or `reranking`.
        gt: (Q, G) bool.

    Raises:
        ValueError: Shapes differ, or a row has no ground truth (named by its index).
    """
    if gt.shape != order.shape:
        raise ValueError(f"ground truth {tuple(gt.shape)} and scores {tuple(order.shape)} differ in shape")
    empty = ~gt.any(1)  # (Q,)
    if empty.any():
        raise ValueError(f"query row {int(empty.nonzero()[0])} has no ground-truth item")
    hits = gt.to(order.device).gather(1, order)  # (Q, G) bool, in ranked order
    return hits.to(torch.uint8).argmax(1)  # argmax returns the first maximal position


def ranks(scores: Tensor, gt: Tensor) -> Tensor:
    """Each query's rank (0-based position of its first GT item) when ranked by `scores`: (Q,) long.

    Args:
        scores: (Q, G) e.g. the ITC similarities (the embedding-only result).
        gt: (Q, G) bool.
    """
    return first_gt_position(ranking(scores), gt)


def rerank_ranks(itc: Tensor, itm_topk: Tensor, topk_index: Tensor, gt: Tensor) -> Tensor:
    """Each query's rank after ITM re-ranking of its top-k items (the rule of `reranking`): (Q,) long.

    Args:
        itc: (Q, G); itm_topk: (Q, k); topk_index: (Q, k) long; gt: (Q, G) bool.
    """
    return first_gt_position(reranking(itc, itm_topk, topk_index), gt)


# --- summary numbers -------------------------------------------------------------------------------------------------


def _median(values: Tensor) -> float:
    """numpy's median: the middle value, or the mean of the two middle values for an even count."""
    ordered = values.sort().values
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (float(ordered[middle - 1]) + float(ordered[middle])) / 2


def retrieval_metrics(query_ranks: Tensor, ks: Sequence[int] = RECALL_KS) -> dict[str, float | int]:
    """Recall at K, median and mean rank of one direction.

    Args:
        query_ranks: (Q,) 0-based ranks from `ranks` / `rerank_ranks`.
        ks: The K of R@K.

    Returns:
        `R@K` = 100 * mean(rank < K) for each K; `MdR` = median(rank + 1) (numpy's median: the mean of the two middle
        values when Q is even, so it can end in .5); `MnR` = mean(rank + 1); `count` = Q. Not rounded.

    Raises:
        ValueError: No queries.
    """
    if query_ranks.numel() == 0:
        raise ValueError("no queries to compute retrieval metrics on")
    one_based = query_ranks.flatten().to(torch.float64) + 1  # (Q,)
    result: dict[str, float | int] = {f"R@{k}": 100.0 * float((one_based <= k).to(torch.float64).mean()) for k in ks}
    result["MdR"] = _median(one_based)
    result["MnR"] = float(one_based.mean())
    result["count"] = len(one_based)
    return result


def _miss_probability(gallery: int, correct: int, k: int) -> float:
    """P(no correct item among the first k of a uniformly random order) = C(G - g, k) / C(G, k)."""
    return math.comb(gallery - correct, k) / math.comb(gallery, k)  # exact integers; 0 when G - g < k


def chance_recall(gt: Tensor, k: int) -> float:
    """The expected R@K of a uniformly random ranking for this ground truth, in percent.

    A query with g correct items among G is a hit with probability 1 - C(G - g, K) / C(G, K); the result is the
    mean over queries, times 100. Printed beside R@K so a tiny or odd evaluation set is read against its floor.

    Args:
        gt: (Q, G) bool.
        k: K >= 1 (K >= G gives 100).

    Raises:
        ValueError: K < 1, or a row without ground truth.
    """
    if k < 1:
        raise ValueError(f"K must be >= 1, got {k}")
    counts = gt.sum(1)  # (Q,) g per query
    if (counts == 0).any():
        raise ValueError(f"query row {int((counts == 0).nonzero()[0])} has no ground-truth item")
    gallery = gt.shape[1]
    values, times = torch.unique(counts, return_counts=True)  # few distinct g, so few big-integer binomials
    hit = sum(int(n) * (1.0 - _miss_probability(gallery, int(g), min(k, gallery))) for g, n in zip(values, times))
    return 100.0 * hit / len(counts)
