"""The fault catalogue: every way a user can hand `umt` a bad input or a bad disk, driven through the real CLI.

Each row sets up one fault and gives the command line, the exit code and the culprit the one `error:` line (or the
recipe problem lines under it) must name. No row may end in a traceback. Full disks and read-only file systems
cannot be made without privileges, so they are injected into the writers: Python's `open` in a write mode,
`os.open` with write flags, `os.mkdir` and `torch.save`, for paths under one folder only.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from umt_cli.cli.app import app

runner = CliRunner()

TINY_RECIPE = "quickstart/distill"
PRETRAIN_RECIPE = "quickstart/pretrain"


# --- injecting file-system failures ----------------------------------------------------------------------------


def fail_writes_under(monkeypatch: pytest.MonkeyPatch, root: Path, code: int, *, folders: bool = True) -> None:
    """Make every write below `root` fail with `code` (ENOSPC, EROFS, EACCES...) the way the kernel reports it;
    with `folders=False`, creating folders still works (a disk that fills up while files are written)."""
    root = Path(root).absolute()

    def hit(path: object) -> bool:
        try:
            return Path(os.fsdecode(path)).absolute().is_relative_to(root)
        except TypeError:  # a file descriptor or file object
            return False

    def refuse(path: object) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))

    real_open, real_os_open, real_mkdir, real_save = builtins.open, os.open, os.mkdir, torch.save

    def fake_open(file, mode="r", *args, **kwargs):
        if hit(file) and any(flag in mode for flag in "wax+"):
            raise refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if hit(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if folders and hit(path):
            raise refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_save(obj, target, *args, **kwargs):  # torch writes file paths from C++, past Python's open
        name = getattr(target, "name", target)
        if isinstance(name, (str, Path)) and hit(name):
            raise refuse(name)
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(torch, "save", fake_save)


def deny_reading(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """`target` exists but cannot be read (root ignores permission bits, so the refusal is injected)."""
    real_open = builtins.open
    target = target.absolute()

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).absolute() == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


# --- small bad inputs -----------------------------------------------------------------------------------------


def recipe_file(tmp_path: Path, data: bytes, name: str = "bad.toml") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def kinetics_tree(tmp_path: Path, *, train_csv: bytes | None = None) -> Path:
    """A K400 folder with official-style CSVs and no videos (enough to reach every CSV check)."""
    root = tmp_path / "k400"
    (root / "annotations").mkdir(parents=True)
    rows = b"label,youtube_id,time_start,time_end,split\nabseiling,aaaaaaaaaaa,0,10,train\n"
    (root / "annotations" / "train.csv").write_bytes(train_csv if train_csv is not None else rows)
    val = b"label,youtube_id,time_start,time_end,split\nabseiling,bbbbbbbbbbb,0,10,val\n"
    (root / "annotations" / "validate.csv").write_bytes(val)
    return root


def distill_args(run_dir: Path, tiny_overrides: list[str], *extra: str) -> list[str]:
    return ["distill", TINY_RECIPE, *tiny_overrides, "--run-dir", str(run_dir), *extra]


def finished_run(tmp_path: Path, tiny_overrides: list[str]) -> Path:
    run_dir = tmp_path / "run"
    result = runner.invoke(app, distill_args(run_dir, [*tiny_overrides, "schedule.max_steps=2"]))
    assert result.exit_code == 0, result.output
    return run_dir


# --- the rows -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One bad input: `make(tmp_path, monkeypatch, overrides)` sets it up and returns the CLI arguments; `overrides`
    is the value of the fixture named `fixture` (the tiny recipe of the command the row runs)."""

    name: str
    make: Callable[[Path, pytest.MonkeyPatch, list[str]], list[str]]
    code: int
    culprit: str
    fixture: str = "tiny_overrides"


