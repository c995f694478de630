"""The fault catalogue of `umt finetune`: each bad input or bad disk ends in one `error:` line naming the culprit (the
file, its line, the recipe key or the checkpoint key), with exit code 2 for usage and 1 for data, checkpoint and disk
problems, and never in a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from test_fault_catalogue import Fault, check_fault, fail_writes_under

RECIPE = "quickstart/finetune"


@pytest.fixture
def finetune_inputs(synthetic_dir: Path) -> dict[str, Path]:
    """The rows' good inputs: the synthetic lists and class names."""
    return {name: synthetic_dir / f"{name}.csv" for name in ("train", "val", "test")} | {
        "classes": synthetic_dir / "classes.txt",
        "root": synthetic_dir,
    }


def command(inputs: dict[str, Path], tmp_path: Path, *extra: str, **replace: object) -> list[str]:
    """One short `umt finetune` run on the good inputs (2 clips x 2 views a step, one step, no held-out lists), with
    some replaced (`train=`, `classes=`, `init=`) and recipe overrides appended."""
    init = replace.get("init")
    return ["finetune", RECIPE, f"data.train_list={replace.get('train', inputs['train'])}", "~data.val_list",
            "~data.test_list", f"data.classes={replace.get('classes', inputs['classes'])}", "data.batch_size=2",
            f"init.checkpoint={init}" if init else "~init.checkpoint", "schedule.max_steps=1", *extra,
            "--run-dir", str(replace.get("run_dir", tmp_path / "run"))]  # fmt: skip


def written(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _classes_not_utf8(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, classes=written(t, "latin1.txt", b"moving left\nmoving r\xe9ght\nup\ndown\n"))


def _train_list_not_utf8(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    rows = i["train"].read_bytes().replace(b"train_0001", b"tr\xe9in_0001")
    return command(i, t, train=written(t, "latin1.csv", rows))


def _train_list_is_a_folder(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    (t / "folder.csv").mkdir()
    return command(i, t, train=t / "folder.csv")


def _label_beyond_classes(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    rows = i["train"].read_text().splitlines()
    rows[1] = rows[1].rsplit(",", 1)[0] + ",7"
    return command(i, t, train=written(t, "seven.csv", ("\n".join(rows) + "\n").encode()))


def _every_video_missing(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, train=written(t, "gone.csv", b"videos/nowhere_0.mp4,0\nvideos/nowhere_1.mp4,1\n"))


def _init_not_safetensors(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, init=written(t, "garbage.safetensors", b"\x00\x01 not a checkpoint" * 64))


def _init_truncated(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    good = written(t, "whole.safetensors", b"")
    save_file(_student_state(), good)
    data = good.read_bytes()
    return command(i, t, init=written(t, "cut.safetensors", data[: len(data) // 2]))


def _init_missing_a_key(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    state = _student_state()
    del state["encoder.blocks.1.attn.qkv.weight"]
    save_file(state, t / "holed.safetensors")
    return command(i, t, init=t / "holed.safetensors")


def _init_is_an_empty_folder(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    (t / "empty_run").mkdir()
    return command(i, t, init=t / "empty_run")


def _label_map_without_a_class(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    """A fine-tuned head carried over by class name, but its label map lacks one of `data.classes`."""
    first = command(i, t, run_dir=t / "first")
    from typer.testing import CliRunner

    from umt_cli.cli.app import app

    assert CliRunner().invoke(app, first).exit_code == 0
    label_map = written(t, "source_classes.txt", b"moving left\nmoving right\nmoving up\nmoving sideways\n")
    return command(i, t, f"init.label_map={label_map}", init=t / "first" / "classifier.safetensors")


def _bad_randaugment(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    return command(i, t, 'augment.randaugment="rand-q9"')


def _run_dir_read_only(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    fail_writes_under(m, t / "run", errno.EROFS)
    return command(i, t)


def _disk_full_on_the_checkpoint(t: Path, m: pytest.MonkeyPatch, i: dict) -> list[str]:
    fail_writes_under(m, t / "run" / "checkpoints", errno.ENOSPC, folders=False)
    return command(i, t)


def _student_state() -> dict:
    """A tiny stage-1 student's weights, as `umt distill` writes them (built once per row, in memory)."""
    import torch

    from umt_cli.models.heads import AlignHeads
    from umt_cli.models.student import DistillStudent, VideoViT

    torch.manual_seed(0)
    encoder = VideoViT(img_size=64, patch_size=16, num_frames=4, tubelet=1, dim=64, depth=4, num_heads=4,
                       align_layers=1)  # fmt: skip
    student = DistillStudent(encoder=encoder, clip_decoder=AlignHeads(num_tokens=64, dim=64, out_dim=32, num_layers=1))
    return {k: v.contiguous() for k, v in student.state_dict().items()}


FIXTURE = "finetune_inputs"
ROWS = [
    Fault("classes file not UTF-8", _classes_not_utf8, 1, "latin1.txt", FIXTURE),
    Fault("train list not UTF-8", _train_list_not_utf8, 1, "latin1.csv", FIXTURE),
    Fault("train list is a folder", _train_list_is_a_folder, 2, "folder.csv", FIXTURE),
    Fault("label beyond the class list", _label_beyond_classes, 1, "seven.csv", FIXTURE),
    Fault("every training video missing", _every_video_missing, 1, "videos/nowhere_", FIXTURE),
    Fault("init checkpoint not safetensors", _init_not_safetensors, 1, "garbage.safetensors", FIXTURE),
    Fault("init checkpoint truncated", _init_truncated, 1, "cut.safetensors", FIXTURE),
    Fault("init checkpoint missing a key", _init_missing_a_key, 1, "blocks.1.attn.qkv.weight", FIXTURE),
    Fault("init folder without weights", _init_is_an_empty_folder, 1, "empty_run", FIXTURE),
    Fault("label map without a class", _label_map_without_a_class, 1, "moving down", FIXTURE),
    Fault("unknown RandAugment policy", _bad_randaugment, 2, "augment.randaugment", FIXTURE),
    Fault("read-only run directory", _run_dir_read_only, 1, "Read-only file system", FIXTURE),
    Fault("disk full while checkpointing", _disk_full_on_the_checkpoint, 1, "No space left", FIXTURE),
]


@pytest.mark.parametrize("fault", ROWS, ids=[row.name for row in ROWS])
def test_a_bad_finetune_input_ends_in_one_error_line(fault, tmp_path, monkeypatch, request):
    check_fault(fault, tmp_path, monkeypatch, request)


def test_a_stage1_student_with_every_key_loads(tmp_path, finetune_inputs):
    """The rows' student weights are a valid initialisation: the missing-key row fails for its hole alone."""
    from test_fault_catalogue import runner

    from umt_cli.cli.app import app

    save_file(_student_state(), tmp_path / "whole.safetensors")
    result = runner.invoke(app, command(finetune_inputs, tmp_path, init=tmp_path / "whole.safetensors"))
    assert result.exit_code == 0, result.output
    assert load_file(tmp_path / "run" / "classifier.safetensors")
