"""`umt score align` and `umt score fvd` on two CPU processes (gloo, launched by torchrun) give the bits of one: the
videos are dealt to both, the scores and features gathered, one process writes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

from safetensors.numpy import load_file


def launch(args: list[str], processes: int) -> str:
    """Run `umt ARGS` on `processes` processes; their standard output."""
    command = [sys.executable, "-m", "umt_cli", *args]
    if processes > 1:
        with socket.socket() as sock:  # a free port for the rendezvous
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                   "--master-port", str(port), "-m", "umt_cli", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_two_processes_give_the_scores_and_features_of_one(tmp_path, official_model, score_videos):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({str(k): f"a red square moves {k}" for k in range(5)}))
    common = ["--ckpt", str(official_model.path), "--text-encoder", str(official_model.bert), "--size", "32",
              "--batch-size", "1", "--device", "cpu"]  # fmt: skip
    align = ["score", "align", "--videos", str(score_videos), "--prompts", str(prompts), *common]
    outputs = {n: launch([*align, "--out", str(tmp_path / f"align{n}")], n) for n in (1, 2)}
    assert all(output.count("scores: ") == 1 for output in outputs.values())  # one process writes
    one, two = (json.loads((tmp_path / f"align{n}" / "scores.json").read_text()) for n in (1, 2))
    assert two["scores"] == one["scores"] and len(one["scores"]) == 5

    for n in (1, 2):
        folder = tmp_path / f"videos{n}"
        shutil.copytree(score_videos, folder)
        launch(["score", "fvd", "--real", str(folder), "--fake", str(score_videos), *common, "--sizes", "4",
                "--cache-dir", str(tmp_path / f"cache{n}"), "--out", str(tmp_path / f"fvd{n}")], n)  # fmt: skip
    caches = [sorted((tmp_path / f"cache{n}").glob("*.safetensors")) for n in (1, 2)]
    assert len(caches[0]) == len(caches[1]) == 2  # a cache per folder
    for a, b in zip(*caches):
        assert (load_file(a)["features"] == load_file(b)["features"]).all()
