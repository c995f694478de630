"""Fixtures of the `umt score` tests: a tiny random model in the official retrieval layout with its tokenizer folder,
and a few generated clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scoring_models import WORDS, OfficialModel, official_retrieval_state, tiny_config

from umt_cli.data.text import write_tiny_bert
from umt_cli.models.config import build_video_text


@pytest.fixture(scope="session")
def official_model(tmp_path_factory: pytest.TempPathFactory) -> OfficialModel:
    folder = tmp_path_factory.mktemp("official")
    bert = write_tiny_bert(folder / "bert", words=WORDS, hidden=32, layers=3, heads=2, intermediate=64,
                           max_positions=40)  # fmt: skip
    torch.manual_seed(0)
    model = build_video_text(tiny_config()).eval()
    with torch.no_grad():  # no parameter left at a symmetric default: every one must reach the scores
        for name, parameter in model.named_parameters():
            if name != "temp":
                parameter.add_(0.05 * torch.randn_like(parameter))
    path = folder / "ckpt_best.pth"
    torch.save({"model": official_retrieval_state(model)}, path)
    return OfficialModel(path, bert, model)


@pytest.fixture(scope="session")
def score_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five H.264 clips `0.mp4` ... `4.mp4` of 7, 12, 13, 30 and 50 frames (64 x 48)."""
    from umt_cli.data.prepare.encode import write_h264

    folder = tmp_path_factory.mktemp("generated")
    for key, count in enumerate((7, 12, 13, 30, 50)):
        frames = np.full((count, 48, 64, 3), 40, np.uint8)
        for i in range(count):  # a bright square moving right, each clip in its own colour
            frames[i, 16:32, 2 * i % 48 : 2 * i % 48 + 16, key % 3] = 220
        write_h264(folder / f"{key}.mp4", frames, fps=8, width=64, height=48, keyframe_interval=None,
                   preset="veryfast")  # fmt: skip
    return folder
