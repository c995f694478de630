"""The inputs of `prepare-data kinetics710`: official Kinetics CSVs, the 15-name class merge, label maps, video folders.

Everything here reads and checks; `kinetics710.py` decides what goes into which list. Class names are merged
(docs/official-behaviour.md, Class merge) the moment they are read, so no other code ever sees a K400 spelling such
as `dying hair`.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from umt_cli.data.textfiles import csv_rows, read_text
from umt_cli.errors import DataError, UsageError
from umt_cli.recipe.prepare import KineticsVersion
from umt_cli.utils.files import sha256_file

__all__ = [
    "K400_MERGE",
    "VERSIONS",
    "PRIORITY",
    "SPLITS",
    "merge_name",
    "CsvInput",
    "VersionRows",
    "find_csvs",
    "read_version",
    "read_label_map",
    "order_classes",
    "VideoIndex",
    "index_videos",
]

K400_MERGE = {
    "balloon blowing": "inflating balloons",
    "changing wheel": "changing wheel (not on bike)",
    "cooking sausages": "cooking sausages (not on barbeque)",
    "drinking": "sipping cup",
    "dying hair": "dyeing hair",
    "garbage collecting": "person collecting garbage",
    "hugging": "hugging (not baby)",
    "making bed": "making the bed",
    "opening bottle": "opening bottle (not wine)",
    "picking fruit": "picking apples",
    "skiing (not slalom or crosscountry)": "skiing mono",
    "sniffing": "smelling feet",
    "tying tie": "tying necktie",
    "passing american football (not in game)": "passing American football (not in game)",
    "throwing ball": "throwing ball (not baseball or American football)",
}
"""K400 class name -> the K600/K700 name it merges into (OpenGVLab/VideoMAEv2 `misc/k710_identical_label_merge.json`).
Matching is exact and case-sensitive: 725 distinct names in the three label lists become 710."""

VERSIONS = ("k400", "k600", "k700")
PRIORITY = ("k700", "k600", "k400")
"""Which version's row wins when an id is listed by several (newest first: its labels were revised last)."""
SPLITS = ("train", "val", "test")

_SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "holdout": "test",
}
YOUTUBE_ID_LENGTH = 11
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv"})


def merge_name(name: str) -> str:
    """A class name as Kinetics-710 spells it: surrounding blanks removed, K400 spellings merged."""
    name = name.strip()
    return K400_MERGE.get(name, name)


@dataclass(frozen=True)
class CsvInput:
    """One CSV that was read: where it is, its content hash, and how many rows it had per split."""

    path: Path
    sha256: str
    rows: int
    rows_by_split: dict[str, int]


@dataclass
class VersionRows:
    """The rows of one Kinetics version: for each split, its YouTube ids and their merged labels."""

    name: str
    csvs: list[CsvInput] = field(default_factory=list)
    ids: dict[str, dict[str, str | None]] = field(default_factory=lambda: {s: {} for s in SPLITS})
    """split -> id -> merged label (None for unlabelled test rows); the first row of an id wins."""
    repeated_rows: int = 0
    """Rows whose id was already listed for the same split of this version."""

    @property
    def classes(self) -> set[str]:
        """Every merged class name this version's labelled rows use."""
        return {label for rows in self.ids.values() for label in rows.values() if label is not None}


def find_csvs(name: str, version: KineticsVersion) -> list[Path]:
    """The CSVs of one version: `annotations` (a folder or a file), else `<videos>/annotations`, else `<videos>`."""
    if not version.videos.is_dir():
        raise UsageError(f"{name}: video folder not found: {version.videos}")
    where = version.annotations
    if where is None:
        where = version.videos / "annotations" if (version.videos / "annotations").is_dir() else version.videos
    elif not where.exists():
        raise UsageError(f"{name}: annotations not found: {where}")
    found = [where] if where.is_file() else sorted(where.glob("*.csv"))
    if not found:
        raise UsageError(f"{name}: no CSV files in {where} (give the CSV folder or file with --{name}-csv)")
    return found


def _split_from_name(path: Path) -> str | None:
    """The split a file name announces (`kinetics600_holdout_test.csv` -> test), or None when it says none or two."""
    found = {_SPLIT_WORDS[w] for w in re.split(r"[^a-z]+", path.stem.lower()) if w in _SPLIT_WORDS}
    return found.pop() if len(found) == 1 else None


def _read_rows(path: Path) -> list[tuple[int, str, str, str | None]]:
    """(line, split, id, merged label or None) for each row; the split comes from the `split` column or the name."""
    from_name = _split_from_name(path)
    rows = csv_rows(path, read_text(path, what="Kinetics CSV"))
    _, header = next(rows, (1, []))
    columns = [name.strip().lower() for name in header]
    if "youtube_id" not in columns:
        raise DataError(f"{path}: no youtube_id column (columns: {', '.join(columns)})")
    found = []
    for line, fields in rows:
        row = dict(zip(columns, fields, strict=False))  # a short row lacks its last columns, as in csv.DictReader
        youtube_id = (row.get("youtube_id") or "").strip()
        split = _SPLIT_WORDS.get((row.get("split") or "").strip().lower()) or from_name
        if not youtube_id:
            raise DataError(f"{path} line {line}: empty youtube_id")
        if split is None:
            value = row.get("split")
            what = f"unknown split value {value!r}" if value else "no split column, and the file name names none"
            raise DataError(f"{path} line {line}: {what} (expected train, validate/val or test)")
        label = merge_name(row["label"]) if (row.get("label") or "").strip() else None
        if label is None and split != "test":
            raise DataError(f"{path} line {line}: {split} row {youtube_id} has no label")
        found.append((line, split, youtube_id, label))
    return found


