import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from umt_cli.data import datasets as datasets_module
from umt_cli.data.datasets import (
    ClipLoader,
    VideoListDataset,
    VideoTextDataset,
    build_train_dataset,
    load_annotations,
    parse_video_list,
)
from umt_cli.data.decode import ShortRead
from umt_cli.data.failures import DataHealth
from umt_cli.data.loaders import ShardedSampler, build_loader, iterate_epoch
from umt_cli.data.sampling import FrameSampler
from umt_cli.data.transforms import TrainTransform
from umt_cli.errors import DataError


def clip_dataset(
    list_file: Path, root: Path, *, min_frames: int = 1, timeout_s: float = 30.0, **kw
) -> VideoListDataset:
    loader = ClipLoader(FrameSampler("sparse", 4, train=True), min_frames=min_frames, timeout_s=timeout_s, **kw)
    return VideoListDataset(list_file, root, loader=loader, transform=TrainTransform(size=32), seed=0)


def run_epoch(dataset, *, batch_size=2, workers=0, max_fail_ratio=1.0, epoch=0):
    sampler = ShardedSampler(len(dataset), batch_size=batch_size, seed=0, drop_last=False)
    sampler.set_epoch(epoch)
    health = DataHealth(max_fail_ratio=max_fail_ratio)
    batches = list(iterate_epoch(build_loader(dataset, sampler, num_workers=workers), health))
    return batches, health