def _recipe_rows() -> list[Fault]:
    k710 = "recipes/k710.toml"
    return [
        Fault("recipe not UTF-8", lambda t, m, o: ["recipe", "validate", recipe_file(t, b'a = 1\nstage = "\xff"\n')],
              2, "bad.toml line 2"),
        Fault("binary recipe", lambda t, m, o: ["recipe", "validate", recipe_file(t, bytes(range(256)) * 4)], 2,
              "bad.toml line 2"),  # the first byte that is not UTF-8 (0x80) follows one newline
        Fault("recipe is a directory", lambda t, m, o: ["recipe", "validate", str(t)], 2, "is a directory"),
        Fault("unreadable recipe", _unreadable_recipe, 2, "Permission denied"),
        Fault("recipe path with [/x]", lambda t, m, o: ["recipe", "validate", str(t / "a[/x].toml")], 2, "a[/x].toml"),
        Fault("recipe path with [bold]", lambda t, m, o: ["recipe", "validate", str(t / "a[bold]b.toml")], 2,
              "a[bold]b.toml"),
        Fault("betas out of range", lambda t, m, o: ["recipe", "validate", k710, "optim.betas=[1.5, 0.9]"], 2,
              "optim.betas"),
        Fault("string for an int", lambda t, m, o: ["recipe", "validate", k710, 'data.batch_size="64"'], 2,
              "data.batch_size"),
        Fault("string for a bool", lambda t, m, o: ["recipe", "validate", k710, 'augment.flip="yes"'], 2,
              "augment.flip"),
        Fault("infinite learning rate", lambda t, m, o: ["recipe", "validate", k710, "optim.lr=inf"], 2, "optim.lr"),
        Fault("negative decode cache", lambda t, m, o: ["recipe", "validate", k710, "decode.cache_mb=-1"], 2,
              "decode.cache_mb"),
        Fault("quickstart --out is a file", _quickstart_into_a_file, 1, "file.txt"),
        Fault("restoring an unknown key", lambda t, m, o: ["recipe", "validate", k710, "~data.batch_sise"], 2,
              "data.batch_sise"),
        Fault("option and override disagree", lambda t, m, o: ["prepare-data", "synthetic", "--out", str(t / "s"),
              "--seed", "2", "source.seed=1"], 2, "source.seed"),  # fmt: skip
        Fault("recipe show of a non-UTF-8 recipe",
              lambda t, m, o: ["recipe", "show", recipe_file(t, b'a = 1\nb = "\xff"\n')], 2, "bad.toml line 2"),
        Fault("recipe cp onto a read-only file system", _cp_read_only, 1, "Read-only file system"),
        Fault("recipe cp onto a full disk", _cp_full_disk, 1, "No space left on device"),
    ]  # fmt: skip


def _quickstart_into_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    (tmp_path / "file.txt").write_text("x")
    return ["quickstart", "--size", "small", "--out", str(tmp_path / "file.txt")]


def _unreadable_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    path = Path(recipe_file(tmp_path, b'schema_version = 1\nstage = "distill"\n', "locked.toml"))
    deny_reading(monkeypatch, path)
    return ["recipe", "validate", str(path)]


def _cp_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    fail_writes_under(monkeypatch, tmp_path / "ro", errno.EROFS)
    return ["recipe", "cp", "k710", str(tmp_path / "ro" / "mine.toml")]


def _cp_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    (tmp_path / "full").mkdir()
    fail_writes_under(monkeypatch, tmp_path / "full", errno.ENOSPC)
    return ["recipe", "cp", "k710", str(tmp_path / "full" / "mine.toml")]