def read_version(name: str, version: KineticsVersion) -> VersionRows:
    """Read every CSV of one version into its per-split id -> label tables."""
    result = VersionRows(name)
    for path in find_csvs(name, version):
        rows = _read_rows(path)
        by_split = {split: sum(1 for row in rows if row[1] == split) for split in SPLITS}
        result.csvs.append(CsvInput(path, sha256_file(path), len(rows), by_split))
        for _line, split, youtube_id, label in rows:
            if youtube_id in result.ids[split]:
                result.repeated_rows += 1
            else:
                result.ids[split][youtube_id] = label
    return result


def read_label_map(path: Path) -> list[tuple[str, int]]:
    """(merged name, index) pairs of a label-map file, in file order.

    Formats: a JSON list of names (index = position) or `{name: index}` object; else text with one name per line
    (index = line number, blank lines skipped) or, when every line ends in an integer, `name<blanks or ,>index`.
    """
    text = read_text(path, what="label map")
    if text.lstrip()[:1] in ("[", "{"):
        return _json_label_map(path, text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    numbered = [re.fullmatch(r"(.*?\S)[\s,]+(\d+)", line) for line in lines]
    if lines and all(numbered):
        return [(merge_name(m.group(1).strip().strip('"')), int(m.group(2))) for m in numbered if m]
    return [(merge_name(line.strip('"')), i) for i, line in enumerate(lines)]


def _json_label_map(path: Path, text: str) -> list[tuple[str, int]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} line {error.lineno}: not valid JSON ({error.msg} at column {error.colno})") from None
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return [(merge_name(name), i) for i, name in enumerate(data)]
    if isinstance(data, dict) and all(isinstance(i, int) and not isinstance(i, bool) for i in data.values()):
        return [(merge_name(name), i) for name, i in data.items()]
    raise UsageError(f"{path}: a JSON label map must be a list of names or a {{name: index}} object")


def order_classes(classes: set[str], label_map: Path | None) -> list[str]:
    """The class list: sorted names, or the order a label-map file imposes (which must be a bijection onto them)."""
    if label_map is None:
        return sorted(classes)
    pairs = read_label_map(label_map)
    names = [name for name, _ in pairs]
    problems = []
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        problems.append(_listed("names repeated (after merging K400 spellings)", repeated))
    if sorted(i for _, i in pairs) != list(range(len(pairs))):
        problems.append(f"indices are not exactly 0..{len(pairs) - 1}")
    if unknown := sorted(set(names) - classes):
        problems.append(_listed("not in the CSVs", unknown))
    if unmapped := sorted(classes - set(names)):
        problems.append(_listed("missing from the map", unmapped))
    if problems:
        raise UsageError(
            f"{label_map}: not a bijection onto the {len(classes)} classes of the CSVs: " + "; ".join(problems)
        )
    return [name for name, _ in sorted(pairs, key=lambda pair: pair[1])]


def _listed(what: str, names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit]) + (", ..." if len(names) > limit else "")
    return f"{what} ({len(names)}): {shown}"


@dataclass
class VideoIndex:
    """The video files under one folder by YouTube id (the first 11 characters of the file name)."""

    files: dict[str, Path]
    """id -> the file used (the first in sorted path order when there are several)."""
    duplicates: dict[str, list[Path]]
    """id -> all its files, for ids with more than one."""
    count: int
    """Video files found."""


def index_videos(folder: Path, *, skip: Path | None = None) -> VideoIndex:
    """Index the video files under `folder` (recursively, following links) by `stem[:11]`.

    YouTube ids are 11 characters and may contain `-` and `_`, so a name is never split on `_`: CVDF's
    `{id}_{start:06d}_{end:06d}.mp4`, crawler `{class}/{id}_...` and OpenDataLab `{id}.mp4` all index alike.
    Hidden files (such as half-written `.tmp-*` copies) and the folder `skip` (our own output) are ignored.
    """
    found: dict[str, list[Path]] = defaultdict(list)
    skip_real = os.path.realpath(skip) if skip is not None else None
    seen_dirs: set[str] = set()  # real paths already walked: links must not make us walk a folder twice (or forever)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs or real == skip_real:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath, name)
            if not name.startswith(".") and path.suffix.lower() in VIDEO_SUFFIXES:
                if len(path.stem) >= YOUTUBE_ID_LENGTH:
                    found[path.stem[:YOUTUBE_ID_LENGTH]].append(path)
    for paths in found.values():
        paths.sort(key=lambda p: p.as_posix())
    duplicates = {youtube_id: paths for youtube_id, paths in found.items() if len(paths) > 1}
    count = sum(len(paths) for paths in found.values())
    return VideoIndex({youtube_id: paths[0] for youtube_id, paths in found.items()}, duplicates, count)
