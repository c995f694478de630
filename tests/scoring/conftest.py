"""A tiny random video-text model saved in the official fine-tuned retrieval layout (SPEC §5.5, what the FETV file
is), its tokenizer folder, and a few generated clips, for the `umt score` tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from umt_cli.data.text import SPECIAL_TOKENS, write_tiny_bert
from umt_cli.models.config import TextConfig, VideoTextConfig, VisionConfig, build_video_text

WORDS = ("a", "red", "blue", "green", "square", "circle", "moves", "left", "right", "up", "down", "cat", "dog",
         "runs", "on", "the", "grass", "##s", "video", "of")  # fmt: skip
SIZE = 32  # frame side of the tiny model (the protocols' 224 is overridden with --size 32)


@dataclass(frozen=True)
class OfficialModel:
    """`path`: the official-layout .pth (under `model`); `bert`: its tokenizer folder; `model`: the same weights,
    in memory, for computing scores by hand."""

    path: Path
    bert: Path
    model: torch.nn.Module


def tiny_config() -> VideoTextConfig:
    vocab = len(SPECIAL_TOKENS) + len(WORDS)
    return VideoTextConfig(
        vision=VisionConfig(dim=64, depth=2, num_heads=1, img_size=SIZE, num_frames=12),  # 64 channels a head
        text=TextConfig(vocab_size=vocab, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64,
                        fusion_layer=1, max_positions=40),  # fmt: skip
        embed_dim=16,
    )


def official_retrieval_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our names -> the official retrieval layout: `text_encoder.bert.X` -> `text_encoder.X` (no alignment heads,
    no MLM head in this model)."""
    return {key.replace("text_encoder.bert.", "text_encoder.", 1): value.clone()
            for key, value in model.state_dict().items()}  # fmt: skip


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
