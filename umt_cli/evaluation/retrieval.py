"""`umt eval retrieval`: zero-shot or fine-tuned video-text retrieval (docs/official-behaviour.md, Retrieval protocol).

1. Texts: cleaned, tokenised to `max_len`, the text-only layers; their `[CLS]` projections and hidden states.
2. Videos: `middle` sampling of `num_frames` frames, square resize, no mask; per-frame pooled projections and tokens.
3. ITC: the mean over frames of the cosine similarities (temperature 1).
4. ITM re-ranking: each query's top-k candidates by ITC re-scored with the raw ITM logit, both directions, batched.
5. Metrics of both rankings, embedding-only (`itc`) and re-ranked (`rerank`), with the chance level beside them.

Videos that cannot be decoded (missing, damaged, too slow) are skipped and named in the result; texts left without a
correct video go with them. Work is sharded over the processes of an `accelerate launch` (or `torchrun`) and the
numbers do not depend on how many ran.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from umt_cli.data.datasets import load_annotations
from umt_cli.data.text import build_tokenizer
from umt_cli.errors import CheckpointError, DataError, UsageError, first_line
from umt_cli.evaluation.features import ClipReader, Shard, encode_texts, encode_videos, frame_similarity
from umt_cli.evaluation.gallery import Gallery, Mode, build_gallery
from umt_cli.evaluation.metrics import RECALL_KS, chance_recall, ranks, rerank_ranks, retrieval_metrics
from umt_cli.evaluation.rerank import VIDEO_SIDE, match_scorer, pair_count, rerank_scores, topk_pairs
from umt_cli.evaluation.runtime import WorkSettings
from umt_cli.models.loading import LoadedModel, checkpoint_record
from umt_cli.utils.dist import gather_rows
from umt_cli.utils.progress import progress

__all__ = ["RetrievalProtocol", "RetrievalSettings", "evaluate_retrieval", "read_gallery"]

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
class RetrievalSettings(WorkSettings):
    """How the work runs (no effect on the numbers): batch sizes here, the rest in `WorkSettings`.

    Attributes:
        batch_size: Clips or texts per encoder batch; also the unit dealt to the processes.
        rerank_batch: Most (query, candidate) pairs per ITM forward.
        rerank_block: Queries per re-ranking block. A block's pairs are sorted so that pairs sharing a video are
            adjacent and then cut into `rerank_batch` chunks, so a video's fusion keys and values are computed once
            per chunk for many queries; blocks, not chunks, are dealt to the processes, and a block is always
            computed as one unit, so the numbers do not depend on the process count.
    """

    batch_size: int = 32
    rerank_batch: int = 512
    rerank_block: int = 256


def read_gallery(annotations: Path, *, mode: Mode, merge_identical: bool) -> Gallery:
    """The retrieval test set of an annotation file (read before the model loads, so a bad file fails at once).

    Raises:
        UsageError: The file is missing or a folder.
        DataError: Not JSON / JSON lines, an entry without `video` or with a bad caption, an image entry, a repeated
            video; each message names the file and the line or entry.
    """
    return build_gallery(load_annotations(annotations), mode=mode, merge_identical=merge_identical,
                         source=str(annotations))  # fmt: skip


def evaluate_retrieval(
    loaded: LoadedModel,
    annotations: Path,
    root: Path,
    protocol: RetrievalProtocol,
    settings: RetrievalSettings,
    *,
    gallery: Gallery | None = None,
) -> dict[str, Any]:
    """Run the protocol; returns the JSON-ready result (protocol, counts, skipped videos, metrics of both rankings,
    chance, time).

    Args:
        loaded: A video-text model (`load_model(..., expect="video-text")`).
        annotations: The test annotation file; `gallery` when given is what it holds (`read_gallery`).
        root: The folder its video paths are relative to.
        protocol: What decides the numbers.
        settings: How the work runs.
        gallery: The annotation file already read with `protocol`'s mode (None: read it here).

    Raises:
        UsageError: The model's tokenizer cannot be loaded.
        DataError: Bad annotations, or no video could be decoded.
        CheckpointError: The model gives non-finite scores.
    """
    started = time.perf_counter()
    _check_settings(settings)
    if protocol.k < 1:
        raise UsageError(f"--k {protocol.k}: must be >= 1")
    if gallery is None:
        gallery = read_gallery(annotations, mode=protocol.mode, merge_identical=protocol.merge_identical)
    model, config = loaded.model, loaded.config
    device = torch.device(settings.device)
    model.to(device).eval()
    shard = Shard(settings.rank, settings.world)
    show = settings.show_progress and settings.rank == 0
    preprocess = replace(config.preprocess, num_frames=protocol.num_frames, size=protocol.size,
                         max_len=protocol.max_len)  # fmt: skip
    tokenizer = _tokenizer(loaded, add_sep=preprocess.add_sep)  # before the long video pass: fail at once
    reader = ClipReader(preprocess, backend=settings.backend, trimmed30=protocol.trimmed30)
    paths = [root / video for video in gallery.videos]
    with progress("video features", len(paths), enabled=show) as bar:
        videos = encode_videos(model, paths, reader, batch_size=settings.batch_size, shard=shard, device=device,
                               autocast=settings.autocast, bar=bar, num_workers=settings.num_workers)  # fmt: skip
    gallery, dropped_texts, kept = _drop_failed(gallery, videos, annotations)
    with progress("text features", len(gallery.texts), enabled=show) as bar:
        texts = encode_texts(model, tokenizer, gallery.texts, max_len=protocol.max_len, add_sep=preprocess.add_sep,
                             batch_size=settings.batch_size, shard=shard, device=device, autocast=settings.autocast,
                             bar=bar)  # fmt: skip
    itc_v2t = frame_similarity(kept.frames, texts.embeds)  # (Nv, Nt)
    _check_finite(itc_v2t, "ITC similarities", loaded)
    truth = {"t2v": gallery.t2v_truth()}  # (Nt, Nv)
    truth["v2t"] = truth["t2v"].T.contiguous()  # (Nv, Nt)
    _check_truth(truth, gallery, annotations)
    itc = {"t2v": itc_v2t.T.contiguous(), "v2t": itc_v2t}
    pairs = sum(pair_count(itc[d], protocol.k) for d in DIRECTIONS)
    with progress("ITM re-ranking", pairs, enabled=show) as bar:
        results = _rankings(loaded, texts, kept.tokens, itc, truth, protocol.k, settings, bar)
    return {
        "task": "retrieval",
        "checkpoint": checkpoint_record(loaded),
        "annotations": str(annotations),
        "protocol": asdict(protocol),
        "counts": {
            "texts": len(gallery.texts),
            "videos": len(gallery.videos),
            "skipped_videos": len(kept.failed),
            "dropped_texts": dropped_texts,
        },
        "skipped": [{"video": v, "reason": r} for v, r in kept.failed.items()],
        "metrics": results,
        "chance": {d: {f"R@{k}": chance_recall(truth[d], k) for k in RECALL_KS} for d in DIRECTIONS},
        "processes": settings.world,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _rankings(
    loaded: LoadedModel,
    texts: Any,
    vision_tokens: Tensor,
    itc: dict[str, Tensor],
    truth: dict[str, Tensor],
    k: int,
    settings: RetrievalSettings,
    bar: Any,
) -> dict[str, dict[str, Any]]:
    """The metrics of both rankings in both directions: `{"itc"|"rerank": {"t2v"|"v2t": metrics}}`."""
    shard = Shard(settings.rank, settings.world)
    results: dict[str, dict[str, Any]] = {"itc": {}, "rerank": {}}
    for direction in DIRECTIONS:
        results["itc"][direction] = retrieval_metrics(ranks(itc[direction], truth[direction]))
        itm = _rerank(loaded.model, texts, vision_tokens, itc[direction], direction, k, settings, shard, bar)
        _check_finite(itm, "ITM logits", loaded)
        index = topk_pairs(itc[direction], k)  # (Q, k') the candidates `_rerank` scored, in the same order
        results["rerank"][direction] = retrieval_metrics(rerank_ranks(itc[direction], itm, index, truth[direction]))
    return results


def _check_settings(settings: RetrievalSettings) -> None:
    for option, value in (("--batch-size", settings.batch_size), ("--rerank-batch", settings.rerank_batch),
                          ("--rerank-block", settings.rerank_block)):  # fmt: skip
        if value < 1:
            raise UsageError(f"{option} {value}: must be >= 1")


def _tokenizer(loaded: LoadedModel, *, add_sep: bool) -> Any:
    """The model's tokenizer; a recorded folder that is gone (a run moved to another machine) names the way out."""
    source = str(loaded.tokenizer)
    try:
        return build_tokenizer(source, add_sep=add_sep)
    except UsageError as error:
        way_out = "pass --text-encoder FOLDER, the BERT folder (with vocab.txt) the model was trained with"
        if _looks_like_a_path(source) and not Path(source).exists():
            raise UsageError(f"{loaded.source}: its tokenizer folder {source} does not exist: {way_out}") from None
        raise UsageError(f"{loaded.source}: cannot load its tokenizer ({first_line(error)}): {way_out}") from None


