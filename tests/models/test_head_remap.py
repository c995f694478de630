"""A fine-tuned head carried to another label set by class name keeps each class's row; a class the source lacks
fails naming it."""

from __future__ import annotations

import pytest
import torch

from umt_cli.errors import CheckpointError
from umt_cli.models.head_remap import remap_head

SOURCE = ["abseiling", "air drumming", "archery", "zumba", "yoga", "juggling"]


def head(rows: int, dim: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"head.weight": torch.randn(rows, dim, generator=generator), "head.bias": torch.randn(rows,
            generator=generator), "fc_norm.weight": torch.ones(dim)}  # fmt: skip


def test_rows_follow_the_names_whatever_the_order():
    state = head(len(SOURCE))
    target = ["yoga", "abseiling", "juggling"]  # a subset, in another order
    remapped = remap_head(state, SOURCE, target, source="k710.pth")
    for row, name in enumerate(target):
        assert torch.equal(remapped["head.weight"][row], state["head.weight"][SOURCE.index(name)])
        assert remapped["head.bias"][row] == state["head.bias"][SOURCE.index(name)]
    assert remapped["head.weight"].shape == (3, 4)
    assert remapped["fc_norm.weight"] is state["fc_norm.weight"]  # the rest passes through
    assert torch.equal(state["head.weight"], head(len(SOURCE))["head.weight"])  # the source is not modified


def test_the_first_rows_when_the_target_is_the_prefix():
    """K710 -> K400 upstream: the first 400 rows, which is what names give when the order agrees."""
    state = head(len(SOURCE))
    remapped = remap_head(state, SOURCE, SOURCE[:4], source="k710.pth")
    assert torch.equal(remapped["head.weight"], state["head.weight"][:4])


def test_a_class_the_source_lacks_is_named():
    with pytest.raises(CheckpointError, match=r"2 target class\(es\) not in the checkpoint's label map: 'surfing', "
                       r"'skiing'"):  # fmt: skip
        remap_head(head(len(SOURCE)), SOURCE, ["yoga", "surfing", "skiing"], source="k710.pth")


def test_a_label_map_of_the_wrong_length_is_refused():
    with pytest.raises(CheckpointError, match="its head has 6 classes, but its label map names 5"):
        remap_head(head(6), SOURCE[:5], ["yoga"], source="k710.pth")
    with pytest.raises(CheckpointError, match="no classifier head to remap"):
        remap_head({"fc_norm.weight": torch.ones(4)}, SOURCE, ["yoga"], source="stage1.pth")
