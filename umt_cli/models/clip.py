"""The frozen CLIP visual tower that UMT distils from (Radford et al., 2021, https://arxiv.org/abs/2103.00020;
used as in Li et al., "Unmasked Teacher", ICCV 2023, https://arxiv.org/abs/2303.16058).

Our own implementation of the OpenAI ViT (QuickGELU, fp32 LayerNorms, packed `in_proj`), because UMT needs what
open_clip's tower does not return: the K last layers' patch tokens and the last block's CLS -> patch attention.
Frames are folded into the batch; every block runs `scaled_dot_product_attention`, and only the last block
additionally computes the CLS query's attention row. Parameter names follow the OpenAI layout (docs/official-
behaviour.md, Checkpoint layouts), with `conv1` as a `Conv3d` of time kernel 1, so extracted teacher files and
open_clip weights load strictly. `ClipTeacher` implements the `umt_cli.models.teacher.Teacher` protocol; it is
registered for the `clip-*` architectures in `umt_cli.variants.TEACHERS`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from umt_cli.data.transforms import NORMALIZATION, Normalization, renormalize
from umt_cli.errors import CheckpointError
from umt_cli.masking.gather import gather_visible
from umt_cli.models.convert import load_strict, read_checkpoint, split_clip_visual, unwrap_state_dict

__all__ = [
    "TeacherOutput",
    "TeacherHidden",
    "DeferredBlock",
    "ClipTeacher",
    "resize_positional_embedding",
    "build_clip_teacher",
]

_GELU_ROWS = 256  # rows of the (BT·(1+HW), 4Dt) hidden layer per in-place QuickGELU block on the CPU


@dataclass(frozen=True)
class TeacherHidden:
    """The teacher's tapped layers before the output projection.

    Attributes:
        layers: (K, B, N, Dt) patch tokens of the tapped blocks (CLS dropped), (t, h, w) order, ascending blocks;
            (K - 1, B, N, Dt) when the last block is `pending`.
        cls_attn: (B, T, HW) last block's softmax CLS -> patch attention averaged over heads, on the full frame;
            rows sum to 1 minus the CLS -> CLS mass (no renormalisation).
        pending: The last block, deferred until the mask is known (`encode(defer_last=True)`), else None.
    """

    layers: Tensor
    cls_attn: Tensor
    pending: DeferredBlock | None = None


@dataclass(frozen=True)
class DeferredBlock:
    """The last block with its attention keys and values computed but its outputs not yet: once the mask is known
    (it depends on this block's CLS attention), `ClipTeacher.targets` finishes it for the visible tokens only,
    which skips ~80 % of the last block's queries, attention outputs and MLP.

    Attributes:
        x: (BT, 1+HW, Dt) the block's input (residual stream), CLS first.
        normed: (BT, 1+HW, Dt) `ln_1(x)`.
        k: (BT, h, 1+HW, d) keys; v: (BT, h, 1+HW, d) values.
    """

    x: Tensor
    normed: Tensor
    k: Tensor
    v: Tensor


@dataclass(frozen=True)
class TeacherOutput:
    """The teacher's distillation targets.

    Attributes:
        features: (K, B, N, Ct) `ln_post` + `proj` of each tapped layer, l2-normalised.
        cls_attn: (B, T, HW) as in `TeacherHidden`.
    """

    features: Tensor
    cls_attn: Tensor


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (as OpenAI CLIP does under fp16)."""

    def forward(self, x: Tensor) -> Tensor:
        """(..., Dt) -> (..., Dt), same dtype."""
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """`x * sigmoid(1.702 x)`, the activation the OpenAI CLIP weights were trained with.

    Args:
        inplace: Overwrite the input when autograd does not need it (the frozen teacher's (BT, 1+HW, 4Dt) hidden
            layer is its largest tensor; one temporary instead of three, same bits).
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """Elementwise on `x + bias` (`bias` broadcast over the last dim; None = no bias)."""
        if not self.inplace or x.requires_grad:
            x = x if bias is None else x + bias
            return x * torch.sigmoid(1.702 * x)
        # On the CPU a fresh tensor this large is page-faulted in on every call; row blocks keep the temporary
        # small and in cache (about 4x faster for B/16, same bits). Accelerators do it in one pass.
        rows = x.view(-1, x.shape[-1]).split(_GELU_ROWS) if x.device.type == "cpu" and x.is_contiguous() else [x]
        for block in rows:
            if bias is not None:
                block.add_(bias)
            block.mul_(block.mul(1.702).sigmoid_())
        return x


class ClipAttention(nn.Module):
    """Self-attention with `nn.MultiheadAttention`'s parameter names (packed `in_proj_*`, `out_proj`)."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, *, cls_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend over each frame's tokens.

        Args:
            x: (BT, 1+HW, Dt) tokens, CLS first.
            cls_attn: Also return the head-averaged attention of the CLS query over the patch keys.

        Returns:
            (BT, 1+HW, Dt) output, and (BT, HW) CLS -> patch attention or None.
        """
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (BT, 1+HW, 3Dt)
        q, k, v = rearrange(qkv, "n l (three h d) -> three n h l d", three=3, h=self.heads)  # (BT, h, 1+HW, Dt/h)
        out = F.scaled_dot_product_attention(q, k, v)  # (BT, h, 1+HW, Dt/h)
        out = self.out_proj(rearrange(out, "n h l d -> n l (h d)"))  # (BT, 1+HW, Dt)
        return out, (cls_attention(q[:, :, :1], k) if cls_attn else None)

    def queries(self, x: Tensor) -> Tensor:
        """(BT, Q, Dt) normalised tokens -> (BT, h, Q, d) queries (the first third of the packed projection)."""
        width = x.shape[-1]
        q = F.linear(x, self.in_proj_weight[:width], self.in_proj_bias[:width])  # (BT, Q, Dt)
        return rearrange(q, "n l (h d) -> n h l d", h=self.heads)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(BT, 1+HW, Dt) normalised tokens -> keys and values, each (BT, h, 1+HW, d)."""
        width = x.shape[-1]
        kv = F.linear(x, self.in_proj_weight[width:], self.in_proj_bias[width:])  # (BT, 1+HW, 2Dt)
        k, v = rearrange(kv, "n l (two h d) -> two n h l d", two=2, h=self.heads)
        return k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Queries (BT, h, Q, d) over keys/values (BT, h, 1+HW, d) -> (BT, Q, Dt) after `out_proj`."""
        out = F.scaled_dot_product_attention(q, k, v)  # (BT, h, Q, d)
        return self.out_proj(rearrange(out, "n h l d -> n l (h d)"))


def cls_attention(q_cls: Tensor, k: Tensor) -> Tensor:
    """Softmax attention of the CLS query, averaged over heads, on the patch keys (CLS key dropped).

    Computed as `nn.MultiheadAttention(need_weights=True)` does (scale q, then q k^T), for one query row only.

    Args:
        q_cls: (BT, h, 1, d) CLS queries.
        k: (BT, h, 1+HW, d) keys.

    Returns:
        (BT, HW).
    """
    logits = (q_cls * math.sqrt(1.0 / q_cls.shape[-1])) @ k.transpose(-2, -1)  # (BT, h, 1, 1+HW)
    return logits.softmax(dim=-1).mean(dim=1)[:, 0, 1:]  # (BT, HW)


class ClipMlp(nn.Module):
    """`c_fc` -> QuickGELU -> `c_proj`."""

    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU(inplace=True)  # acts on c_fc's fresh output
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        """(BT, 1+HW, Dt) -> (BT, 1+HW, Dt)."""
        if torch.is_grad_enabled() and self.c_fc.weight.requires_grad:
            return self.c_proj(self.gelu(self.c_fc(x)))
        # Frozen: a bias-free product, the bias added inside the activation's cache-sized blocks. (`addmm` would
        # first copy the bias into the whole (BT·(1+HW), 4Dt) output, a full extra pass over the largest tensor.)
        hidden = x @ self.c_fc.weight.t()  # (BT, 1+HW, 4Dt)
        return self.c_proj(self.gelu(hidden, self.c_fc.bias))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm CLIP block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = ClipAttention(width=width, heads=heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = ClipMlp(width=width)

    def forward(self, x: Tensor, *, cls_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """(BT, 1+HW, Dt) -> (BT, 1+HW, Dt), and the (BT, HW) CLS attention when asked."""
        attended, attn = self.attn(self.ln_1(x), cls_attn=cls_attn)
        # Residual sums land in the branch outputs (fresh GEMM results): no new (BT, 1+HW, Dt) buffer, and `x`, which
        # may be a tap, is left untouched.
        x = attended.add_(x)  # (BT, 1+HW, Dt)
        return self.mlp(self.ln_2(x)).add_(x), attn  # (BT, 1+HW, Dt)

    def begin(self, x: Tensor) -> tuple[DeferredBlock, Tensor]:
        """Keys, values and the CLS attention of this block, leaving its outputs for `finish`.

        Returns:
            The deferred block, and (BT, HW) CLS -> patch attention.
        """
        normed = self.ln_1(x)  # (BT, 1+HW, Dt)
        k, v = self.attn.keys_values(normed)  # (BT, h, 1+HW, d) each
        cls = cls_attention(self.attn.queries(normed[:, :1]), k)  # (BT, HW)
        return DeferredBlock(x=x, normed=normed, k=k, v=v), cls

    def finish(self, state: DeferredBlock, rows: Tensor | None) -> Tensor:
        """The block's outputs (BT, Q, Dt) at token positions `rows` (BT, Q) (CLS = 0), or all when None."""
        x, normed = state.x, state.normed
        if rows is not None:
            index = rows.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # (BT, Q, Dt)
            x, normed = x.gather(1, index), normed.gather(1, index)
        out = self.attn.attend(self.attn.queries(normed), state.k, state.v).add_(x)  # (BT, Q, Dt)
        return self.mlp(self.ln_2(out)).add_(out)


class ClipTransformer(nn.Module):
    """Holds the blocks, so the parameter names read `transformer.resblocks.{i}.*`."""

    def __init__(self, *, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width=width, heads=heads) for _ in range(layers))


