"""`umt prepare-data synthetic | kinetics710 | video-text`: build the lists and annotation files training reads.

Every option maps onto a key of a `stage = "prepare-data"` recipe (`--out` is `source.out`, ...), so the same
settings can live in a recipe file (`--recipe`) and be overridden by options and trailing KEY=VALUE tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from umt_cli.cli._common import guard, print_summary, recipe_table, validate_table
from umt_cli.errors import UsageError
from umt_cli.recipe import PrepareDataRecipe

app = typer.Typer(no_args_is_help=True, help="Build data lists, annotation files and data sets.")

Overrides = Annotated[
    list[str] | None, typer.Argument(metavar="[KEY=VALUE]...", help="Recipe overrides, e.g. source.seed=1.")
]
RecipeOpt = Annotated[
    str | None, typer.Option("--recipe", help="A prepare-data recipe (file or shipped name) holding the settings.")
]
Out = Annotated[Path | None, typer.Option("--out", help="Output folder (source.out).")]
Workers = Annotated[int | None, typer.Option("--workers", help="Parallel processes; 0 = one per core.")]


def _source(kind: str, recipe: str | None, options: dict[str, Any], overrides: list[str] | None) -> Any:
    """Recipe file (or an empty one) + options + overrides -> the validated `[source]` table of this kind."""
    base = {"schema_version": 1, "stage": "prepare-data", "source": {"kind": kind}}
    table, name = recipe_table(recipe, base)
    source = table.setdefault("source", {})
    if source.get("kind", kind) != kind:
        raise UsageError(f"{name}: source.kind is {source['kind']!r}, but this is `umt prepare-data {kind}`")
    for key, value in options.items():
        if value is not None:
            node = source
            *parents, leaf = key.split(".")
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = str(value) if isinstance(value, Path) else value
    recipe_obj = validate_table(table, name, list(overrides or []), PrepareDataRecipe)
    return recipe_obj.source  # type: ignore[attr-defined]


@app.command("synthetic")
@guard
def synthetic(
    overrides: Overrides = None,
    recipe: RecipeOpt = None,
    out: Out = None,
    train: Annotated[int | None, typer.Option(help="Training videos.")] = None,
    val: Annotated[int | None, typer.Option(help="Validation videos.")] = None,
    test: Annotated[int | None, typer.Option(help="Test videos.")] = None,
    frames: Annotated[int | None, typer.Option(help="Frames per video.")] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed.")] = None,
) -> None:
    """Generate the synthetic moving-shapes data set (H.264 clips, class lists, retrieval JSON)."""
    options = {"out": out, "train": train, "val": val, "test": test, "num_frames": frames, "seed": seed}
    source = _source("synthetic", recipe, options, overrides)
    from umt_cli.data.prepare.synthetic import prepare_synthetic

    print_summary("prepare-data synthetic", prepare_synthetic(source))


@app.command("kinetics710")
@guard
def kinetics710(
    overrides: Overrides = None,
    recipe: RecipeOpt = None,
    k400: Annotated[Path | None, typer.Option(help="Kinetics-400 video folder (source.k400.videos).")] = None,
    k400_csv: Annotated[Path | None, typer.Option(help="Kinetics-400 CSV folder or file.")] = None,
    k600: Annotated[Path | None, typer.Option(help="Kinetics-600 video folder.")] = None,
    k600_csv: Annotated[Path | None, typer.Option(help="Kinetics-600 CSV folder or file.")] = None,
    k700: Annotated[Path | None, typer.Option(help="Kinetics-700 video folder.")] = None,
    k700_csv: Annotated[Path | None, typer.Option(help="Kinetics-700 CSV folder or file.")] = None,
    out: Out = None,
    label_map: Annotated[Path | None, typer.Option(help="Class order to impose (one name per line, ...).")] = None,
    exclude: Annotated[
        str | None, typer.Option(help="`val+test` (default, leak-free) or `val` (released lists).")
    ] = None,
    verify: Annotated[bool | None, typer.Option("--verify/--no-verify", help="Probe every video.")] = None,
    resize_short_side: Annotated[int | None, typer.Option(help="Re-encode videos to this short side.")] = None,
    keyframe_interval: Annotated[int | None, typer.Option(help="GOP of re-encoded videos.")] = None,
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


@app.command("video-text")
@guard
def video_text(
    annotations: Annotated[Path | None, typer.Argument(help="Annotation JSON / JSONL file.")] = None,
    overrides: Overrides = None,
    recipe: RecipeOpt = None,
    root: Annotated[Path | None, typer.Option(help="Folder the media paths are relative to.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Normalised annotation file to write.")] = None,
    verify: Annotated[bool | None, typer.Option("--verify/--no-verify", help="Probe every video.")] = None,
    workers: Workers = None,
) -> None:
    """Check and normalise a video-text annotation file (media exist, captions cleaned, counts in a manifest)."""
    options = {"annotations": annotations, "root": root, "out": out, "verify": verify, "workers": workers}
    source = _source("video-text", recipe, options, overrides)
    from umt_cli.data.prepare.video_text import prepare_video_text

    print_summary("prepare-data video-text", prepare_video_text(source))
