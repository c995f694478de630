"""Evaluation reports: the protocol line, a terminal table, `results.json` and a Markdown report.

The protocol (split, counts, mode, k, frames, views...) is printed above every table and stored with the numbers:
the same checkpoint gives very different numbers under different protocols (docs/pitfalls.md, evaluation flags).
Both rankings are always shown, labelled: embedding-only (`itc`) and ITM re-ranked (`rerank`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from umt_cli.evaluation.metrics import RECALL_KS
from umt_cli.utils.files import atomic_path, write_json

__all__ = ["protocol_line", "retrieval_rows", "retrieval_markdown", "write_report", "print_retrieval"]

RANKINGS = {"itc": "embedding only (ITC)", "rerank": "re-ranked (ITM top-k)"}
DIRECTION_NAMES = {"t2v": "text→video", "v2t": "video→text"}
COLUMNS = [*(f"R@{k}" for k in RECALL_KS), "MdR", "MnR"]


def protocol_line(result: dict[str, Any]) -> str:
    """`split test · 48 texts · 16 videos · standard · k 128 · 4 frames x 1 view · 224 px · 32 tokens`."""
    p, c = result["protocol"], result["counts"]
    parts = [
        f"split {p['split']}",
        f"{c['texts']} texts",
        f"{c['videos']} videos",
        p["mode"] + (" (identical captions merged)" if p["merge_identical"] else ""),
        f"k {p['k']}",
        f"{p['num_frames']} frames x {p['views']} view",
        f"{p['size']} px",
        f"{p['max_len']} tokens",
    ]
    if p["trimmed30"]:
        parts.append("first 30 s")
    if c["skipped_videos"]:
        parts.append(f"{c['skipped_videos']} videos skipped ({c['dropped_texts']} texts dropped)")
    return " · ".join(parts)


def _number(value: float) -> str:
    return f"{value:.1f}"


def retrieval_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows `[ranking, direction, R@1, R@5, R@10, MdR, MnR]`, then the chance level of each direction."""
    rows = []
    for ranking, label in RANKINGS.items():
        for direction, name in DIRECTION_NAMES.items():
            m = result["metrics"][ranking][direction]
            rows.append([label, name, *(_number(m[column]) for column in COLUMNS)])
    for direction, name in DIRECTION_NAMES.items():
        chance = result["chance"][direction]
        rows.append(["chance", name, *(_number(chance[f"R@{k}"]) for k in RECALL_KS), "", ""])
    return rows


def retrieval_markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a retrieval result."""
    header = ["ranking", "direction", *COLUMNS]
    lines = [
        "# Retrieval results",
        "",
        f"- checkpoint: `{result['checkpoint']['source']}` ({result['checkpoint']['kind']})",
        f"- annotations: `{result['annotations']}`",
        f"- protocol: {protocol_line(result)}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in retrieval_rows(result)]
    lines += ["", "R@K in percent; MdR / MnR are the median / mean rank (1 = first). Chance: a random ranking."]
    if result["skipped"]:
        lines += ["", "Skipped videos:", *(f"- `{s['video']}`: {s['reason']}" for s in result["skipped"])]
    return "\n".join(lines) + "\n"


def write_report(out: Path, result: dict[str, Any], markdown: str) -> dict[str, Path]:
    """Write `results.json` and `report.md` into `out` (atomically each)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"results": out / "results.json", "report": out / "report.md"}
    write_json(files["results"], result)
    with atomic_path(files["report"]) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    return files


def print_retrieval(result: dict[str, Any]) -> None:
    """The protocol line and the table, on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(protocol_line(result), markup=False, highlight=False)
    table = Table("ranking", "direction", *COLUMNS)
    for row in retrieval_rows(result):
        table.add_row(*row)
    console.print(table)
