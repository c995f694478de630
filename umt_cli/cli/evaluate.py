"""`umt evaluate` (alias `umt eval`): `retrieval` and `classification` on a trained, exported or official model.

Run on several processes with `accelerate launch -m umt_cli evaluate retrieval ...`: the work is sharded and the
numbers are the same as on one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from umt_cli.cli._common import guard
from umt_cli.cli._help import Command, Group

app = typer.Typer(
    cls=Group,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Evaluate a model: video-text retrieval, or action classification (zero-shot, linear probe, fine-tuned).",
)

Ckpt = Annotated[
    Path,
    typer.Option(
        "--ckpt",
        metavar="PATH",
        help="A stage-2 run directory or its video_text.safetensors, an exported directory, or an official .pth.",
    ),
]
Trust = Annotated[
    bool,
    typer.Option("--trust-checkpoint", help="Allow legacy .pth files that need full unpickling (only if trusted)."),
]
TextEncoder = Annotated[
    str | None,
    typer.Option("--text-encoder", metavar="DIR", help="BERT folder of the tokenizer (official files carry none)."),
]
Out = Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Folder for results.json and report.md.")]
Device = Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda", help="Where to run.")]
Precision = Annotated[str, typer.Option("--precision", metavar="fp32|bf16|fp16", help="Autocast on CUDA.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="Clips or texts per batch.")]
Workers = Annotated[int, typer.Option("--workers", min=0, metavar="N", help="Decoding processes (0 = in-process).")]
Frames = Annotated[
    int | None, typer.Option("--frames", min=1, metavar="T", help="Frames per clip (default: the model's own).")
]


@guard
def retrieval(
    ckpt: Ckpt,
    data: Annotated[Path, typer.Option("--data", metavar="ANNOTATIONS", help="Test annotation JSON (video, caption).")],
    root: Annotated[
        Path | None, typer.Option("--root", metavar="DIR", help="Folder the video paths are relative to.")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            metavar="standard|paragraph",
            help="One text per caption, or a video's captions joined (DiDeMo, ActivityNet).",
        ),
    ] = "standard",  # fmt: skip
    merge_identical: Annotated[
        bool, typer.Option("--merge-identical", help="Identical captions: one text, several correct videos (SSv2).")
    ] = False,
    trimmed30: Annotated[bool, typer.Option("--trimmed30", help="Sample only the first 30 s (DiDeMo).")] = False,
    k: Annotated[int, typer.Option("--k", min=1, metavar="K", help="Candidates re-ranked by ITM per query.")] = 128,
    frames: Frames = None,
    size: Annotated[int | None, typer.Option("--size", min=16, metavar="PX", help="Frame side.")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", min=2, metavar="L", help="Caption tokens.")] = None,
    split: Annotated[str | None, typer.Option("--split", metavar="NAME", help="Split name in the report.")] = None,
    text_encoder: TextEncoder = None,
    trust_checkpoint: Trust = False,
    batch_size: BatchSize = 32,
    rerank_batch: Annotated[int, typer.Option("--rerank-batch", min=1, metavar="N", help="Pairs per ITM batch.")] = 512,
    rerank_block: Annotated[
        int, typer.Option("--rerank-block", min=1, metavar="N", help="Queries per ITM re-ranking block.")
    ] = 256,
    workers: Workers = 0,
    device: Device = "auto",
    precision: Precision = "fp32",
    out: Out = None,
) -> None:
    """Text-to-video and video-to-text retrieval: R@1/5/10, MdR, MnR, embedding-only and ITM re-ranked."""
    from umt_cli.evaluation.run import run_retrieval

    run_retrieval(**locals())


app.command("retrieval", cls=Command)(retrieval)


@guard
def classification(
    ckpt: Annotated[
        Path,
        typer.Option(
            "--ckpt",
            metavar="PATH",
            help="A fine-tuned classifier (official .pth or export), or a video-text model: a stage-2 run directory or "
            "its video_text.safetensors, an exported directory, an official .pth.",
        ),
    ],
    data: Annotated[
        Path, typer.Option("--data", metavar="LIST.csv", help="Test list: `path,label` lines (labels 0-based).")
    ],
    classes: Annotated[
        Path, typer.Option("--classes", metavar="FILE", help="Class names, one a line: line i names label i.")
    ],
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            metavar="DIR",
            help="Folder the paths of --data and --train-list are relative to (default: each list's folder, or "
            "the folder its videos_root.txt names).",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            metavar="auto|zero-shot|linear-probe|finetuned",
            help="auto: finetuned for a classifier, zero-shot for a video-text model.",
        ),
    ] = "auto",
    train_list: Annotated[
        Path | None,
        typer.Option("--train-list", metavar="LIST.csv", help="Linear probe: the labelled videos it is trained on."),
    ] = None,
    templates: Annotated[
        list[str] | None,
        typer.Option(
            "--templates",
            metavar="TEXT",
            help="Zero-shot prompt with {} for the class name; repeat the "
            "option for several (default: 'a video of {}.' and '{}').",
        ),
    ] = None,
    frames: Frames = None,
    clips: Annotated[
        int | None,
        typer.Option("--clips", metavar="N", help="Clips per video (default: 4 fine-tuned, 1 otherwise)."),
    ] = None,
    crops: Annotated[
        int | None,
        typer.Option("--crops", metavar="N", help="Crops per clip (default: 3 fine-tuned, 1 otherwise)."),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", metavar="NAME", help="Split name in the report.")] = None,
    text_encoder: TextEncoder = None,
    trust_checkpoint: Trust = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, metavar="N", help="Videos per batch.")] = 8,
    workers: Workers = 0,
    device: Device = "auto",
    precision: Precision = "fp32",
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="DIR", help="Folder for results.json, report.md and confusion.png."),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", metavar="DIR", help="Linear-probe feature cache (default: OUT/features)."),
    ] = None,
    probe_epochs: Annotated[
        int | None, typer.Option("--probe-epochs", metavar="N", help="Linear-probe passes (default 100).")
    ] = None,
    probe_lr: Annotated[
        float | None, typer.Option("--probe-lr", metavar="X", help="Linear-probe learning rate (default 0.01).")
    ] = None,
) -> None:
    """Action classification: top-1, top-5 and mean per-class accuracy, zero-shot, linear probe or fine-tuned."""
    from umt_cli.evaluation.classify import run_classification

    run_classification(**locals())


app.command("classification", cls=Command)(classification)
