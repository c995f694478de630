"""`umt prepare-data synthetic | kinetics710 | video-text`: build the lists and annotation files training reads.

Every option maps onto a key of a `stage = "prepare-data"` recipe (`--out` is `source.out`, ...), so the same
settings can live in a recipe file (`--recipe`) and be overridden by options or trailing KEY=VALUE tokens; setting
one key both ways is an error.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from umt_cli.cli._common import guard, print_summary, recipe_table, validate_table
from umt_cli.cli._help import Command, Group
from umt_cli.errors import UsageError
from umt_cli.recipe import PrepareDataRecipe
from umt_cli.recipe.load import keys_overlap, parse_override

app = typer.Typer(
    cls=Group, rich_markup_mode=None, no_args_is_help=True, help="Build data lists, annotation files and data sets."
)


def _overrides(example: str) -> Any:
    """The trailing KEY=VALUE argument, with an example that is valid for this command's `[source]` kind."""
    return Annotated[list[str] | None, typer.Argument(metavar="KEY=VALUE", help=f"Recipe overrides, e.g. {example}.")]


SyntheticOverrides = _overrides("source.width=128")
KineticsOverrides = _overrides("source.crf=28")
VideoTextOverrides = _overrides("source.verify_timeout_s=30")
RecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe", metavar="RECIPE", help="A prepare-data recipe (file or shipped name) holding the settings."
    ),
]
Out = Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Output folder (source.out).")]
Workers = Annotated[int | None, typer.Option("--workers", metavar="N", help="Parallel processes; 0 = one per core.")]

_FLAGS = {"num_frames": "--frames", "k400.videos": "--k400", "k600.videos": "--k600", "k700.videos": "--k700",
          "k400.annotations": "--k400-csv", "k600.annotations": "--k600-csv", "k700.annotations": "--k700-csv",
          "annotations": "ANNOTATIONS"}  # fmt: skip
"""Options not named after the key they set (the rest are `--key-name`)."""


def _source(kind: str, recipe: str | None, options: dict[str, Any], overrides: list[str] | None) -> Any:
    """Recipe file (or an empty one) + options + overrides -> the validated `[source]` table of this kind."""
    base = {"schema_version": 1, "stage": "prepare-data", "source": {"kind": kind}}
    table, name = recipe_table(recipe, base)
    source = table.setdefault("source", {})
    if source.get("kind", kind) != kind:
        raise UsageError(f"{name}: source.kind is {source['kind']!r}, but this is `umt prepare-data {kind}`")
    given = {key: value for key, value in options.items() if value is not None}
    _refuse_doubles(given, overrides or [])
    for key, value in given.items():
        node = source
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = str(value) if isinstance(value, Path) else value
    recipe_obj = validate_table(table, name, list(overrides or []), PrepareDataRecipe)
    return recipe_obj.source  # type: ignore[attr-defined]


def _refuse_doubles(given: dict[str, Any], overrides: list[str]) -> None:
    """An option and a KEY=VALUE for the same key: which one wins would be a guess, so neither does."""
    for token in overrides:
        dotted = ".".join(parse_override(token)[0])
        for key, value in given.items():
            full = f"source.{key}"
            if keys_overlap(full, dotted):
                raise UsageError(f"{full} is set twice: {_as_typed(key, value)} and {token}", hint="give each key once")


def _as_typed(key: str, value: Any) -> str:
    """The option as the user typed it: `--seed 2`, `--no-verify`, `ANNOTATIONS a.json`."""
    flag = _FLAGS.get(key, "--" + key.replace("_", "-"))
    if isinstance(value, bool):
        return flag if value else "--no-" + flag.removeprefix("--")
    return f"{flag} {value}"


_OVERRIDE = re.compile(r"~[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*|[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*=.*", re.S)


