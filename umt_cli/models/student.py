"""The UMT video ViT student (Li et al., "Unmasked Teacher", ICCV 2023, https://arxiv.org/abs/2303.16058).

Stage 1 runs the student on the visible tokens only and returns its K last block outputs, each passed through the
encoder's shared final LayerNorm; `DistillStudent` adds the alignment heads and has exactly the official stage-1
state-dict layout (`encoder.*`, `clip_decoder.{k}.*`), so official checkpoints load strictly without a key map.
Stage 2 also feeds images as 1-frame clips (the first HW rows of the position table, which are the official image
table) and reads the normalised last block output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from umt_cli.models.heads import AlignHeads
from umt_cli.models.layers import LN_EPS, Block, PatchEmbed3D, select_visible, sinusoid_table
from umt_cli.variants import STUDENT_PRESETS

__all__ = ["StudentOutput", "VideoViT", "DistillStudent", "build_distill_student"]


@dataclass(frozen=True)
class StudentOutput:
    """What the student returns.

    Attributes:
        layers: (K, B, Nv, D) tapped block outputs, ascending block order, with the shared final `norm` applied.
        last: (B, Nv, D) the last block's output after `norm` (stage 2's vision tokens); None unless asked for.
    """

    layers: Tensor
    last: Tensor | None = None


class VideoViT(nn.Module):
    """Video ViT with a tubelet patch embedding and a fixed sinusoid position table (no CLS token).

    Args:
        img_size: Input side in pixels.
        patch_size: Patch side in pixels.
        num_frames: Input frames.
        tubelet: Frames per token.
        dim: D.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width / D.
        drop_path: Stochastic-depth rate of the last block (linear from 0 at the first).
        align_layers: K, the number of last blocks whose outputs are returned.
        checkpoint_blocks: Recompute the first this-many blocks in backward (activation checkpointing).
    """

    def __init__(
        self,
        *,
        img_size: int,
        patch_size: int,
        num_frames: int,
        tubelet: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        align_layers: int,
        checkpoint_blocks: int = 0,
    ) -> None:
        super().__init__()
        if img_size % patch_size or num_frames % tubelet:
            raise ValueError(f"img_size {img_size} / num_frames {num_frames} must divide by {patch_size} / {tubelet}")
        if not 0 <= align_layers <= depth:
            raise ValueError(f"align_layers must be in [0, depth={depth}], got {align_layers}")
        self.grid = (num_frames // tubelet, img_size // patch_size, img_size // patch_size)  # (T, H, W)
        self.align_layers = align_layers
        self.checkpoint_blocks = checkpoint_blocks
        self.patch_embed = PatchEmbed3D(patch_size=patch_size, tubelet=tubelet, dim=dim)
        # float32 values of torch.linspace, as the official code uses them.
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path=rate) for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.register_buffer("pos_embed", sinusoid_table(self.num_tokens, dim), persistent=False)  # (1, N, D)
        self.apply(init_weights)

    @property
    def num_tokens(self) -> int:
        """N = T·H·W tokens per clip."""
        t, h, w = self.grid
        return t * h * w

    @property
    def tap_indices(self) -> tuple[int, ...]:
        """0-based indices of the returned blocks, ascending (`depth - 1 - i` for i < K)."""
        depth = len(self.blocks)
        return tuple(sorted(depth - 1 - i for i in range(self.align_layers)))

    def forward(self, video: Tensor, visible: Tensor | None = None, *, last: bool = False) -> StudentOutput:
        """Run the encoder on the visible tokens.

        Args:
            video: (B, C, T, H, W) normalised pixels (T and H, W in frames and pixels); T is the model's frame count,
                or 1 for an image (stage 2).
            visible: (B, N) bool, True = kept; every sample must keep the same count. None runs all tokens.
            last: Also return the normalised last block output (stage 1 does not use it, so it is not computed).

        Returns:
            `StudentOutput` with `layers` (K, B, Nv, D) and, when asked, `last` (B, Nv, D).
        """
        tokens = self.tokens_of(video)
        pos = self.pos_embed[:, :tokens].to(video.dtype).expand(video.shape[0], -1, -1)  # (B, N, D)
        x = self.patch_embed(video, visible) + select_visible(pos, visible)  # (B, Nv, D)
        taps = set(self.tap_indices)
        layers = []
        for index, block in enumerate(self.blocks):
            x = self._run_block(index, block, x)  # (B, Nv, D)
            if index in taps:
                layers.append(x)
        normed = self.norm(torch.stack(layers)) if layers else x.new_empty((0, *x.shape))  # (K, B, Nv, D)
        if not last:
            return StudentOutput(layers=normed)
        final = normed[-1] if len(self.blocks) - 1 in taps else self.norm(x)  # the last block is usually a tap
        return StudentOutput(layers=normed, last=final)

    def tokens_of(self, video: Tensor) -> int:
        """N for a (B, C, T, H, W) clip: the model's own N, or HW for an image (T = 1); anything else is an error."""
        if video.ndim != 5:
            raise ValueError(f"expected a (B, C, T, H, W) video, got {tuple(video.shape)}")
        grid = self.patch_embed.patch_size
        tokens = video.shape[2] // self.patch_embed.tubelet * (video.shape[3] // grid) * (video.shape[4] // grid)
        frame = self.grid[1] * self.grid[2]
        if tokens != self.num_tokens and not (video.shape[2] == 1 and tokens == frame):
            raise ValueError(f"video {tuple(video.shape)} gives {tokens} tokens, the model expects {self.num_tokens}")
        return tokens

    def _run_block(self, index: int, block: nn.Module, x: Tensor) -> Tensor:
        if self.training and index < self.checkpoint_blocks and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return block(x)


