"""Evaluation reports: the protocol line, a terminal table, `results.json` and a Markdown report.

The protocol (split, counts, mode, k, frames, views...) is printed above every table and stored with the numbers:
the same checkpoint gives very different numbers under different protocols (docs/pitfalls.md, evaluation flags).
Retrieval: both rankings are always shown, labelled: embedding-only (`itc`) and ITM re-ranked (`rerank`).
Classification: top-1, top-5 and mean per-class accuracy, each beside its chance level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from umt_cli.evaluation.metrics import RECALL_KS
from umt_cli.utils.files import atomic_path, write_json

__all__ = [
    "protocol_line",
    "retrieval_rows",
    "retrieval_markdown",
    "write_report",
    "print_retrieval",
    "classification_protocol_line",
    "classification_rows",
    "classification_markdown",
    "print_classification",
]

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
        parts.append(f"{c['skipped_videos']} video(s) skipped ({c['dropped_texts']} text(s) dropped)")
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


# ------------------------------------------------------------------------------------------------ classification

CLASSIFICATION_COLUMNS = ["metric", "accuracy", "chance"]
MAX_PER_CLASS_ROWS = 1000
"""Classes listed one by one in the Markdown report (all of Kinetics-710 fits)."""


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def classification_protocol_line(result: dict[str, Any]) -> str:
    """`zero-shot · split test · 4 videos · 4 classes · 4 frames · 1 clip x 1 crop (middle) · 64 px · 2 templates`."""
    p, c = result["protocol"], result["counts"]
    parts = [
        p["mode"],
        f"split {p['split']}",
        _plural(p["videos"], "video"),
        _plural(p["classes"], "class", "classes"),
        _plural(p["num_frames"], "frame"),
        f"{_plural(p['num_clips'], 'clip')} x {_plural(p['num_crops'], 'crop')} ({p['sampling']})",
        f"{p['size']} px",
    ]
    if p.get("templates"):
        parts.append(_plural(len(p["templates"]), "template"))
    if "probe" in result:
        trained_on = _plural(result["probe"]["train_videos"], "video")
        parts.append(f"probe on {trained_on}, {p['probe_epochs']} epochs, lr {p['probe_lr']:g}")
    if c["skipped_videos"]:
        parts.append(f"{_plural(c['skipped_videos'], 'video')} skipped")
    return " · ".join(parts)


def classification_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows `[metric, accuracy, chance]`: top-1, top-k (k = min(5, classes)), mean per-class accuracy, then the
    number of videos scored."""
    m, chance = result["metrics"], result["chance"]
    return [
        ["top-1", _number(m["top1"]), _number(chance["top1"])],
        [f"top-{m['top5_k']}", _number(m["top5"]), _number(chance["top5"])],
        ["mean per-class", _number(m["mean_class_accuracy"]), _number(chance["mean_class_accuracy"])],
        ["videos (N)", str(m["num_videos"]), ""],
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def classification_markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a classification result; `result["confusion_png"]` (a path, or None when the matrix
    was too large to draw) decides what it says about the picture."""
    p = result["protocol"]
    lines = [
        "# Classification results",
        "",
        f"- checkpoint: `{result['checkpoint']['source']}` ({result['checkpoint']['kind']})",
        f"- videos: `{result['data']}`",
        f"- protocol: {classification_protocol_line(result)}",
    ]
    if p.get("templates"):
        lines.append("- templates: " + ", ".join(f"`{t}`" for t in p["templates"]))
    if "probe" in result:
        lines.append(f"- probe trained on: `{result['probe']['train_list']}`")
    if result.get("predictions_csv"):
        lines.append(f"- per-video predictions: `{Path(result['predictions_csv']).name}`")
    lines += ["", *_table(CLASSIFICATION_COLUMNS, classification_rows(result))]
    lines += ["", "Accuracy in percent; a video's views are scored by their averaged softmax. Chance: a random guess."]
    lines += ["", *_confusion_lines(result), "", *_per_class_lines(result)]
    lines += _skipped_lines("Skipped videos", result["skipped"])
    if "probe" in result:
        lines += _skipped_lines("Skipped train videos", result["probe"]["skipped_train"])
    return "\n".join(lines) + "\n"


def _confusion_lines(result: dict[str, Any]) -> list[str]:
    picture = result.get("confusion_png")
    if picture:
        return ["## Confusion matrix", "", f"![confusion matrix]({Path(picture).name})"]
    classes = result["protocol"]["classes"]
    return ["## Confusion matrix", "", f"Not drawn: {classes} classes are too many to read; the counts are in "
            "`results.json` (`metrics.confusion`, rows = true class, columns = predicted)."]  # fmt: skip


def _per_class_lines(result: dict[str, Any]) -> list[str]:
    per_class = result["metrics"]["per_class"]
    rows = [
        [name.replace("|", "\\|"), str(c["count"]), "" if c["accuracy"] is None else _number(c["accuracy"])]
        for name, c in list(per_class.items())[:MAX_PER_CLASS_ROWS]
    ]
    lines = ["## Per class", "", *_table(["class", "videos", "top-1"], rows)]
    if len(per_class) > MAX_PER_CLASS_ROWS:
        lines += ["", f"({len(per_class) - MAX_PER_CLASS_ROWS} more classes in `results.json`)"]
    return lines


def _skipped_lines(title: str, skipped: list[dict[str, str]]) -> list[str]:
    if not skipped:
        return []
    return ["", f"{title} ({len(skipped)}, not scored):", *(f"- `{s['video']}`: {s['reason']}" for s in skipped)]


def print_classification(result: dict[str, Any]) -> None:
    """The protocol line and the table, on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(classification_protocol_line(result), markup=False, highlight=False)
    table = Table(*CLASSIFICATION_COLUMNS)
    for row in classification_rows(result):
        table.add_row(*row)
    console.print(table)
