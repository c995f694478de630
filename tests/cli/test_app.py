"""The CLI contract: commands, help, version, exit codes, fast start-up."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from umt_cli import __version__
from umt_cli.cli.app import COMMANDS, app

runner = CliRunner()

BAD_RECIPE = """
schema_version = 1
stage = "distill"
[data]
train_list = "train.csv"
batch_sizee = 3
[student]
num_frames = "eight"
[teacher]
weights = "random"
[masking]
kind = "attention"
mask_ratio = 1.5
"""


def test_registered_commands_match_the_documented_table():
    import typer.main

    group = typer.main.get_command(app)
    assert set(group.commands) == set(COMMANDS)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["recipe", "--help"],
        ["recipe", "ls", "--help"],
        ["recipe", "show", "--help"],
        ["recipe", "validate", "--help"],
        ["recipe", "cp", "--help"],
        ["prepare-data", "--help"],
        ["prepare-data", "synthetic", "--help"],
        ["prepare-data", "kinetics710", "--help"],
        ["prepare-data", "video-text", "--help"],
        ["quickstart", "--help"],
    ],
)
def test_help_everywhere(args):
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 2), result.output  # click exits 2 when showing help for a bare group
    assert "Usage" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_startup_does_not_import_torch():
    code = "import sys, umt_cli.cli.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_recipe_exits_2_naming_all_three_keys(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD_RECIPE)
    # a real process, so the exit code is the one a shell sees
    result = subprocess.run(
        [sys.executable, "-m", "umt_cli", "recipe", "validate", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    for key in ("data.batch_sizee", "student.num_frames", "masking.mask_ratio"):
        assert key in result.stderr
    assert "did you mean data.batch_size" in result.stderr


def test_good_recipe_validates_with_overrides():
    result = runner.invoke(app, ["recipe", "validate", "quickstart/distill", "run.seed=3"])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["recipe", "validate", "quickstart/distill", "not-an-override"],
        ["recipe", "validate", "quickstart/distill", "run.sed=3"],
        ["recipe", "validate", "no/such/recipe"],
        ["recipe", "show", "k710", "--unknown-flag"],
        ["prepare-data", "synthetic", "source.widht=64"],
        ["prepare-data", "synthetic", "--train", "0"],
    ],
)
def test_usage_and_recipe_errors_exit_2(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_recipe_ls_show_explain_and_cp(tmp_path: Path):
    listing = runner.invoke(app, ["recipe", "ls"])
    assert listing.exit_code == 0 and "k710" in listing.output and "prepare-data" in listing.output
    shown = runner.invoke(app, ["recipe", "show", "k710"])
    assert shown.exit_code == 0 and shown.output.startswith("# Stage 1")
    explained = runner.invoke(app, ["recipe", "show", "k710", "--explain"])
    assert "# Fraction of each frame's tokens hidden from the student" in explained.output
    assert "max_fail_ratio = 0.01" in explained.output  # defaults not in the file are shown
    copied = runner.invoke(app, ["recipe", "cp", "k710", str(tmp_path)])
    assert copied.exit_code == 0 and (tmp_path / "k710.toml").is_file()
    again = runner.invoke(app, ["recipe", "cp", "k710", str(tmp_path)])
    assert again.exit_code == 2 and "--force" in again.output


def test_prepare_data_synthetic_through_the_cli(tmp_path: Path):
    out = tmp_path / "syn"
    args = [
        "prepare-data",
        "synthetic",
        "--out",
        str(out),
        "--train",
        "4",
        "--val",
        "1",
        "--test",
        "1",
        "--frames",
        "8",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len((out / "train.csv").read_text().splitlines()) == 4


def test_prepare_data_refuses_a_recipe_of_another_kind(tmp_path: Path):
    result = runner.invoke(app, ["prepare-data", "synthetic", "--recipe", "data/kinetics710"])
    assert result.exit_code == 2
    assert "kinetics710" in result.output
