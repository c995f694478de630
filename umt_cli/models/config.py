"""Architecture and preprocessing of a loadable model as plain data, and the builders that turn it into modules.

A `VideoTextConfig` says everything needed to rebuild a stage-2 (or retrieval) model without any other file: the
vision ViT's geometry, the fusion BERT's shape, the joint width, and how inputs are prepared (pixel statistics,
size, frames, frame sampling, caption length, the `[SEP]` choice). It is what `umt export` writes as `config.json`,
what our stage-2 weights carry in their header, and what the official-checkpoint import infers from tensor shapes.
`ClassifierConfig` does the same for a fine-tuned action-recognition ViT.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from umt_cli.errors import CheckpointError

__all__ = [
    "VisionConfig",
    "TextConfig",
    "Preprocess",
    "VideoTextConfig",
    "ClassifierConfig",
    "build_video_text",
    "build_model",
    "config_from_dict",
]

CONFIG_FORMAT = 1
"""Version of the dictionaries below; a loader refuses a newer one."""


@dataclass(frozen=True)
class VisionConfig:
    """The video ViT (docs/official-behaviour.md, Student ViT) and its alignment heads.

    Attributes:
        dim, depth, num_heads, patch_size: D, blocks, heads, pixels per patch side.
        img_size, num_frames, tubelet: Input side, frames, frames per token (1 in UMT).
        align_layers: K alignment heads (`clip_decoder`); 0 when the file has none (fine-tuned retrieval).
        teacher_dim: Ct, the heads' output width (0 when K = 0).
        pos_temporal: How the position table follows the frame count: `extend` (regenerate the 1-D sinusoid for
            the new length, what retrieval does) or `interpolate` (resample the 8-frame, 14 x 14 table, what
            classification fine-tuning does); docs/pitfalls.md on position tables.
    """

    dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    img_size: int = 224
    num_frames: int = 4
    tubelet: int = 1
    align_layers: int = 0
    teacher_dim: int = 0
    pos_temporal: Literal["extend", "interpolate"] = "extend"


@dataclass(frozen=True)
class TextConfig:
    """The fusion BERT (`umt_cli.models.text.TextEncoder` arguments)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    fusion_layer: int
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    mlm_head: bool = False


@dataclass(frozen=True)
class Preprocess:
    """How a video and a caption become model inputs at evaluation time (docs/official-behaviour.md, Evaluation).

    Attributes:
        mean, std: Pixel statistics: a frame is fed as `(x / 255 - mean) / std`.
        size: Side of the square centre crop after resizing the short side to it.
        num_frames: Frames per clip.
        sampling: Frame sampling: `middle`, the middle frame of `num_frames` equal segments; `linspace`, evenly
            spaced with the first and last frames (a text-to-video scoring protocol, `umt_cli.scoring.protocols`).
        resize: `square` (resize to size x size, bicubic: the official retrieval test transform) or `crop` (short
            side to `size`, then centre crops: the classification test transform).
        max_len: Caption tokens, special tokens included.
        add_sep: Append `[SEP]` (stock BERT); False is the official `[CLS] X`.
    """

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    size: int = 224
    num_frames: int = 4
    sampling: Literal["middle", "linspace"] = "middle"
    resize: Literal["square", "crop"] = "square"
    max_len: int = 32
    add_sep: bool = False