@pytest.fixture
def bad_data(synthetic_dir: Path, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """Six good clips plus a missing, an empty, a truncated, a non-video and a too-short file."""
    root = tmp_path / "root"
    shutil.copytree(synthetic_dir / "videos", root / "videos")
    good = [line for line in (synthetic_dir / "train.csv").read_text().splitlines()][:6]
    (root / "empty.mp4").write_bytes(b"")
    data = (root / "videos/train/train_0000.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "notes.mp4").write_text("this is not a video\n")
    from conftest import numbered_frames

    from umt_cli.data.prepare.encode import write_h264

    write_h264(root / "short.mp4", numbered_frames(2), fps=8, width=64, height=48)
    bad = {"missing.mp4": "missing", "empty.mp4": "empty", "truncated.mp4": "truncated", "notes.mp4": "open_fail",
           "short.mp4": "short_video"}  # fmt: skip
    lines = good + [f"{name},0" for name in bad]
    list_file = tmp_path / "list.csv"
    list_file.write_text("\n".join(lines) + "\n")
    return list_file, root, bad


def test_parse_video_list_formats(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("a/b.mp4,3\nc/d 4\n\nnoext,5\nweird,name.mp4,6\n")
    entries = parse_video_list(path)
    assert [(e.path, e.label) for e in entries] == [("a/b.mp4", 3), ("c/d.mp4", 4), ("noext.mp4", 5),
                                                    ("weird,name.mp4", 6)]  # fmt: skip
    path.write_text("a.mp4,x\n")
    with pytest.raises(DataError, match="l.txt line 1: expected `path,label`"):
        parse_video_list(path)


def test_annotations_json_and_jsonl(tmp_path):
    items = [{"video": "a.mp4", "caption": "A Dog!"}, {"image": "b.jpg", "caption": ["One.", "Two"]}]
    (tmp_path / "a.json").write_text(json.dumps(items))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(i) for i in items))
    for name in ("a.json", "a.jsonl"):
        entries = load_annotations(tmp_path / name)
        assert [(e.path, e.is_image, e.captions) for e in entries] == [("a.mp4", False, ("a dog",)),
                                                                       ("b.jpg", True, ("one", "two"))]  # fmt: skip
    (tmp_path / "bad.json").write_text(json.dumps([{"video": "a.mp4"}]))
    with pytest.raises(DataError, match="entry 0"):
        load_annotations(tmp_path / "bad.json")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_full_epoch_survives_bad_files_and_counts_them(bad_data, workers):
    list_file, root, bad = bad_data
    dataset = clip_dataset(list_file, root, min_frames=4)
    batches, health = run_epoch(dataset, workers=workers)
    assert len(dataset) == 11
    assert health.delivered == sum(len(b.index) for b in batches) == 12  # the last batch of 2 is padded
    failed_paths = {Path(f.path).name: f.reason for b in batches for f in b.failures}
    assert failed_paths == bad  # every bad file was hit, with its own reason, and nothing else failed
    assert set(health.by_reason) == set(bad.values())
    assert health.failed >= len(bad)
    assert all(b.video.shape[1:] == (3, 4, 32, 32) and torch.isfinite(b.video).all() for b in batches)
    assert "skipped" in health.line()
    report = "\n".join(health.report())  # the end-of-epoch report names every skipped file under its reason
    assert all(f"{reason} " in report and str(root / name) in report for name, reason in bad.items())


def test_epochs_are_deterministic_and_independent_of_workers(bad_data):
    list_file, root, _ = bad_data
    dataset = clip_dataset(list_file, root, min_frames=4)
    a, health_a = run_epoch(dataset, workers=0)
    b, health_b = run_epoch(dataset, workers=2)
    assert all(torch.equal(x.video, y.video) and torch.equal(x.index, y.index) for x, y in zip(a, b, strict=True))
    assert health_a.summary() == health_b.summary()
    c, _ = run_epoch(dataset, workers=0, epoch=1)
    assert not all(torch.equal(x.index, y.index) for x, y in zip(a, c, strict=True))


def test_too_many_failures_stop_with_a_clear_error(bad_data):
    list_file, root, _ = bad_data
    with pytest.raises(DataError, match="max_fail_ratio"):
        run_epoch(clip_dataset(list_file, root, min_frames=4), max_fail_ratio=0.01)


def test_a_slow_decode_is_skipped_as_timeout(synthetic_dir, monkeypatch):
    real_open = datasets_module.open_video

    def slow_open(path, **kw):
        if path.name == "train_0001.mp4":
            time.sleep(5)
        return real_open(path, **kw)

    monkeypatch.setattr(datasets_module, "open_video", slow_open)
    dataset = clip_dataset(synthetic_dir / "train.csv", synthetic_dir, timeout_s=0.3)
    start = time.monotonic()
    sample = dataset[1]
    assert time.monotonic() - start < 3
    assert [(Path(f.path).name, f.reason) for f in sample.failures] == [("train_0001.mp4", "timeout")]


def test_a_short_read_is_resampled_within_the_decodable_frames(synthetic_dir, monkeypatch):
    calls = []

    class OverReporting:
        num_frames, fps = 300, 25.0

        def get_batch(self, indices):
            calls.append(list(indices))
            if max(indices) >= 16:
                raise ShortRead("x.mp4", 16, "over-reported")
            return np.zeros((len(indices), 48, 64, 3), np.uint8)

        def close(self):
            pass

    monkeypatch.setattr(datasets_module, "open_video", lambda path, **kw: OverReporting())
    sample = clip_dataset(synthetic_dir / "train.csv", synthetic_dir)[0]
    assert sample.failures == ()
    assert len(calls) == 2 and max(calls[1]) < 16 and calls[1] == [i * 4 + (x % 4) for i, x in enumerate(calls[1])]


def test_a_hung_worker_is_named(synthetic_dir, tmp_path, monkeypatch):
    def hang(path, **kw):
        time.sleep(30)

    monkeypatch.setattr(datasets_module, "open_video", hang)
    status = tmp_path / "status"
    status.mkdir()
    dataset = clip_dataset(synthetic_dir / "train.csv", synthetic_dir, status_dir=str(status))
    sampler = ShardedSampler(len(dataset), batch_size=2)
    loader = build_loader(dataset, sampler, num_workers=1, timeout_s=1.0)
    with pytest.raises(DataError, match=r"worker-0: .*train_\d+\.mp4"):
        list(iterate_epoch(loader, DataHealth(), status_dir=status))


def test_video_text_pairs_and_images(synthetic_dir, tmp_path):
    from PIL import Image

    items = json.loads((synthetic_dir / "train.json").read_text())[:3]
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(tmp_path / "still.png")
    items.append({"image": str(tmp_path / "still.png"), "caption": "A grey Picture."})
    (tmp_path / "ann.json").write_text(json.dumps(items))
    loader = ClipLoader(FrameSampler("interval", 4, train=True))
    dataset = VideoTextDataset(tmp_path / "ann.json", synthetic_dir, loader=loader, transform=TrainTransform(size=32))
    assert len(dataset) == 3 * 3 + 1
    sample = dataset[0]
    assert sample.video.shape == (3, 4, 32, 32) and sample.caption == items[0]["caption"][0] and not sample.is_image
    image = dataset[len(dataset) - 1]
    assert image.is_image and image.video.shape == (3, 1, 32, 32) and image.caption == "a grey picture"
    assert image.media_index == 3 and dataset[4].media_index == 1


def test_build_train_dataset_from_the_quickstart_recipe(synthetic_dir):
    from umt_cli.recipe import load_recipe
    from umt_cli.recipe.catalog import resolve_recipe

    overrides = [f"data.train_list={synthetic_dir / 'train.csv'}", "student.img_size=32", "teacher.input_size=32"]
    recipe = load_recipe(resolve_recipe("quickstart/distill"), overrides)
    dataset = build_train_dataset(recipe)
    assert len(dataset) == 8
    assert dataset[3].video.shape == (3, 4, 32, 32)


def test_list_root_prefers_the_recipe_then_the_recorded_root_then_the_lists_folder(tmp_path):
    from umt_cli.data.datasets import list_root

    lists = tmp_path / "lists"
    lists.mkdir()
    assert list_root(lists / "train.csv", tmp_path / "given") == tmp_path / "given"
    assert list_root(lists / "train.csv", None) == lists
    (lists / "videos_root.txt").write_text(f"{tmp_path / 'videos'}\n")
    assert list_root(lists / "train.csv", None) == tmp_path / "videos"