def _looks_like_a_path(source: str) -> bool:
    """A folder rather than a hub id (`bert-base-uncased`, `org/name`): absolute, relative, or deeper than a hub id."""
    return Path(source).is_absolute() or source.startswith((".", "~")) or source.count("/") > 1


@dataclass(frozen=True)
class _Kept:
    """The features of the videos that decoded; `failed` maps each skipped video's path to why."""

    tokens: Tensor
    frames: Tensor
    failed: dict[str, str]


def _drop_failed(gallery: Gallery, videos: Any, annotations: Path) -> tuple[Gallery, int, _Kept]:
    """Remove undecodable videos (and texts left without a correct video); they are counted and named.

    Raises:
        DataError: No video (or no text) is left, naming the first failure.
    """
    failed = {gallery.videos[i]: reason for i, reason in videos.failed.items()}
    kept = [i for i in range(len(gallery.videos)) if i not in videos.failed]
    smaller, dropped = gallery.without_videos(list(videos.failed))
    if not smaller.videos or not smaller.texts:
        first = next(iter(failed.values()), "no videos")
        raise DataError(
            f"{annotations}: none of its {len(gallery.videos)} videos could be evaluated ({len(failed)} failed; "
            f"first: {first})",
            hint="check --root: video paths are relative to it (default: the annotation file's folder)",
        )
    index = torch.tensor(kept, dtype=torch.long)
    return smaller, dropped, _Kept(videos.tokens[index], videos.frames[index], failed)


