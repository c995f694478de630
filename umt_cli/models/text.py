"""The fusion BERT text encoder of UMT stage 2 (Li et al., "Unmasked Teacher", ICCV 2023,
https://arxiv.org/abs/2303.16058), an ALBEF-style BERT as in the official `models/backbones/bert/xbert.py`.

Layers `[0, fusion_layer)` are a plain bidirectional BERT (*text mode*, `TextEncoder.encode_text`); layers
`[fusion_layer, depth)` add a cross-attention sub-layer whose keys and values come from the vision tokens (*fusion
mode*, `TextEncoder.fuse`); `TextEncoder.mlm_logits` is the masked-language-model head with the decoder tied to the
word embeddings. A stock `transformers.BertModel` cannot express this (docs/pitfalls.md, P26), so the layers are our
own, with the Hugging Face parameter names: the state-dict keys are exactly the official `bert.*` / `cls.predictions.*`
(docs/official-behaviour.md, Stage 2 model and Checkpoint layouts), and Hugging Face BERT files load through
`umt_cli.models.text_loading.load_bert_weights`'s explicit key map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import BertConfig

__all__ = ["TEXT_MASK_VALUE", "TextEncoder"]

TEXT_MASK_VALUE = -10000.0
"""Added to the attention scores of padded text keys (the official `get_extended_attention_mask`). The vision mask,
when one is given, uses the dtype's minimum instead, as the official `invert_attention_mask` does."""


def _attention_bias(mask: Tensor, value: float, dtype: torch.dtype) -> Tensor:
    """(B, S) 1 = attend, 0 = ignore -> (B, 1, 1, S) additive bias: 0 where attended, `value` where ignored."""
    return ((1.0 - mask.to(dtype)) * value)[:, None, None, :]  # (B, 1, 1, S)


class Embeddings(nn.Module):
    """Word + token-type (always 0) + position embeddings, then LayerNorm and dropout (official `BertEmbeddings`)."""

    def __init__(
        self,
        *,
        vocab_size: int,
        dim: int,
        max_positions: int,
        type_vocab_size: int,
        pad_token_id: int,
        eps: float,
        dropout: float,
    ) -> None:
        super().__init__()
        # padding_idx as upstream: the [PAD] row gets no gradient from the input side.
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_positions, dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        """(B, L) token ids -> (B, L, Dtxt); positions 0..L-1, token type 0."""
        length = ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"text length {length} exceeds the {self.position_embeddings.num_embeddings} positions")
        positions = torch.arange(length, device=ids.device)  # (L,)
        # Summed in the official order (word + type, then + position) so float32 rounding matches.
        x = self.word_embeddings(ids) + self.token_type_embeddings.weight[0]  # (B, L, Dtxt)
        x = x + self.position_embeddings(positions)  # (B, L, Dtxt)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """The official `BertSelfAttention`: `query` from the text; `key`/`value` from the text or, for cross-attention,
    from the vision tokens (input width `kv_dim`)."""

    def __init__(self, *, dim: int, kv_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(kv_dim, dim)
        self.value = nn.Linear(kv_dim, dim)

    def forward(self, x: Tensor, memory: Tensor, bias: Tensor | None, rows: Tensor | None = None) -> Tensor:
        """Attend from `x` (B, L, Dtxt) over `memory` (B, S, kv_dim) with an additive `bias` (B, 1, 1, S) or None;
        returns the context (B, L, Dtxt). softmax(QKᵀ/√d + bias)·V, dropout on the probabilities while training.

        `rows` (B,): row b attends over `memory[rows[b]]` of a (M, S, kv_dim) memory, so memories shared by several
        rows (VTM's pairs, MLM) are projected to keys and values once."""
        q = self._heads(self.query(x))  # (B, h, L, d)
        k = self._heads(self.key(memory))  # (M, h, S, d)
        v = self._heads(self.value(memory))  # (M, h, S, d)
        if rows is not None:
            k, v = k[rows], v[rows]  # (B, h, S, d)
        p = self.dropout if self.training else 0.0
        # SDPA equals the explicit softmax form to float32 rounding (tests/models/test_text.py checks it).
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)  # (B, h, L, d)
        return out.transpose(1, 2).flatten(2)  # (B, L, Dtxt)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, S, Dtxt) -> (B, h, S, d)."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)


