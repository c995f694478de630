"""Alignment heads of UMT (Li et al., ICCV 2023, https://arxiv.org/abs/2303.16058): the official `clip_decoder`.

Each of the K tapped student layers gets its own `Linear(D, Ct)` + `LayerNorm(Ct)` head that maps it into the CLIP
teacher's output space; the sinusoid position table is added once more before the heads. The module is an
`nn.ModuleList`, so its state-dict keys are exactly the official `{k}.head.*` / `{k}.norm.*`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from umt_cli.models.layers import select_visible, sinusoid_table

__all__ = ["AlignHead", "AlignHeads"]


class AlignHead(nn.Module):
    """One layer's head: `norm(head(x))`, optionally l2-normalised (the official `Linear_Decoder`)."""

    def __init__(self, *, dim: int, out_dim: int, eps: float, l2: bool) -> None:
        super().__init__()
        self.l2 = l2
        self.head = nn.Linear(dim, out_dim)
        self.norm = nn.LayerNorm(out_dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """(B, Nv, D) -> (B, Nv, Ct)."""
        x = self.norm(self.head(x))  # (B, Nv, Ct)
        # `x / x.norm()` rather than F.normalize (no eps clamp), as the official head does it.
        return x / x.norm(dim=-1, keepdim=True) if self.l2 else x


class AlignHeads(nn.ModuleList):
    """K alignment heads plus the decoder's own (non-persistent) sinusoid position table.

    Args:
        num_tokens: N, tokens per clip (sizes the position table).
        dim: D, the student width (the official `clip_decoder_embed_dim`).
        out_dim: Ct, the teacher output dim.
        num_layers: K.
        eps: LayerNorm eps: 1e-6 in stage 1, 1e-5 in stage 2.
        l2: l2-normalise the outputs (stage 1; stage 2 normalises inside the loss).
    """

    def __init__(
        self, *, num_tokens: int, dim: int, out_dim: int, num_layers: int, eps: float = 1e-6, l2: bool = True
    ) -> None:
        super().__init__(AlignHead(dim=dim, out_dim=out_dim, eps=eps, l2=l2) for _ in range(num_layers))
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, dim), persistent=False)  # (1, N, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: Linear xavier-uniform with zero bias, LayerNorm 1/0."""
        for head in self:
            nn.init.xavier_uniform_(head.head.weight)
            nn.init.zeros_(head.head.bias)
            head.norm.reset_parameters()

    def forward(self, layers: Tensor, visible: Tensor | None) -> Tensor:
        """Map the student's tapped layers into the teacher space.

        Args:
            layers: (K, B, Nv, D) normalised student taps (`StudentOutput.layers`).
            visible: (B, N) bool mask the student ran on (True = kept), or None for all tokens.

        Returns:
            (K, B, Nv, Ct).
        """
        if layers.shape[0] != len(self):
            raise ValueError(f"expected {len(self)} layers, got {layers.shape[0]}")
        tokens = layers.shape[2] if visible is None else visible.shape[1]  # N: HW rows for an image (stage 2)
        pos = self.pos_embed[:, :tokens].to(layers.dtype).expand(layers.shape[1], -1, -1)  # (B, N, D), a view
        tokens = layers + select_visible(pos, visible)  # (K, B, Nv, D)
        return torch.stack([head(x) for head, x in zip(self, tokens)])  # (K, B, Nv, Ct)
