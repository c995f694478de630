"""A run killed with SIGKILL and resumed with `--resume auto` gives exactly the uninterrupted run's losses."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import kill_once_checkpointed, read_metrics, strict_json
from safetensors.torch import load_file


def start(run_dir: Path, overrides: list[str], *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "umt_cli", "distill", "quickstart/distill", *overrides, "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output


def test_sigkill_then_resume_auto_continues_exactly(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "checkpoint.every_steps=1", "checkpoint.keep_last=10"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    finish(start(straight, overrides))

    kill_once_checkpointed(start(broken, overrides), broken)
    killed_at = len(read_metrics(broken))
    assert killed_at < 8

    finish(start(broken, overrides, "--resume", "auto"))
    keys = ("step", "epoch", "loss", "lr", "grad_norm", "mask_fallback_rows", "data/failed", "data/delivered")
    expected = [{k: m[k] for k in keys} for m in read_metrics(straight)]
    assert [{k: m[k] for k in keys} for m in read_metrics(broken)] == expected  # timings aside, line for line
    a, b = load_file(straight / "student.safetensors"), load_file(broken / "student.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_resume_refuses_a_changed_recipe(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    common = [o for o in tiny_overrides if not o.startswith("optim.lr")] + ["schedule.max_steps=2"]
    finish(start(run_dir, [*common, "optim.lr=1e-3"]))
    process = start(run_dir, [*common, "optim.lr=5e-3"], "--resume", "auto")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2
    assert "recipe differs" in output and "optim.lr: 0.001 -> 0.005" in output


def distill(run_dir: Path, overrides: list[str], *extra: str):
    from typer.testing import CliRunner

    from umt_cli.cli.app import app

    args = ["distill", "quickstart/distill", *overrides, "--run-dir", str(run_dir), *extra]
    return CliRunner().invoke(app, args)


def test_a_truncated_newest_checkpoint_is_skipped_and_the_run_ends_as_an_uninterrupted_one(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "checkpoint.every_steps=1", "checkpoint.keep_last=10", "schedule.max_steps=5"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert distill(straight, overrides).exit_code == 0
    assert distill(broken, overrides).exit_code == 0
    # A full disk cut the last save short; the run died before exporting.
    newest = broken / "checkpoints" / "step_000005" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    (broken / "student.safetensors").unlink()
    (broken / "summary.json").unlink()
    leftover = broken / "checkpoints" / ".tmp-step_000006"  # a save killed midway, earlier
    leftover.mkdir()
    (leftover / "rank0.pt").write_bytes(b"half")

    result = distill(broken, overrides, "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert "warning: skipping checkpoint" in result.output and "step_000005/model.safetensors" in result.output
    a, b = load_file(straight / "student.safetensors"), load_file(broken / "student.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert [m["loss"] for m in read_metrics(broken)] == [m["loss"] for m in read_metrics(straight)]
    assert load_file(broken / "checkpoints" / "step_000005" / "model.safetensors").keys() == a.keys()
    assert not list((broken / "checkpoints").glob(".tmp-*"))


def test_resuming_a_finished_run_changes_nothing(tmp_path, tiny_overrides):
    run_dir = tmp_path / "run"
    assert distill(run_dir, [*tiny_overrides, "schedule.max_steps=2"]).exit_code == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    result = distill(run_dir, [*tiny_overrides, "schedule.max_steps=2"], "--resume", "auto")
    assert result.exit_code == 0, result.output
    assert "already finished at step 2" in result.output
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    summary = strict_json((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and isinstance(summary["final_loss"], float)


def test_two_identical_runs_write_byte_identical_weights(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "schedule.max_steps=2"]
    for name in ("a", "b"):
        assert distill(tmp_path / name, overrides).exit_code == 0
    assert (tmp_path / "a" / "student.safetensors").read_bytes() == (
        tmp_path / "b" / "student.safetensors"
    ).read_bytes()
