"""The text-to-video scoring protocols that use UMT models as metrics (docs/official-behaviour.md, Text-to-video
scores), as data: every setting in which FETV, ChronoMagic-Bench and t2v_metrics differ.

A protocol is a `ScoreProtocol`; `PROTOCOLS` names the three. A user may override any setting; `resolve_protocol`
returns the settings used and the record of what differs from the named protocol, which every output carries:

    protocol, record = resolve_protocol("fetv", {"frames": 8})
    record["overridden"]    # {"frames": {"protocol": 12, "used": 8}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from umt_cli.data.text import clean_caption
from umt_cli.errors import UsageError
from umt_cli.evaluation.features import ClipReader
from umt_cli.models.config import Preprocess

__all__ = ["ScoreProtocol", "PROTOCOLS", "SAMPLINGS", "resolve_protocol", "clip_reader", "prompt_text"]

Sampling = Literal["middle", "linspace"]
SAMPLINGS = ("middle", "linspace")
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ScoreProtocol:
    """Every setting that changes a score.

    Attributes:
        name: The protocol's name (`PROTOCOLS` key).
        weights: The checkpoint the protocol's published numbers come from (a description: files are never fetched).
        frames: Frames per video.
        sampling: `middle`: the middle frame of each of `frames` equal segments (`edges = int(linspace(0, n,
            frames + 1))`, frame `(edges_i + edges_{i+1} - 1) // 2`); `linspace`: `int(linspace(0, n - 1, frames))`,
            first and last included. Both pad a shorter video with its last frame.
        size: Frames are resized to exactly `size` x `size` (bicubic, aspect ratio not kept).
        antialias: Antialias that resize (torchvision >= 0.17 does by default; the 0.13 FETV ran with did not).
        clean_text: Clean prompts as the official caption pre-processing does (lowercase, punctuation removed).
        max_len: Prompt tokens including `[CLS]`; longer prompts are truncated (and counted).
        precision: Autocast precision on CUDA (the CPU always computes in fp32).
    """

    name: str
    weights: str
    frames: int
    sampling: Sampling
    size: int
    antialias: bool
    clean_text: bool
    max_len: int
    precision: str


PROTOCOLS: dict[str, ScoreProtocol] = {
    "fetv": ScoreProtocol(
        name="fetv",
        weights="UMT-L/16-25M fine-tuned for retrieval on MSR-VTT 7k (HF lyx97/UMT-msrvtt-7k, ckpt_best.pth)",
        frames=12,
        sampling="middle",
        size=224,
        antialias=False,
        clean_text=True,
        max_len=32,
        precision="fp16",
    ),
    "chronomagic": ScoreProtocol(
        name="chronomagic",
        weights="UMT-L/16-25M fine-tuned for retrieval on MSR-VTT 7k (the FETV file)",
        frames=12,
        sampling="middle",
        size=224,
        antialias=True,
        clean_text=True,
        max_len=32,
        precision="fp16",
    ),
    "t2v-metrics": ScoreProtocol(
        name="t2v-metrics",
        weights="UMT stage-2 pre-trained b16_25m or l16_25m (no retrieval fine-tuning)",
        frames=4,
        sampling="linspace",
        size=224,
        antialias=False,
        clean_text=False,
        max_len=32,
        precision="fp32",
    ),
}
"""The named protocols (docs/official-behaviour.md, Text-to-video scores)."""

OVERRIDABLE = ("frames", "sampling", "size", "antialias", "clean_text", "max_len", "precision")


def resolve_protocol(name: str, overrides: Mapping[str, Any] | None = None) -> tuple[ScoreProtocol, dict[str, Any]]:
    """The named protocol with `overrides` applied (None values are ignored), and its record for the output.

    Raises:
        UsageError: An unknown protocol name or an invalid override value.
    """
    if name not in PROTOCOLS:
        raise UsageError(f"--protocol {name!r}: expected one of {', '.join(PROTOCOLS)}")
    base = PROTOCOLS[name]
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(given) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"not protocol settings: {unknown}")
    _check(given)
    used = replace(base, **given)
    overridden = {key: {"protocol": getattr(base, key), "used": value}
                  for key, value in given.items() if getattr(base, key) != value}  # fmt: skip
    return used, {**asdict(used), "overridden": overridden}


def _check(given: Mapping[str, Any]) -> None:
    if given.get("sampling", "middle") not in SAMPLINGS:
        raise UsageError(f"--sampling {given['sampling']!r}: expected one of {', '.join(SAMPLINGS)}")
    if given.get("precision", "fp32") not in PRECISIONS:
        raise UsageError(f"--precision {given['precision']!r}: expected one of {', '.join(PRECISIONS)}")
    for key, least in (("frames", 1), ("size", 16), ("max_len", 2)):
        if key in given and given[key] < least:
            raise UsageError(f"--{key.replace('_', '-')} {given[key]}: must be at least {least}")


def clip_reader(protocol: ScoreProtocol, preprocess: Preprocess, *, backend: str = "auto") -> ClipReader:
    """The reader of the protocol's clips for a model whose pixel statistics are `preprocess`'s: `protocol.frames`
    frames sampled and resized as the protocol says. `clip_reader(...).indices(n)` gives the frames it reads."""
    settings = replace(preprocess, num_frames=protocol.frames, size=protocol.size, sampling=protocol.sampling,
                       resize="square")  # fmt: skip
    return ClipReader(settings, backend=backend, antialias=protocol.antialias)


def prompt_text(protocol: ScoreProtocol, prompt: str) -> str:
    """The prompt as the protocol feeds it to the tokenizer."""
    return clean_caption(prompt) if protocol.clean_text else prompt
