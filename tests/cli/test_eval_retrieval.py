"""`umt eval retrieval` (alias `umt evaluate retrieval`) through the real CLI, on the tiny stage-2 run, and on
official-layout files (SPEC §5.4 stage-2, §5.5 retrieval fine-tuned) written from the same weights."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import strict_json
from safetensors.torch import load_file
from typer.testing import CliRunner

import umt_cli.evaluation.retrieval as retrieval
from umt_cli.cli.app import app

runner = CliRunner()
RANKINGS = {"itc": "embedding only (ITC)", "rerank": "re-ranked (ITM top-k)"}
DIRECTIONS = {"t2v": "text→video", "v2t": "video→text"}
COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def evaluate(*args: str, command: str = "eval"):
    result = runner.invoke(app, [command, "retrieval", *args], env={"COLUMNS": "300"})  # no table cell cut short
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def recorded(monkeypatch):
    """The score matrices of each evaluation the test runs: ITC (Nv, Nt) and ITM (Q, k') per direction."""
    runs: list[dict] = []
    real_similarity, real_rerank = retrieval.frame_similarity, retrieval._rerank

    def similarity(frames, embeds):
        runs.append({"itc": real_similarity(frames, embeds)})
        return runs[-1]["itc"]

    def rerank(model, texts, tokens, itc, direction, *args):
        runs[-1][direction] = real_rerank(model, texts, tokens, itc, direction, *args)
        return runs[-1][direction]

    monkeypatch.setattr(retrieval, "frame_similarity", similarity)
    monkeypatch.setattr(retrieval, "_rerank", rerank)
    return runs


def test_eval_retrieval_prints_both_rankings_and_writes_the_same_numbers(stage2_run, synthetic_dir, tmp_path):
    out = tmp_path / "out"
    output = evaluate("--ckpt", str(stage2_run), "--data", str(synthetic_dir / "test.json"), "--out", str(out)).output
    protocol = "split test · 12 texts · 4 videos · standard · k 128 · 4 frames x 1 view · 64 px · 12 tokens"
    assert protocol in output
    result = strict_json((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert protocol in report
    for ranking, label in RANKINGS.items():
        for direction, name in DIRECTIONS.items():
            numbers = [f"{result['metrics'][ranking][direction][column]:.1f}" for column in COLUMNS]
            assert re.search(r"\s+│?\s*".join(map(re.escape, [label, name, *numbers])), output), (label, name)
            assert f"| {label} | {name} | {' | '.join(numbers)} |" in report
    assert result["counts"] == {"texts": 12, "videos": 4, "skipped_videos": 0, "dropped_texts": 0}
    assert result["checkpoint"]["kind"] == "umt-run"
    assert f"results: {out / 'results.json'}" in output
    assert {p.name for p in out.iterdir()} == {"report.md", "results.json"}  # the write probe left nothing behind


def test_evaluate_is_the_same_command_as_eval(stage2_run, synthetic_dir, tmp_path):
    common = ["--ckpt", str(stage2_run), "--data", str(synthetic_dir / "test.json"), "--k", "2", "--mode",
              "paragraph", "--trimmed30"]  # fmt: skip
    outputs = [evaluate(*common, "--out", str(tmp_path / "a"), command="eval").output,
               evaluate(*common, "--out", str(tmp_path / "b"), command="evaluate").output]  # fmt: skip
    a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in "ab")
    assert a["metrics"] == b["metrics"] and a["protocol"] == b["protocol"]
    assert (a["protocol"]["k"], a["protocol"]["mode"], a["protocol"]["trimmed30"]) == (2, "paragraph", True)
    protocol = "split test · 4 texts · 4 videos · paragraph · k 2 · 4 frames x 1 view · 64 px · 12 tokens · first 30 s"
    assert all(protocol in output for output in outputs)


def official_stage2(stage2_run) -> dict[str, torch.Tensor]:
    """The run's weights under their official §5.4 names (ours minus the frozen teacher) plus teacher tensors."""
    state = load_file(stage2_run / "video_text.safetensors")
    assert any(key.startswith("text_encoder.bert.") for key in state) and not any("clip_teacher" in k for k in state)
    generator = torch.Generator().manual_seed(0)
    state["clip_teacher.conv1.weight"] = torch.randn(8, 3, 1, 16, 16, generator=generator)
    state["clip_teacher.class_embedding"] = torch.randn(8, generator=generator)
    return state


def official_retrieval(stage2_run) -> dict[str, torch.Tensor]:
    """§5.5: `text_encoder.bert.X` -> `text_encoder.X`, no `text_encoder.cls.*`, no `vision_encoder.clip_decoder.*`."""
    state = load_file(stage2_run / "video_text.safetensors")
    dropped = ("text_encoder.cls.", "vision_encoder.clip_decoder.")
    return {key.replace("text_encoder.bert.", "text_encoder.", 1): value for key, value in state.items()
            if not key.startswith(dropped)}  # fmt: skip


@pytest.mark.parametrize(
    ("layout", "kind"),
    [(lambda run: {"model": official_stage2(run)}, "umt-stage2"), (official_retrieval, "umt-retrieval")],
    ids=["stage-2 under 'model'", "retrieval fine-tuned, raw"],
)
def test_an_official_layout_file_gives_the_numbers_of_the_run(
    stage2_run, synthetic_dir, tmp_path, recorded, layout, kind
):
    path = tmp_path / "official.pth"
    torch.save(layout(stage2_run), path)
    data = ["--data", str(synthetic_dir / "test.json"), "--k", "3"]
    evaluate("--ckpt", str(stage2_run), *data, "--out", str(tmp_path / "run"))
    # official files record no geometry, tokenizer or caption length: the run's are given as options
    geometry = ["--size", "64", "--frames", "4", "--max-len", "12", "--text-encoder", str(synthetic_dir / "bert")]
    evaluate("--ckpt", str(path), *data, *geometry, "--out", str(tmp_path / "official"))
    ours, theirs = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("run", "official"))
    assert theirs["checkpoint"]["kind"] == kind
    assert theirs["protocol"] == ours["protocol"]
    assert theirs["metrics"] == ours["metrics"]
    for key in ("itc", "t2v", "v2t"):
        torch.testing.assert_close(recorded[1][key], recorded[0][key], rtol=0, atol=0)


def test_an_official_file_runs_at_224_px_unless_told_otherwise(stage2_run, synthetic_dir, tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": official_stage2(stage2_run)}, path)
    args = ["--ckpt", str(path), "--data", str(synthetic_dir / "test.json"), "--k", "1"]
    evaluate(*args, "--text-encoder", str(synthetic_dir / "bert"), "--out", str(tmp_path / "out"))
    protocol = json.loads((tmp_path / "out" / "results.json").read_text())["protocol"]
    assert (protocol["size"], protocol["num_frames"], protocol["max_len"]) == (224, 4, 32)


def test_skipped_videos_are_counted_and_named_and_the_run_succeeds(stage2_run, synthetic_dir, tmp_path):
    entries = json.loads((synthetic_dir / "test.json").read_text())
    entries.append({"video": "videos/test/gone.mp4", "caption": ["a lost clip"]})
    annotations = tmp_path / "test.json"
    annotations.write_text(json.dumps(entries))
    out = tmp_path / "out"
    args = ["--ckpt", str(stage2_run), "--data", str(annotations), "--root", str(synthetic_dir), "--out", str(out)]
    output = evaluate(*args).output
    assert "1 video(s) skipped (1 text(s) dropped)" in output
    assert "videos/test/gone.mp4" in output  # named on the terminal, not only in the report
    result = json.loads((out / "results.json").read_text())
    assert [s["video"] for s in result["skipped"]] == ["videos/test/gone.mp4"]
    assert "`videos/test/gone.mp4`: missing" in (out / "report.md").read_text()
