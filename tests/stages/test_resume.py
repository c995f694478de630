"""A run killed with SIGKILL and resumed with `--resume auto` gives exactly the uninterrupted run's losses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import read_metrics
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

    process = start(broken, overrides)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (broken / "checkpoints" / "latest").is_file() and len(read_metrics(broken)) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
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
    finish(start(run_dir, [*tiny_overrides, "schedule.max_steps=2"]))
    process = start(run_dir, [*tiny_overrides, "schedule.max_steps=2", "optim.lr=5e-3"], "--resume", "auto")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 2
    assert "optim.lr" in output
