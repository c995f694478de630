from pathlib import Path

import numpy as np
import pytest
import torch

from umt_cli.data.prepare.encode import write_h264
from umt_cli.data.sampling import interval_indices, segment_view_indices
from umt_cli.errors import UsageError
from umt_cli.evaluation.views import EvalClipDataset, collate_views, iterate_views

FRAMES, WIDTH, HEIGHT = 40, 64, 48
STRIPE = 8  # black columns on the left edge, white on the right: tell the three crops apart


def grey_level(i: int) -> int:
    return 20 + 5 * i


def write_numbered_clip(path: Path, frames: int = FRAMES) -> Path:
    """Frame i is grey level 20 + 5 i, with a black stripe on the left and a white one on the right."""
    video = np.empty((frames, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(frames):
        video[i] = grey_level(i)
        video[i, :, :STRIPE] = 0
        video[i, :, -STRIPE:] = 255
    write_h264(path, video, fps=25, width=WIDTH, height=HEIGHT, crf=10)
    return path


def frame_number(view_frame: torch.Tensor) -> int:
    """Read the frame number back from the middle of a (C, S, S) frame normalised with mean 0, std 1."""
    s = view_frame.shape[-1]
    centre = view_frame[:, :, s // 2 - 4 : s // 2 + 4].mean().item() * 255
    return round((centre - 20) / 5)


def crop_position(view_frame: torch.Tensor) -> int:
    """0 = the crop holds the left (black) stripe, 2 = the right (white) one, 1 = neither."""
    left = view_frame[:, :, 2:5].mean().item() * 255
    right = view_frame[:, :, -5:-2].mean().item() * 255
    assert not (left < 10 and right > 245)
    return 0 if left < 10 else 2 if right > 245 else 1


def dataset(entries, root, **options):
    settings = {"num_frames": 4, "size": HEIGHT, "mean": (0, 0, 0), "std": (1, 1, 1)}
    return EvalClipDataset(entries, root, **{**settings, **options})


def test_views_are_clip_major_with_the_official_frame_indices(tmp_path):
    write_numbered_clip(tmp_path / "a.mp4")
    clips, crops = 3, 3
    ds = dataset([("a.mp4", 2)], tmp_path, sampling="segments", num_clips=clips, num_crops=crops)
    sample = ds[0]
    assert sample.video.shape == (clips * crops, 3, 4, HEIGHT, HEIGHT) and sample.video.dtype == torch.float32
    assert (sample.label, sample.index, sample.reason) == (2, 0, None)
    expected = segment_view_indices(FRAMES, 4, num_clips=clips, generator=None)
    assert len({tuple(clip) for clip in expected}) == clips  # the clips differ, so the order is checked
    for v, view in enumerate(sample.video):
        clip, crop = divmod(v, crops)
        assert [frame_number(view[:, t]) for t in range(4)] == expected[clip]
        assert {crop_position(view[:, t]) for t in range(4)} == {crop}


def test_middle_sampling_is_one_centre_clip(tmp_path):
    write_numbered_clip(tmp_path / "a.mp4")
    sample = dataset([("a.mp4", 0)], tmp_path, num_frames=5)[0]
    assert sample.video.shape == (1, 3, 5, HEIGHT, HEIGHT)
    assert [frame_number(sample.video[0, :, t]) for t in range(5)] == interval_indices(FRAMES, 5, generator=None)
    assert crop_position(sample.video[0, :, 0]) == 1  # the centre crop holds neither stripe


def test_undecodable_files_are_skipped_counted_and_named(tmp_path):
    write_numbered_clip(tmp_path / "good0.mp4")
    write_numbered_clip(tmp_path / "good3.mp4", frames=24)
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 4)
    entries = [("good0.mp4", 1), ("corrupt.mp4", 2), ("missing.mp4", 3), ("good3.mp4", 0)]
    views = iterate_views(dataset(entries, tmp_path), batch_size=3)
    batches = list(views)
    labels = torch.cat([b[1] for b in batches]).tolist()
    indices = torch.cat([b[2] for b in batches]).tolist()
    assert indices == [0, 3] and labels == [1, 0]  # nothing was replaced by another video
    assert all(b[0].shape[1:] == (1, 3, 4, HEIGHT, HEIGHT) for b in batches)
    skipped = dict(views.skipped)
    assert set(skipped) == {str(tmp_path / "corrupt.mp4"), str(tmp_path / "missing.mp4")}
    assert skipped[str(tmp_path / "missing.mp4")] == "missing"
    assert skipped[str(tmp_path / "corrupt.mp4")] in ("open_fail", "decode_fail", "truncated", "short_video")
    assert (views.health.delivered, views.health.failed) == (2, 2)


def test_a_batch_with_no_good_video_yields_nothing(tmp_path):
    write_numbered_clip(tmp_path / "good.mp4")
    entries = [("missing1.mp4", 0), ("missing2.mp4", 0), ("good.mp4", 1)]
    views = iterate_views(dataset(entries, tmp_path), batch_size=2)
    assert [b[2].tolist() for b in views] == [[2]]
    assert [p for p, _ in views.skipped] == [str(tmp_path / "missing1.mp4"), str(tmp_path / "missing2.mp4")]


def test_worker_processes_give_the_same_batches(tmp_path):
    for name in ("a.mp4", "b.mp4"):
        write_numbered_clip(tmp_path / name)
    ds = dataset([("a.mp4", 0), ("b.mp4", 1), ("nope.mp4", 1)], tmp_path)
    inline = list(iterate_views(ds, batch_size=2))
    views = iterate_views(ds, batch_size=2, num_workers=1)
    workers = list(views)
    assert len(inline) == len(workers) == 1
    assert torch.equal(inline[0][0], workers[0][0]) and workers[0][1].tolist() == [0, 1]
    assert views.skipped == [(str(tmp_path / "nope.mp4"), "missing")]


def test_collate_keeps_order_and_lists_failures(tmp_path):
    write_numbered_clip(tmp_path / "a.mp4")
    ds = dataset([("a.mp4", 3), ("gone.mp4", 1), ("a.mp4", 2)], tmp_path)
    batch = collate_views([ds[2], ds[1], ds[0]])
    assert batch.indices.tolist() == [2, 0] and batch.labels.tolist() == [2, 3]
    assert batch.failures[0].index == 1 and batch.failures[0].reason == "missing"


@pytest.mark.parametrize(
    "options",
    [{"sampling": "middle", "num_clips": 2}, {"sampling": "uniform"}, {"num_crops": 0}, {"num_frames": 0}],
)
def test_bad_view_settings_are_usage_errors(tmp_path, options):
    with pytest.raises(UsageError):
        dataset([("a.mp4", 0)], tmp_path, **options)
