"""The stage-2 video-text model of UMT (Li et al., "Unmasked Teacher", ICCV 2023, https://arxiv.org/abs/2303.16058).

The stage-1 video encoder (`vision_encoder.encoder`, with its alignment heads `clip_decoder`, now un-normalised
with LayerNorm eps 1e-5) gains `pool_norm`; a fusion BERT (`text_encoder`, `umt_cli.models.text`) reads captions
and, in its last layers, cross-attends to the vision tokens; `vision_proj` / `text_proj` map both into the joint
space of width E for contrastive learning, `itm_head` scores fused pairs, and `temp` is the contrastive temperature.
Parameter names are the official ones (docs/official-behaviour.md, Stage 2 model), so an official stage-2 file loads
through `OFFICIAL_STAGE2_PREFIXES` without renaming; the frozen teacher is not part of this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from umt_cli.errors import CheckpointError
from umt_cli.models.convert import load_strict
from umt_cli.models.heads import AlignHeads
from umt_cli.models.layers import LN_EPS
from umt_cli.models.student import VideoViT

__all__ = [
    "VisionOutput",
    "VisionEncoder",
    "VideoTextModel",
    "OFFICIAL_STAGE2_PREFIXES",
    "split_official_stage2",
    "load_official_stage2",
]

TEMP_RANGE = (0.001, 0.5)
"""The contrastive temperature is clamped into this range before every training forward (official)."""


@dataclass(frozen=True)
class VisionOutput:
    """What the vision side gives the losses.

    Attributes:
        tokens: (B, Nv, D) the normalised last-block tokens: the fusion layers' cross-attention memory.
        pooled: (B, Tp, D) `pool_norm` of the mean over tokens: Tp = 1 (all tokens), or T (per frame).
        aligned: (K, B, Nv, Ct) the alignment heads' outputs (UTA), or None without a mask or heads.
    """

    tokens: Tensor
    pooled: Tensor
    aligned: Tensor | None


class VisionEncoder(nn.Module):
    """`encoder` (the video ViT) + `clip_decoder` (K alignment heads) + `pool_norm`, named as upstream."""

    def __init__(self, *, encoder: VideoViT, clip_decoder: AlignHeads) -> None:
        super().__init__()
        self.encoder = encoder
        self.clip_decoder = clip_decoder
        self.pool_norm = nn.LayerNorm(encoder.norm.normalized_shape[0], eps=LN_EPS)

    def forward(self, video: Tensor, visible: Tensor | None = None, *, per_frame: bool = False) -> VisionOutput:
        """Encode a clip (T frames) or an image (T = 1) on its visible tokens.

        Args:
            video: (B, C, T, H, W) normalised pixels.
            visible: (B, N) bool, True = kept, the same count per sample; None = all tokens.
            per_frame: Pool each frame separately (Tp = T; needs the same count per frame, so not with random
                masks); else pool all tokens (Tp = 1), as pre-training does.
        """
        out = self.encoder(video, visible, last=True)
        tokens = out.last  # (B, Nv, D)
        aligned = self.clip_decoder(out.layers, visible) if visible is not None and len(self.clip_decoder) else None
        if per_frame:
            pooled = self.pool_norm(tokens.view(tokens.shape[0], video.shape[2], -1, tokens.shape[-1]).mean(2))
        else:
            pooled = self.pool_norm(tokens.mean(1, keepdim=True))  # (B, 1, D)
        return VisionOutput(tokens=tokens, pooled=pooled, aligned=aligned)


class VideoTextModel(nn.Module):
    """The trainable stage-2 model: vision encoder, fusion text encoder, projections, temperature, ITM head.

    Args:
        vision_encoder: The stage-2 vision side.
        text_encoder: The fusion BERT with its MLM head (`umt_cli.models.text.TextEncoder`).
        embed_dim: E, the joint embedding width.
        temp: Initial contrastive temperature (official 0.07).
    """

    def __init__(self, *, vision_encoder: VisionEncoder, text_encoder: nn.Module, embed_dim: int, temp: float = 0.07):
        super().__init__()
        vision_width = vision_encoder.pool_norm.normalized_shape[0]  # D
        text_width = text_encoder.hidden_size  # Dtxt
        self.vision_encoder = vision_encoder
        self.text_encoder = text_encoder
        self.vision_proj = nn.Linear(vision_width, embed_dim)  # PyTorch's default init, as upstream
        self.text_proj = nn.Linear(text_width, embed_dim)
        self.temp = nn.Parameter(torch.tensor(temp))
        self.itm_head = nn.Linear(text_width, 2)

    def forward(self, inputs: object, **options: object) -> object:
        """The four stage-2 losses of a batch: `umt_cli.losses.pretrain.pretrain_losses(self, inputs, **options)`.

        Training calls the model itself, so that under data parallelism the whole computation runs inside the
        wrapper's forward and its gradients are synchronised.
        """
        from umt_cli.losses.pretrain import pretrain_losses  # the losses import this module

        return pretrain_losses(self, inputs, **options)  # type: ignore[arg-type]

    def encode_video(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """Evaluation view of a clip, unmasked (docs/official-behaviour.md, Retrieval protocol).

        Args:
            video: (B, C, T, H, W) normalised pixels.

        Returns:
            tokens (B, N, D), the fusion layers' memory; frames (B, T, E), the l2-normalised per-frame embeddings.
        """
        tokens, frames = self.video_embeddings(video)
        return tokens, nn.functional.normalize(frames, dim=-1)

    def video_embeddings(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """`encode_video` before the l2 normalisation: tokens (B, N, D) and per-frame `vision_proj(pool_norm(frame
        mean))` (B, T, E). The text-to-video scores read both: UMT-FVD's feature is the mean of the frames' rows."""
        out = self.vision_encoder(video, per_frame=True)
        return out.tokens, self.vision_proj(out.pooled)

    def encode_text(self, ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Text-only pass: hidden states (B, L, Dtxt) for fusion, and the l2-normalised `[CLS]` embedding (B, E)."""
        hidden = self.text_encoder.encode_text(ids, attention_mask)
        return hidden, nn.functional.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def match_logits(
        self, text_hidden: Tensor, attention_mask: Tensor, vision_tokens: Tensor, vision_rows: Tensor | None = None
    ) -> Tensor:
        """The raw ITM logit of the match class (index 1) for each text row: (P,).

        Args:
            text_hidden: (P, L, Dtxt) text-only hidden states; attention_mask: (P, L).
            vision_tokens: (P, N, D), or (M, N, D) distinct token sets indexed by `vision_rows` (P,), whose keys
                and values are then computed once per set.
        """
        fused = self.text_encoder.fuse(text_hidden, attention_mask, vision_tokens, vision_rows=vision_rows)
        return self.itm_head(fused[:, 0])[:, 1]

    @torch.no_grad()
    def clamp_temperature(self) -> None:
        """Keep `temp` in `TEMP_RANGE` (in place, as upstream does before every training forward)."""
        self.temp.clamp_(*TEMP_RANGE)


