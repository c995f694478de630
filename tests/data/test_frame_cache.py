"""The in-memory decode cache (`decode.cache_mb`): same pixels as the file, each file decoded once, a hard budget."""

import numpy as np
import pytest
import torch
from PIL import Image

from umt_cli.data.datasets import ClipLoader, VideoListDataset
from umt_cli.data.loaders import ShardedSampler, build_loader
from umt_cli.data.sampling import FrameSampler
from umt_cli.data.transforms import TrainTransform


def draws(loader: ClipLoader, path, seeds=range(6)) -> list[np.ndarray]:
    return [loader.video(path, torch.Generator().manual_seed(s)) for s in seeds]


@pytest.mark.parametrize("kind", ["sparse", "interval"])
def test_cached_frames_equal_the_files_and_later_draws_never_open_it(make_clip, kind):
    path = make_clip(frames=40, gop=8)
    plain = ClipLoader(FrameSampler(kind, 4, train=True))
    cached = ClipLoader(FrameSampler(kind, 4, train=True), cache_mb=64)
    expected = draws(plain, path)
    first = draws(cached, path)
    path.unlink()  # every later draw must come from memory
    again = draws(cached, path)
    for want, got, later in zip(expected, first, again, strict=True):
        assert want.shape == (4, 48, 64, 3)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(later, want)
    assert cached.cache.used == 40 * 48 * 64 * 3


def test_a_full_cache_stores_nothing_more_and_still_reads_the_files(make_clip):
    small, big = make_clip("a.mp4", frames=8), make_clip("b.mp4", frames=40, width=256, height=192)
    loader = ClipLoader(FrameSampler("sparse", 4, train=True), cache_mb=1)  # 1 MiB: 74 kB fit, 5.9 MB do not
    reference = ClipLoader(FrameSampler("sparse", 4, train=True))
    np.testing.assert_array_equal(draws(loader, small)[0], draws(reference, small)[0])
    np.testing.assert_array_equal(draws(loader, big)[0], draws(reference, big)[0])
    assert loader.cache.get(small) is not None and loader.cache.get(big) is None and loader.cache.full
    assert loader.cache.used == 8 * 48 * 64 * 3 <= 2**20


def test_a_cached_image_is_handed_out_as_a_copy(tmp_path):
    path = tmp_path / "still.png"
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(path)
    loader = ClipLoader(FrameSampler("sparse", 4, train=True), cache_mb=1)
    first = loader.image(path)
    first[:] = 0  # a transform writing into its input must not reach the cache
    path.unlink()
    assert (loader.image(path) == 90).all()


def test_persistent_workers_keep_their_cache_across_epochs(make_clip, tmp_path):
    clip = make_clip(frames=16)
    (tmp_path / "list.csv").write_text(f"{clip.name},0\n" * 4)
    loader = ClipLoader(FrameSampler("sparse", 4, train=True), cache_mb=16)
    dataset = VideoListDataset(tmp_path / "list.csv", tmp_path, loader=loader, transform=TrainTransform(size=32))
    sampler = ShardedSampler(len(dataset), batch_size=2, seed=0, drop_last=False)
    data = build_loader(dataset, sampler, num_workers=1, persistent=True)
    sampler.set_epoch(0)
    first = [batch.video for batch in data]
    clip.unlink()  # a fresh worker would fail to open it; the persistent one still has it in memory
    sampler.set_epoch(0)
    second = [batch.video for batch in data]
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
