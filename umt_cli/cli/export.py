"""`umt export`: a trained, exported or official model as a self-describing bundle (+ ONNX, `torch.export`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from umt_cli.cli._common import guard, print_summary

SHORT_HELP = "A trained, exported or official model as a self-describing bundle (safetensors), + ONNX / .pt2."


@guard
def export(
    ckpt: Annotated[
        Path,
        typer.Option(
            "--ckpt",
            metavar="PATH",
            help="A stage-2 run directory or its video_text.safetensors, an exported directory, or an official .pth "
            "(stage-2, retrieval or classification).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="The bundle folder to write (new or empty).")],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also write ONNX files (needs pip install 'umt[export]').")
    ] = False,
    pt2: Annotated[bool, typer.Option("--pt2", help="Also write torch.export programs (.pt2).")] = False,
    frames: Annotated[
        int | None, typer.Option("--frames", min=1, metavar="T", help="Frames per clip (default: the model's own).")
    ] = None,
    text_encoder: Annotated[
        str | None,
        typer.Option("--text-encoder", metavar="DIR", help="BERT folder of the tokenizer (official files carry none)."),
    ] = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option("--trust-checkpoint", help="Allow legacy .pth files that need full unpickling (only if trusted)."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing bundle at --out, once the new one is complete.")
    ] = False,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Skip running the ONNX files under onnxruntime against the model.")
    ] = False,
) -> None:
    """Write a bundle folder that umt loads back with no other file: model.safetensors, config.json, a README.md
    model card and the tokenizer; with --onnx / --pt2 also ONNX / torch.export files, each checked against the model.
    The folder appears only once everything in it is written and checked."""
    from umt_cli.export.run import run_export

    summary = run_export(**locals())
    print_summary("umt export", _displayed(summary))


def _displayed(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary as printed: one line per file ("name  size") rather than a wrapped `name=size, ...` list."""
    files = "\n".join(f"{name}  {size}" for name, size in summary["files"].items())
    return {**summary, "files": files}
