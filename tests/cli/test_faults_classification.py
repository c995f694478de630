"""The fault catalogue of `umt eval classification`: each bad input ends in one `error:` line naming the culprit, with
exit code 2 for usage and 1 for data or checkpoint problems; a single missing video and a corrupt cache file are not
faults (plain tests below)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_eval_classification import write_classifier_pth
from test_fault_catalogue import Fault, check_fault, runner

from umt_cli.cli.app import app


@pytest.fixture
def classification_inputs(stage2_run: Path, synthetic_dir: Path) -> dict[str, Path]:
    """The rows' good inputs: a video-text run, the synthetic lists and class names."""
    return {
        "run": stage2_run,
        "test": synthetic_dir / "test.csv",
        "train": synthetic_dir / "train.csv",
        "classes": synthetic_dir / "classes.txt",
        "root": synthetic_dir,
    }


def command(inputs: dict[str, Path], tmp_path: Path, *extra: str, **replace: object) -> list[str]:
    """`eval classification` on the good inputs, with some replaced (`ckpt=`, `data=`, `classes=`)."""
    ckpt = replace.get("ckpt", inputs["run"])
    data = replace.get("data", inputs["test"])
    classes = replace.get("classes", inputs["classes"])
    return ["eval", "classification", "--ckpt", str(ckpt), "--data", str(data), "--classes", str(classes),
            "--root", str(inputs["root"]), "--out", str(tmp_path / "out"), "--device", "cpu", *extra]  # fmt: skip


def written(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _classes_missing(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, classes=t / "no_classes.txt")


def _label_beyond_classes(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    lines = i["test"].read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",7"
    return command(i, t, data=written(t, "seven.csv", "\n".join(lines) + "\n"))


def _malformed_list(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, data=written(t, "bad.csv", "videos/test/test_0000.mp4,0\nno label here\n"))


def _every_video_missing(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, data=written(t, "gone.csv", "videos/test/gone_0.mp4,0\nvideos/test/gone_1.mp4,1\n"))


def _finetuned_with_video_text(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, "--mode", "finetuned")


def _zero_shot_with_classifier(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, "--mode", "zero-shot", ckpt=write_classifier_pth(t / "cls.pth"))


def _probe_without_train_list(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, "--mode", "linear-probe")


def _no_clips(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, "--clips", "0")


def _train_list_outside_probe(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, "--mode", "zero-shot", "--train-list", str(i["train"]))


def _unknown_mode(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, "--mode", "few-shot")


def _blank_class_line(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, classes=written(t, "gappy.txt", "moving left\n\nmoving up\nmoving down\nx\n"))


def _head_wider_than_classes(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    classes = written(t, "five.txt", "a\nb\nc\nd\ne\n")  # the tiny classifier has 4 outputs
    return command(i, t, "--clips", "1", "--crops", "1", ckpt=write_classifier_pth(t / "cls.pth"), classes=classes)


FIXTURE = "classification_inputs"
ROWS = [
    Fault("classes file missing", _classes_missing, 2, "no_classes.txt", FIXTURE),
    Fault("label beyond the class list", _label_beyond_classes, 1, "label 7", FIXTURE),
    Fault("list file malformed", _malformed_list, 1, "bad.csv line 2", FIXTURE),
    Fault("every video missing", _every_video_missing, 1, "gone.csv", FIXTURE),
    Fault("finetuned with a video-text model", _finetuned_with_video_text, 1, "--mode finetuned", FIXTURE),
    Fault("zero-shot with a classifier", _zero_shot_with_classifier, 1, "--mode zero-shot", FIXTURE),
    Fault("linear probe without a train list", _probe_without_train_list, 2, "--train-list", FIXTURE),
    Fault("zero clips", _no_clips, 2, "--clips 0", FIXTURE),
    Fault("train list outside the probe", _train_list_outside_probe, 2, "--train-list", FIXTURE),
    Fault("unknown mode", _unknown_mode, 2, "--mode 'few-shot'", FIXTURE),
    Fault("blank line among the class names", _blank_class_line, 1, "gappy.txt line 2", FIXTURE),
    Fault("classes do not match the head", _head_wider_than_classes, 2, "--classes", FIXTURE),
]


@pytest.mark.parametrize("fault", ROWS, ids=[row.name for row in ROWS])
def test_a_bad_classification_input_ends_in_one_error_line(fault, tmp_path, monkeypatch, request):
    check_fault(fault, tmp_path, monkeypatch, request)


def test_one_missing_video_is_skipped_counted_and_named(classification_inputs, tmp_path):
    lines = classification_inputs["test"].read_text().splitlines()
    data = written(tmp_path, "one_gone.csv", "\n".join([*lines, "videos/test/gone.mp4,2"]) + "\n")
    result = runner.invoke(app, command(classification_inputs, tmp_path, data=data))
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["counts"] == {"videos": 5, "evaluated": 4, "skipped_videos": 1}
    assert [(Path(s["video"]).name, s["reason"]) for s in saved["skipped"]] == [("gone.mp4", "missing")]
    assert saved["metrics"]["num_videos"] == 4
    assert "1 video skipped" in result.output
    assert "gone.mp4" in (tmp_path / "out" / "report.md").read_text()
    assert "gone.mp4" not in (tmp_path / "out" / "predictions.csv").read_text()


def test_a_corrupt_cache_file_is_recomputed(classification_inputs, tmp_path):
    cache = tmp_path / "cache"
    args = command(classification_inputs, tmp_path, "--mode", "linear-probe", "--train-list",
                   str(classification_inputs["train"]), "--cache", str(cache), "--probe-epochs", "10")  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before = json.loads((tmp_path / "out" / "results.json").read_text())
    train_file = Path(before["probe"]["cache"]["train"]["path"])
    train_file.write_bytes(b"not a torch file" * 10)
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    after = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (after["probe"]["cache"]["train"]["hit"], after["probe"]["cache"]["test"]["hit"]) == (False, True)
    assert train_file.read_bytes()[:16] != b"not a torch file"  # rewritten with real features
    assert after["metrics"] == before["metrics"]
