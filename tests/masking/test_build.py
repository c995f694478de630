"""Maskers behind the registry: one signature, seeded per sample, the kind chosen by the recipe."""

import pytest
import torch

from umt_cli.masking.build import TokenGrid, build_masker, mask_generators
from umt_cli.recipe.sections import MaskingSection
from umt_cli.variants import MASKERS

GRID = TokenGrid(4, 4, 4)  # T, H, W


@pytest.mark.parametrize("kind", ["attention", "tube", "random"])
def test_masks_depend_on_the_sample_not_the_batch(kind):
    masker = build_masker(MaskingSection(kind=kind, mask_ratio=0.8))
    attn = torch.rand(3, 4, 16).softmax(-1)  # (B, T, HW)
    together = masker(GRID, cls_attn=attn, generators=mask_generators(0, 1, torch.tensor([5, 9, 2]), attn.device))
    alone = masker(GRID, cls_attn=attn[1:2], generators=mask_generators(0, 1, torch.tensor([9]), attn.device))
    assert torch.equal(together.visible[1], alone.visible[0])
    kept = 4 * (16 - int(16 * 0.8)) if kind != "random" else 64 - int(64 * 0.8)
    assert together.visible.sum(1).tolist() == [kept] * 3


def test_attention_masker_counts_the_frames_it_could_not_use():
    attn = torch.rand(2, 4, 16).softmax(-1)
    attn[0, 1] = float("nan")
    attn[1, 3] = 0.0
    draw = build_masker(MaskingSection(kind="attention"))(
        GRID, cls_attn=attn, generators=mask_generators(0, 0, torch.tensor([0, 1]), attn.device)
    )
    assert draw.fallback_rows == 2
    assert draw.visible.view(2, 4, 16).sum(-1).eq(16 - int(16 * 0.8)).all()


def test_an_unregistered_kind_is_refused_by_the_recipe_and_the_registry():
    with pytest.raises(ValueError, match="unknown masking.kind 'block'; valid: attention, tube, random"):
        MaskingSection(kind="block")
    with pytest.raises(ValueError, match="unknown masking.kind"):
        MASKERS.resolve("block")
