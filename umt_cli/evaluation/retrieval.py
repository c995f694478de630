"""`umt eval retrieval`: zero-shot or fine-tuned video-text retrieval (docs/official-behaviour.md, Retrieval protocol).

1. Texts: cleaned, tokenised to `max_len`, the text-only layers; their `[CLS]` projections and hidden states.
2. Videos: `middle` sampling of `num_frames` frames, square resize, no mask; per-frame pooled projections and tokens.
3. ITC: the mean over frames of the cosine similarities (temperature 1).
4. ITM re-ranking: each query's top-k candidates by ITC re-scored with the raw ITM logit, both directions, batched.
5. Metrics of both rankings, embedding-only (`itc`) and re-ranked (`rerank`), with the chance level beside them.

Work is sharded over the processes of an `accelerate launch` and the numbers do not depend on how many ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from umt_cli.data.datasets import load_annotations
from umt_cli.data.text import build_tokenizer
from umt_cli.errors import DataError
from umt_cli.evaluation.features import ClipReader, Shard, encode_texts, encode_videos, frame_similarity
from umt_cli.evaluation.gallery import Gallery, Mode, build_gallery
from umt_cli.evaluation.metrics import RECALL_KS, chance_recall, ranks, rerank_ranks, retrieval_metrics
from umt_cli.evaluation.rerank import VIDEO_SIDE, match_scorer, pair_count, rerank_scores, topk_pairs
from umt_cli.models.loading import LoadedModel
from umt_cli.utils.dist import gather_rows
from umt_cli.utils.progress import progress

__all__ = ["RetrievalProtocol", "RetrievalSettings", "evaluate_retrieval"]

DIRECTIONS = ("t2v", "v2t")


@dataclass(frozen=True)
class RetrievalProtocol:
    """Everything that decides the numbers; printed above every result and stored with it.

    Attributes:
        split: The annotation file's name (e.g. `test`).
        mode: `standard` (each caption a text) or `paragraph` (a video's captions joined).
        merge_identical: Identical captions become one text with several correct videos (SSv2-label/template).
        trimmed30: Only the first 30 s of each video are sampled (DiDeMo).
        k: Candidates re-ranked per query.
        num_frames, size, max_len: Frames per clip, pixels per side, caption tokens.
        views: Clips per video (1: the official protocol).
    """

    split: str
    mode: Mode = "standard"
    merge_identical: bool = False
    trimmed30: bool = False
    k: int = 128
    num_frames: int = 4
    size: int = 224
    max_len: int = 32
    views: int = 1


@dataclass(frozen=True)
class RetrievalSettings:
    """How the work runs (no effect on the numbers)."""

    batch_size: int = 32
    rerank_batch: int = 512
    num_workers: int = 0
    backend: str = "auto"
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    autocast: Callable[[], AbstractContextManager] = nullcontext
    show_progress: bool = True


def evaluate_retrieval(
    loaded: LoadedModel, annotations: Path, root: Path, protocol: RetrievalProtocol, settings: RetrievalSettings
) -> dict[str, Any]:
    """Run the protocol; returns the JSON-ready result (protocol, counts, metrics of both rankings, chance, time)."""
    started = time.perf_counter()
    gallery = build_gallery(
        load_annotations(annotations), mode=protocol.mode, merge_identical=protocol.merge_identical,
        source=str(annotations),
    )  # fmt: skip
    model, config = loaded.model, loaded.config
    device = torch.device(settings.device)
    model.to(device).eval()
    shard = Shard(settings.rank, settings.world)
    show = settings.show_progress and settings.rank == 0
    preprocess = config.preprocess.__class__(**{**asdict(config.preprocess), "num_frames": protocol.num_frames,
                                                "size": protocol.size, "max_len": protocol.max_len})  # fmt: skip
    reader = ClipReader(preprocess, backend=settings.backend, trimmed30=protocol.trimmed30)
    paths = [root / video for video in gallery.videos]
    with progress("video features", len(paths), enabled=show) as bar:
        videos = encode_videos(model, paths, reader, batch_size=settings.batch_size, shard=shard, device=device,
                               autocast=settings.autocast, bar=bar, num_workers=settings.num_workers)  # fmt: skip
    gallery, dropped_texts, videos = _drop_failed(gallery, videos)
    tokenizer = build_tokenizer(loaded.tokenizer, add_sep=preprocess.add_sep)
    with progress("text features", len(gallery.texts), enabled=show) as bar:
        texts = encode_texts(model, tokenizer, gallery.texts, max_len=protocol.max_len, add_sep=preprocess.add_sep,
                             batch_size=settings.batch_size, shard=shard, device=device, autocast=settings.autocast,
                             bar=bar)  # fmt: skip
    itc_v2t = frame_similarity(videos.frames, texts.embeds)  # (Nv, Nt)
    truth = {"t2v": gallery.t2v_truth()}
    truth["v2t"] = truth["t2v"].T.contiguous()
    itc = {"t2v": itc_v2t.T.contiguous(), "v2t": itc_v2t}
    results: dict[str, dict[str, Any]] = {"itc": {}, "rerank": {}}
    pairs = sum(pair_count(itc[d], protocol.k) for d in DIRECTIONS)
    with progress("ITM re-ranking", pairs, enabled=show) as bar:
        for direction in DIRECTIONS:
            results["itc"][direction] = retrieval_metrics(ranks(itc[direction], truth[direction]))
            itm = _rerank(model, texts, videos.tokens, itc[direction], direction, protocol.k, settings, shard, bar)
            index = topk_pairs(itc[direction], protocol.k)
            results["rerank"][direction] = retrieval_metrics(rerank_ranks(itc[direction], itm, index, truth[direction]))
    return {
        "task": "retrieval",
        "checkpoint": {"source": loaded.source, "kind": loaded.kind, "sha256": loaded.sha256},
        "annotations": str(annotations),
        "protocol": asdict(protocol),
        "counts": {
            "texts": len(gallery.texts),
            "videos": len(gallery.videos),
            "skipped_videos": len(videos.failed),
            "dropped_texts": dropped_texts,
        },
        "skipped": [{"video": v, "reason": r} for v, r in videos.failed.items()],
        "metrics": results,
        "chance": {d: {f"R@{k}": chance_recall(truth[d], k) for k in RECALL_KS} for d in DIRECTIONS},
        "processes": settings.world,
        "seconds": round(time.perf_counter() - started, 2),
    }


@dataclass(frozen=True)
class _Kept:
    tokens: Tensor
    frames: Tensor
    failed: dict[str, str]


def _drop_failed(gallery: Gallery, videos: Any) -> tuple[Gallery, int, _Kept]:
    """Remove undecodable videos (and texts left without a correct video); they are counted and named."""
    failed = {gallery.videos[i]: reason for i, reason in videos.failed.items()}
    kept = [i for i in range(len(gallery.videos)) if i not in videos.failed]
    smaller, dropped = gallery.without_videos(list(videos.failed))
    if not smaller.videos or not smaller.texts:
        first = next(iter(failed.items()), ("", "no videos"))
        raise DataError(f"no video could be evaluated ({len(failed)} failed; first: {first[1]})")
    index = torch.tensor(kept, dtype=torch.long)
    return smaller, dropped, _Kept(videos.tokens[index], videos.frames[index], failed)


def _rerank(
    model: torch.nn.Module,
    texts: Any,
    vision_tokens: Tensor,
    itc: Tensor,
    direction: str,
    k: int,
    settings: RetrievalSettings,
    shard: Shard,
    bar: Any,
) -> Tensor:
    """(Q, k') ITM logits of each query's top-k ITC candidates; query blocks dealt over the processes."""
    device = torch.device(settings.device)
    scorer = match_scorer(
        model,
        texts.hidden.to(device),
        texts.mask.to(device),
        vision_tokens.to(device),
        direction,  # type: ignore[arg-type]
    )
    width = min(k, itc.shape[1])
    queries_per_block = max(1, settings.rerank_batch // width)
    rows: list[int] = []
    parts: list[Tensor] = []
    for block in shard.blocks(itc.shape[0], queries_per_block):
        block_rows = torch.tensor(block, dtype=torch.long)

        def block_scorer(query: Tensor, gallery: Tensor, rows_of_block: Tensor = block_rows) -> Tensor:
            return scorer(rows_of_block.to(query.device)[query], gallery)

        with settings.autocast():
            scores = rerank_scores(block_scorer, itc[block_rows], k, batch_size=settings.rerank_batch,
                                   group_by=VIDEO_SIDE[direction], progress=bar)  # fmt: skip
        parts.append(scores.float().cpu())
        rows += block
    local = torch.cat(parts) if parts else torch.zeros((0, width))
    total = gather_rows(local.to(device), torch.tensor(rows, dtype=torch.long, device=device), itc.shape[0])
    if bar is not None and settings.world > 1:
        bar.advance(pair_count(itc, k) - len(rows) * width)  # the other processes' share
    return total.cpu()
