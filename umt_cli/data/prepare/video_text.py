"""`umt prepare-data video-text`: check a video-text annotation file and write a normalised copy training can trust.

Entries whose media file is missing or empty (or, with `verify`, does not decode), entries without a usable
caption, and malformed entries are dropped and counted; captions are cleaned as the official `pre_text` does.
The output keeps each entry's shape (`video` or `image`; `caption` a string or a list) and any extra keys.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from umt_cli.data.datasets import IMAGE_SUFFIXES
from umt_cli.data.decode import default_workers
from umt_cli.data.text import clean_caption
from umt_cli.data.textfiles import json_records, read_text
from umt_cli.errors import DataError
from umt_cli.recipe.prepare import VideoTextSource
from umt_cli.utils.files import atomic_path
from umt_cli.utils.progress import progress

__all__ = ["read_raw_annotations", "prepare_video_text"]


def read_raw_annotations(path: Path) -> list[object]:
    """The entries of a JSON list or JSON-lines file, unvalidated."""
    return json_records(path, read_text(path, what="annotations"))


def _clean_entry(item: object) -> tuple[dict | None, str | None]:
    """(normalised entry, None) or (None, drop reason) for a malformed entry or one without a caption."""
    if (
        not isinstance(item, dict)
        or ("video" in item) == ("image" in item)
        or not isinstance(item.get("video", item.get("image")), str)
    ):
        return None, "bad_entry"
    caption = item.get("caption")
    if isinstance(caption, str):
        cleaned: str | list[str] = clean_caption(caption)
        ok = bool(cleaned)
    elif isinstance(caption, list) and all(isinstance(c, str) for c in caption):
        cleaned = [c for c in (clean_caption(c) for c in caption) if c]
        ok = bool(cleaned)
    else:
        return None, "bad_entry"
    if not ok:
        return None, "empty_caption"
    return {**item, "caption": cleaned}, None


def _media_problem(path: Path) -> str | None:
    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty"
    return None


def prepare_video_text(source: VideoTextSource) -> dict[str, object]:
    """Normalise `source.annotations` into `source.out` (+ `<out>.manifest.json`); returns the summary."""
    raw = read_raw_annotations(Path(source.annotations))
    root, kept, dropped = Path(source.root), [], Counter()
    with progress("checking annotations", len(raw)) as bar:
        for item in raw:
            entry, reason = _clean_entry(item)
            if entry is not None:
                reason = _media_problem(root / entry.get("video", entry.get("image")))
            if reason:
                dropped[reason] += 1
            else:
                kept.append(entry)
            bar.advance()
    if source.verify:
        kept = _verify(kept, root, source, dropped)
    if not kept:
        raise DataError(f"{source.annotations}: no usable entries ({dict(dropped)})")
    out = Path(source.out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(kept, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    summary = _summary(raw, kept, dropped, source)
    with atomic_path(out.with_name(out.stem + ".manifest.json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _verify(entries: list[dict], root: Path, source: VideoTextSource, dropped: Counter) -> list[dict]:
    """Drop entries whose video does not decode (images are checked by opening them at training time)."""
    from umt_cli.data.prepare.verify import probe_videos

    videos = sorted(
        {root / e["video"] for e in entries if "video" in e and Path(e["video"]).suffix not in IMAGE_SUFFIXES}
    )
    results = probe_videos(videos, timeout_s=source.verify_timeout_s, workers=source.workers or default_workers())
    kept = []
    for entry in entries:
        reason = results.get(root / entry["video"]) if "video" in entry else None
        if reason:
            dropped[f"undecodable/{reason}"] += 1
        else:
            kept.append(entry)
    return kept


def _summary(raw: list, kept: list[dict], dropped: Counter, source: VideoTextSource) -> dict[str, object]:
    captions = sum(1 if isinstance(e["caption"], str) else len(e["caption"]) for e in kept)
    summary = {
        "annotations": str(source.annotations),
        "out": str(source.out),
        "entries_in": len(raw),
        "entries_out": len(kept),
        "videos": sum("video" in e for e in kept),
        "images": sum("image" in e for e in kept),
        "captions": captions,
        "dropped": dict(sorted(dropped.items())),
    }
    if dropped:
        print(f"dropped {sum(dropped.values())} of {len(raw)} entries: {dict(dropped)}", file=sys.stderr)
    return summary
