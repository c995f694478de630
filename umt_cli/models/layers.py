"""Building blocks of the UMT video ViT (Li et al., "Unmasked Teacher", ICCV 2023, https://arxiv.org/abs/2303.16058).

The student is a VideoMAE-style ViT: a tubelet `Conv3d` patch embedding, a fixed 1-D sinusoid position table, and
pre-norm blocks whose attention has separate q/v biases and no k bias. Attention runs through
`scaled_dot_product_attention`, so no (N x N) matrix is materialised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from umt_cli.masking.gather import gather_visible

__all__ = ["sinusoid_table", "select_visible", "DropPath", "PatchEmbed3D", "Attention", "Mlp", "Block"]

LN_EPS = 1e-6  # every LayerNorm of the student ViT


def sinusoid_table(n: int, dim: int) -> Tensor:
    """The fixed interleaved sinusoid position table, computed in float64 and cast to float32.

    See docs/official-behaviour.md, Position table.

    `PE[pos, j] = sin(angle)` for even `j` and `cos(angle)` for odd `j`, with
    `angle = pos / 10000 ** (2 * (j // 2) / dim)`. Always built on the CPU: it is exact there and the caller moves it.

    Args:
        n: Number of positions (N tokens).
        dim: Channels (D).

    Returns:
        (1, n, dim) float32.
    """
    channel = torch.arange(dim, device="cpu")
    exponent = (2 * (channel // 2)).double() / dim  # (dim,)
    angle = torch.arange(n, dtype=torch.float64, device="cpu")[:, None] / torch.pow(10000.0, exponent)  # (n, dim)
    table = torch.where(channel % 2 == 0, angle.sin(), angle.cos())  # (n, dim) float64
    return table.float().unsqueeze(0)


def select_visible(x: Tensor, visible: Tensor | None) -> Tensor:
    """Keep the visible tokens of every sample, in ascending position order (`masking.gather_visible`).

    Args:
        x: (B, N, D) tokens.
        visible: (B, N) bool, True = kept; every row must keep the same number. None keeps all tokens.

    Returns:
        (B, Nv, D); `x` itself when `visible` is None.
    """
    return x if visible is None else gather_visible(x, visible)


class DropPath(nn.Module):
    """Stochastic depth per sample (timm semantics): zero a sample's branch with probability `p`, scale by 1/(1-p)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Drop the residual branch `x` (B, ...) for random samples while training."""
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ...)
        if keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        """Shown by `print(module)`."""
        return f"p={self.p}"


class PatchEmbed3D(nn.Module):
    """Tubelet patch embedding: a `Conv3d` with kernel = stride = (tubelet, p, p), tokens in (t, h, w) order."""

    def __init__(self, *, patch_size: int, tubelet: int, dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size, self.tubelet = patch_size, tubelet
        kernel = (tubelet, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=kernel, stride=kernel, bias=True)

    def forward(self, video: Tensor, visible: Tensor | None = None) -> Tensor:
        """Embed (B, C, T·tubelet, H·p, W·p) pixels into (B, N, D) tokens, or only the visible ones (B, Nv, D).

        With a mask, the kept patches are cut out and projected with the convolution's weights as one matrix
        product, so the ~80 % hidden patches cost nothing (forward or weight gradient); same numbers as the
        convolution to float rounding.
        """
        if visible is None:
            return rearrange(self.proj(video), "b d t h w -> b (t h w) d")  # (B, N, D), a view
        patches = rearrange(
            video, "b c (t u) (h p) (w q) -> b (t h w) (c u p q)", u=self.tubelet, p=self.patch_size, q=self.patch_size
        )  # (B, N, C·u·p·p)
        weight = self.proj.weight.flatten(1)  # (D, C·u·p·p), the same (c, u, p, q) order
        return F.linear(select_visible(patches, visible), weight, self.proj.bias)  # (B, Nv, D)


class Attention(nn.Module):
    """Multi-head self-attention with q and v biases and a fixed zero k bias (BEiT/VideoMAE layout)."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over the tokens of `x` (B, N, D); returns (B, N, D)."""
        # The k bias is absent in the checkpoints; a zero slot lets one fused GEMM produce q, k and v.
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))  # (3D,)
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3D)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)  # (B, h, N, D/h)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, D/h)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


class Mlp(nn.Module):
    """`fc1` -> exact (erf) GELU -> `fc2`."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: `x + DropPath(Attn(LN(x)))`, then `x + DropPath(MLP(LN(x)))`."""

    def __init__(self, *, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim=dim, num_heads=num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim=dim, hidden=int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))  # (B, N, D)
        return x + self.drop_path(self.mlp(self.norm2(x)))  # (B, N, D)
