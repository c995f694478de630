"""Stage 2's corpora as streams: one per corpus and media type, interleaved in a seeded order, resumable mid-epoch,
with VTC ids unique across corpora."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from umt_cli.data.loaders import VideoTextBatch
from umt_cli.data.streams import StreamBatch, StreamMixer, build_streams, stream_order
from umt_cli.recipe import PretrainRecipe, load_recipe
from umt_cli.recipe.catalog import resolve_recipe


def test_the_order_holds_each_stream_as_often_as_it_has_batches_and_depends_only_on_seed_and_epoch():
    order = stream_order([3, 1, 2], seed=7, epoch=0)
    assert sorted(order) == [0, 0, 0, 1, 2, 2]
    assert order == stream_order([3, 1, 2], seed=7, epoch=0)  # every process computes the same order alone
    others = {tuple(stream_order([3, 1, 2], seed=7, epoch=e)) for e in range(1, 6)}
    assert len(others | {tuple(order)}) > 1  # each epoch has its own order


def recipe(synthetic_dir, clips=None) -> PretrainRecipe:
    overrides = [
        f"data.corpora.clips.annotations={clips or synthetic_dir / 'train.json'}",
        f"data.corpora.clips.root={synthetic_dir}",
        "data.corpora.clips.batch_size=4",
        f"data.corpora.stills.annotations={synthetic_dir / 'train_images.json'}",
        f"data.corpora.stills.root={synthetic_dir}",
        "data.corpora.stills.batch_size=4",
        f"text.encoder={synthetic_dir / 'bert'}",
    ]
    return load_recipe(resolve_recipe("quickstart/pretrain"), overrides, expect=PretrainRecipe)


def test_one_stream_per_corpus_and_media_type_with_ids_unique_across_corpora(synthetic_dir, tmp_path):
    mixed = tmp_path / "mixed.json"  # one corpus holding both media types
    videos = json.loads((synthetic_dir / "train.json").read_text())[:4]
    stills = json.loads((synthetic_dir / "train_images.json").read_text())[:4]
    mixed.write_text(json.dumps(videos + stills))
    r = recipe(synthetic_dir, clips=mixed)
    streams = build_streams(r, rank=0, world_size=1, status_dir=None, pin_memory=False)
    assert [s.name for s in streams] == ["clips/video", "clips/image", "stills/image"]
    assert [len(s.dataset) for s in streams] == [4 * 3, 4 * 2, 8 * 2]  # captions per media item: 3 and 2
    assert [s.id_offset for s in streams] == [0, 0, 8]  # the second corpus's ids start after the first's 8 items
    assert [s.steps_per_epoch for s in streams] == [3, 2, 4]


def test_resuming_mid_epoch_skips_exactly_the_batches_already_given(synthetic_dir):
    streams = build_streams(recipe(synthetic_dir), rank=0, world_size=1, status_dir=None, pin_memory=False)
    mixer = StreamMixer(streams, seed=0)
    mixer.set_epoch(1)
    whole = [(b.stream.name, b.index.tolist()) for b in mixer]
    assert len(whole) == mixer.steps_per_epoch() == 6 + 4
    mixer.set_epoch(1, start_step=4)
    assert [(b.stream.name, b.index.tolist()) for b in mixer] == whole[4:]


@pytest.mark.parametrize(("mode", "expected"), [("global", [8, 9]), ("official", [0, 1])])
def test_vtc_ids_are_unique_across_corpora_unless_upstreams_are_asked_for(mode, expected):
    from umt_cli.stages.pretrain import _ids

    batch = VideoTextBatch(torch.zeros(2, 3, 1, 8, 8), ["a", "b"], torch.tensor([0, 1]), torch.ones(2), torch.zeros(2))
    item = StreamBatch(SimpleNamespace(id_offset=8), batch)
    components = SimpleNamespace(recipe=SimpleNamespace(loss=SimpleNamespace(vtc=SimpleNamespace(idx_mode=mode))))
    assert _ids(components, item).tolist() == expected
