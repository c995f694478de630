"""`umt finetune` end to end on the synthetic set (4 directions of motion): it trains with repeated views and Mixup,
validates every epoch, keeps the best epoch's weights, tests them with several views, and its weights load back
into `umt eval classification`; a kill and `--resume auto` continue with identical losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import kill_once_checkpointed, read_metrics
from safetensors.torch import load_file
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.models.loading import load_model
from umt_cli.models.official import import_classifier

runner = CliRunner()


def finetune_overrides(
    synthetic_dir: Path, *extra: str, init: str = "~init.checkpoint", held_out: tuple[str, ...] = ("val", "test")
) -> list[str]:
    """The quickstart fine-tuning recipe on the session's 8-clip synthetic set: 2 clips x 2 views a step, from
    random weights unless `init` names a checkpoint, validated and tested on the `held_out` lists."""
    lists = [f"data.{name}_list={synthetic_dir / f'{name}.csv'}" if name in held_out else f"~data.{name}_list"
             for name in ("val", "test")]  # fmt: skip
    return [f"data.train_list={synthetic_dir / 'train.csv'}", *lists, f"data.classes={synthetic_dir / 'classes.txt'}",
            "data.batch_size=2", init, "log.every=1", "eval.batch_size=2", *extra]  # fmt: skip


def test_finetune_trains_validates_keeps_the_best_and_tests(tmp_path, synthetic_dir):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["finetune", "quickstart/finetune", *finetune_overrides(synthetic_dir),
                                 "--run-dir", str(run_dir)])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["global_batch"] == 4  # 8 clips / 2 a step x 2 epochs; 2 x 2 views
    records = [json.loads(line) for line in (run_dir / "validation.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    logged = [m for m in read_metrics(run_dir) if "val/top1" in m]
    assert [(m["step"], m["val/top1"]) for m in logged] == [(4, records[0]["top1"]), (8, records[1]["top1"])]
    assert all("loss/ce" in m for m in read_metrics(run_dir) if "loss" in m)
    test = json.loads((run_dir / "test.json").read_text())
    assert (test["protocol"]["num_clips"], test["protocol"]["num_crops"], test["protocol"]["split"]) == (2, 3, "test")
    assert summary["test"]["top1"] == test["metrics"]["top1"] and summary["test"]["weights"] == "best.safetensors"
    best = load_file(run_dir / "best.safetensors")
    assert set(best) == set(load_file(run_dir / "classifier.safetensors"))
    assert "head.weight" in best and not any(key.startswith("encoder.") for key in best)  # the official names
    evaluated = runner.invoke(app, ["eval", "classification", "--ckpt", str(run_dir / "best.safetensors"), "--data",
                                    str(synthetic_dir / "test.csv"), "--classes", str(synthetic_dir / "classes.txt"),
                                    "--clips", "2", "--crops", "3", "--out", str(tmp_path / "eval")])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["metrics"]["top1"] == test["metrics"]["top1"]
    # the saved file reloads bit-identically, through our loader and through the official-layout importer
    reloaded = load_model(run_dir / "best.safetensors").model.state_dict()
    assert reloaded.keys() == best.keys() and all(torch.equal(reloaded[k], best[k]) for k in best)
    imported = import_classifier(dict(best), source="best.safetensors")  # an official fine-tuned file's names
    assert imported.state_dict.keys() == best.keys() and all(torch.equal(imported.state_dict[k], best[k]) for k in best)


def test_a_stage1_student_initialises_the_classifier(tmp_path, synthetic_dir, tiny_overrides):
    distilled = tmp_path / "distill"
    result = runner.invoke(app, ["distill", "quickstart/distill", *tiny_overrides, "schedule.max_steps=1",
                                 "--run-dir", str(distilled)])  # fmt: skip
    assert result.exit_code == 0, result.output
    student = load_file(distilled / "student.safetensors")
    init = f"init.checkpoint={distilled / 'student.safetensors'}"
    overrides = finetune_overrides(synthetic_dir, "model.num_frames=4", "schedule.max_steps=1", init=init, held_out=())
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["finetune", "quickstart/finetune", *overrides, "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    init = json.loads((run_dir / "init.json").read_text())
    assert init["kind"] == "umt-stage1" and init["head"] == "fresh"
    backbone = {k.removeprefix("encoder."): v for k, v in student.items() if k.startswith("encoder.blocks.")}
    assert init["loaded"] == len(backbone) + 2  # + patch_embed.proj.{weight,bias}; not clip_decoder, not norm
    first = load_file(run_dir / "checkpoints" / "step_000001" / "model.safetensors")
    assert first.keys() >= backbone.keys()


@pytest.mark.parametrize(
    ("overrides", "culprit"),
    [
        (["data.test_list=/nonexistent/test.csv"], "data.test_list: /nonexistent/test.csv not found"),
        (["data.classes=/nonexistent/classes.txt"], "data.classes: /nonexistent/classes.txt not found"),
        (["init.checkpoint=/nonexistent/student.safetensors"], "init.checkpoint: /nonexistent/student.safetensors"),
        (["data.batch_size=3", "data.repeats=1"], "3 views; Mixup/CutMix pair the views"),
    ],
)
def test_bad_inputs_end_in_one_error_line(tmp_path, synthetic_dir, overrides, culprit):
    keys = {override.split("=")[0] for override in overrides}
    others = [o for o in finetune_overrides(synthetic_dir) if o.lstrip("~").split("=")[0] not in keys]
    result = runner.invoke(app, ["finetune", "quickstart/finetune", *others, *overrides, "--run-dir",
                                 str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert culprit in result.output and result.output.count("error:") == 1, result.output
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_sigkill_then_resume_auto_continues_exactly(tmp_path, synthetic_dir):
    overrides = finetune_overrides(synthetic_dir, "checkpoint.every_steps=1", "checkpoint.keep_last=10",
                                   held_out=("val",))  # fmt: skip

    def start(run_dir: Path, *extra: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "umt_cli", "finetune", "quickstart/finetune", *overrides, "--run-dir",
                   str(run_dir), *extra]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def finish(process: subprocess.Popen) -> None:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output

    straight, broken = tmp_path / "straight", tmp_path / "broken"
    finish(start(straight))
    kill_once_checkpointed(start(broken), broken)
    assert len(read_metrics(broken)) < len(read_metrics(straight))
    finish(start(broken, "--resume", "auto"))
    keys = ("step", "loss", "lr", "grad_norm")
    losses = lambda run: [{k: m[k] for k in keys} for m in read_metrics(run) if "loss" in m]  # noqa: E731
    assert losses(broken) == losses(straight)
    a, b = load_file(straight / "classifier.safetensors"), load_file(broken / "classifier.safetensors")
    assert all(a[k].equal(b[k]) for k in a)


def test_two_processes_train_validate_and_test(tmp_path, synthetic_dir):
    """On two processes (gloo, torchrun) the run trains on half a batch each, validates and tests with the work
    sharded, and one process writes; the final test runs while the processes still form a group."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run_dir = tmp_path / "run"
    overrides = [o for o in finetune_overrides(synthetic_dir) if not o.startswith("data.batch_size=")]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
               "-m", "umt_cli", "finetune", "quickstart/finetune", *overrides, "data.batch_size=1", "--run-dir",
               str(run_dir)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_batch"] == 4 and summary["steps"] == 8  # 1 clip x 2 views x 2 processes
    test = json.loads((run_dir / "test.json").read_text())
    assert test["processes"] == 2 and test["counts"]["evaluated"] == 4
    assert summary["test"]["top1"] == test["metrics"]["top1"]
    assert len((run_dir / "validation.jsonl").read_text().splitlines()) == 2
