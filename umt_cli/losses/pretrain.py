"""The four stage-2 losses of one batch (UTA, VTC, VTM, MLM), computed from the model and explicit inputs.

Follows the official `multi_modality/models/umt.py::UMT.forward` step by step (docs/official-behaviour.md, Stage 2
losses), with every random draw made *outside* except the VTM hard negatives, which come from an explicit generator:

1. clamp `temp` into [0.001, 0.5] in place (upstream does it first thing in `forward`; it is done here so that every
   caller, and every micro-batch of an accumulated step, reads the clamped value, as upstream's does);
2. the vision encoder on the visible tokens: `tokens` (B, Nv, D), `pooled` (B, Tp, D) and the aligned heads
   (K, B, Nv, Ct); Tp = 1 in pre-training (an active non-tube mask pools all tokens);
3. the text-only pass (layers `[0, fusion_layer)`) of the captions; its `[CLS]` is the text embedding;
4. `vision_proj(pooled)` (B, Tp, E) and `text_proj(cls)` (B, E), raw (the losses normalise);
5. UTA: `uta_loss(aligned, targets, normalize=True)` (upstream's `UTA_Loss` with `l2` norm and `l2` loss);
6. VTC over the projections and ids gathered from every process;
7. VTM on the local batch: similarities without gradient, hard negatives from `negatives`, the 3B fused pairs in
   upstream's order over the vision tokens (an all-ones vision mask), `itm_head` on the fused `[CLS]`;
8. MLM: the text-only pass on the corrupted ids, the fusion layers over the vision tokens, the prediction head and
   the cross-entropy at the selected positions.

A loss whose weight is 0 is not computed at all (nor the passes only it needs), and is returned as a 0-D zero.
Under autocast, the small loss heads (UTA distances, VTC/VTM similarities) run in float32: they are cheap, and the
contrastive logits are divided by a temperature near 0.01, which magnifies low-precision rounding.

The MLM prediction head runs on the selected positions only: the loss reads nothing else, so the values are the
same and the head's cost (the (·, V) decoder, the largest matrix of the text side) drops by half or more.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from umt_cli.data.text import TextBatch
from umt_cli.losses.mlm import mlm_loss
from umt_cli.losses.uta import uta_loss
from umt_cli.losses.vtc import vtc_loss, vtc_similarity
from umt_cli.losses.vtm import VtmPairs, hard_negatives, vtm_loss, vtm_pairs
from umt_cli.masking.text import IGNORE_INDEX, MlmBatch
from umt_cli.models.video_text import VideoTextModel, VisionOutput
from umt_cli.utils.dist import GatherMode, gather_no_grad, gather_with_grad

__all__ = ["LOSS_NAMES", "PretrainInputs", "PretrainLosses", "pretrain_losses"]

LOSS_NAMES = ("uta", "vtc", "vtm", "mlm")
"""The stage-2 losses, in the order upstream computes them; `weights` must name each of them."""


@dataclass(frozen=True)
class PretrainInputs:
    """One batch of stage 2, with every random draw already made (except the VTM negatives).

    Attributes:
        video: (B, C, T, H, W) normalised pixels; T = the model's frames for videos, 1 for images.
        visible: (B, N) bool, True = kept (drawn by the stage from the teacher's attention), or None for all tokens.
        targets: (K, B, Nv, Ct) teacher targets at the visible tokens (normalised or not: UTA normalises both
            sides); None when the UTA weight is 0.
        text: The captions' ids and attention mask, (B, L) each.
        mlm: The corrupted ids and their labels (B, L); None when the MLM weight is 0.
        idx: (B,) sample ids: equal ids are positives for VTC and never negatives for VTM.
    """

    video: Tensor
    visible: Tensor | None
    targets: Tensor | None
    text: TextBatch
    mlm: MlmBatch | None
    idx: Tensor


@dataclass(frozen=True)
class PretrainLosses:
    """The unweighted stage-2 losses of one batch, 0-D each (a skipped loss is a 0-D zero).

    Attributes:
        uta: Unmasked token alignment.
        vtc: Video-text contrastive (over the gathered batch).
        vtm: Video-text matching (local batch, hard negatives).
        mlm: Masked language modelling.
        computed: The names of the losses that were computed (weight not 0).
    """

    uta: Tensor
    vtc: Tensor
    vtm: Tensor
    mlm: Tensor
    computed: tuple[str, ...] = field(default=LOSS_NAMES)

    def total(self, weights: Mapping[str, float]) -> Tensor:
        """`Σ weight · loss` over the computed losses (a weight of 0 contributes nothing, not even a NaN)."""
        parts = [weights[name] * getattr(self, name) for name in self.computed if weights[name] != 0]
        return torch.stack(parts).sum() if parts else self.uta.new_zeros(())

    def named(self) -> dict[str, Tensor]:
        """`{"loss/<name>": detached value}` of the computed losses, for logging."""
        return {f"loss/{name}": getattr(self, name).detach() for name in self.computed}


def pretrain_losses(
    model: VideoTextModel,
    inputs: PretrainInputs,
    *,
    negatives: torch.Generator,
    gather: GatherMode = "full",
    weights: Mapping[str, float],
    per_frame: bool = False,
    uta_kind: str = "cosine",
    uta_options: Mapping[str, Any] | None = None,
) -> PretrainLosses:
    """The four stage-2 losses of one batch, in upstream's order (see the module docstring).

    Args:
        model: The stage-2 model (unwrapped; under DDP the caller runs this inside the wrapped module's forward).
        inputs: The batch and its draws.
        negatives: The generator of the VTM hard negatives (`torch.default_generator`, or the CUDA default
            generator for CUDA similarities, reproduces upstream's stream).
        gather: VTC's gather backward: `full` (our default) or `local_grad` (upstream; docs/pitfalls.md, P24).
        weights: The weight of each name in `LOSS_NAMES`; a loss of weight 0 is not computed.
        per_frame: Pool each frame (Tp = T) instead of all tokens (Tp = 1, pre-training with attention masks).
        uta_kind: The UTA distance (`UTA_LOSSES`; `cosine` is upstream's `l2`).
        uta_options: The distance's own options (smooth_l1: `beta`).

    Returns:
        `PretrainLosses`, unweighted.

    Raises:
        TypeError: A `DistributedDataParallel` wrapper instead of the model (see `model`).
        ValueError: Weights that do not name exactly the four losses, or a negative weight; a loss with a
            non-zero weight whose input is missing (UTA: targets and a mask; MLM: the corrupted ids).
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        # DDP syncs gradients only for work done inside its own forward; reaching around it would train each
        # process on its own gradients without a word.
        raise TypeError(
            "pretrain_losses needs the unwrapped VideoTextModel and must run inside the DDP-wrapped module's forward "
            "(e.g. a module whose forward calls it), so that DDP synchronises the gradients"
        )
    on = _active(weights)
    _check_inputs(model, inputs, on)
    model.clamp_temperature()  # upstream: first thing in forward, in place, without gradient
    vision = model.vision_encoder(inputs.video, inputs.visible, per_frame=per_frame)
    zero = vision.tokens.new_zeros((), dtype=torch.float32)
    losses = dict.fromkeys(LOSS_NAMES, zero)
    text_hidden = None  # the captions' text-only pass: VTC and VTM read it
    if "vtc" in on or "vtm" in on:
        text = inputs.text
        text_hidden = model.text_encoder.encode_text(text.ids, text.attention_mask)  # (B, L, Dtxt)
        vision_proj = model.vision_proj(vision.pooled)  # (B, Tp, E)
        text_proj = model.text_proj(text_hidden[:, 0])  # (B, E), the text-only [CLS]
    if "uta" in on:
        losses["uta"] = _uta(vision, inputs.targets, uta_kind, uta_options or {})
    if "vtc" in on:
        losses["vtc"] = _vtc(vision_proj, text_proj, inputs.idx, model.temp, gather)
    pairs = _vtm_pairs(model, vision_proj, text_proj, inputs.idx, negatives) if "vtm" in on else None
    mlm_hidden = model.text_encoder.encode_text(inputs.mlm.ids, inputs.text.attention_mask) if "mlm" in on else None
    if pairs is not None or mlm_hidden is not None:
        fused_vtm, fused_mlm = _fuse(model, vision, inputs.text, pairs, text_hidden, mlm_hidden)
        if fused_vtm is not None:
            losses["vtm"] = vtm_loss(model.itm_head(fused_vtm[:, 0]))  # logits (3B, 2)
        if fused_mlm is not None:
            losses["mlm"] = _mlm(model, fused_mlm, inputs.mlm)
    return PretrainLosses(**losses, computed=tuple(name for name in LOSS_NAMES if name in on))


def _active(weights: Mapping[str, float]) -> frozenset[str]:
    """The names with a non-zero weight; the weights must name exactly the four losses, none negative."""
    if set(weights) != set(LOSS_NAMES):
        raise ValueError(f"weights must name exactly {', '.join(LOSS_NAMES)}; got {', '.join(sorted(weights))}")
    negative = [name for name in LOSS_NAMES if weights[name] < 0]
    if negative:
        raise ValueError(f"loss weights must not be negative: {', '.join(negative)}")
    return frozenset(name for name in LOSS_NAMES if weights[name] != 0)


def _check_inputs(model: VideoTextModel, inputs: PretrainInputs, on: frozenset[str]) -> None:
    """Fail before any work when an enabled loss lacks its inputs."""
    if "uta" in on:
        if inputs.targets is None or inputs.visible is None:
            raise ValueError("the UTA loss needs teacher targets and a visible mask (or loss weight uta = 0)")
        if not len(model.vision_encoder.clip_decoder):
            raise ValueError("the UTA loss needs the vision encoder's alignment heads (K > 0)")
    if "mlm" in on and inputs.mlm is None:
        raise ValueError("the MLM loss needs the corrupted ids (inputs.mlm), or loss weight mlm = 0")
    if "mlm" in on and not model.text_encoder.has_mlm_head:
        raise ValueError("the MLM loss needs a text encoder with its MLM head")


def _full_precision(x: Tensor) -> AbstractContextManager:
    """Autocast off on `x`'s device: the loss heads below compute in float32 whatever the caller's precision."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _uta(vision: VisionOutput, targets: Tensor, kind: str, options: Mapping[str, Any]) -> Tensor:
    """UTA between the aligned heads (K, B, Nv, Ct) and the targets, both l2-normalised inside the loss."""
    with _full_precision(targets):
        return uta_loss(vision.aligned.float(), targets.float(), kind=kind, normalize=True, **options)


def _vtc(vision_proj: Tensor, text_proj: Tensor, idx: Tensor, temp: Tensor, gather: GatherMode) -> Tensor:
    """VTC over the global batch: (B, Tp, E) and (B, E) gathered to Bg rows with the ids, then `vtc_loss`."""
    vision_all = gather_with_grad(vision_proj, mode=gather)  # (Bg, Tp, E)
    text_all = gather_with_grad(text_proj, mode=gather)  # (Bg, E)
    idx_all = gather_no_grad(idx)  # (Bg,)
    with _full_precision(vision_all):
        return vtc_loss(vision_all.float(), text_all.float(), idx_all, temp)


def _vtm_pairs(
    model: VideoTextModel, vision_proj: Tensor, text_proj: Tensor, idx: Tensor, negatives: torch.Generator
) -> VtmPairs:
    """VTM's 3B (video, text) rows on the local batch: similarities without gradient, one hard negative each way."""
    with torch.no_grad(), _full_precision(vision_proj):
        sim_v2t, sim_t2v = vtc_similarity(vision_proj.float(), text_proj.float(), model.temp)  # (B, B) each
    return vtm_pairs(hard_negatives(sim_v2t, sim_t2v, idx, generator=negatives))  # (3B,) rows each


def _fuse(
    model: VideoTextModel,
    vision: VisionOutput,
    text: TextBatch,
    pairs: VtmPairs | None,
    text_hidden: Tensor | None,
    mlm_hidden: Tensor | None,
) -> tuple[Tensor | None, Tensor | None]:
    """One fusion pass for VTM's 3B pairs (upstream's order: positives, negative videos, negative texts) and MLM's
    B corrupted captions, over the visible vision tokens with an all-ones mask. Each of the B videos' keys and values
    is projected once per layer instead of once per row (4B); the rows' outputs are the same.

    Returns:
        (3B, L, Dtxt) VTM rows and (B, L, Dtxt) MLM rows, each None when its loss is off.
    """
    hidden, masks, rows = [], [], []
    if pairs is not None:
        hidden.append(text_hidden[pairs.text])  # (3B, L, Dtxt)
        masks.append(text.attention_mask[pairs.text])
        rows.append(pairs.video)
    if mlm_hidden is not None:
        hidden.append(mlm_hidden)  # (B, L, Dtxt)
        masks.append(text.attention_mask)
        rows.append(torch.arange(len(mlm_hidden), device=mlm_hidden.device))
    fused = model.text_encoder.fuse(torch.cat(hidden), torch.cat(masks), vision.tokens, vision_rows=torch.cat(rows))
    vtm_rows = 0 if pairs is None else len(pairs.video)
    return (fused[:vtm_rows] if pairs is not None else None), (fused[vtm_rows:] if mlm_hidden is not None else None)


def _mlm(model: VideoTextModel, fused: Tensor, mlm: MlmBatch) -> Tensor:
    """MLM from the fused corrupted captions (B, L, Dtxt): the head and the loss at the selected positions.

    The head (dense, GELU, LayerNorm, tied decoder) runs on the M selected positions only, (M, Dtxt) -> (M, V): it is
    row-wise, so those logits are the full head's, and the cross-entropy is the mean over the same positions."""
    selected = mlm.labels != IGNORE_INDEX  # (B, L)
    logits = model.text_encoder.mlm_logits(fused[selected])  # (M, V)
    return mlm_loss(logits.unsqueeze(0), mlm.labels[selected].unsqueeze(0))