class ClipTeacher(nn.Module):
    """Frozen CLIP ViT visual tower returning the K last layers and the last block's CLS attention.

    It takes the student's (B, 3, T, H, W) clip, normalised with `source_stats`, converts it to `input_stats` (nothing
    to do when they are equal: upstream feeds the tower the student's ImageNet-normalised input) and resizes it
    bicubically when H differs from `input_size`.

    Args:
        input_size: Side in pixels the tower runs at (sizes `positional_embedding`).
        patch_size: Patch side p.
        width: Dt.
        layers: Number of blocks.
        heads: Attention heads.
        output_dim: Ct, columns of `proj`.
        return_layers: K, the number of last blocks whose tokens are returned.
        source_stats: Normalisation of the clips it is given (the student's).
        input_stats: Normalisation the tower is fed.
    """

    def __init__(
        self,
        *,
        input_size: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        return_layers: int,
        source_stats: Normalization = NORMALIZATION["imagenet"],
        input_stats: Normalization = NORMALIZATION["imagenet"],
    ) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        if not 1 <= return_layers <= layers:
            raise ValueError(f"return_layers must be in [1, layers={layers}], got {return_layers}")
        self.input_size, self.patch_size = input_size, patch_size
        self.return_layers, self.source_stats, self.input_stats = return_layers, source_stats, input_stats
        self.grid = input_size // patch_size
        self.conv1 = nn.Conv3d(3, width, (1, patch_size, patch_size), (1, patch_size, patch_size), bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = ClipTransformer(width=width, layers=layers, heads=heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, output_dim))
        self.init_weights()
        self.requires_grad_(False)
        self.eval()

    @property
    def output_dim(self) -> int:
        """Ct, the width of the targets."""
        return self.proj.shape[1]

    @property
    def tap_indices(self) -> tuple[int, ...]:
        """0-based indices of the returned blocks, ascending."""
        depth = len(self.transformer.resblocks)
        return tuple(sorted(depth - 1 - i for i in range(self.return_layers)))

    def train(self, mode: bool = True) -> ClipTeacher:
        """The teacher stays in eval mode whatever the caller asks."""
        return super().train(False)

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Random CLIP-style init (OpenAI's scheme); only for tests and the CPU quickstart, never for training."""
        width, depth = self.proj.shape[0], len(self.transformer.resblocks)
        scale = width**-0.5
        for param in (self.class_embedding, self.positional_embedding, self.proj):
            nn.init.normal_(param, std=scale, generator=generator)
        nn.init.normal_(self.conv1.weight, std=(3 * self.patch_size**2) ** -0.5, generator=generator)
        for block in self.transformer.resblocks:
            _init_block(block, width=width, depth=depth, generator=generator)
        for norm in (self.ln_pre, self.ln_post):
            norm.reset_parameters()

    def forward(self, video: Tensor) -> TeacherOutput:
        """Targets on all tokens (`encode` without deferring, then `project`): for checks against the official code
        and for feature extraction, where no mask is drawn.

        Args:
            video: (B, 3, T, H, W) the student's clip (normalised with `source_stats`).

        Returns:
            `TeacherOutput` with features (K, B, N, Ct) and cls_attn (B, T, HW).
        """
        hidden = self.encode(video, defer_last=False)
        return TeacherOutput(features=self.project(hidden.layers), cls_attn=hidden.cls_attn)

    def encode(self, video: Tensor, *, defer_last: bool = True) -> TeacherHidden:
        """Run the tower and keep the tapped layers' patch tokens, before `ln_post`/`proj`.

        Args:
            video: (B, 3, T, H, W) the student's clip (normalised with `source_stats`).
            defer_last: Stop the last block after its keys, values and CLS attention (`TeacherHidden.pending`);
                `targets` finishes it for the visible tokens only (a stage's path: it skips ~80 % of that block).

        Returns:
            `TeacherHidden` with hidden (K, B, N, Dt) (K - 1 layers when deferring) and cls_attn (B, T, HW).
        """
        frames = self._prepare_input(video)  # (B, 3, T, S, S)
        batch = frames.shape[0]
        x = self._embed(frames)  # (BT, 1+HW, Dt)
        taps, blocks = set(self.tap_indices), self.transformer.resblocks
        layers, attn, pending = [], None, None
        for index, block in enumerate(blocks):
            last = index == len(blocks) - 1
            if last and defer_last:
                pending, attn = block.begin(x)
                break
            x, attn = block(x, cls_attn=last)  # (BT, 1+HW, Dt)
            if index in taps:
                layers.append(x[:, 1:])  # (BT, HW, Dt), a view: stacking below is the only copy
        if layers:
            tapped = rearrange(torch.stack(layers), "k (b t) n c -> k b (t n) c", b=batch)  # (K, B, N, Dt)
        else:
            tapped = x.new_empty((0, batch, x.shape[0] // batch * (x.shape[1] - 1), x.shape[2]))
        cls_attn = rearrange(attn, "(b t) n -> b t n", b=batch)  # (B, T, HW)
        return TeacherHidden(layers=tapped, cls_attn=cls_attn, pending=pending)

    def targets(self, hidden: TeacherHidden, visible: Tensor) -> Tensor:
        """Distillation targets at the visible tokens: (K, B, Nv, Ct), l2-normalised.

        Args:
            hidden: From `encode` (with or without a deferred last block).
            visible: (B, N) bool, True = kept, the same count in every sample.
        """
        done = gather_visible(hidden.layers, visible)  # (K or K - 1, B, Nv, Dt)
        if hidden.pending is not None:
            last = self._finish_last(hidden.pending, visible)  # (1, B, Nv, Dt)
            done = torch.cat([done, last])
        return self.project(done)

    def _finish_last(self, pending: DeferredBlock, visible: Tensor) -> Tensor:
        """The deferred last block's outputs at the visible tokens, (1, B, Nv, Dt)."""
        block, batch = self.transformer.resblocks[-1], visible.shape[0]
        per_frame = visible.view(pending.x.shape[0], -1)  # (BT, HW)
        counts = per_frame.sum(dim=1)
        if bool((counts == counts[:1]).all()):  # attention and tube masks: the same count in every frame
            rows = per_frame.nonzero()[:, 1].view(per_frame.shape[0], -1) + 1  # (BT, HWv) positions after CLS
            out = block.finish(pending, rows)  # (BT, HWv, Dt), ascending positions per frame
            return rearrange(out, "(b t) n c -> b (t n) c", b=batch).unsqueeze(0)  # (1, B, Nv, Dt)
        out = rearrange(block.finish(pending, None)[:, 1:], "(b t) n c -> b (t n) c", b=batch)  # (B, N, Dt)
        return gather_visible(out, visible).unsqueeze(0)  # random masks: per-frame counts differ

    def project(self, hidden: Tensor) -> Tensor:
        """`ln_post`, `@ proj` and l2 normalisation, for any subset of tokens (the stage passes the visible ones).

        Args:
            hidden: (K, B, Nv, Dt) tokens from `encode`.

        Returns:
            (K, B, Nv, Ct).
        """
        x = self.ln_post(hidden) @ self.proj  # (K, B, Nv, Ct)
        return x / x.norm(dim=-1, keepdim=True)  # official `x / x.norm()`, no eps clamp

    def _prepare_input(self, video: Tensor) -> Tensor:
        """Resize to `input_size` (bicubic on the (B, 3T, H, W) view, as upstream), then convert the normalisation."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, T, H, W) clip, got {tuple(video.shape)}")
        b, c, t, h, w = video.shape
        size = self.input_size
        if (h, w) != (size, size):
            resized = F.interpolate(
                video.reshape(b, c * t, h, w), size=(size, size), mode="bicubic", align_corners=False
            )
            video = resized.reshape(b, c, t, size, size)  # (B, 3, T, S, S)
        return renormalize(video, self.source_stats, self.input_stats)

    def _embed(self, frames: Tensor) -> Tensor:
        """(B, 3, T, S, S) pixels -> (BT, 1+HW, Dt) `ln_pre`-normalised tokens with CLS first."""
        x = rearrange(self.conv1(frames), "b c t h w -> (b t) (h w) c")  # (BT, HW, Dt)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (BT, 1, Dt)
        x = torch.cat([cls, x], dim=1).add_(self.positional_embedding.to(x.dtype))  # (BT, 1+HW, Dt)
        return self.ln_pre(x)

    def load_clip_state_dict(self, state_dict: Mapping[str, Tensor], *, source: str = "") -> None:
        """Load an OpenAI/official visual tower (`visual.` already stripped), strictly.

        A 2-D `conv1` weight (Dt, 3, p, p) is inflated to (Dt, 3, 1, p, p); a positional embedding for another
        grid is interpolated bicubically (CLS row kept), as the official `clip.load_state_dict` does. `source` (the
        file) is named in errors.

        Raises:
            CheckpointError: Missing or unexpected keys, or shapes that do not fit.
        """
        state_dict = dict(state_dict)
        conv = state_dict.get("conv1.weight")
        if conv is not None and conv.ndim == 4:
            state_dict["conv1.weight"] = conv.unsqueeze(2)  # time kernel 1: "center" inflation is this too
        if "positional_embedding" in state_dict:
            resized = resize_positional_embedding(state_dict["positional_embedding"], self.grid)
            state_dict["positional_embedding"] = resized
        load_strict(self, state_dict, what=f"CLIP teacher from {source}" if source else "CLIP teacher")


def resize_positional_embedding(pos: Tensor, grid: int) -> Tensor:
    """Bicubically resize a ((g² + 1), Dt) CLIP positional embedding to `grid`² + 1 rows, keeping the CLS row.

    Raises:
        CheckpointError: The stored patch rows do not form a square grid.
    """
    stored = math.isqrt(pos.shape[0] - 1)
    if stored**2 != pos.shape[0] - 1:
        raise CheckpointError(f"positional_embedding has {pos.shape[0]} rows, not a square grid + CLS")
    if stored == grid:
        return pos
    patches = rearrange(pos[1:], "(h w) c -> 1 c h w", h=stored)  # (1, Dt, g, g)
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], rearrange(patches, "1 c h w -> (h w) c").to(pos.dtype)])  # (grid² + 1, Dt)


def _init_block(block: ResidualAttentionBlock, *, width: int, depth: int, generator: torch.Generator | None) -> None:
    proj_std = width**-0.5 * (2 * depth) ** -0.5
    nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5, generator=generator)
    nn.init.normal_(block.attn.out_proj.weight, std=proj_std, generator=generator)
    nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5, generator=generator)
    nn.init.normal_(block.mlp.c_proj.weight, std=proj_std, generator=generator)
    for bias in (block.attn.in_proj_bias, block.attn.out_proj.bias, block.mlp.c_fc.bias, block.mlp.c_proj.bias):
        nn.init.zeros_(bias)
    block.ln_1.reset_parameters()
    block.ln_2.reset_parameters()


def build_clip_teacher(
    section: Any, spec: Any, *, return_layers: int, student_stats: Normalization, seed: int = 0
) -> ClipTeacher:
    """The registry's builder for the `clip-*` architectures: a frozen CLIP tower with its weights loaded.

    Args:
        section: The recipe's `[teacher]` table: `weights` (a local file: extracted visual tower, full OpenAI or
            open_clip state dict, safetensors, or with `trust` an OpenAI TorchScript archive;
            `"open_clip:<model>:<pretrained>"`; or `"random"`, tests only), `input_size`, `input_norm`, `trust`.
        spec: The architecture's `umt_cli.variants.TeacherSpec`.
        return_layers: K.
        student_stats: Normalisation of the clips the teacher will be given.
        seed: Seed of the `"random"` init.

    Raises:
        CheckpointError: Weights that cannot be read or do not fit the architecture.
    """
    teacher = ClipTeacher(
        input_size=section.input_size or spec.input_size,
        patch_size=spec.patch_size,
        layers=spec.layers,
        return_layers=return_layers,
        source_stats=student_stats,
        input_stats=NORMALIZATION[section.input_norm],
        **spec.shape,
    )
    if section.weights == "random":
        warnings.warn(
            f"teacher {section.arch} has random weights (untrained): only for tests and the quickstart", stacklevel=3
        )
        teacher.init_weights(generator=torch.Generator().manual_seed(seed))
    else:
        how_to_trust = "set teacher.trust = true (in the recipe, or the override teacher.trust=true)"
        visual = clip_visual_state_dict(section.weights, trust=section.trust, how_to_trust=how_to_trust)
        teacher.load_clip_state_dict(visual, source=section.weights)
    return teacher


def clip_visual_state_dict(
    weights: str, *, trust: bool = False, how_to_trust: str = "set teacher.trust = true"
) -> dict[str, Tensor]:
    """Read a CLIP visual tower from a file or `open_clip:<model>:<pretrained>`, `visual.` stripped.

    The keys of a full CLIP state dict that are left out (text tower, logit scale) are reported with a warning.
    """
    if weights.startswith("open_clip:"):
        return open_clip_visual_state_dict(*_split_open_clip(weights))
    state_dict = unwrap_state_dict(read_checkpoint(Path(weights), trust=trust, how_to_trust=how_to_trust))
    visual, ignored = split_clip_visual(state_dict)
    if ignored:
        warnings.warn(
            f"{weights}: loaded the visual tower, ignored {len(ignored)} other key(s) (text tower)", stacklevel=3
        )
    return visual


def _split_open_clip(weights: str) -> tuple[str, str]:
    _, name, tag = (weights.split(":", 2) + ["", ""])[:3]
    if not name or not tag:
        raise CheckpointError(f"{weights!r}: expected 'open_clip:<model-name>:<pretrained-tag-or-file>'")
    return name, tag


def open_clip_visual_state_dict(name: str, pretrained: str) -> dict[str, Tensor]:
    """The visual tower of `open_clip.create_model(name, pretrained=pretrained)` (a tag may need the network).

    Raises:
        CheckpointError: open_clip cannot create the model, or it does not use QuickGELU (our tower hard-wires it,
            as the OpenAI weights need).
    """
    import open_clip

    try:
        visual = open_clip.create_model(name, pretrained=pretrained, device="cpu").visual
    except (RuntimeError, OSError, ValueError) as error:  # unknown model, tag or file; download failures
        raise CheckpointError(f"open_clip could not create {name!r} with pretrained={pretrained!r}: {error}") from error
    activation = type(visual.transformer.resblocks[0].mlp.gelu).__name__
    if activation != "QuickGELU":
        raise CheckpointError(
            f"open_clip model {name!r} uses {activation}, the teacher uses QuickGELU",
            hint=f"use the '-quickgelu' variant of {name!r} for OpenAI weights",
        )
    return dict(visual.state_dict())
