"""The tiny random video-text model of the `umt score` tests (saved in the official fine-tuned retrieval layout, SPEC
§5.5, what the FETV file is; the fixtures are in this folder's conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from umt_cli.data.text import SPECIAL_TOKENS
from umt_cli.models.config import TextConfig, VideoTextConfig, VisionConfig

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
        text=TextConfig(
            vocab_size=vocab,
            hidden_size=32,
            num_layers=3,
            num_heads=2,
            intermediate_size=64,
            fusion_layer=1,
            max_positions=40,
        ),  # fmt: skip
        embed_dim=16,
    )


def official_retrieval_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our names -> the official retrieval layout: `text_encoder.bert.X` -> `text_encoder.X` (no alignment heads,
    no MLM head in this model)."""
    return {key.replace("text_encoder.bert.", "text_encoder.", 1): value.clone()
            for key, value in model.state_dict().items()}  # fmt: skip
