"""MLM corruption: 50 % selected, 80/10/10 of them, [CLS]/[PAD] never selected, the official draw order."""

from __future__ import annotations

import pytest
import torch

from umt_cli.masking.text import IGNORE_INDEX, mlm_mask

V, PAD, CLS, SEP, MASK = 30522, 0, 101, 102, 103


def captions(batch: int = 64, length: int = 32, seed: int = 0) -> torch.Tensor:
    """(B, L) ids: [CLS], words, [SEP] on half the rows, then [PAD] to a random length."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, V, (batch, length), generator=generator)
    ids[:, 0] = CLS
    lengths = torch.randint(3, length + 1, (batch,), generator=generator)
    for row, n in enumerate(lengths.tolist()):
        ids[row, n:] = PAD
        if row % 2:
            ids[row, n - 1] = SEP
    return ids


def masked(ids: torch.Tensor, seed: int, prob: float = 0.5):
    return mlm_mask(
        ids,
        vocab_size=V,
        mask_id=MASK,
        pad_id=PAD,
        cls_id=CLS,
        prob=prob,
        generator=torch.Generator().manual_seed(seed),
    )


def test_statistics_are_half_selected_then_80_10_10():
    ids = captions(512, 32)
    out = masked(ids, seed=1)
    selectable = (ids != PAD) & (ids != CLS)
    selected = out.labels != IGNORE_INDEX
    assert not (selected & ~selectable).any()
    assert selected.sum() / selectable.sum() == pytest.approx(0.5, abs=0.01)
    as_mask = (out.ids == MASK) & selected
    changed = (out.ids != ids) & ~as_mask & selected  # random ids (a random id equal to the original counts as kept)
    n = selected.sum().item()
    assert as_mask.sum().item() / n == pytest.approx(0.8, abs=0.01)
    assert changed.sum().item() / n == pytest.approx(0.1, abs=0.01)
    assert (out.ids[selected & ~as_mask & ~changed] == ids[selected & ~as_mask & ~changed]).all()


def test_labels_hold_the_original_ids_only_where_selected():
    ids = captions()
    out = masked(ids, seed=2)
    selected = out.labels != IGNORE_INDEX
    assert torch.equal(out.labels[selected], ids[selected])
    assert torch.equal(out.ids[~selected], ids[~selected])  # unselected positions are never touched
    assert out.ids.dtype == out.labels.dtype == torch.long


def test_cls_and_pad_are_never_selected_but_sep_is():
    ids = captions(256, 32)
    sep_selected = 0
    for seed in range(5):
        out = masked(ids, seed)
        selected = out.labels != IGNORE_INDEX
        assert not selected[ids == CLS].any() and not selected[ids == PAD].any()
        assert (out.ids[ids == CLS] == CLS).all() and (out.ids[ids == PAD] == PAD).all()
        sep_selected += selected[ids == SEP].sum().item()
    assert sep_selected > 0


def test_random_ids_cover_the_whole_vocabulary():
    ids = torch.full((256, 64), 5000)  # no special ids: every position is selectable
    out = masked(ids, seed=3, prob=1.0)
    random_ids = out.ids[(out.ids != MASK) & (out.ids != 5000)]
    assert random_ids.min() < 1000 and random_ids.max() > V - 1000
    assert (random_ids >= 0).all() and (random_ids < V).all()


def test_reproducible_from_the_generator_and_input_untouched():
    ids = captions()
    before = ids.clone()
    a, b, c = masked(ids, 7), masked(ids, 7), masked(ids, 8)
    assert torch.equal(ids, before)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)


def reference_mask(ids: torch.Tensor, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's MLMLoss.mask as read in criterions.py, on the global RNG."""
    input_ids, targets = ids.clone(), ids.clone()
    masked_indices = torch.bernoulli(torch.full(ids.shape, prob)).bool()
    masked_indices[input_ids == PAD] = False
    masked_indices[input_ids == CLS] = False
    targets[~masked_indices] = -100
    replaced = torch.bernoulli(torch.full(ids.shape, 0.8)).bool() & masked_indices
    input_ids[replaced] = MASK
    randomised = torch.bernoulli(torch.full(ids.shape, 0.5)).bool() & masked_indices & ~replaced
    random_words = torch.randint(V, ids.shape, dtype=torch.long)
    input_ids[randomised] = random_words[randomised]
    return input_ids, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_ids_and_labels_as_the_official_order_on_the_global_rng(seed):
    ids = captions(16, 32, seed)
    torch.manual_seed(seed)
    expected_ids, expected_labels = reference_mask(ids, 0.5)
    after_expected = torch.rand(3)
    torch.manual_seed(seed)
    out = mlm_mask(ids, vocab_size=V, mask_id=MASK, pad_id=PAD, cls_id=CLS, generator=torch.default_generator)
    assert torch.equal(out.ids, expected_ids) and torch.equal(out.labels, expected_labels)
    assert torch.equal(torch.rand(3), after_expected)  # the same draws were consumed


def test_rejects_bad_shapes_and_probabilities():
    with pytest.raises(ValueError, match=r"expected ids \(B, L\)"):
        masked(torch.zeros(4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="prob must be in"):
        masked(captions(), 0, prob=1.5)
