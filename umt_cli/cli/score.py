"""`umt score`: UMT models as text-to-video generation metrics, computed by a named protocol (fetv, chronomagic,
t2v-metrics) whose every setting is printed and saved beside the numbers.

- `umt score align`: UMTScore (the raw ITM logit of the match class) or the UMT "clip" score, per prompt id.
- `umt score fvd`: UMT-FVD between real and generated videos, with the FETV and the ChronoMagic summaries.

Run on several processes with `accelerate launch -m umt_cli score ...`: the videos are sharded, the numbers are the
same as on one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from umt_cli.cli._common import guard
from umt_cli.cli._help import Command, Group
from umt_cli.cli.evaluate import Device, Trust, Workers

app = typer.Typer(
    cls=Group,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Text-to-video metrics with UMT models (UMTScore, UMT clip score, UMT-FVD), reproducible by protocol name.",
)

Ckpt = Annotated[
    Path,
    typer.Option(
        "--ckpt",
        metavar="PATH",
        help="A video-text model: an official .pth (the FETV file is a retrieval fine-tuned L/16), a stage-2 run "
        "directory or its video_text.safetensors, or an exported directory. Loaded strictly.",
    ),
]
Protocol = Annotated[
    str, typer.Option("--protocol", metavar="fetv|chronomagic|t2v-metrics", help="The published protocol to follow.")
]
TextEncoder = Annotated[
    str | None,
    typer.Option("--text-encoder", metavar="DIR", help="BERT folder of the tokenizer (official files carry none)."),
]
Frames = Annotated[int | None, typer.Option("--frames", min=1, metavar="T", help="Override: frames per video.")]
Sampling = Annotated[
    str | None, typer.Option("--sampling", metavar="middle|linspace", help="Override: how the frames are chosen.")
]
Size = Annotated[int | None, typer.Option("--size", min=16, metavar="PX", help="Override: frame side.")]
Antialias = Annotated[
    bool | None, typer.Option("--antialias/--no-antialias", help="Override: antialias the resize.", show_default=False)
]
Precision = Annotated[
    str | None,
    typer.Option("--precision", metavar="fp32|fp16|bf16", help="Override: autocast on CUDA (the CPU runs fp32)."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="Videos (and pairs) per batch.")]
Backend = Annotated[str, typer.Option("--backend", metavar="auto|pyav|decord", help="Video decoder.")]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        metavar="DIR",
        help="Where UMT-FVD feature caches go (default: next to the videos). `align` leaves one too, for `fvd`.",
    ),
]


@guard
def align(
    videos: Annotated[
        Path,
        typer.Option("--videos", metavar="DIR|LIST", help="A folder of videos (mp4, gif, ...) or a file of paths."),
    ],
    prompts: Annotated[
        Path,
        typer.Option(
            "--prompts",
            metavar="FILE",
            help="JSON {id: prompt}, a JSON list or JSON lines of {id|video, prompt|caption}, or a CSV with those "
            "columns; an id names the video of the same file stem.",
        ),
    ],
    ckpt: Ckpt,
    protocol: Protocol = "fetv",
    head: Annotated[
        str,
        typer.Option(
            "--head",
            metavar="itm|itc",
            help="itm: UMTScore, the raw ITM match logit; itc: the UMT clip score (mean frame cosine).",
        ),
    ] = "itm",
    frames: Frames = None,
    sampling: Sampling = None,
    size: Size = None,
    antialias: Antialias = None,
    clean_text: Annotated[
        bool | None,
        typer.Option(
            "--clean-text/--raw-text", help="Override: clean prompts as the official code does.", show_default=False
        ),
    ] = None,  # fmt: skip
    max_len: Annotated[
        int | None, typer.Option("--max-len", min=2, metavar="L", help="Override: prompt tokens.")
    ] = None,
    precision: Precision = None,
    text_encoder: TextEncoder = None,
    trust_checkpoint: Trust = False,
    cache_dir: CacheDir = None,
    batch_size: BatchSize = 8,
    workers: Workers = 0,
    backend: Backend = "auto",
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Folder for scores.json.")] = None,
) -> None:
    """Text-video alignment per prompt id: UMTScore (default) or the UMT clip score, and their mean."""
    from umt_cli.scoring.run import run_align

    run_align(**locals())


app.command("align", cls=Command)(align)


@guard
def fvd(
    real: Annotated[
        Path,
        typer.Option(
            "--real",
            metavar="DIR|FEATS",
            help="Real videos (a folder) or their features (.safetensors, .pt such as ChronoMagic's references, .npy).",
        ),
    ],  # fmt: skip
    fake: Annotated[
        Path, typer.Option("--fake", metavar="DIR|FEATS", help="Generated videos (a folder) or their features.")
    ],
    ckpt: Annotated[
        Path | None,
        typer.Option("--ckpt", metavar="PATH", help="The video-text model (needed when a side is a folder)."),
    ] = None,
    protocol: Protocol = "fetv",
    n: Annotated[
        list[str] | None,
        typer.Option(
            "--n",
            "--sizes",
            metavar="N[,N...]",
            help="Subset sizes (repeat or comma-separate; default 32,64,128,256,300,512,1024). Under accelerate "
            "launch or torchrun write --sizes: their parsers take --n for an abbreviation of their own options.",
        ),
    ] = None,  # fmt: skip
    seeds: Annotated[
        list[str] | None,
        typer.Option("--seeds", metavar="S[,S...]", help="Subsampling seeds (default 12,22,32,42)."),
    ] = None,
    frames: Frames = None,
    sampling: Sampling = None,
    size: Size = None,
    antialias: Antialias = None,
    precision: Precision = None,
    cache_dir: CacheDir = None,
    text_encoder: TextEncoder = None,
    trust_checkpoint: Trust = False,
    batch_size: BatchSize = 8,
    workers: Workers = 0,
    backend: Backend = "auto",
    device: Device = "auto",
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Folder for fvd.json.")] = None,
) -> None:
    """UMT-FVD between real and generated videos: every (N, seed), the FETV figure and the ChronoMagic figure."""
    from umt_cli.scoring.run import run_fvd

    run_fvd(**locals())


app.command("fvd", cls=Command)(fvd)
