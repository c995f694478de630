"""Shared fixtures: synthetic H.264 clips written into tmp_path, tiny settings, and a no-network guard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from umt_cli.data.prepare.encode import write_h264
from umt_cli.data.text import SPECIAL_TOKENS, write_tiny_bert
from umt_cli.models.config import TextConfig, VideoTextConfig, VisionConfig, build_video_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LEVELS = 8  # frame numbers are written in base 8, one digit per horizontal band


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not touch the network unless marked `network`."""
    if request.node.get_closest_marker("network"):
        return

    def guard(self: socket.socket, address: object, *args: object) -> None:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise RuntimeError(f"network access in a test: {address}")
        return original(self, address, *args)

    original = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", guard)


def numbered_frames(count: int, width: int = 64, height: int = 48) -> np.ndarray:
    """uint8 (T, H, W, 3) frames whose index can be read back after lossy coding (`read_frame_number`)."""
    frames = np.empty((count, height, width, 3), np.uint8)
    bands = np.array_split(np.arange(height), 3)
    for i in range(count):
        digits = [(i // LEVELS**k) % LEVELS for k in range(3)]
        for band, digit in zip(bands, digits, strict=True):
            frames[i, band] = 16 + 28 * digit
    return frames


def read_frame_number(frame: np.ndarray) -> int:
    """Invert `numbered_frames` on a decoded (H, W, 3) frame (any size)."""
    bands = np.array_split(np.arange(frame.shape[0]), 3)
    digits = [int(round((frame[band][2:-2].mean() - 16) / 28)) for band in bands]
    return sum(d * LEVELS**k for k, d in enumerate(digits))


@pytest.fixture
def make_clip(tmp_path: Path):
    """Write a numbered H.264 clip: make_clip(name, frames=40, gop=None, width=64, height=48, preset) -> path."""

    def make(
        name: str = "clip.mp4",
        frames: int = 40,
        gop: int | None = None,
        width: int = 64,
        height: int = 48,
        preset: str = "veryfast",
    ) -> Path:
        path = tmp_path / name
        frames_ = numbered_frames(frames, width, height)
        write_h264(path, frames_, fps=25, width=width, height=height, keyframe_interval=gop, preset=preset)
        return path

    return make


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic data set (8 train / 4 val / 4 test videos of 16 frames at 64x48), made once per session."""
    from umt_cli.data.prepare.synthetic import prepare_synthetic
    from umt_cli.recipe.prepare import SyntheticSource

    out = tmp_path_factory.mktemp("synthetic")
    prepare_synthetic(SyntheticSource(out=out, train=8, val=4, test=4, num_frames=16, width=64, height=48))
    return out


@pytest.fixture
def tiny_overrides(synthetic_dir: Path) -> list[str]:
    """The quickstart recipe on the 8-clip synthetic set: batch 2 -> 4 steps per epoch, 2 epochs, every step logged."""
    return [
        f"data.train_list={synthetic_dir / 'train.csv'}",
        "data.batch_size=2",
        "optim.scale_lr=false",
        "optim.lr=1e-3",
        "optim.min_lr=1e-4",
        "schedule.warmup_epochs=0.5",
        "log.every=1",
    ]


@pytest.fixture
def pretrain_overrides(synthetic_dir: Path) -> list[str]:
    """The quickstart stage-2 recipe on the synthetic set: 24 video-caption pairs (8 videos x 3 captions) and 16
    still-caption pairs (8 stills x 2), batch 4 each -> 6 + 4 = 10 steps per epoch; 10 steps, every one logged."""
    return [*_synthetic_corpora(synthetic_dir), "schedule.max_steps=10", "log.every=1"]


def _synthetic_corpora(synthetic_dir: Path) -> list[str]:
    """Stage-2 overrides reading the synthetic set's clips and stills (batch 4 each) and its tiny BERT folder."""
    return [
        f"data.corpora.clips.annotations={synthetic_dir / 'train.json'}",
        f"data.corpora.clips.root={synthetic_dir}",
        "data.corpora.clips.batch_size=4",
        f"data.corpora.stills.annotations={synthetic_dir / 'train_images.json'}",
        f"data.corpora.stills.root={synthetic_dir}",
        "data.corpora.stills.batch_size=4",
        f"text.encoder={synthetic_dir / 'bert'}",
    ]


@pytest.fixture(scope="session")
def stage2_run(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path) -> Path:
    """A finished 2-step stage-2 run of the quickstart recipe on the synthetic set (its `video_text.safetensors`
    names the synthetic tiny BERT folder), made once per session; treat it as read-only."""
    from umt_cli.recipe import PretrainRecipe, load_recipe
    from umt_cli.recipe.catalog import resolve_recipe
    from umt_cli.stages import pretrain

    overrides = [*_synthetic_corpora(synthetic_dir), "schedule.max_steps=2"]
    run_dir = tmp_path_factory.mktemp("stage2") / "run"
    recipe = load_recipe(resolve_recipe("quickstart/pretrain"), overrides, expect=PretrainRecipe)
    pretrain.run(recipe, run_dir, overrides=overrides)
    return run_dir


MINIMAL_RECIPE = """
schema_version = 1
stage = "distill"
[data]
train_list = "train.csv"
[teacher]
weights = "random"
[masking]
kind = "attention"
"""
"""The smallest valid stage-1 recipe: every other key takes its default."""


def strict_json(text: str) -> object:
    """Parse JSON as strict parsers do: `NaN`, `Infinity` and `-Infinity` are errors."""

    def reject(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def read_metrics(run_dir: Path) -> list[dict]:
    return [strict_json(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def kill_once_checkpointed(process: subprocess.Popen, run_dir: Path, *, logged: int = 3, timeout_s: float = 240):
    """SIGKILL a training process once its run has a checkpoint and `logged` metrics lines (the resume tests'
    interruption); fails the test if the run finishes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "checkpoints" / "latest").is_file() and len(read_metrics(run_dir)) >= logged:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


# --- `umt score`: a tiny random video-text model saved in the official fine-tuned retrieval layout (SPEC §5.5, what
# the FETV file is), its tokenizer folder, and a few generated clips ------------------------------------------------

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
    folder = tmp_path_factory.mktemp("generated")
    for key, count in enumerate((7, 12, 13, 30, 50)):
        frames = np.full((count, 48, 64, 3), 40, np.uint8)
        for i in range(count):  # a bright square moving right, each clip in its own colour
            frames[i, 16:32, 2 * i % 48 : 2 * i % 48 + 16, key % 3] = 220
        write_h264(folder / f"{key}.mp4", frames, fps=8, width=64, height=48, keyframe_interval=None,
                   preset="veryfast")  # fmt: skip
    return folder
