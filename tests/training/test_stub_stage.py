"""A stage written only against the engine (`stub_stage.py`) gets save, resume and cadence for free: killed with
SIGKILL mid-run and resumed with `--resume auto`, it ends exactly as an uninterrupted run."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import kill_once_checkpointed, read_metrics
from safetensors.torch import load_file

STUB = Path(__file__).with_name("stub_stage.py")
STEPS = 12  # 8 clips / batch 2 = 4 steps per epoch, 3 epochs: the run crosses two epoch boundaries


def start(run_dir: Path, overrides: list[str], *extra: str, trace: Path, sleep_s: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STUB_TRACE": str(trace), "STUB_SLEEP_S": str(sleep_s)}
    command = [sys.executable, str(STUB), str(run_dir), *overrides, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output


def batches(trace: Path) -> list[str]:
    return trace.read_text().splitlines()


def test_a_stub_stage_killed_with_sigkill_resumes_exactly(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "schedule.epochs=3", "checkpoint.every_steps=2", "checkpoint.keep_last=10"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    # The two runs are independent: started together, they share the start-up time (mostly imports).
    uninterrupted = start(straight, overrides, trace=tmp_path / "straight.trace")
    # 0.3 s per step leaves time to kill the run after its first checkpoint and well before its last step.
    kill_once_checkpointed(start(broken, overrides, trace=tmp_path / "killed.trace", sleep_s=0.3), broken)
    resumed_at = int((broken / "checkpoints" / "latest").read_text().strip().rsplit("_", 1)[1])
    assert 2 <= resumed_at < STEPS
    finish(uninterrupted)
    assert [m["step"] for m in read_metrics(straight)] == list(range(1, STEPS + 1))
    assert len(list((straight / "checkpoints").glob("step_*"))) == STEPS // 2  # the cadence: every 2 steps

    finish(start(broken, overrides, "--resume", "auto", trace=tmp_path / "resumed.trace"))
    # It resumed (did not start over): only the remaining steps ran, on the batches the uninterrupted run had there.
    assert batches(tmp_path / "resumed.trace") == batches(tmp_path / "straight.trace")[resumed_at:]
    keys = ("step", "epoch", "loss", "loss/mse", "lr", "grad_norm", "data/failed", "data/delivered")
    expected = [{k: m[k] for k in keys} for m in read_metrics(straight)]
    assert [{k: m[k] for k in keys} for m in read_metrics(broken)] == expected  # timings aside, line for line
    a, b = load_file(straight / "stub.safetensors"), load_file(broken / "stub.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (broken / "summary.json").is_file() and (broken / "recipe.toml").is_file()