@dataclass(frozen=True)
class VideoTextConfig:
    """A stage-2 / retrieval model: vision, text, joint width E, preprocessing."""

    vision: VisionConfig
    text: TextConfig
    embed_dim: int
    preprocess: Preprocess = field(default_factory=Preprocess)
    kind: Literal["video-text"] = "video-text"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the format version."""
        return {"format": CONFIG_FORMAT, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_frames(self, num_frames: int) -> VideoTextConfig:
        """The same model run on another frame count (the position table is regenerated or resampled)."""
        return replace(
            self,
            vision=replace(self.vision, num_frames=num_frames),
            preprocess=replace(self.preprocess, num_frames=num_frames),
        )


@dataclass(frozen=True)
class ClassifierConfig:
    """A fine-tuned classification ViT (docs/official-behaviour.md, Classification fine-tuning): the ViT without
    its final norm, `fc_norm` on the token mean, `head` with `num_classes` rows."""

    vision: VisionConfig
    num_classes: int
    preprocess: Preprocess = field(default_factory=Preprocess)
    kind: Literal["classifier"] = "classifier"

    def to_dict(self) -> dict[str, Any]:
        return {"format": CONFIG_FORMAT, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _section(cls: type, data: object, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{where}: expected a table, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {unknown}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as error:  # a required key is missing
        raise CheckpointError(f"{where}: {error}") from None


def config_from_dict(data: Mapping[str, Any], *, source: str) -> VideoTextConfig | ClassifierConfig:
    """Rebuild a config written by `to_dict` (an export's `config.json`, a weights header).

    Raises:
        CheckpointError: A newer format, an unknown kind, or unknown / missing keys, naming `source`.
    """
    data = dict(data)
    version = data.pop("format", None)
    if not isinstance(version, int) or version > CONFIG_FORMAT:
        raise CheckpointError(f"{source}: model config format {version!r} is not one this umt reads ({CONFIG_FORMAT})")
    kind = data.pop("kind", None)
    preprocess = _section(Preprocess, data.pop("preprocess", {}), f"{source}: preprocess")
    vision = _section(VisionConfig, data.pop("vision", None), f"{source}: vision")
    if kind == "video-text":
        text = _section(TextConfig, data.pop("text", None), f"{source}: text")
        embed_dim = data.pop("embed_dim", None)
        if data or not isinstance(embed_dim, int):
            raise CheckpointError(f"{source}: unexpected or missing keys in the model config: {sorted(data)}")
        return VideoTextConfig(vision=vision, text=text, embed_dim=embed_dim, preprocess=preprocess)
    if kind == "classifier":
        classes = data.pop("num_classes", None)
        if data or not isinstance(classes, int):
            raise CheckpointError(f"{source}: unexpected or missing keys in the model config: {sorted(data)}")
        return ClassifierConfig(vision=vision, num_classes=classes, preprocess=preprocess)
    raise CheckpointError(f"{source}: unknown model kind {kind!r} (expected 'video-text' or 'classifier')")


def vit_geometry(vision: VisionConfig) -> dict[str, int]:
    """The `VideoViT` arguments (and those of its subclasses) that `vision` fixes."""
    keys = ("img_size", "patch_size", "num_frames", "tubelet", "dim", "depth", "num_heads")
    return {key: getattr(vision, key) for key in keys}


def build_vit(vision: VisionConfig) -> Any:
    """The video ViT of `vision`, in eval geometry (no drop path)."""
    from umt_cli.models.student import VideoViT

    return VideoViT(**vit_geometry(vision), align_layers=vision.align_layers)


def build_video_text(config: VideoTextConfig) -> Any:
    """A `VideoTextModel` with the architecture of `config` (random weights; load a state dict into it)."""
    from umt_cli.models.heads import AlignHeads
    from umt_cli.models.text import TextEncoder
    from umt_cli.models.video_text import VideoTextModel, VisionEncoder

    v, t = config.vision, config.text
    encoder = build_vit(v)
    heads = AlignHeads(
        num_tokens=encoder.num_tokens, dim=v.dim, out_dim=v.teacher_dim, num_layers=v.align_layers, eps=1e-5, l2=False
    )
    text = TextEncoder(
        vocab_size=t.vocab_size,
        hidden_size=t.hidden_size,
        num_layers=t.num_layers,
        num_heads=t.num_heads,
        intermediate_size=t.intermediate_size,
        fusion_layer=t.fusion_layer,
        encoder_width=v.dim,
        max_positions=t.max_positions,
        type_vocab_size=t.type_vocab_size,
        layer_norm_eps=t.layer_norm_eps,
        pad_token_id=t.pad_token_id,
        mlm_head=t.mlm_head,
    )
    model = VideoTextModel(
        vision_encoder=VisionEncoder(encoder=encoder, clip_decoder=heads), text_encoder=text, embed_dim=config.embed_dim
    )
    return model.eval()


def build_model(config: VideoTextConfig | ClassifierConfig) -> Any:
    """The module of either family, random weights, eval mode."""
    if isinstance(config, ClassifierConfig):
        from umt_cli.models.classifier import build_classifier

        return build_classifier(config).eval()
    return build_video_text(config)