def _prepare_rows() -> list[Fault]:
    def k710(tmp_path: Path, *extra: str, train_csv: bytes | None = None) -> list[str]:
        root = kinetics_tree(tmp_path, train_csv=train_csv)
        return ["prepare-data", "kinetics710", "--k400", str(root), "--out", str(tmp_path / "out"), *extra]

    def label_map(tmp_path: Path, data: bytes | None) -> str:
        path = tmp_path / "labels.txt"
        path.mkdir() if data is None else path.write_bytes(data)
        return str(path)

    huge = b"label,youtube_id,time_start,time_end,split\n" + b"x" * 200_000 + b",aaaaaaaaaaa,0,10,train\n"
    return [
        Fault("Kinetics CSV not UTF-8", lambda t, m, o: k710(t, train_csv=b"label,youtube_id\nabs\xffeiling,a\n"), 1,
              "train.csv"),
        Fault("Kinetics CSV field too large", lambda t, m, o: k710(t, train_csv=huge), 1, "train.csv"),
        Fault("label map not UTF-8", lambda t, m, o: k710(t, "--label-map", label_map(t, b"abseiling\n\xff\n")), 1,
              "labels.txt"),
        Fault("label map is a directory", lambda t, m, o: k710(t, "--label-map", label_map(t, None)), 2,
              "labels.txt: is a folder"),
        Fault("Kinetics CSV is a directory", _kinetics_csv_folder, 2, "validate.csv: is a folder"),
        Fault("annotations not UTF-8", lambda t, m, o: _video_text(t, b'{"video": "a.mp4", "caption": "x"}\n{"vid\xe9'),
              1, "ann.jsonl line 2"),
        Fault("annotations with a broken JSON line",
              lambda t, m, o: _video_text(t, b'{"video": "a.mp4"}\n{"video" "b"}\n'), 1, "ann.jsonl line 2"),
        Fault("annotations are a directory", lambda t, m, o: _video_text(t, None), 2, "ann.jsonl: is a folder"),
        Fault("prepare-data output on a read-only file system", _prepare_read_only, 1, "Read-only file system"),
    ]  # fmt: skip


def _kinetics_csv_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    root = kinetics_tree(tmp_path)
    (root / "annotations" / "validate.csv").unlink()
    (root / "annotations" / "validate.csv").mkdir()
    return ["prepare-data", "kinetics710", "--k400", str(root), "--out", str(tmp_path / "out")]


def _video_text(tmp_path: Path, data: bytes | None) -> list[str]:
    path = tmp_path / "ann.jsonl"
    path.mkdir() if data is None else path.write_bytes(data)
    return ["prepare-data", "video-text", str(path), "--root", str(tmp_path), "--out", str(tmp_path / "out.json")]


def _prepare_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    fail_writes_under(monkeypatch, tmp_path / "out", errno.EROFS)
    return ["prepare-data", "synthetic", "--out", str(tmp_path / "out"), "--train", "2", "--val", "1", "--test", "1"]


def _distill_rows() -> list[Fault]:
    return [
        Fault("run directory on a read-only file system", _run_dir_read_only, 1, "Read-only file system"),
        Fault("run directory is a file", _run_dir_is_a_file, 2, "is a file, not a folder"),
        Fault("full disk during a checkpoint save", _checkpoint_full_disk, 1, "No space left on device"),
        Fault("resume from a truncated model file", lambda t, m, o: _resume_damaged(t, o, "model.safetensors"), 1,
              "model.safetensors"),
        Fault("resume from a truncated meta.json", lambda t, m, o: _resume_damaged(t, o, "meta.json"), 1,
              "meta.json"),
        Fault("training list not UTF-8", _train_list_not_utf8, 1, "train.csv line 2"),
        Fault("training list is a directory", _train_list_folder, 2, "train.csv is a folder"),
        Fault("betas that AdamW refuses", lambda t, m, o: distill_args(t / "run", [*o, "optim.betas=[1.5, 0.9]"]), 2,
              "optim.betas"),
        Fault("pickled teacher without trust", _pickled_teacher, 1, "teacher.trust"),
        Fault("teacher file with foreign keys", _foreign_teacher, 1, "teacher.safetensors: 55 missing key(s)"),
        Fault("teacher file with foreign keys (the list)", _foreign_teacher, 1, "unexpected key(s) [[cls]]"),
        Fault("truncated safetensors teacher", _truncated_teacher, 1, "teacher.safetensors"),
    ]  # fmt: skip


def _train_list_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    listing = tmp_path / "train.csv"
    listing.write_bytes(b"videos/train/train_0000.mp4,0\nvid\xe9o.mp4,1\n")
    kept = [o for o in overrides if not o.startswith("data.train_list")]
    return distill_args(tmp_path / "run", [*kept, f"data.train_list={listing}"])


def _train_list_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    (tmp_path / "train.csv").mkdir()
    kept = [o for o in overrides if not o.startswith("data.train_list")]
    return distill_args(tmp_path / "run", [*kept, f"data.train_list={tmp_path / 'train.csv'}"])


def _run_dir_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    fail_writes_under(monkeypatch, tmp_path / "ro", errno.EROFS)
    return distill_args(tmp_path / "ro" / "run", [*overrides, "schedule.max_steps=1"])