def _check_finite(scores: Tensor, what: str, loaded: LoadedModel) -> None:
    """NaN or inf scores come from the weights (or a half-precision overflow), never from the data."""
    bad = ~torch.isfinite(scores)
    if bad.any():
        raise CheckpointError(
            f"{loaded.source}: the model gives non-finite {what} ({int(bad.sum())} of {bad.numel()})",
            hint="the weights may hold NaN/inf; with --precision fp16 or bf16, try fp32",
        )


def _check_truth(truth: dict[str, Tensor], gallery: Gallery, annotations: Path) -> None:
    """Every query must have a correct item (the metrics refuse rows without one); name the first that has none."""
    for direction, names in (("t2v", gallery.texts), ("v2t", gallery.videos)):
        empty = (~truth[direction].any(1)).nonzero().flatten()
        if len(empty):
            raise DataError(f"{annotations}: {names[int(empty[0])]!r} has no correct match in the test set")


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
    """(Q, k') ITM logits of each query's top-k ITC candidates, aligned with `topk_pairs(itc, k)`.

    Queries are cut into blocks of `settings.rerank_block`, dealt round-robin to the processes. Within a block the
    pairs are grouped by video (`VIDEO_SIDE`), so a chunk of `rerank_batch` pairs holds few distinct videos. Block
    boundaries depend only on the settings, never on the process count, so every process count gives the same bits.
    """
    device = torch.device(settings.device)
    scorer = match_scorer(
        model,
        texts.hidden.to(device),
        texts.mask.to(device),
        vision_tokens.to(device),
        direction,  # type: ignore[arg-type]
    )
    width = min(k, itc.shape[1])
    rows: list[int] = []
    parts: list[Tensor] = []
    for block in shard.blocks(itc.shape[0], settings.rerank_block):
        block_rows = torch.tensor(block, dtype=torch.long)

        def block_scorer(query: Tensor, gallery: Tensor, rows_of_block: Tensor = block_rows) -> Tensor:
            return scorer(rows_of_block.to(query.device)[query], gallery)  # block-local query rows -> global rows

        with settings.autocast():
            scores = rerank_scores(block_scorer, itc[block_rows], k, batch_size=settings.rerank_batch,
                                   group_by=VIDEO_SIDE[direction], progress=bar)  # fmt: skip  # (b, k')
        parts.append(scores.float().cpu())
        rows += block
    local = torch.cat(parts) if parts else torch.zeros((0, width))
    total = gather_rows(local.to(device), torch.tensor(rows, dtype=torch.long, device=device), itc.shape[0])
    if bar is not None and settings.world > 1:
        bar.advance(pair_count(itc, k) - len(rows) * width)  # the other processes' share
    return total.cpu()
