"""Optimizer pieces shared by the stages: weight-decay groups, AdamW, the lr scaling rule and the cosine schedule.

The formulas follow the official `single_modality/optim_factory.py` and `single_modality/utils.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "param_groups",
    "vit_layer_id",
    "layer_decay_groups",
    "build_adamw",
    "scaled_lr",
    "cosine_lr",
    "cosine_floor_lr",
    "set_lr",
]


def param_groups(
    model: nn.Module, *, weight_decay: float, skip: Iterable[str] = (), zero_dim_decay: bool = False
) -> list[dict[str, Any]]:
    """Split the trainable parameters into a weight-decay group and a no-decay group (official rule).

    No decay for biases (names ending in `.bias`), 1-D parameters (norm weights, `q_bias`/`v_bias`) and names in
    `skip` (e.g. `model.no_weight_decay()`); decay for the rest (Linear/Conv weights). Frozen parameters are left out.
    0-D parameters (stage 2's `temp`) also get no decay, unless `zero_dim_decay=True`, which reproduces upstream: its
    `len(shape) == 1` test lets them through (docs/pitfalls.md, P15).

    Each group records its parameter names under `"names"`. torch optimizers keep extra keys in `param_groups` and
    in `state_dict()` (a plain list of strings, so checkpoints still load with `weights_only=True`), so the groups
    go to `torch.optim.AdamW` as they are. Empty groups are dropped; the decay group comes first.

    Returns:
        Dicts with `params`, `names` and `weight_decay`.
    """
    skip = set(skip)
    decay: dict[str, Any] = {"params": [], "names": [], "weight_decay": weight_decay}
    no_decay: dict[str, Any] = {"params": [], "names": [], "weight_decay": 0.0}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        small = param.ndim == 1 or (param.ndim == 0 and not zero_dim_decay)
        group = no_decay if small or name.endswith(".bias") or name in skip else decay
        group["params"].append(param)
        group["names"].append(name)
    return [group for group in (decay, no_decay) if group["params"]]


def vit_layer_id(name: str, depth: int) -> int:
    """The layer of a ViT parameter for layer-wise learning-rate decay (official `get_num_layer_for_vit`): 0 for the
    patch embedding and position/class tokens, b + 1 for block b, depth + 1 for everything after the blocks (the
    final norms and the head)."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_groups(
    model: nn.Module, *, weight_decay: float, layer_decay: float, depth: int, skip: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """`param_groups` split further by ViT layer (classification fine-tuning, official `optim_factory.py`): the
    parameters of layer i (`vit_layer_id`) learn at `lr_scale = layer_decay ** (depth + 1 - i)` times the schedule's
    rate, so the head learns at the full rate and the patch embedding at `layer_decay ** (depth + 1)`.

    Returns:
        One dict per (layer, decay or not) that has parameters, ordered by layer, each with `params`, `names`,
        `weight_decay` and `lr_scale` (`set_lr` multiplies by it).
    """
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for base in param_groups(model, weight_decay=weight_decay, skip=skip):
        decays = base["weight_decay"] > 0
        for name, param in zip(base["names"], base["params"]):
            layer = vit_layer_id(name, depth)
            group = groups.setdefault((layer, decays), {
                "params": [], "names": [], "weight_decay": base["weight_decay"],
                "lr_scale": layer_decay ** (depth + 1 - layer),
            })  # fmt: skip
            group["params"].append(param)
            group["names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda key: (key[0], not key[1]))]


def build_adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    zero_dim_decay: bool = False,
    layer_decay: tuple[float, int] | None = None,
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model)`; names from `model.no_weight_decay()` skip decay, as upstream's factory does.
    `layer_decay = (rate, depth)` uses `layer_decay_groups` instead (classification fine-tuning).

    Upstream stage 1: betas (0.9, 0.95), eps 1e-8, weight decay 0.05 held constant.
    """
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    if layer_decay is not None:
        rate, depth = layer_decay
        groups = layer_decay_groups(model, weight_decay=weight_decay, layer_decay=rate, depth=depth, skip=skip)
    else:
        groups = param_groups(model, weight_decay=weight_decay, skip=skip, zero_dim_decay=zero_dim_decay)
    # The fused kernel updates all tensors in one pass (about 2x faster than the default loop on the CPU for B/16);
    # it exists for CPU and CUDA tensors in torch >= 2.4, the versions this package supports.
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """The linear scaling rule of the official scripts: `base_lr * global_batch / 256`.

    `global_batch` counts samples per optimizer step over all processes (times repeated augmentation, 1 in the
    released recipes): 1.5e-4 at 2048 gives 1.2e-3. Upstream scales the minimum lr the same way.
    """
    return base_lr * global_batch / 256


def cosine_lr(
    step: int, *, base: float, final: float, warmup_steps: int, total_steps: int, warmup_start: float = 0.0
) -> float:
    """The learning rate at `step`: exactly entry `step` of the official `utils.cosine_scheduler` array.

    Warm-up is `np.linspace(warmup_start, base, warmup_steps)`, both ends included, so `base` is reached on the last
    warm-up step (step `warmup_steps - 1`); then `final + 0.5 * (base - final) * (1 + cos(pi * i / n))` for
    `i = 0 .. n-1`, `n = total_steps - warmup_steps`. Steps at or past `total_steps` give `final`, where the cosine
    would land at `i = n` (the official array has no such entry).
    """
    if step < 0 or warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
        raise ValueError(
            f"need 0 <= step and 0 <= warmup_steps <= total_steps > 0, got {step=}, {warmup_steps=}, {total_steps=}"
        )
    if step >= total_steps:
        return float(final)
    if step < warmup_steps:
        # Index numpy's own linspace: its rounding (and the exact last entry) is what the official array holds.
        return float(np.linspace(warmup_start, base, warmup_steps)[step])
    i, cosine_steps = step - warmup_steps, total_steps - warmup_steps
    return float(final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / cosine_steps)))


def cosine_floor_lr(step: int, *, base: float, floor: float, warmup_steps: int, total_steps: int) -> float:
    """The stage-2 learning rate at `step` (the official `get_cosine_schedule_with_warmup` with a floor).

    `base x step / warmup_steps` during warm-up, then `base x 0.5 (1 + cos(pi i / n))` for `i = step - warmup_steps`,
    `n = total_steps - warmup_steps` (both divisions by at least 1), never below `floor`; upstream writes the floor as
    a multiplier of 0.01 (floor = base / 100).
    """
    if step < warmup_steps:
        return max(floor, base * step / max(1, warmup_steps))
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(floor, base * 0.5 * (1.0 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to `lr`, times the group's `lr_scale` when it has one (layer-wise decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
