"""The fine-tuned action-classification ViT of UMT (Li et al., "Unmasked Teacher", ICCV 2023,
https://arxiv.org/abs/2303.16058); official `single_modality/models/modeling_finetune.py`, `VisionTransformer`.

It is the stage-1 video ViT without its final LayerNorm (upstream's `norm` is `Identity` under mean pooling): all
tokens run through the blocks, their mean goes through `fc_norm` (LayerNorm, eps 1e-6) and the linear `head`. The
parameter names are the official ones (`patch_embed.proj.*`, `blocks.{i}.*`, `fc_norm.*`, `head.*`; no `norm.*`), so
an official fine-tuned file loads strictly (`umt_cli.models.official.import_classifier`). The position table is never
stored: it is regenerated for the model's grid by the rule in `VisionConfig.pos_temporal` (`umt_cli.models.positions`).
"""

from __future__ import annotations

from torch import Tensor, nn

from umt_cli.models.config import ClassifierConfig, vit_geometry
from umt_cli.models.layers import LN_EPS
from umt_cli.models.positions import checkpoint_grid, interpolated_table
from umt_cli.models.student import VideoViT

__all__ = ["HEAD_INIT_SCALE", "VideoClassifier", "build_classifier"]

HEAD_INIT_SCALE = 0.001
"""A fresh head's weights are trunc_normal(0.02) times this (upstream `--init_scale`), so training starts near
uniform predictions."""


class VideoClassifier(VideoViT):
    """Video ViT -> mean over all tokens -> `fc_norm` -> `head`.

    Args:
        num_classes: Rows of `head`.
        pos_temporal: `extend` (the 1-D sinusoid regenerated for N tokens) or `interpolate` (the official fine-tuning
            rule: the 8-frame, (224 / p)^2 table resampled onto this grid).
        head_init_scale: Factor on the fresh head's trunc-normal(0.02) weights (upstream `--init_scale`, 0.001).
        **vit: `VideoViT` arguments except `align_layers` (a classifier taps no layers).
    """

    def __init__(
        self, *, num_classes: int, pos_temporal: str = "extend", head_init_scale: float = HEAD_INIT_SCALE, **vit: object
    ) -> None:
        super().__init__(align_layers=0, **vit)  # type: ignore[arg-type]
        self.head_init_scale = head_init_scale
        dim = self.patch_embed.proj.out_channels
        self.norm = nn.Identity()  # upstream's mean-pooling ViT has no final norm; fc_norm takes its place
        self.pos_embed = self._position_table(pos_temporal, dim)  # (1, N, D), still a non-persistent buffer
        self.pos_temporal = pos_temporal
        self.fc_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes)
        self.reset_head()

    def _position_table(self, pos_temporal: str, dim: int) -> Tensor:
        if pos_temporal == "extend":
            return self.pos_embed  # VideoViT's sinusoid for N tokens
        if pos_temporal == "interpolate":
            return interpolated_table(dim, checkpoint_grid(self.patch_embed.patch_size), target=self.grid)
        raise ValueError(f"pos_temporal must be 'extend' or 'interpolate', got {pos_temporal!r}")

    def reset_head(self) -> None:
        """Upstream's fresh classifier: `head` trunc_normal(0.02) x `head_init_scale` with zero bias, `fc_norm` 1/0."""
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        self.head.weight.data.mul_(self.head_init_scale)
        nn.init.zeros_(self.head.bias)
        self.fc_norm.reset_parameters()

    def features(self, video: Tensor) -> Tensor:
        """The pooled clip embedding: `fc_norm` of the mean over all output tokens.

        Args:
            video: (B, C, T, H, W) normalised pixels at the model's frame count and size.

        Returns:
            (B, D).
        """
        tokens = super().forward(video, last=True).last  # (B, N, D); `norm` is Identity
        return self.fc_norm(tokens.mean(1))  # (B, D)

    def forward(self, video: Tensor) -> Tensor:  # type: ignore[override]
        """Class logits of (B, C, T, H, W) clips: (B, classes)."""
        return self.head(self.features(video))


def build_classifier(
    config: ClassifierConfig,
    *,
    drop_path: float = 0.0,
    checkpoint_blocks: int = 0,
    head_init_scale: float = HEAD_INIT_SCALE,
) -> VideoClassifier:
    """A `VideoClassifier` with the architecture of `config` (random weights; load a state dict into it).

    Args:
        config: The model; `config.vision.align_layers` is ignored (a classifier has no alignment heads).
        drop_path: Stochastic-depth rate of the last block (fine-tuning); 0 for evaluation.
        checkpoint_blocks: Blocks recomputed in backward.
        head_init_scale: Factor on a fresh head's initial weights (fine-tuning; upstream `--init_scale`).
    """
    v = config.vision
    model = VideoClassifier(
        num_classes=config.num_classes,
        pos_temporal=v.pos_temporal,
        **vit_geometry(v),
        drop_path=drop_path,
        checkpoint_blocks=checkpoint_blocks,
        head_init_scale=head_init_scale,
    )
    return model.eval()
