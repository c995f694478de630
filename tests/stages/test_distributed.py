"""Two CPU processes (gloo, launched by torchrun) end with the parameters of one process holding the whole batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run(command: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, tiny_overrides):
    common = [o for o in tiny_overrides if not o.startswith("data.batch_size")]
    common += ["student.drop_path=0", "schedule.max_steps=3"]  # drop path draws from each process's own RNG
    single, double = tmp_path / "single", tmp_path / "double"
    umt = [sys.executable, "-m", "umt_cli", "distill", "quickstart/distill"]
    run([*umt, *common, "data.batch_size=4", "--run-dir", str(single)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", free_port()]
    output = run([*torchrun, "-m", "umt_cli", "distill", "quickstart/distill", *common, "data.batch_size=2",
                  "--run-dir", str(double)])  # fmt: skip
    a, b = load_file(single / "student.safetensors"), load_file(double / "student.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    assert a["encoder.blocks.0.attn.q_bias"].abs().sum() > 0  # q biases start at zero: the runs did train
    summaries = [json.loads(Path(folder / "summary.json").read_text()) for folder in (single, double)]
    assert summaries[0]["data"] == summaries[1]["data"]  # both processes' clips are counted: 12 loaded
    assert "12 clips loaded" in summaries[1]["data"]
    assert output.count("random weights") == 1  # one process speaks for all, in one line
    assert "warnings.warn" not in output and "build_teacher(" not in output


def test_pretrain_runs_on_two_processes_with_the_model_forward_under_ddp(tmp_path, pretrain_overrides):
    # Stage 2 computes its losses in the model's forward, so DDP syncs their gradients; with two processes the same
    # global batches are drawn (each stream's batch split in two) and every clip is counted once.
    common = [o for o in pretrain_overrides if "batch_size" not in o and "max_steps" not in o]
    common += ["schedule.max_steps=4"]
    single, double = tmp_path / "single", tmp_path / "double"
    umt = [sys.executable, "-m", "umt_cli", "pretrain", "quickstart/pretrain"]
    sizes = ["data.corpora.clips.batch_size={}", "data.corpora.stills.batch_size={}"]
    run([*umt, *common, *(s.format(4) for s in sizes), "--run-dir", str(single)])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", free_port()]
    run([*torchrun, "-m", "umt_cli", "pretrain", "quickstart/pretrain", *common, *(s.format(2) for s in sizes),
         "--run-dir", str(double)])  # fmt: skip
    summaries = [json.loads(Path(folder / "summary.json").read_text()) for folder in (single, double)]
    assert summaries[0]["data"] == summaries[1]["data"] and summaries[0]["steps"] == summaries[1]["steps"] == 4
    metrics = [json.loads(line) for line in (double / "metrics.jsonl").read_text().splitlines()]
    assert all(m[f"loss/{name}"] == m[f"loss/{name}"] for m in metrics for name in ("uta", "vtc", "vtm", "mlm"))
