"""Score (prompt, video) pairs and extract UMT-FVD features with a video-text model, in one pass over the videos.

Per block of `batch_size` videos (blocks dealt round-robin over processes, so the numbers do not depend on how many
ran; `umt_cli.evaluation.features.Shard`): the videos are decoded in DataLoader workers and encoded once; their
prompts are tokenised and encoded; then, for every pair of the block at once,
- `itm`: UMTScore, the raw ITM logit of the match class: the fusion layers on the prompt's text-only states
  cross-attending to all of its video's frame tokens, `itm_head` on the fused `[CLS]`;
- `itc`: the UMT "clip" score, the mean over frames of cos(frame embedding, prompt embedding) (temperature 1);
- `features`: the UMT-FVD feature, the mean over frames of the per-frame `vision_proj(pool_norm(frame mean))`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from umt_cli.data.text import tokenize
from umt_cli.evaluation.features import ClipBlocks, ClipReader, Shard, blocks_loader, clip_batch, finishing_on
from umt_cli.utils.dist import gather_objects, gather_rows
from umt_cli.utils.progress import Progress

__all__ = ["PairOutputs", "score_pairs"]

ONE_PROCESS = Shard()


@dataclass
class PairOutputs:
    """Per video (in input order): `itm` and `itc` scores (None without prompts), `features` (n, E) float32 (None if
    not asked for); `failed` maps an undecodable video's index to why (its scores are NaN, its feature row zeros)."""

    itm: list[float] | None = None
    itc: list[float] | None = None
    features: Tensor | None = None
    failed: dict[int, str] = field(default_factory=dict)


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module,
    videos: Sequence[Path],
    reader: ClipReader,
    *,
    prompts: Sequence[str] | None = None,
    tokenizer: object = None,
    max_len: int = 32,
    features: bool = False,
    batch_size: int = 8,
    shard: Shard = ONE_PROCESS,
    device: torch.device | str = "cpu",
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    num_workers: int = 0,
    bar: Progress | None = None,
) -> PairOutputs:
    """Scores of `prompts[i]` with `videos[i]` (when prompts are given) and/or each video's FVD feature.

    Args:
        model: A `VideoTextModel` in eval mode, on `device`.
        videos: The video files.
        reader: Decodes a video as the protocol says (`umt_cli.scoring.protocols.clip_reader`).
        prompts: One prompt per video, already cleaned as the protocol says; None scores nothing.
        tokenizer, max_len: The BERT tokenizer and the token count (`[CLS] X`, the official form).
        features: Also return the UMT-FVD features.
        batch_size: Videos (and pairs) per block.
    """
    if prompts is not None and len(prompts) != len(videos):
        raise ValueError(f"{len(prompts)} prompts for {len(videos)} videos")
    device = torch.device(device)
    rows: list[int] = []
    parts: dict[str, list[Tensor]] = {"itm": [], "itc": [], "features": []}
    failed: dict[int, str] = {}
    blocks = shard.blocks(len(videos), batch_size)
    reader = finishing_on(reader, device)  # on a GPU, the resize runs there
    for block, clips, reasons in blocks_loader(ClipBlocks(videos, blocks, reader), num_workers):
        failed.update({i: r for i, r in zip(block, reasons) if r is not None})
        good = [i for i, clip in zip(block, clips) if clip is not None]
        if good:
            batch = clip_batch(reader, [clip for clip in clips if clip is not None], device)  # (b, C, T, S, S)
            texts = [prompts[i] for i in good] if prompts is not None else None
            for name, value in _block_outputs(model, batch, texts, tokenizer, max_len, features, autocast).items():
                parts[name].append(value.float().cpu())
            rows += good
        if bar is not None:
            bar.advance(len(block))
    kinds = {**({"itm": (), "itc": ()} if prompts is not None else {}),
             **({"features": (model.vision_proj.out_features,)} if features else {})}  # fmt: skip
    return _assemble({name: parts[name] for name in kinds}, kinds, rows, failed, len(videos), device)


def _block_outputs(
    model: torch.nn.Module,
    batch: Tensor,
    texts: list[str] | None,
    tokenizer: object,
    max_len: int,
    features: bool,
    autocast: Callable[[], AbstractContextManager],
) -> dict[str, Tensor]:
    """The block's scores (b,) and features (b, E)."""
    out: dict[str, Tensor] = {}
    with autocast():
        tokens, frames = model.video_embeddings(batch)  # (b, N, D), (b, T, E)
        if texts is not None:
            text = tokenize(tokenizer, texts, max_len=max_len, add_sep=False).to(batch.device)
            hidden, embeds = model.encode_text(text.ids, text.attention_mask)  # (b, L, Dtxt), (b, E) normalised
            out["itm"] = model.match_logits(hidden, text.attention_mask, tokens)  # (b,): pair i = (text i, video i)
            out["itc"] = torch.einsum("bte,be->bt", F.normalize(frames.float(), dim=-1), embeds.float()).mean(1)
    if features:
        out["features"] = frames.float().mean(1)  # (b, E), not normalised
    return out


def _assemble(
    parts: dict[str, list[Tensor]],
    shapes: dict[str, tuple[int, ...]],
    rows: list[int],
    failed: dict[int, str],
    total: int,
    device: torch.device,
) -> PairOutputs:
    """Every process's rows in input order, on every process; a failed video's scores are NaN."""
    index = torch.tensor(rows, dtype=torch.long)
    merged: dict[int, str] = {}
    for part in gather_objects(failed):
        merged.update(part)
    result = PairOutputs(failed=dict(sorted(merged.items())))
    bad = torch.tensor(sorted(merged), dtype=torch.long)
    for name, values in parts.items():
        local = torch.cat(values) if values else torch.zeros((0, *shapes[name]))
        full = gather_rows(local.to(device), index.to(device), total).cpu()  # (total, ...)
        if name == "features":
            result.features = full
        else:
            full[bad] = float("nan")
            setattr(result, name, full.tolist())
    return result
