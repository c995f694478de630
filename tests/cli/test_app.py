"""The CLI contract: commands, help, version, exit codes, fast start-up."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from umt_cli import __version__
from umt_cli.cli.app import COMMANDS, app
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.recipe.load import apply_overrides, read_toml, validate_recipe

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
        ["distill", "--help"],
    ],
)
def test_help_everywhere(args):
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 2), result.output  # click exits 2 when showing help for a bare group
    assert "Usage" in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "[[" not in usage, usage  # `RECIPE [KEY=VALUE]...`, not `{recipe} [[KEY=VALUE]...]...`
    for tag in ("<bool>", "<str>", "<list", "<path>", "<int>"):  # names and metavars, not type tags
        assert tag not in result.output, result.output


def test_usage_line_reads_naturally():
    result = runner.invoke(app, ["distill", "--help"])
    assert "Usage: umt distill [OPTIONS] RECIPE [KEY=VALUE]..." in result.output
    video_text = runner.invoke(app, ["prepare-data", "video-text", "--help"])
    assert "Usage: umt prepare-data video-text [OPTIONS] [ANNOTATIONS] [KEY=VALUE]..." in video_text.output


def words(output: str) -> str:
    return " ".join(output.split())


def test_root_help_names_only_what_exists():
    text = words(runner.invoke(app, ["--help"]).output)
    assert "prepare data, distill (stage 1), pre-train (stage 2), evaluate and export." in text
    assert "coming" not in text
    for command in ("evaluate", "eval", "export"):
        assert command in text


def test_quickstart_help_names_every_step():
    text = words(runner.invoke(app, ["quickstart", "--help"]).output)
    assert "synthetic data set" in text and "stage-1 distillation" in text
    assert "stage-2 video-text pre-training" in text and "zero-shot classification" in text and "export" in text


def test_label_map_help_is_whole():
    text = words(runner.invoke(app, ["prepare-data", "kinetics710", "--help"]).output)
    assert (
        "A file with one class name per line that fixes the class order (e.g. OpenGVLab's label_map_k710.txt, so "
        "released K710 heads line up); unset = sorted order." in text
    )


def _leaf_commands() -> dict[tuple[str, ...], object]:
    def walk(command, path):
        subs = getattr(command, "commands", None)
        if not subs:
            return {path: command}
        return {k: v for name, sub in subs.items() for k, v in walk(sub, (*path, name)).items()}

    return walk(typer.main.get_command(app), ())


SHIPPED = {
    "k710": lambda: read_toml(resolve_recipe("k710")),
    "pretrain": lambda: read_toml(resolve_recipe("pretrain/b16_5m_4f")),
    "finetune": lambda: read_toml(resolve_recipe("finetune/b16_k710_f8")),
    "kinetics710": lambda: read_toml(resolve_recipe("data/kinetics710")),
    "synthetic": lambda: {"schema_version": 1, "stage": "prepare-data", "source": {"kind": "synthetic"}},
    "video-text": lambda: {
        "schema_version": 1,
        "stage": "prepare-data",
        "source": {"kind": "video-text", "annotations": "a.json", "out": "o.json"},
    },
}
EXAMPLE_BASE = {
    ("distill",): "k710",
    ("pretrain",): "pretrain",
    ("finetune",): "finetune",
    ("recipe", "show"): "k710",
    ("recipe", "validate"): "k710",
    ("prepare-data", "synthetic"): "synthetic",
    ("prepare-data", "kinetics710"): "kinetics710",
    ("prepare-data", "video-text"): "video-text",
}


def test_every_override_example_in_help_is_valid_for_its_command():
    with_overrides = {
        path: next(p for p in command.params if p.name == "overrides")
        for path, command in _leaf_commands().items()
        if any(p.name == "overrides" for p in command.params)
    }
    assert set(with_overrides) == set(EXAMPLE_BASE)
    for path, param in with_overrides.items():
        example = re.search(r"e\.g\. (\S+?)\.?$", param.help).group(1)
        table = SHIPPED[EXAMPLE_BASE[path]]()
        validate_recipe(apply_overrides(table, [example]), f"`umt {' '.join(path)}` help example {example}")


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_startup_does_not_import_torch():
    code = "import sys, umt_cli.cli.app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recipe_checks_read_the_registries_without_importing_torch():
    code = (
        "import sys\n"
        "from umt_cli.recipe import DistillRecipe, load_recipe\n"
        "from umt_cli.recipe.catalog import resolve_recipe\n"
        "from umt_cli.recipe.render import render_toml\n"
        "recipe = load_recipe(resolve_recipe('k710'), ['masking.kind=tube'], expect=DistillRecipe)\n"
        "assert 'one of attention, tube, random' in render_toml(recipe, explain=True)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
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
    assert "# Fraction of tokens hidden from the student" in explained.output
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


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("~data.batch_sise", "data.batch_sise: unknown key — did you mean data.batch_size?"),
        ('data.batch_size="64"', "data.batch_size"),
        ('augment.flip="yes"', "augment.flip"),
        ("optim.betas=[1.5, 0.9]", "optim.betas"),
        ("optim.lr=inf", "optim.lr"),
        ("optim.min_lr=1", "optim.min_lr"),
    ],
)
def test_strict_recipe_problems_exit_2_naming_the_key(override, key):
    result = runner.invoke(app, ["recipe", "validate", "recipes/k710.toml", override])
    assert result.exit_code == 2, result.output
    assert key in result.output


def test_two_overrides_of_one_key_exit_2():
    result = runner.invoke(app, ["recipe", "validate", "quickstart/distill", "run.seed=1", "run.seed=2"])
    assert result.exit_code == 2
    assert "run.seed is set twice: run.seed=1 and run.seed=2" in result.output


# Every prepare-data option that sets a recipe key, with the option as typed and an override of the same key.
OPTION_CONFLICTS = {
    "synthetic": {
        "--out": (["--out", "a"], "source.out=b"),
        "--train": (["--train", "4"], "source.train=5"),
        "--val": (["--val", "4"], "source.val=5"),
        "--test": (["--test", "4"], "source.test=5"),
        "--frames": (["--frames", "8"], "source.num_frames=9"),
        "--seed": (["--seed", "2"], "source.seed=1"),
    },
    "kinetics710": {
        "--k400": (["--k400", "/a"], "source.k400.videos=/b"),
        "--k400-csv": (["--k400-csv", "/a"], "source.k400.annotations=/b"),
        "--k600": (["--k600", "/a"], 'source.k600={videos = "/b"}'),
        "--k600-csv": (["--k600-csv", "/a"], "source.k600.annotations=/b"),
        "--k700": (["--k700", "/a"], "source.k700.videos=/b"),
        "--k700-csv": (["--k700-csv", "/a"], "source.k700.annotations=/b"),
        "--out": (["--out", "a"], "source.out=b"),
        "--label-map": (["--label-map", "a.txt"], "source.label_map=b.txt"),
        "--exclude": (["--exclude", "val"], "source.exclude=val+test"),
        "--verify": (["--no-verify"], "source.verify=true"),
        "--resize-short-side": (["--resize-short-side", "320"], "source.resize_short_side=256"),
        "--keyframe-interval": (["--keyframe-interval", "8"], "source.keyframe_interval=16"),
        "--workers": (["--workers", "2"], "source.workers=3"),
    },
    "video-text": {
        "annotations": (["a.json"], "source.annotations=b.json"),
        "--root": (["--root", "a"], "source.root=b"),
        "--out": (["--out", "a.json"], "source.out=b.json"),
        "--verify": (["--verify"], "source.verify=false"),
        "--workers": (["--workers", "2"], "source.workers=3"),
    },
}


def test_an_option_and_an_override_of_one_key_exit_2_naming_both():
    for command, cases in OPTION_CONFLICTS.items():
        params = _leaf_commands()[("prepare-data", command)].params
        named = {p.opts[0] if p.param_type_name == "option" else p.name for p in params}
        assert named - {"--recipe", "overrides"} == set(cases), command  # every option that sets a key is here
        for option, (typed, override) in cases.items():
            result = runner.invoke(app, ["prepare-data", command, *typed, override])
            assert result.exit_code == 2, (command, option, result.output)
            as_typed = " ".join(["ANNOTATIONS", *typed] if option == "annotations" else typed)
            assert f"is set twice: {as_typed} and {override}" in result.output, (command, option, result.output)
            assert f"error: {override.partition('=')[0]}" in result.output  # the key it names (or its table)


def test_video_text_takes_a_leading_override_as_an_override(tmp_path: Path):
    recipe = tmp_path / "vt.toml"
    recipe.write_text(
        'schema_version = 1\nstage = "prepare-data"\n[source]\nkind = "video-text"\n'
        'annotations = "a.json"\nout = "o.json"\n'
    )
    result = runner.invoke(app, ["prepare-data", "video-text", "--recipe", str(recipe), "source.verify_timeout_s=-1"])
    assert result.exit_code == 2, result.output
    assert "source.verify_timeout_s" in result.output and "greater than 0" in result.output