class DistillStudent(nn.Module):
    """Stage-1 student: `encoder` (VideoViT) + `clip_decoder` (AlignHeads), in the official state-dict layout."""

    def __init__(self, *, encoder: VideoViT, clip_decoder: AlignHeads) -> None:
        super().__init__()
        self.encoder = encoder
        self.clip_decoder = clip_decoder

    def forward(self, video: Tensor, visible: Tensor | None = None) -> Tensor:
        """Predict the teacher's targets on the visible tokens.

        Args:
            video: (B, C, T, H, W) normalised pixels.
            visible: (B, N) bool, True = kept, or None for all tokens.

        Returns:
            (K, B, Nv, Ct), l2-normalised along Ct.
        """
        return self.clip_decoder(self.encoder(video, visible).layers, visible)  # (K, B, Nv, Ct)


def init_weights(module: nn.Module) -> None:
    """Official `_init_weights`: Linear xavier-uniform with zero bias, LayerNorm 1/0; Conv3d keeps PyTorch's default."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_distill_student(
    preset: str,
    *,
    img_size: int,
    num_frames: int,
    tubelet: int,
    drop_path: float,
    align_layers: int,
    teacher_dim: int,
    checkpoint_blocks: int = 0,
) -> DistillStudent:
    """Build the stage-1 student of a preset.

    Args:
        preset: A name in `umt_cli.variants.STUDENT_PRESETS`.
        img_size: Input side in pixels.
        num_frames: Input frames.
        tubelet: Frames per token.
        drop_path: Stochastic-depth rate of the last block.
        align_layers: K.
        teacher_dim: Ct, the teacher's output dim.
        checkpoint_blocks: Blocks recomputed in backward.

    Raises:
        ValueError: Unknown preset.
    """
    shape = STUDENT_PRESETS[STUDENT_PRESETS.check(preset)]
    encoder = VideoViT(
        img_size=img_size,
        num_frames=num_frames,
        tubelet=tubelet,
        drop_path=drop_path,
        align_layers=align_layers,
        checkpoint_blocks=checkpoint_blocks,
        **shape,
    )
    heads = AlignHeads(
        num_tokens=encoder.num_tokens, dim=shape["dim"], out_dim=teacher_dim, num_layers=align_layers, eps=LN_EPS
    )
    return DistillStudent(encoder=encoder, clip_decoder=heads)
