"""`umt quickstart`: the whole chain at the small size, as CI runs it."""

import json

from typer.testing import CliRunner

from umt_cli.cli.app import app


def test_quickstart_runs_the_whole_chain_in_a_fresh_run_directory(tmp_path):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--size", "small"])
    assert result.exit_code == 0, result.output
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    for produced in ("distill/student.safetensors", "pretrain/video_text.safetensors",
                     "eval/retrieval/results.json", "eval/classification/results.json",
                     "eval/classification/confusion.png", "export/model.safetensors", "export/config.json",
                     "quickstart.json"):  # fmt: skip
        assert (run / produced).is_file(), produced
    summary = json.loads((run / "quickstart.json").read_text())
    for row in ("distill loss", "pretrain loss", "text->video R@1/5/10", "video->text R@1/5/10",
                "direction of motion", "zero-shot classification", "export", "learned"):  # fmt: skip
        assert row in summary and row in result.output
    assert "chance" in summary["text->video R@1/5/10"]
    retrieval = json.loads((run / "eval/retrieval/results.json").read_text())
    assert retrieval["counts"]["videos"] == 8 and retrieval["counts"]["texts"] == 24


def test_quickstart_reuses_its_data_and_starts_a_new_run(tmp_path):
    from umt_cli.quickstart import SIZES

    assert set(SIZES) == {"default", "small"}
    bad = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path), "--size", "huge"])
    assert bad.exit_code == 2 and "error: --size 'huge'" in bad.output
