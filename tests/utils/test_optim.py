"""Weight-decay groups, AdamW, lr scaling, and the cosine schedule against a NumPy recomputation of upstream."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from umt_cli.utils.optim import build_adamw, cosine_lr, param_groups, scaled_lr, set_lr


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv3d(3, 8, kernel_size=(1, 4, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.norm = nn.LayerNorm(8)
        self.qkv = nn.Linear(8, 24, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(8))
        self.v_bias = nn.Parameter(torch.zeros(8))
        self.head = nn.Linear(8, 4)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


DECAY = ["patch.weight", "cls_token", "qkv.weight", "head.weight"]
NO_DECAY = ["patch.bias", "pos_embed", "norm.weight", "norm.bias", "q_bias", "v_bias", "head.bias", "temp"]


def test_groups_follow_the_official_rule():
    decay, no_decay = param_groups(Toy(), weight_decay=0.05, skip={"pos_embed"})
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    assert sorted(decay["names"]) == sorted(DECAY)
    assert sorted(no_decay["names"]) == sorted(NO_DECAY)
    model = Toy()
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups(model, weight_decay=0.05, skip={"pos_embed"}):
        assert [names[id(p)] for p in group["params"]] == group["names"]


def test_zero_dim_decay_reproduces_upstream_for_temp():
    decay, no_decay = param_groups(Toy(), weight_decay=0.05, zero_dim_decay=True)
    assert "temp" in decay["names"] and "temp" not in no_decay["names"]
    assert "pos_embed" in decay["names"]  # not skipped here


def test_frozen_parameters_are_left_out_and_empty_groups_dropped():
    groups = param_groups(Toy(), weight_decay=0.05)
    assert not any(name.startswith("frozen.") for group in groups for name in group["names"])
    only_norm = nn.LayerNorm(4)
    assert [g["names"] for g in param_groups(only_norm, weight_decay=0.05)] == [["weight", "bias"]]


def test_adamw_takes_the_groups_and_keeps_their_names():
    model = Toy()
    optimizer = build_adamw(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8)
    decay, no_decay = optimizer.param_groups
    assert sorted(decay["names"]) == sorted(n for n in DECAY)
    assert "pos_embed" in no_decay["names"]  # from model.no_weight_decay()
    assert (decay["weight_decay"], no_decay["weight_decay"], decay["betas"], decay["eps"]) == (
        0.05,
        0.0,
        (0.9, 0.95),
        1e-8,
    )
    model.head(model.norm(torch.randn(2, 8))).sum().backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["param_groups"][0]["names"] == decay["names"]
    build_adamw(Toy(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8).load_state_dict(state)


def test_scaled_lr_is_the_linear_rule():
    assert scaled_lr(1.5e-4, 2048) == pytest.approx(1.2e-3)
    assert scaled_lr(1e-5, 2048) == pytest.approx(8e-5)
    assert scaled_lr(1e-4, 256) == 1e-4


def official_schedule(base: float, final: float, total: int, warmup: int, start: float = 0.0) -> np.ndarray:
    """utils.cosine_scheduler of the official code, recomputed: linspace warm-up, then a per-step cosine."""
    warm = np.linspace(start, base, warmup) if warmup > 0 else np.array([])
    rest = np.arange(total - warmup)
    cosine = [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / len(rest))) for i in rest]
    return np.concatenate((warm, np.array(cosine)))


@pytest.mark.parametrize(
    ("warmup", "total"), [(0, 10), (1, 10), (2, 7), (5, 20), (10, 10), (120, 963), (40 * 321, 201 * 321)]
)
def test_cosine_lr_equals_the_official_array_at_every_step(warmup, total):
    base, final = 1.2e-3, 8e-5
    expected = official_schedule(base, final, total, warmup)
    ours = [cosine_lr(s, base=base, final=final, warmup_steps=warmup, total_steps=total) for s in range(total)]
    assert ours == expected.tolist()


def test_cosine_lr_with_a_warmup_start():
    expected = official_schedule(1.0, 0.1, 30, 6, start=0.2)
    ours = [cosine_lr(s, base=1.0, final=0.1, warmup_steps=6, total_steps=30, warmup_start=0.2) for s in range(30)]
    assert ours == expected.tolist()


def test_cosine_lr_starts_at_zero_peaks_at_the_last_warmup_step_and_ends_at_final():
    kwargs = {"base": 1.2e-3, "final": 8e-5, "warmup_steps": 40, "total_steps": 201}
    assert cosine_lr(0, **kwargs) == 0.0
    assert cosine_lr(39, **kwargs) == 1.2e-3
    assert cosine_lr(40, **kwargs) == 1.2e-3
    assert cosine_lr(200, **kwargs) > 8e-5
    assert cosine_lr(201, **kwargs) == cosine_lr(10_000, **kwargs) == 8e-5


def test_cosine_lr_rejects_bad_arguments():
    for step, warmup, total in [(-1, 0, 10), (0, 11, 10), (0, -1, 10), (0, 0, 0)]:
        with pytest.raises(ValueError):
            cosine_lr(step, base=1.0, final=0.0, warmup_steps=warmup, total_steps=total)


def test_set_lr_applies_per_group_scales():
    model = Toy()
    optimizer = build_adamw(model, lr=1.0, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8)
    optimizer.param_groups[1]["lr_scale"] = 0.5
    set_lr(optimizer, 2e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [2e-3, 1e-3]


def test_cosine_floor_lr_is_the_official_stage2_schedule():
    import math

    from umt_cli.utils.optim import cosine_floor_lr

    def official(step: int, warmup: int, total: int, multi: float = 0.01) -> float:  # LambdaLR multiplier
        if step < warmup:
            return max(multi, step / max(1, warmup))
        progress = (step - warmup) / max(1, total - warmup)
        return max(multi, 0.5 * (1.0 + math.cos(math.pi * progress)))

    for step in range(0, 1001, 7):
        expected = 1e-4 * official(step, 100, 1000)
        assert cosine_floor_lr(step, base=1e-4, floor=1e-6, warmup_steps=100, total_steps=1000) == pytest.approx(
            expected, rel=1e-12, abs=1e-18
        )
    assert (
        cosine_floor_lr(0, base=1e-4, floor=1e-6, warmup_steps=100, total_steps=1000) == 1e-6
    )  # warm-up starts at the floor
    assert cosine_floor_lr(1000, base=1e-4, floor=1e-6, warmup_steps=100, total_steps=1000) == 1e-6


def test_a_stage2_plan_uses_the_floor_schedule():
    from umt_cli.recipe.sections import FloorCosineSchedule, OptimSection
    from umt_cli.training.plan import plan_steps

    optim = OptimSection(lr=1e-4, min_lr=1e-6, scale_lr=False, betas=(0.9, 0.999), weight_decay=0.02)
    plan = plan_steps(50, global_batch=16, optim=optim, schedule=FloorCosineSchedule(epochs=10, warmup_epochs=1))
    assert (plan.total_steps, plan.warmup_steps, plan.peak_lr, plan.final_lr) == (500, 50, 1e-4, 1e-6)
    assert plan.lr(0) == 1e-6 and plan.lr(25) == pytest.approx(5e-5) and plan.lr(50) == pytest.approx(1e-4)


def official_layer_id(name: str, num_max_layer: int) -> int:
    """`get_num_layer_for_vit` of the official `single_modality/optim_factory.py`, as written there."""
    if name in ("cls_token", "mask_token", "pos_embed"):
        return 0
    elif name.startswith("patch_embed"):
        return 0
    elif name.startswith("rel_pos_bias"):
        return num_max_layer - 1
    elif name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    else:
        return num_max_layer - 1


@pytest.mark.parametrize(("depth", "rate"), [(12, 0.75), (24, 0.85)], ids=["B", "L"])
def test_layer_decay_groups_follow_the_official_rule(depth, rate):
    from umt_cli.models.classifier import build_classifier
    from umt_cli.models.config import ClassifierConfig, VisionConfig
    from umt_cli.utils.optim import build_adamw, layer_decay_groups

    config = ClassifierConfig(vision=VisionConfig(dim=32, depth=depth, num_heads=2, img_size=32, num_frames=2),
                              num_classes=5)  # fmt: skip
    model = build_classifier(config)
    groups = layer_decay_groups(model, weight_decay=0.05, layer_decay=rate, depth=depth)
    num_layers = depth + 2  # the official assigner: values[i] = rate ** (num_layers - 1 - i)
    scales = [rate ** (num_layers - 1 - i) for i in range(num_layers)]
    seen = {}
    for group in groups:
        for name in group["names"]:
            seen[name] = (group["lr_scale"], group["weight_decay"])
    expected = {}
    for name, param in model.named_parameters():
        no_decay = param.ndim == 1 or name.endswith(".bias")  # the official skip rule (no skip list here)
        expected[name] = (scales[official_layer_id(name, num_layers)], 0.0 if no_decay else 0.05)
    assert seen.keys() == expected.keys()
    for name, (scale, decay) in expected.items():
        assert seen[name] == (pytest.approx(scale, rel=1e-12), decay), name
    assert seen["head.weight"] == (1.0, 0.05) and seen["patch_embed.proj.weight"][0] == pytest.approx(
        rate ** (depth + 1)
    )
    assert seen["blocks.0.attn.q_bias"] == pytest.approx((rate**depth, 0.0))
    optimizer = build_adamw(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8, layer_decay=(rate, depth))
    set_lr(optimizer, 2e-3)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(2e-3 * group["lr_scale"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