def _split_positional(first: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """`video-text --recipe r.toml source.verify=true`: the first token is an override, not the annotation file."""
    rest = list(overrides or [])
    if first is not None and not first.exists() and _OVERRIDE.fullmatch(str(first)):
        return None, [str(first), *rest]
    return first, rest


@app.command("synthetic", cls=Command)
@guard
def synthetic(
    overrides: SyntheticOverrides = None,
    recipe: RecipeOpt = None,
    out: Out = None,
    train: Annotated[int | None, typer.Option(metavar="N", help="Training videos.")] = None,
    val: Annotated[int | None, typer.Option(metavar="N", help="Validation videos.")] = None,
    test: Annotated[int | None, typer.Option(metavar="N", help="Test videos.")] = None,
    frames: Annotated[int | None, typer.Option(metavar="N", help="Frames per video (source.num_frames).")] = None,
    seed: Annotated[int | None, typer.Option(metavar="N", help="Generator seed.")] = None,
) -> None:
    """Generate the synthetic moving-shapes data set (H.264 clips, class lists, retrieval JSON)."""
    options = {"out": out, "train": train, "val": val, "test": test, "num_frames": frames, "seed": seed}
    source = _source("synthetic", recipe, options, overrides)
    from umt_cli.data.prepare.synthetic import prepare_synthetic

    print_summary("prepare-data synthetic", prepare_synthetic(source))


@app.command("kinetics710", cls=Command)
@guard
def kinetics710(
    overrides: KineticsOverrides = None,
    recipe: RecipeOpt = None,
    k400: Annotated[Path | None, typer.Option(metavar="DIR", help="Kinetics-400 videos (source.k400.videos).")] = None,
    k400_csv: Annotated[Path | None, typer.Option(metavar="PATH", help="Kinetics-400 CSV folder or file.")] = None,
    k600: Annotated[Path | None, typer.Option(metavar="DIR", help="Kinetics-600 video folder.")] = None,
    k600_csv: Annotated[Path | None, typer.Option(metavar="PATH", help="Kinetics-600 CSV folder or file.")] = None,
    k700: Annotated[Path | None, typer.Option(metavar="DIR", help="Kinetics-700 video folder.")] = None,
    k700_csv: Annotated[Path | None, typer.Option(metavar="PATH", help="Kinetics-700 CSV folder or file.")] = None,
    out: Out = None,
    label_map: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A file with one class name per line that fixes the class order (e.g. OpenGVLab's "
            "label_map_k710.txt, so released K710 heads line up); unset = sorted order.",
        ),
    ] = None,
    exclude: Annotated[
        str | None,
        typer.Option(metavar="val+test|val", help="`val+test` (default, leak-free) or `val` (released lists)."),
    ] = None,
    verify: Annotated[bool | None, typer.Option("--verify/--no-verify", help="Probe every video.")] = None,
    resize_short_side: Annotated[
        int | None, typer.Option(metavar="PIXELS", help="Re-encode videos to this short side.")
    ] = None,
    keyframe_interval: Annotated[int | None, typer.Option(metavar="FRAMES", help="GOP of re-encoded videos.")] = None,
    workers: Workers = None,
) -> None:
    """Build Kinetics-710 lists, label files and a manifest from local Kinetics-400/600/700 copies."""
    options = {
        "k400.videos": k400, "k400.annotations": k400_csv, "k600.videos": k600, "k600.annotations": k600_csv,
        "k700.videos": k700, "k700.annotations": k700_csv, "out": out, "label_map": label_map, "exclude": exclude,
        "verify": verify, "resize_short_side": resize_short_side, "keyframe_interval": keyframe_interval,
        "workers": workers,
    }  # fmt: skip
    source = _source("kinetics710", recipe, options, overrides)
    from umt_cli.data.prepare.kinetics710 import prepare_kinetics710

    summary = prepare_kinetics710(source)
    print_summary("prepare-data kinetics710", summary)


@app.command("video-text", cls=Command)
@guard
def video_text(
    annotations: Annotated[
        Path | None, typer.Argument(metavar="ANNOTATIONS", help="Annotation JSON / JSONL file (source.annotations).")
    ] = None,
    overrides: VideoTextOverrides = None,
    recipe: RecipeOpt = None,
    root: Annotated[Path | None, typer.Option(metavar="DIR", help="Folder the media paths are relative to.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Normalised annotation file to write.")
    ] = None,
    verify: Annotated[bool | None, typer.Option("--verify/--no-verify", help="Probe every video.")] = None,
    workers: Workers = None,
) -> None:
    """Check and normalise a video-text annotation file (media exist, captions cleaned, counts in a manifest)."""
    annotations, overrides = _split_positional(annotations, overrides)
    options = {"annotations": annotations, "root": root, "out": out, "verify": verify, "workers": workers}
    source = _source("video-text", recipe, options, overrides)
    from umt_cli.data.prepare.video_text import prepare_video_text

    print_summary("prepare-data video-text", prepare_video_text(source))