class ResidualNorm(nn.Module):
    """`LayerNorm(x + dropout(dense(h)))`: the official `BertSelfOutput` / `BertOutput`."""

    def __init__(self, *, in_dim: int, dim: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        """(B, L, in_dim), residual (B, L, Dtxt) -> (B, L, Dtxt)."""
        return self.LayerNorm(self.dropout(self.dense(h)) + x)


class Attention(nn.Module):
    """Attention sub-layer: `self` (the heads) then `output` (projection, residual, LayerNorm)."""

    def __init__(
        self, *, dim: int, kv_dim: int, num_heads: int, eps: float, dropout: float, attention_dropout: float
    ) -> None:
        super().__init__()
        self.self = SelfAttention(dim=dim, kv_dim=kv_dim, num_heads=num_heads, dropout=attention_dropout)
        self.output = ResidualNorm(in_dim=dim, dim=dim, eps=eps, dropout=dropout)

    def forward(self, x: Tensor, memory: Tensor, bias: Tensor | None, rows: Tensor | None = None) -> Tensor:
        """(B, L, Dtxt) over (B, S, kv_dim) (or (M, S, kv_dim) picked by `rows`) -> (B, L, Dtxt)."""
        return self.output(self.self(x, memory, bias, rows), x)


class Intermediate(nn.Module):
    """`dense` to the intermediate width, then the exact (erf) GELU (BERT's `hidden_act = "gelu"`)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, Dtxt) -> (B, L, intermediate)."""
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """One BERT layer: self-attention -> [cross-attention to the vision tokens] -> feed-forward (post-norm)."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        intermediate: int,
        eps: float,
        dropout: float,
        attention_dropout: float,
        cross_dim: int | None,
    ) -> None:
        super().__init__()
        common = dict(dim=dim, num_heads=num_heads, eps=eps, dropout=dropout, attention_dropout=attention_dropout)
        self.attention = Attention(kv_dim=dim, **common)
        self.has_cross_attention = cross_dim is not None
        if self.has_cross_attention:
            self.crossattention = Attention(kv_dim=cross_dim, **common)
        self.intermediate = Intermediate(dim=dim, hidden=intermediate)
        self.output = ResidualNorm(in_dim=intermediate, dim=dim, eps=eps, dropout=dropout)

    def forward(
        self, x: Tensor, bias: Tensor, vision: Tensor | None, vision_bias: Tensor | None, rows: Tensor | None = None
    ) -> Tensor:
        """(B, L, Dtxt) with text bias (B, 1, 1, L); vision (B, Nv, D) (or (M, Nv, D) picked by `rows`) and its bias
        for a fusion layer."""
        x = self.attention(x, x, bias)  # (B, L, Dtxt)
        if self.has_cross_attention:
            if vision is None:
                raise ValueError("a fusion layer needs the vision tokens")
            x = self.crossattention(x, vision, vision_bias, rows)  # (B, L, Dtxt)
        return self.output(self.intermediate(x), x)  # (B, L, Dtxt)


class Encoder(nn.Module):
    """Holds the layers as `layer.{j}`, the official key layout."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class Bert(nn.Module):
    """`embeddings` + `encoder` (no pooler): the official `text_encoder.bert`."""

    def __init__(self, embeddings: Embeddings, encoder: Encoder) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.encoder = encoder


class PredictionTransform(nn.Module):
    """`dense` -> exact GELU -> `LayerNorm` (the official `BertPredictionHeadTransform`)."""

    def __init__(self, *, dim: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, Dtxt) -> (B, L, Dtxt)."""
        return self.LayerNorm(F.gelu(self.dense(x)))


class Predictions(nn.Module):
    """`transform` then `decoder` (weight tied to the word embeddings by `TextEncoder`; its bias *is* `bias`)."""

    def __init__(self, *, dim: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.transform = PredictionTransform(dim=dim, eps=eps)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.decoder.bias = self.bias  # one tensor under two names, as in the official files

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, Dtxt) -> (B, L, V) logits."""
        return self.decoder(self.transform(x))


class MlmHead(nn.Module):
    """`predictions`: the official `cls` (BertOnlyMLMHead)."""

    def __init__(self, *, dim: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.predictions = Predictions(dim=dim, vocab_size=vocab_size, eps=eps)


class TextEncoder(nn.Module):
    """The stage-2 fusion BERT: `bert` (embeddings + layers) and, optionally, the MLM head `cls`.

    Layer `j` has a cross-attention sub-layer only if `j >= fusion_layer`. New weights are initialised as upstream
    (and Hugging Face) do: Linear and Embedding weights normal(0, `init_std`), biases 0, LayerNorm 1/0.

    Args:
        vocab_size: V.
        hidden_size: Dtxt.
        num_layers: Depth (12 for BERT-base, 24 for BERT-large).
        num_heads: Attention heads (Dtxt must divide by it).
        intermediate_size: Feed-forward width (4 Dtxt in BERT).
        fusion_layer: First layer with cross-attention, in [0, num_layers] (num_layers = text only).
        encoder_width: D, the width of the vision tokens the cross-attention reads.
        max_positions: Position-table rows (512).
        type_vocab_size: Token types (2; only type 0 is used).
        layer_norm_eps: Every LayerNorm's eps (1e-12).
        dropout: Hidden dropout (0.1).
        attention_dropout: Dropout on the attention probabilities (0.1).
        pad_token_id: The `[PAD]` id (its embedding row gets no input-side gradient).
        init_std: Std of the normal init (`initializer_range`, 0.02).
        mlm_head: Build the MLM head `cls` (pre-training); downstream tasks use the bare encoder.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        intermediate_size: int,
        fusion_layer: int,
        encoder_width: int,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        pad_token_id: int = 0,
        init_std: float = 0.02,
        mlm_head: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= fusion_layer <= num_layers:
            raise ValueError(f"fusion_layer {fusion_layer} is outside [0, {num_layers}]")
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.fusion_layer, self.encoder_width = fusion_layer, encoder_width
        self.gradient_checkpointing = False
        embeddings = Embeddings(
            vocab_size=vocab_size,
            dim=hidden_size,
            max_positions=max_positions,
            type_vocab_size=type_vocab_size,
            pad_token_id=pad_token_id,
            eps=layer_norm_eps,
            dropout=dropout,
        )
        layers = [
            Layer(
                dim=hidden_size,
                num_heads=num_heads,
                intermediate=intermediate_size,
                eps=layer_norm_eps,
                dropout=dropout,
                attention_dropout=attention_dropout,
                cross_dim=encoder_width if j >= fusion_layer else None,
            )
            for j in range(num_layers)
        ]
        self.bert = Bert(embeddings, Encoder(layers))
        if mlm_head:
            self.cls = MlmHead(dim=hidden_size, vocab_size=vocab_size, eps=layer_norm_eps)
        self.init_weights(init_std)
        if mlm_head:
            self.cls.predictions.decoder.weight = embeddings.word_embeddings.weight  # tied, as upstream

    @classmethod
    def from_bert_config(
        cls, config: BertConfig, *, fusion_layer: int, encoder_width: int, mlm_head: bool = True
    ) -> TextEncoder:
        """Build from a `transformers.BertConfig` (e.g. `bert-base-uncased`'s `config.json`).

        Raises:
            ValueError: A config this encoder cannot reproduce (another activation, relative positions, a decoder).
        """
        act = getattr(config, "hidden_act", "gelu")
        position_kind = getattr(config, "position_embedding_type", "absolute") or "absolute"
        if act != "gelu" or position_kind != "absolute" or getattr(config, "is_decoder", False):
            raise ValueError(
                f"unsupported BERT config (hidden_act {act!r}, position_embedding_type {position_kind!r}, is_decoder "
                f"{getattr(config, 'is_decoder', False)}): only the original BERT layout is supported"
            )
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            intermediate_size=config.intermediate_size,
            fusion_layer=fusion_layer,
            encoder_width=encoder_width,
            max_positions=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            layer_norm_eps=config.layer_norm_eps,
            dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
            pad_token_id=config.pad_token_id or 0,
            init_std=config.initializer_range,
            mlm_head=mlm_head,
        )

    @property
    def has_mlm_head(self) -> bool:
        """Whether the MLM head `cls` exists."""
        return hasattr(self, "cls")

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Official (Hugging Face `_init_weights`) init: Linear/Embedding weights normal(0, std), biases 0,
        LayerNorm weight 1 and bias 0, the MLM output bias 0. The [PAD] embedding row is not zeroed (as upstream)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, Predictions):
                module.bias.zero_()

    def encode_text(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Text mode: embeddings and layers [0, fusion_layer) with bidirectional, padding-masked self-attention.

        Args:
            ids: (B, L) token ids.
            attention_mask: (B, L) 1 = token, 0 = padding.

        Returns:
            (B, L, Dtxt); position 0 is the `[CLS]` embedding VTC projects.
        """
        hidden = self.bert.embeddings(ids)  # (B, L, Dtxt)
        bias = _attention_bias(attention_mask, TEXT_MASK_VALUE, hidden.dtype)  # (B, 1, 1, L)
        return self._run(range(self.fusion_layer), hidden, bias, None, None)

    def fuse(
        self,
        hidden: Tensor,
        attention_mask: Tensor,
        vision: Tensor,
        vision_mask: Tensor | None = None,
        vision_rows: Tensor | None = None,
    ) -> Tensor:
        """Fusion mode: layers [fusion_layer, depth), each self-attention -> cross-attention -> feed-forward.

        Args:
            hidden: (B, L, Dtxt) the text-mode output.
            attention_mask: (B, L) 1 = token, 0 = padding.
            vision: (B, Nv, D) the vision tokens (keys and values of the cross-attention); with `vision_rows`,
                (M, Nv, D) distinct token sets.
            vision_mask: (B, Nv) (or (M, Nv)) 1 = attend; None = all ones (what upstream always passes).
            vision_rows: (B,) long: text row b attends to `vision[vision_rows[b]]`, whose keys and values are
                computed once however many rows share it (the same numbers as repeating the tokens, less work).

        Returns:
            (B, L, Dtxt); the MLM head and the VTM head read it.
        """
        if vision.shape[-1] != self.encoder_width:
            raise ValueError(f"vision width {vision.shape[-1]} != encoder_width {self.encoder_width}")
        bias = _attention_bias(attention_mask, TEXT_MASK_VALUE, hidden.dtype)  # (B, 1, 1, L)
        # An all-ones mask adds zeros, so no mask gives the same numbers; a partial one uses the dtype's minimum.
        min_value = torch.finfo(hidden.dtype).min
        vision_bias = None if vision_mask is None else _attention_bias(vision_mask, min_value, hidden.dtype)
        if vision_bias is not None and vision_rows is not None:
            vision_bias = vision_bias[vision_rows]  # (B, 1, 1, Nv)
        return self._run(range(self.fusion_layer, self.num_layers), hidden, bias, vision, vision_bias, vision_rows)

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """The MLM head: (B, L, Dtxt) -> (B, L, V) logits (dense -> GELU -> LayerNorm -> tied decoder + bias)."""
        if not self.has_mlm_head:
            raise RuntimeError("this text encoder was built without its MLM head")
        return self.cls.predictions(hidden)

    def _run(
        self,
        indices: range,
        x: Tensor,
        bias: Tensor,
        vision: Tensor | None,
        vision_bias: Tensor | None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """Run layers `indices` in order; recompute them in backward when `gradient_checkpointing` is on."""
        for j in indices:
            layer = self.bert.encoder.layer[j]
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, bias, vision, vision_bias, rows, use_reentrant=False)
            else:
                x = layer(x, bias, vision, vision_bias, rows)  # (B, L, Dtxt)
        return x
