"""The fault catalogue of `umt export`: bad checkpoints, refused output folders and failing disks each end in one
`error:` line naming the culprit, and a failed export leaves neither a temporary folder nor a partial bundle."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

import pytest
import torch
from test_export_command import official_classifier
from test_fault_catalogue import Fault, check_fault, fail_writes_under, runner

import umt_cli.export.onnx as onnx_module
from umt_cli.cli.app import app


def classifier_file(tmp_path: Path, name: str = "cls.pth") -> Path:
    """A valid tiny official classification file (loads in well under a second)."""
    path = tmp_path / name
    torch.save({"module": official_classifier(seed=0)}, path)
    return path


def export_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["export", "--ckpt", str(ckpt), "--out", str(out), *extra]


# --- the rows -------------------------------------------------------------------------------------------------


def _missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    return export_args(tmp_path / "absent.pth", tmp_path / "out")


def _unknown_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    folder = tmp_path / "holiday_photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8")
    return export_args(folder, tmp_path / "out")


def _truncated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    path = classifier_file(tmp_path, "cut.pth")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return export_args(path, tmp_path / "out")


def _needs_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    path = tmp_path / "legacy.pth"  # official trainers pickle their argparse namespace next to the weights
    torch.save({"model": official_classifier(seed=0), "args": argparse.Namespace(lr=1e-3)}, path)
    return export_args(path, tmp_path / "out")


def _stage1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    classifier = official_classifier(seed=0)
    state = {f"encoder.{key}": value for key, value in classifier.items() if not key.startswith(("fc_norm", "head"))}
    state |= {"clip_decoder.0.head.weight": torch.zeros(8, 64), "clip_decoder.0.head.bias": torch.zeros(8)}
    path = tmp_path / "b16_ptk710_f8_res224.pth"
    torch.save(state, path)
    return export_args(path, tmp_path / "out")


def _unknown_state_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    path = tmp_path / "resnet.pth"
    torch.save({"conv_stem.weight": torch.randn(4, 3, 3, 3), "fc.weight": torch.randn(2, 4)}, path)
    return export_args(path, tmp_path / "out")


def _out_not_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    out = tmp_path / "my_thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("\\chapter{Intro}")
    return export_args(classifier_file(tmp_path), out)


def _overwrite_a_non_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    return [*_out_not_empty(tmp_path, monkeypatch, _), "--overwrite"]


def _out_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    return export_args(classifier_file(tmp_path), out)


def _read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    ckpt = classifier_file(tmp_path)
    fail_writes_under(monkeypatch, tmp_path / "ro", errno.EROFS)
    return export_args(ckpt, tmp_path / "ro" / "bundle")


def _full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    ckpt = classifier_file(tmp_path)
    (tmp_path / "full").mkdir()
    fail_writes_under(monkeypatch, tmp_path / "full", errno.ENOSPC, folders=False)  # the weights file is the first
    return export_args(ckpt, tmp_path / "full" / "bundle")


def _no_onnx_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> list[str]:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    return export_args(classifier_file(tmp_path), tmp_path / "out", "--onnx")


def _tokenizer_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage2_run: Path) -> list[str]:
    return export_args(stage2_run, tmp_path / "out", "--text-encoder", str(tmp_path / "deleted_bert"))


ROWS = [
    Fault("checkpoint missing", _missing, 2, "--ckpt", fixture="tmp_path"),
    Fault("checkpoint folder neither bundle nor run", _unknown_folder, 2, "holiday_photos", fixture="tmp_path"),
    Fault("truncated .pth", _truncated, 1, "cut.pth", fixture="tmp_path"),
    Fault("pickle needs trust", _needs_trust, 1, "--trust-checkpoint", fixture="tmp_path"),
    Fault("stage-1 checkpoint", _stage1, 1, "stage-1", fixture="tmp_path"),
    Fault("unknown state dict", _unknown_state_dict, 1, "resnet.pth", fixture="tmp_path"),
    Fault("out folder not empty", _out_not_empty, 2, "my_thesis", fixture="tmp_path"),
    Fault(
        "overwrite of a folder that is not an export", _overwrite_a_non_export, 2, "will not delete", fixture="tmp_path"
    ),
    Fault("out is a file", _out_is_a_file, 2, "notes.txt", fixture="tmp_path"),
    Fault("read-only out", _read_only, 1, "Read-only file system", fixture="tmp_path"),
    Fault("disk full while writing weights", _full_disk, 1, "No space left on device", fixture="tmp_path"),
    Fault("onnx extra not installed", _no_onnx_extra, 2, "pip install 'umt[export]'", fixture="tmp_path"),
    Fault("tokenizer folder gone", _tokenizer_gone, 2, "--text-encoder", fixture="stage2_run"),
]


@pytest.mark.parametrize("fault", ROWS, ids=[row.name for row in ROWS])
def test_a_bad_export_ends_in_one_error_line(fault, tmp_path, monkeypatch, request):
    check_fault(fault, tmp_path, monkeypatch, request)


# --- nothing half-written -------------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".tmp-*"))


def test_a_full_disk_leaves_no_temporary_folder_and_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    args = _full_disk(tmp_path, monkeypatch, None)
    result = runner.invoke(app, args)
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert not (tmp_path / "full" / "bundle").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_a_failed_onnx_check_leaves_no_partial_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite):
    ckpt, out = classifier_file(tmp_path), tmp_path / "bundle"
    if overwrite:  # an earlier, good bundle must survive a failed replacement untouched
        assert runner.invoke(app, export_args(ckpt, out)).exit_code == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()} if overwrite else {}

    def unrunnable(part, path: Path, opset):  # an exporter bug: a file onnxruntime cannot load
        path.write_bytes(b"not an onnx model")
        return path

    monkeypatch.setattr(onnx_module, "_export_onnx_part", unrunnable)
    result = runner.invoke(app, export_args(ckpt, out, "--onnx", *(["--overwrite"] if overwrite else [])))
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "classifier.onnx" in errors[0], result.output
    assert leftovers(tmp_path) == []
    if overwrite:
        assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    else:
        assert not out.exists()