def _run_dir_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    (tmp_path / "run").write_text("notes\n")
    return distill_args(tmp_path / "run", [*overrides, "schedule.max_steps=1"])


def _checkpoint_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    fail_writes_under(monkeypatch, tmp_path / "run" / "checkpoints", errno.ENOSPC, folders=False)
    return distill_args(tmp_path / "run", [*overrides, "schedule.max_steps=2", "checkpoint.every_steps=1"])


def _resume_damaged(tmp_path: Path, overrides: list[str], name: str) -> list[str]:
    run_dir = finished_run(tmp_path, overrides)
    damaged = run_dir / "checkpoints" / "step_000002" / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    return distill_args(run_dir, [*overrides, "schedule.max_steps=2"], "--resume", str(damaged.parent))


def _teacher_file(tmp_path: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / name
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def _pickled_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    path = tmp_path / "teacher.pth"
    torch.save({"conv1.weight": torch.zeros(1), "config": Fault}, path)  # a pickled class: not weights-only
    return distill_args(tmp_path / "run", [*overrides, f"teacher.weights={path}"])


def _foreign_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    path = _teacher_file(tmp_path, "teacher.safetensors", {"[cls]": torch.zeros(2), "conv1.weight": torch.zeros(1)})
    return distill_args(tmp_path / "run", [*overrides, f"teacher.weights={path}"])


def _truncated_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    path = _teacher_file(tmp_path, "teacher.safetensors", {"conv1.weight": torch.zeros(64, 3, 16, 16)})
    path.write_bytes(path.read_bytes()[:200])
    return distill_args(tmp_path / "run", [*overrides, f"teacher.weights={path}"])


def pretrain_args(run_dir: Path, overrides: list[str], *extra: str) -> list[str]:
    return ["pretrain", PRETRAIN_RECIPE, *overrides, "--run-dir", str(run_dir), *extra]


def replaced(overrides: list[str], **keys: object) -> list[str]:
    """`overrides` with these keys (dots written as `__`) given new values: a key may be given only once."""
    new = {key.replace("__", "."): value for key, value in keys.items()}
    return [*(o for o in overrides if o.split("=", 1)[0] not in new), *(f"{k}={v}" for k, v in new.items())]


def _pretrain_rows() -> list[Fault]:
    def row(name: str, make: Callable, code: int, culprit: str) -> Fault:
        return Fault(name, make, code, culprit, fixture="pretrain_overrides")

    return [
        row("pretrain annotations not UTF-8",
            lambda t, m, o: _annotations(t, o, b'[{"video": "a.mp4", "caption": "x"},\n {"video": "vid\xe9o.mp4"}]'),
            1, "ann.json line 2"),
        row("pretrain annotations missing",
            lambda t, m, o: pretrain_args(t / "run", replaced(o, data__corpora__clips__annotations=t / "gone.json")),
            2, "data.corpora.clips.annotations"),
        row("pretrain annotations are a directory", lambda t, m, o: _annotations(t, o, None), 2,
            "ann.json is a folder, not an annotation file"),
        row("pretrain corpora smaller than their batches",
            lambda t, m, o: pretrain_args(t / "run", replaced(o, data__corpora__clips__batch_size=32,
                                                              data__corpora__stills__batch_size=32)), 1,
            "no corpus fills one batch (data.corpora.NAME.batch_size x processes): clips/video has 24 samples"),
        row("pretrain annotation entry without a caption",
            lambda t, m, o: _annotations(t, o, b'[{"video": "a.mp4", "caption": "x"}, {"video": "b.mp4"}]'), 1,
            "ann.json: entry 1 needs `caption`"),
        row("pretrain annotation entry with video and image",
            lambda t, m, o: _annotations(t, o, b'{"video": "a.mp4", "image": "a.png", "caption": "x"}\n'), 1,
            "ann.json: entry 0 needs exactly one of `video` or `image`"),
        row("pretrain init.student truncated", lambda t, m, o: _truncated_student(t, o, "student.safetensors"), 1,
            "student.safetensors: not a readable"),
        row("pretrain init.student truncated (torch.save)", lambda t, m, o: _truncated_student(t, o, "student.pth"),
            1, "student.pth"),
        row("pretrain init.student pickled without trust", _pickled_student, 1, "init.trust"),
        row("pretrain run directory on a read-only file system", _pretrain_run_dir_read_only, 1,
            "Read-only file system"),
        row("pretrain full disk during a checkpoint save", _pretrain_checkpoint_full_disk, 1,
            "No space left on device"),
        row("pretrain text.encoder folder without config.json", _bert_without_config, 2, "no config.json"),
    ]  # fmt: skip


def _annotations(tmp_path: Path, overrides: list[str], data: bytes | None) -> list[str]:
    """The clips corpus read from `ann.json` holding `data` (a folder when None)."""
    path = tmp_path / "ann.json"
    path.mkdir() if data is None else path.write_bytes(data)
    return pretrain_args(tmp_path / "run", replaced(overrides, data__corpora__clips__annotations=path))


def _truncated_student(tmp_path: Path, overrides: list[str], name: str) -> list[str]:
    """A stage-1-looking file cut short (an interrupted copy), as safetensors or a `torch.save` archive."""
    path = _teacher_file(tmp_path, name, {"encoder.blocks.0.attn.q_bias": torch.zeros(64),
                                          "clip_decoder.0.head.weight": torch.zeros(64, 64)})  # fmt: skip
    path.write_bytes(path.read_bytes()[:200])
    return pretrain_args(tmp_path / "run", [*overrides, f"init.student={path}"])


def _pickled_student(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    path = tmp_path / "student.pth"
    torch.save({"model": {"encoder.blocks.0.attn.q_bias": torch.zeros(1)}, "args": Fault}, path)  # a pickled class
    return pretrain_args(tmp_path / "run", [*overrides, f"init.student={path}"])


def _pretrain_run_dir_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    fail_writes_under(monkeypatch, tmp_path / "ro", errno.EROFS)
    return pretrain_args(tmp_path / "ro" / "run", replaced(overrides, schedule__max_steps=1))


def _pretrain_checkpoint_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    fail_writes_under(monkeypatch, tmp_path / "run" / "checkpoints", errno.ENOSPC, folders=False)
    return pretrain_args(tmp_path / "run", [*replaced(overrides, schedule__max_steps=2), "checkpoint.every_steps=1"])


def _bert_without_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> list[str]:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n", encoding="utf-8")
    return pretrain_args(tmp_path / "run", replaced(overrides, text__encoder=folder))


ROWS = _recipe_rows() + _prepare_rows() + _distill_rows() + _pretrain_rows()


def check_fault(fault: Fault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Run one row through the CLI: one `error:` line naming the culprit, the row's exit code, no traceback.

    Other modules of the catalogue (one per command family) parametrize their own rows over this check."""
    monkeypatch.chdir(Path(__file__).parents[2])  # `recipes/k710.toml` resolves from the repository root
    args = fault.make(tmp_path, monkeypatch, request.getfixturevalue(fault.fixture))
    result = runner.invoke(app, args)
    monkeypatch.undo()  # the injected failures must not touch pytest's own files
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    assert result.exit_code == fault.code, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert fault.culprit in output[output.index("error:") :], output


@pytest.mark.parametrize("fault", ROWS, ids=[row.name for row in ROWS])
def test_a_bad_input_ends_in_one_error_line(fault, tmp_path, monkeypatch, request):
    check_fault(fault, tmp_path, monkeypatch, request)


def test_a_failed_checkpoint_save_leaves_no_temporary_folder(tmp_path, monkeypatch, tiny_overrides):
    args = _checkpoint_full_disk(tmp_path, monkeypatch, tiny_overrides)
    result = runner.invoke(app, args)
    monkeypatch.undo()
    assert result.exit_code == 1
    leftovers = list((tmp_path / "run").rglob(".tmp-*"))
    assert leftovers == []


def test_a_refused_recipe_leaves_no_run_directory(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, distill_args(run_dir, [*tiny_overrides, "optim.betas=[0.9, 1.0]"]))
    assert result.exit_code == 2
    assert not run_dir.exists()  # so the corrected command needs no --resume and no clean-up