OFFICIAL_STAGE2_PREFIXES: dict[str, str] = {
    "vision_encoder.encoder.": "model",
    "vision_encoder.clip_decoder.": "model",
    "vision_encoder.pool_norm.": "model",
    "text_encoder.bert.": "model",
    "text_encoder.cls.": "model",
    "vision_proj.": "model",
    "text_proj.": "model",
    "temp": "model",
    "itm_head.": "model",
    "clip_teacher.": "teacher",
}
"""Where each key of an official stage-2 file goes (docs/official-behaviour.md, Stage 2 files): the trainable model
(same names) or the frozen teacher (prefix dropped). A key under no prefix is an error."""


def split_official_stage2(state_dict: Mapping[str, Tensor], *, source: str) -> tuple[dict, dict]:
    """Split an official stage-2 state dict into (model keys, teacher keys without `clip_teacher.`).

    Raises:
        CheckpointError: Keys that belong to neither, named with the file.
    """
    model: dict[str, Tensor] = {}
    teacher: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        prefix = next((p for p in OFFICIAL_STAGE2_PREFIXES if key == p or key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        elif OFFICIAL_STAGE2_PREFIXES[prefix] == "teacher":
            teacher[key.removeprefix(prefix)] = value
        else:
            model[key] = value
    if unknown:
        shown = ", ".join(unknown[:8]) + (", ..." if len(unknown) > 8 else "")
        raise CheckpointError(f"{source}: {len(unknown)} key(s) outside the stage-2 layout: [{shown}]")
    return model, teacher


def load_official_stage2(model: VideoTextModel, state_dict: Mapping[str, Tensor], *, source: str) -> dict:
    """Load the model part of an official stage-2 state dict strictly; return the teacher part.

    The optional `text_encoder.bert.embeddings.position_ids` buffer (saved by older transformers) is dropped: the
    positions are 0..L-1 either way.

    Raises:
        CheckpointError: Missing, unexpected or misshapen keys, named with the file.
    """
    weights, teacher = split_official_stage2(state_dict, source=source)
    weights.pop("text_encoder.bert.embeddings.position_ids", None)
    load_strict(model, weights, what=f"stage-2 model from {source}")
    return teacher
