import json
from pathlib import Path

import numpy as np

from umt_cli.data.decode import open_video
from umt_cli.data.prepare.synthetic import COLOURS, DIRECTIONS, prepare_synthetic
from umt_cli.recipe.prepare import SyntheticSource


def small(out: Path, seed: int = 0) -> SyntheticSource:
    return SyntheticSource(out=out, train=8, val=2, test=2, num_frames=12, width=64, height=48, seed=seed)


def test_layout_lists_and_annotations(synthetic_dir):
    train = (synthetic_dir / "train.csv").read_text().splitlines()
    assert len(train) == 8
    labels = [int(line.split(",")[1]) for line in train]
    assert sorted(labels) == [0, 0, 1, 1, 2, 2, 3, 3]  # directions are balanced
    annotations = json.loads((synthetic_dir / "train.json").read_text())
    assert [a["video"] for a in annotations] == [line.split(",")[0] for line in train]
    first = annotations[0]
    assert len(first["caption"]) == 3 and list(DIRECTIONS)[first["label"]] in first["caption"][1]
    assert (synthetic_dir / "classes.txt").read_text().split("\n")[:4] == [f"moving {d}" for d in DIRECTIONS]
    manifest = json.loads((synthetic_dir / "manifest.json").read_text())
    assert manifest["videos"] == {"train": 8, "val": 4, "test": 4}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    prepare_synthetic(small(tmp_path / "a"))
    prepare_synthetic(small(tmp_path / "b"))
    prepare_synthetic(small(tmp_path / "c", seed=1))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    differ = [f for f in files if (tmp_path / "a" / f).read_bytes() != (tmp_path / "b" / f).read_bytes()]
    assert differ == [Path("manifest.json")]  # only the output folder it records differs
    video = Path("videos/train/train_0000.mp4")
    assert (tmp_path / "a" / video).read_bytes() != (tmp_path / "c" / video).read_bytes()


def test_the_shape_moves_in_the_labelled_direction(synthetic_dir):
    """The label is only visible over time: the coloured blob's centre moves along the labelled direction."""
    annotations = json.loads((synthetic_dir / "train.json").read_text())
    for item in annotations:
        colour = next(c for c in COLOURS if f" {c} " in f" {item['caption'][0]} ")
        frames = open_video(synthetic_dir / item["video"]).get_batch([0, 15]).astype(int)
        target = np.array(COLOURS[colour])
        centres = []
        for frame in frames:
            ys, xs = np.nonzero(np.abs(frame - target).sum(-1) < 60)
            centres.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = centres
        dx, dy = DIRECTIONS[list(DIRECTIONS)[item["label"]]]
        assert (x1 - x0) * dx + (y1 - y0) * dy > 3, item["caption"][0]
        assert abs((x1 - x0) * dy) + abs((y1 - y0) * dx) < 2  # no motion across the direction
