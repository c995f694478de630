"""Does a video-text model see motion? A check on the synthetic set, where direction is invisible in any one frame.

For each test video, the four captions that differ only in the direction (`a red circle moves to the left / to the
right / upwards / downwards`) are scored against it; the model is right when its best caption names the true
direction (chance 25 %). The same model scoring each frame on its own as a still image, with the similarities averaged
over the frames, is the frame-averaged baseline: it sees where the shape is, never which way it goes, so a model
that beats it uses time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from umt_cli.data.prepare.synthetic import DIRECTIONS, motion_caption
from umt_cli.data.text import build_tokenizer, clean_caption, tokenize
from umt_cli.errors import DataError
from umt_cli.evaluation.features import ClipReader, frame_similarity
from umt_cli.models.loading import LoadedModel

__all__ = ["direction_check"]


@torch.no_grad()
def direction_check(loaded: LoadedModel, annotations: Path, root: Path) -> dict[str, Any]:
    """Direction accuracy (percent) of the video model and of its frame-averaged baseline on a synthetic split.

    Raises:
        DataError: Entries without the `colour`, `shape`, `direction` fields of a synthetic set (format >= 3).
    """
    model, config = loaded.model.eval(), loaded.config
    reader = ClipReader(config.preprocess)
    tokenizer = build_tokenizer(loaded.tokenizer, add_sep=config.preprocess.add_sep)
    entries = json.loads(Path(annotations).read_text(encoding="utf-8"))
    right = {"video": 0, "frame_averaged": 0}
    for entry in entries:
        if not {"colour", "shape", "direction"} <= set(entry):
            raise DataError(f"{annotations}: not a synthetic split with colour/shape/direction fields (regenerate it)")
        captions = [clean_caption(motion_caption(entry["colour"], entry["shape"], d)) for d in DIRECTIONS]
        text = tokenize(tokenizer, captions, max_len=config.preprocess.max_len, add_sep=config.preprocess.add_sep)
        _, texts = model.encode_text(text.ids, text.attention_mask)  # (4, E)
        video = reader(root / entry["video"])[None]  # (1, C, T, S, S)
        truth = list(DIRECTIONS).index(entry["direction"])
        right["video"] += int(_best(model.encode_video(video)[1], texts) == truth)
        right["frame_averaged"] += int(_best(_frames_alone(model, video), texts) == truth)
    count = len(entries)
    return {**{k: 100.0 * v / count for k, v in right.items()}, "chance": 100.0 / len(DIRECTIONS), "videos": count}


def _frames_alone(model: torch.nn.Module, video: Tensor) -> Tensor:
    """(1, T, E): each frame encoded as a one-frame clip (a still image), so no frame sees another."""
    return torch.cat([model.encode_video(video[:, :, t : t + 1])[1] for t in range(video.shape[2])], dim=1)


def _best(frames: Tensor, texts: Tensor) -> int:
    """The caption with the highest frame-mean cosine similarity: frames (1, T, E), texts (C, E)."""
    return int(frame_similarity(frames, texts)[0].argmax())
