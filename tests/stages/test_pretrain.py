"""Stage 2 end to end on CPU: the CLI, the four weighted losses, starting from a stage-1 student, exact resume after
SIGKILL, and bad inputs refused before the run directory is made."""

import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import kill_once_checkpointed, read_metrics, strict_json
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from umt_cli.cli.app import app

runner = CliRunner()
RECIPE = "quickstart/pretrain"
PARTS = ("uta", "vtc", "vtm", "mlm")


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models spend most of a step waiting on torch's thread pool when the machine's 2 cores are shared
    (10 steps: about 18 s with 2 threads, 2 s with 1), so the in-process runs use one thread, as the subprocesses do
    (`OMP_NUM_THREADS=1`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pretrain(run_dir: Path, overrides: list[str], *extra: str):
    return runner.invoke(app, ["pretrain", RECIPE, *overrides, "--run-dir", str(run_dir), *extra])


def with_steps(overrides: list[str], steps: int) -> list[str]:
    """`overrides` with another `schedule.max_steps` (a key may be given only once)."""
    return [*(o for o in overrides if not o.startswith("schedule.max_steps=")), f"schedule.max_steps={steps}"]


def weighted_sum(metrics: dict, weights: dict[str, float]) -> float:
    return sum(weight * metrics[f"loss/{name}"] for name, weight in weights.items() if weight)


def test_tiny_recipe_end_to_end(tmp_path, pretrain_overrides, synthetic_dir, monkeypatch):
    from umt_cli.stages import pretrain as stage

    drawn = []  # (stream, frames) of every batch the stage trained on
    real_step = stage.step

    def spy(c, item, epoch):
        drawn.append((item.stream.name, item.batch.video.shape[2]))
        return real_step(c, item, epoch)

    monkeypatch.setattr(stage, "step", spy)  # `run` looks `step` up when it starts
    run_dir = tmp_path / "run"
    result = pretrain(run_dir, pretrain_overrides)
    assert result.exit_code == 0, result.output

    metrics = read_metrics(run_dir)  # strict JSON: a NaN or inf anywhere fails here
    assert [m["step"] for m in metrics] == list(range(1, 11))
    for m in metrics:
        parts = [m[f"loss/{name}"] for name in PARTS]
        assert all(math.isfinite(part) and part > 0 for part in parts), m
        assert m["loss"] == pytest.approx(weighted_sum(m, dict.fromkeys(PARTS, 1.0)), rel=1e-6)
    # The 10 steps are all warm-up (lr 1e-5 -> 9e-4). UTA falls fastest (the student aligns to the fixed random
    # teacher, 2.17 -> 1.37), VTM and VTC follow, MLM stays near ln(28 tokens) = 3.3. The mean of the last three
    # totals is 1.30 below that of the first three (8.16 -> 6.86), while one step changes the total by at most 0.5;
    # seeds 1-3 drop by 1.26, 1.29 and 1.09, so the margin of 0.5 is no accident of seed 0.
    losses = [m["loss"] for m in metrics]
    assert sum(losses[:3]) / 3 - sum(losses[-3:]) / 3 > 0.5, losses

    # 10 steps = one whole epoch: every batch of both streams, the videos with 4 frames and the stills with 1.
    assert Counter(drawn) == {("clips/video", 4): 6, ("stills/image", 1): 4}
    summary = strict_json((run_dir / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["data"].startswith("40 clips loaded, 0 skipped")  # 24 + 16 pairs

    weights = run_dir / "video_text.safetensors"
    with safe_open(weights, "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["format"] == "umt-stage2" and meta["text_encoder"] == str(synthetic_dir / "bert")
    assert {
        "vision_encoder.encoder.blocks.0.attn.q_bias",
        "text_encoder.bert.embeddings.word_embeddings.weight",
    } <= keys
    assert not any(k.startswith(("teacher", "clip_teacher")) for k in keys)  # the frozen teacher is not exported


@pytest.mark.parametrize("dropped", PARTS)
def test_a_zero_weight_removes_its_loss(tmp_path, pretrain_overrides, dropped):
    run_dir = tmp_path / "run"
    result = pretrain(run_dir, [*with_steps(pretrain_overrides, 2), f"loss.{dropped}.weight=0"])
    assert result.exit_code == 0, result.output
    kept = {name: 1.0 for name in PARTS if name != dropped}
    for m in read_metrics(run_dir):
        assert f"loss/{dropped}" not in m
        assert all(math.isfinite(m[f"loss/{name}"]) for name in kept)
        assert m["loss"] == pytest.approx(weighted_sum(m, kept), rel=1e-6)


def test_gradient_accumulation_takes_whole_steps_of_batches(tmp_path, pretrain_overrides):
    # An epoch is 10 batches (6 of videos, 4 of stills); with 2 per optimizer step it is 5 steps, and step 6 starts
    # the next epoch (counting steps as batches would run out of batches mid-epoch).
    run_dir = tmp_path / "run"
    result = pretrain(run_dir, [*with_steps(pretrain_overrides, 6), "optim.grad_accum=2"])
    assert result.exit_code == 0, result.output
    metrics = read_metrics(run_dir)
    assert [(m["step"], m["epoch"]) for m in metrics] == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 1)]
    assert metrics[4]["data/delivered"] == 40  # the whole first epoch: 24 video and 16 still pairs
    for m in metrics:  # the logged parts are micro-batch means, as the total is
        assert m["loss"] == pytest.approx(weighted_sum(m, dict.fromkeys(PARTS, 1.0)), rel=1e-6)


def distilled_student(tmp_path: Path, tiny_overrides: list[str]) -> Path:
    """A stage-1 `student.safetensors` from 2 steps of `umt distill quickstart/distill`."""
    run_dir = tmp_path / "distill"
    result = runner.invoke(
        app, ["distill", "quickstart/distill", *tiny_overrides, "schedule.max_steps=2", "--run-dir", str(run_dir)]
    )
    assert result.exit_code == 0, result.output
    return run_dir / "student.safetensors"


def test_the_vision_encoder_starts_from_a_stage1_student(tmp_path, tiny_overrides, pretrain_overrides):
    from umt_cli.cli._common import load_recipe_or_exit
    from umt_cli.recipe import PretrainRecipe
    from umt_cli.stages.pretrain import build_model

    student_file = distilled_student(tmp_path, tiny_overrides)
    student = load_file(student_file)
    overrides = [*pretrain_overrides, f"init.student={student_file}"]

    # The model the stage builds holds exactly the student's encoder and alignment heads.
    recipe = load_recipe_or_exit(RECIPE, overrides, PretrainRecipe)
    model, _ = build_model(recipe, torch.device("cpu"))
    vision = model.vision_encoder.state_dict()
    assert {k for k in vision if k.startswith(("encoder.", "clip_decoder."))} == set(student)
    for key, value in student.items():
        assert torch.equal(vision[key], value), key

    # And the command trains from them: after one step at the warm-up's first learning rate (1e-5), AdamW has
    # moved every weight by at most about 1e-5, while a random start differs from the student's by ~1e-2.
    run_dir = tmp_path / "pretrain"
    result = pretrain(run_dir, with_steps(overrides, 1))
    assert result.exit_code == 0, result.output
    exported = load_file(run_dir / "video_text.safetensors")
    for key, value in student.items():
        torch.testing.assert_close(exported[f"vision_encoder.{key}"], value, rtol=0, atol=5e-5, msg=key)


def teacher_weights(tmp_path: Path, overrides: list[str]) -> tuple[Path, str]:
    """The random clip-tiny teacher's weights: a readable safetensors file, but a CLIP tower."""
    from umt_cli.data.transforms import NORMALIZATION
    from umt_cli.models.teacher import build_teacher
    from umt_cli.recipe.sections import TeacherSection

    with pytest.warns(UserWarning, match="random weights"):
        teacher = build_teacher(TeacherSection(arch="clip-tiny", weights="random"), return_layers=2,
                                student_stats=NORMALIZATION["imagenet"], seed=0)  # fmt: skip
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(path))
    return path, "a clip-visual checkpoint"


def stage2_weights(tmp_path: Path, overrides: list[str]) -> tuple[Path, str]:
    """The `video_text.safetensors` of a one-step stage-2 run: the right family, the wrong stage."""
    result = pretrain(tmp_path / "first", with_steps(overrides, 1))
    assert result.exit_code == 0, result.output
    return tmp_path / "first" / "video_text.safetensors", "a umt-stage2 checkpoint"


@pytest.mark.parametrize("make", [teacher_weights, stage2_weights], ids=["teacher", "stage2"])
def test_a_file_of_another_kind_is_refused_as_init_student(tmp_path, pretrain_overrides, make):
    path, kind = make(tmp_path, pretrain_overrides)
    run_dir = tmp_path / "run"
    result = pretrain(run_dir, [*pretrain_overrides, f"init.student={path}"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert f"error: init.student: {path}: {kind}, not a UMT stage-1" in errors[0]
    assert not run_dir.exists()  # refused before anything was written


def start(run_dir: Path, overrides: list[str], *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "umt_cli", "pretrain", RECIPE, *overrides, "--run-dir", str(run_dir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output


def test_sigkill_then_resume_auto_continues_exactly(tmp_path, pretrain_overrides):
    # 14 steps: the run is killed in epoch 0 (10 steps) and the resumed process crosses into epoch 1, so both a
    # mid-epoch restart of the stream order and a fresh epoch's order are exercised.
    overrides = [*with_steps(pretrain_overrides, 14), "checkpoint.every_steps=1", "checkpoint.keep_last=20"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    finish(start(straight, overrides))

    kill_once_checkpointed(start(broken, overrides), broken)
    killed_at = len(read_metrics(broken))
    assert killed_at < 10
    # A run restarted from step 0 would log the same lines too; a resumed one rewrites none of the checkpoints up
    # to the one `latest` names (a newer complete one, killed before `latest` moved, is redone).
    latest = Path((broken / "checkpoints" / "latest").read_text().strip()).name
    saved = {p: p.stat().st_mtime_ns for p in (broken / "checkpoints").glob("step_*/model.safetensors")
             if p.parent.name <= latest}  # fmt: skip
    assert saved

    finish(start(broken, overrides, "--resume", "auto"))
    assert {p: p.stat().st_mtime_ns for p in saved} == saved
    keys = ("step", "epoch", "loss", *(f"loss/{name}" for name in PARTS), "lr", "grad_norm", "mask_fallback_rows",
            "data/failed", "data/delivered")  # fmt: skip
    expected = [{k: m[k] for k in keys} for m in read_metrics(straight)]
    assert [{k: m[k] for k in keys} for m in read_metrics(broken)] == expected  # timings aside, line for line
    a, b = load_file(straight / "video_text.safetensors"), load_file(broken / "video_text.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_an_unknown_key_is_named(tmp_path, pretrain_overrides):
    run_dir = tmp_path / "run"
    result = pretrain(run_dir, [*pretrain_overrides, "loss.vtc.gathr=full"])
    assert result.exit_code == 2, result.output
    assert "loss.vtc.gathr" in result.output and "Traceback" not in result.output
    assert not run_dir.exists()


def test_a_missing_bert_folder_fails_at_once_offline(tmp_path, pretrain_overrides, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    kept = [o for o in pretrain_overrides if not o.startswith("text.encoder")]
    run_dir = tmp_path / "run"
    started = time.monotonic()
    result = pretrain(run_dir, [*kept, "text.encoder=/no/such/bert"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "/no/such/bert" in errors[0], result.output
    assert "Traceback" not in result.output
    assert elapsed < 30  # a path is never asked of the hub, whose retries would take minutes
    assert not run_dir.exists()


def test_text_checkpointing_reaches_the_encoder(synthetic_dir, pretrain_overrides):
    from umt_cli.recipe import PretrainRecipe, load_recipe
    from umt_cli.recipe.catalog import resolve_recipe
    from umt_cli.stages.pretrain import build_model

    for flag in (False, True):
        overrides = [*pretrain_overrides, f"text.checkpointing={str(flag).lower()}"]
        recipe = load_recipe(resolve_recipe("quickstart/pretrain"), overrides, expect=PretrainRecipe)
        model, _ = build_model(recipe, torch.device("cpu"))
        assert model.text_encoder.gradient_checkpointing is flag
