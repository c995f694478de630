import json

import pytest
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.data.prepare.video_text import prepare_video_text
from umt_cli.errors import DataError
from umt_cli.recipe.prepare import VideoTextSource


def test_normalises_and_counts(synthetic_dir, tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    items = [
        {"video": "videos/train/train_0000.mp4", "caption": "A Red  circle, moving!", "extra": 1},
        {"video": "videos/train/train_0001.mp4", "caption": ["One.", "", "Two?"]},
        {"video": "videos/train/missing.mp4", "caption": "gone"},
        {"video": str(tmp_path / "empty.mp4"), "caption": "empty file"},
        {"video": "videos/train/train_0002.mp4", "caption": "?!."},
        {"caption": "no media"},
        {"video": "videos/train/train_0003.mp4", "caption": 7},
    ]
    source_file = tmp_path / "ann.jsonl"
    source_file.write_text("\n".join(json.dumps(i) for i in items))
    out = tmp_path / "clean.json"
    summary = prepare_video_text(VideoTextSource(annotations=source_file, root=synthetic_dir, out=out))
    kept = json.loads(out.read_text())
    assert kept == [
        {"video": "videos/train/train_0000.mp4", "caption": "a red circle moving", "extra": 1},
        {"video": "videos/train/train_0001.mp4", "caption": ["one", "two"]},
    ]
    assert summary["dropped"] == {"bad_entry": 2, "empty": 1, "empty_caption": 1, "missing": 1}
    assert summary["captions"] == 3 and summary["entries_in"] == 7
    manifest = json.loads((tmp_path / "clean.manifest.json").read_text())
    assert manifest == summary


def test_nothing_usable_is_an_error(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"video": "nope.mp4", "caption": "x"}]))
    with pytest.raises(DataError, match="no usable entries"):
        prepare_video_text(VideoTextSource(annotations=tmp_path / "a.json", root=tmp_path, out=tmp_path / "o.json"))


def test_cli(synthetic_dir, tmp_path):
    out = tmp_path / "o.json"
    args = [
        "prepare-data",
        "video-text",
        str(synthetic_dir / "val.json"),
        "--root",
        str(synthetic_dir),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())) == 4
    missing = CliRunner().invoke(app, ["prepare-data", "video-text", str(tmp_path / "none.json"), "--out", str(out)])
    assert missing.exit_code == 2
