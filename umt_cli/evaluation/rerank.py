"""Batched ITM re-ranking (SPEC §4.1 step 4): score each query's top-k gallery items by ITC with the fusion encoder.

Upstream runs the fusion encoder once per query on its k candidates, repeating the query video's tokens k times (so
their cross-attention keys and values are recomputed k times) or, text-to-video, one candidate video per row. Here
all Q·k pairs are laid out once, ordered so that pairs sharing a video sit side by side, and cut into chunks of at
most `batch_size` pairs; `match_scorer` hands each chunk to `VideoTextModel.match_logits` with the chunk's distinct
videos and a row index (`vision_rows`), so a video's keys and values are computed once per chunk however many of
its pairs the chunk holds. The numbers are those of one pair at a time.

Typical use (the result feeds `umt_cli.evaluation.metrics.rerank_ranks`):

    index = topk_pairs(itc_t2v, 128)                                        # (Nt, k')
    scorer = match_scorer(model, text_hidden, text_mask, vision_tokens, "t2v")
    itm = rerank_scores(scorer, itc_t2v, 128, batch_size=512, group_by=VIDEO_SIDE["t2v"])   # (Nt, k')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from umt_cli.evaluation.metrics import ranking
from umt_cli.utils.progress import Progress

__all__ = ["ScorePairs", "VIDEO_SIDE", "topk_pairs", "pair_count", "rerank_scores", "match_scorer"]

ScorePairs = Callable[[Tensor, Tensor], Tensor]
"""`score_pairs(query_rows (P,) long, gallery_rows (P,) long) -> (P,)`: one score per (query, gallery) pair."""

Direction = Literal["t2v", "v2t"]
GroupBy = Literal["query", "gallery"]

VIDEO_SIDE: dict[str, GroupBy] = {"t2v": "gallery", "v2t": "query"}
"""Which side of a pair is the video, per direction: the side to group pairs by, so a chunk holds few videos."""


def topk_pairs(itc: Tensor, k: int) -> Tensor:
    """Each query's k' = min(k, G) best gallery items by ITC: (Q, k') long, best first.

    Equal scores are taken by ascending gallery index, the rule of `umt_cli.evaluation.metrics.ranking` (which
    `torch.topk` does not promise), so the candidates and the reported ranks agree.

    Args:
        itc: (Q, G) similarities.
        k: Candidates per query, >= 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return ranking(itc)[:, : min(k, itc.shape[1])]  # (Q, k')


def pair_count(itc: Tensor, k: int) -> int:
    """Q·k', the number of pairs `rerank_scores` scores (the total to give a progress bar it advances)."""
    return itc.shape[0] * min(k, itc.shape[1])


def _pair_order(query_rows: Tensor, gallery_rows: Tensor, group_by: GroupBy) -> Tensor | None:
    """The order in which to score the flat pairs, or None for as laid out (query-major, already grouped by query)."""
    if group_by == "query":
        return None
    if group_by == "gallery":
        # Stable, so a gallery item's pairs stay in query order; chunks then hold runs of the same item.
        return torch.sort(gallery_rows, stable=True).indices
    raise ValueError(f"group_by must be 'query' or 'gallery', got {group_by!r}")


def rerank_scores(
    score_pairs: ScorePairs,
    itc: Tensor,
    k: int,
    *,
    batch_size: int,
    group_by: GroupBy = "query",
    progress: Progress | None = None,
) -> Tensor:
    """Score every query's top-k' ITC candidates with `score_pairs`, in chunks of at most `batch_size` pairs.

    Args:
        score_pairs: Scores a chunk of pairs (see `ScorePairs`); `match_scorer` builds one for a model.
        itc: (Q, G) similarities that choose the candidates (`topk_pairs`).
        k: Candidates per query; k >= G re-scores every item.
        batch_size: Most pairs per `score_pairs` call; there are ceil(Q·k' / batch_size) calls.
        group_by: Lay the pairs out so those sharing a query ("query") or a gallery item ("gallery") are adjacent;
            pass `VIDEO_SIDE[direction]` so each chunk holds as few distinct videos as possible.
        progress: Advanced by each chunk's pair count (total `pair_count(itc, k)`), e.g. `utils.progress.progress`.

    Returns:
        (Q, k') float32 on `itc`'s device, row q aligned with `topk_pairs(itc, k)[q]`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = topk_pairs(itc, k)  # (Q, k')
    queries, width = index.shape
    query_rows = torch.arange(queries, device=itc.device).repeat_interleave(width)  # (Q·k',) query-major
    gallery_rows = index.flatten()  # (Q·k',)
    order = _pair_order(query_rows, gallery_rows, group_by)
    if order is not None:
        query_rows, gallery_rows = query_rows[order], gallery_rows[order]
    scores = torch.empty(queries * width, dtype=torch.float32, device=itc.device)  # in scoring order
    with torch.no_grad():
        for start in range(0, len(scores), batch_size):
            chunk = slice(start, start + batch_size)
            pairs = len(query_rows[chunk])  # P <= batch_size
            chunk_scores = score_pairs(query_rows[chunk], gallery_rows[chunk])  # (P,)
            if chunk_scores.shape != (pairs,):
                raise ValueError(f"score_pairs returned shape {tuple(chunk_scores.shape)} for {pairs} pairs")
            scores[chunk] = chunk_scores.to(device=scores.device, dtype=scores.dtype)
            if progress is not None:
                progress.advance(pairs)
    if order is not None:  # back to query-major
        scores = torch.empty_like(scores).scatter_(0, order, scores)
    return scores.view(queries, width)


def match_scorer(
    model: torch.nn.Module,
    text_hidden: Tensor,
    text_mask: Tensor,
    vision_tokens: Tensor,
    direction: Direction,
) -> ScorePairs:
    """A `ScorePairs` that returns the raw ITM logit (class 1) of `model` for each (query, gallery) pair.

    Each call runs `model.match_logits` once on the chunk: the texts' hidden states row by row, the chunk's distinct
    videos once each with `vision_rows` pointing every pair at its video, so the fusion layers compute a video's
    keys and values once per call.

    Args:
        model: A `VideoTextModel` (anything with its `match_logits`), in eval mode.
        text_hidden: (Nt, L, Dtxt) text-only hidden states of every caption (`encode_text`).
        text_mask: (Nt, L) their attention masks.
        vision_tokens: (Nv, N, D) the videos' token sets (`encode_video`).
        direction: "t2v" (queries are texts, the gallery videos) or "v2t" (queries are videos).
    """
    if direction not in VIDEO_SIDE:
        raise ValueError(f"direction must be 't2v' or 'v2t', got {direction!r}")

    def score_pairs(query_rows: Tensor, gallery_rows: Tensor) -> Tensor:
        text_rows, video_rows = (query_rows, gallery_rows) if direction == "t2v" else (gallery_rows, query_rows)
        text_rows = text_rows.to(text_hidden.device)
        videos, vision_rows = torch.unique(video_rows.to(vision_tokens.device), return_inverse=True)  # (M,), (P,)
        with torch.no_grad():
            return model.match_logits(
                text_hidden[text_rows],  # (P, L, Dtxt)
                text_mask[text_rows],  # (P, L)
                vision_tokens[videos],  # (M, N, D), M distinct videos
                vision_rows=vision_rows.to(text_hidden.device),  # (P,) into the M videos
            )  # (P,)

    return score_pairs
