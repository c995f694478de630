"""On an accelerator the decode workers hand over the sampled uint8 frames, and the resize and normalisation run
beside the model (`finishing_on`, `clip_batch`): a GPU would otherwise wait for the workers' bicubic resize. The
deferred path, forced here on the CPU, must give the very numbers of the workers' path."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import tiny_config

from umt_cli.data.text import build_tokenizer
from umt_cli.evaluation.features import ClipReader, Shard, clip_batch, encode_videos, finishing_on
from umt_cli.models.config import build_video_text
from umt_cli.scoring.pairs import score_pairs
from umt_cli.scoring.protocols import clip_reader, resolve_protocol

PROMPTS = ["a red square moves right", "a blue circle", "the dog runs left", "green squares move up", "a cat"]


def readers(protocol: str) -> tuple[ClipReader, ClipReader]:
    """The protocol's reader (12 frames, 32 px) without and with the deferred resize."""
    settings, _ = resolve_protocol(protocol, {"size": 32})
    reader = clip_reader(settings, tiny_config().preprocess)
    return reader, replace(reader, defer_resize=True)


@pytest.fixture(scope="module")
def model(official_model):
    """The official-layout model's weights at the protocols' 12 frames."""
    model = build_video_text(tiny_config().with_frames(12)).eval()
    model.load_state_dict(official_model.model.state_dict())
    return model


@pytest.mark.parametrize("protocol", ["fetv", "chronomagic"])  # without and with antialias
def test_a_deferred_clip_is_the_decoded_frames_and_finishing_it_gives_the_clip(score_videos, protocol):
    reader, deferred = readers(protocol)
    for path in sorted(score_videos.glob("*.mp4")):
        frames = deferred(path)  # (T, C, H, W) uint8, the video's own size
        assert frames.dtype == torch.uint8 and tuple(frames.shape) == (12, 3, 48, 64)
        clip = reader(path)  # (C, T, S, S)
        assert clip.shape == (3, 12, 32, 32)
        assert torch.equal(deferred.finish(frames), clip)
        assert torch.equal(clip_batch(deferred, [frames, frames], torch.device("cpu")), torch.stack([clip, clip]))


def test_the_resize_moves_to_an_accelerator_only():
    reader = ClipReader(preprocess=object())  # type: ignore[arg-type]  # (not read here)
    assert finishing_on(reader, torch.device("cpu")) is reader
    assert finishing_on(reader, torch.device("cuda")).defer_resize
    assert finishing_on(reader, torch.device("mps")).defer_resize
    deferred = replace(reader, defer_resize=True)
    assert finishing_on(deferred, torch.device("cpu")) is deferred


@pytest.mark.parametrize("workers", [0, 1])
def test_scores_and_features_are_the_same_when_the_resize_is_deferred(model, official_model, score_videos, workers):
    tokenizer = build_tokenizer(official_model.bert)
    videos = sorted(score_videos.glob("*.mp4"))
    outputs = []
    for reader in readers("fetv"):
        outputs.append(score_pairs(model, videos, reader, prompts=PROMPTS, tokenizer=tokenizer, features=True,
                                   batch_size=2, num_workers=workers))  # fmt: skip
    plain, deferred = outputs
    assert plain.itm == deferred.itm and plain.itc == deferred.itc
    assert torch.equal(plain.features, deferred.features)


def test_video_features_are_the_same_when_the_resize_is_deferred(model, score_videos):
    videos = sorted(score_videos.glob("*.mp4"))
    plain, deferred = (
        encode_videos(model, videos, reader, batch_size=2, shard=Shard(), device=torch.device("cpu"))
        for reader in readers("fetv")
    )
    assert torch.equal(plain.tokens, deferred.tokens) and torch.equal(plain.frames, deferred.frames)
