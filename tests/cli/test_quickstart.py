from typer.testing import CliRunner

from umt_cli.cli.app import app


def test_quickstart_prepares_data_and_runs_the_pipeline(tmp_path):
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "video (4, 3, 4, 64, 64)" in result.output
    assert "64 clips loaded, 0 skipped" in result.output
    assert (tmp_path / "data/synthetic/train.csv").is_file()
    run_dir = tmp_path / "runs" / "distill"
    assert f'train_list = "{tmp_path / "data/synthetic/train.csv"}"' in (run_dir / "recipe.toml").read_text()
    assert (run_dir / "student.safetensors").is_file() and "distill_final_loss" in result.output
    again = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path)])
    assert again.exit_code == 0 and "reusing synthetic data" in again.output
