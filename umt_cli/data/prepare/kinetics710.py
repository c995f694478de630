"""`umt prepare-data kinetics710`: Kinetics-710 lists, label files and a manifest from local K400/600/700 copies.

Kinetics-710 (docs/official-behaviour.md, Kinetics-710) is the union of the K400, K600 and K700 train sets,
deduplicated by YouTube id (a K700 row beats a K600 row beats a K400 row), with evaluation ids removed and the
classes merged to 710. Each list passes the same stages, and the manifest counts what is left after each one and
why the rest went:

    train: union of train rows -> dedup -> exclusion (val+test or val ids of any version) -> missing files
           [-> --verify probes] [-> --resize-short-side copies]
    val:   union of val rows -> dedup -> minus train ids -> missing files [-> probes] [-> copies]
    k400_val / k600_val / k700_val: one version's own val rows -> missing files [-> probes] [-> copies]

Choices where the specification leaves room:
- **Path root.** List paths are relative to the deepest folder holding every given version's video folder (a single
  version: its own folder), written to `videos_root.txt` and the manifest; a loader opens `root / path`. With
  `resize_short_side`, the copies live at `out/videos/<settings>/<the same relative path, .mp4>` and that folder is
  the root. `<settings>` names every encoding setting (`reencode.CopySettings`), so changing one re-encodes into a
  new folder instead of passing old copies off as new; folders no list uses are named in a warning.
- **Which copy of an id.** The file under the version whose row won; when that copy lacks it, the first other
  version (in priority order) that has it, so a partial K700 download is completed from K600/K400 copies.
- **Per-version index space.** `labels_k400.txt` (and 600, 700) is the 710 class order restricted to the classes
  that version's CSVs use, in merged spelling; `k400_val.csv` labels index it. With the OpenGVLab 710 order as
  `label_map` this restricted K400 order is the UniFormer K400 order that released K400 heads use.
- **Label conflicts.** An id whose merged labels differ between versions keeps the label of the winning version; it
  is listed in `label_conflicts.txt`, not dropped.
- **Determinism.** Rows are sorted by path and no file holds a time stamp, so a re-run writes identical bytes. Every
  file is written atomically, and copies that exist are complete, so a re-run after an interruption just finishes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from umt_cli import __version__
from umt_cli.data.prepare.kinetics_inputs import (
    PRIORITY,
    VERSIONS,
    VersionRows,
    VideoIndex,
    index_videos,
    order_classes,
    read_version,
)
from umt_cli.errors import DataError
from umt_cli.recipe.prepare import Kinetics710Source, KineticsVersion
from umt_cli.utils.files import atomic_path, sha256_file

if TYPE_CHECKING:
    from umt_cli.data.prepare.reencode import CopySettings

__all__ = ["EXPECTED_SIZES", "Entry", "VideoList", "prepare_kinetics710"]

EXPECTED_SIZES = {"k710_train": 658_340, "k710_val": 66_803}
"""OpenGVLab/VideoMAEv2 `docs/DATASET.md` (val ids removed from train); a full copy lands near these."""
SIZE_TOLERANCE = 0.1
"""Relative distance from `EXPECTED_SIZES` that earns a warning (val+test removes some more train ids)."""
FORBIDDEN_IN_PATHS = (",", "\n", "\r")
"""The list format is `path,label` split on `,` without quoting, one video per line."""


@dataclass(frozen=True)
class Entry:
    """One video of a list: its id, class name, the version whose row it came from, and its file (None: missing)."""

    youtube_id: str
    label: str
    version: str
    path: Path | None


@dataclass
class VideoList:
    """One output list as it passes the stages: surviving entries, counts after each stage, what was dropped."""

    name: str
    """File stem: `k710_train`, `k710_val`, `k400_val`, ..."""
    classes: list[str]
    """The label space its rows index."""
    entries: dict[str, Entry]
    stages: dict[str, Any] = field(default_factory=dict)
    drops: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """reason -> (id, detail) pairs, one per dropped row."""
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    """(id, labels per version) of ids whose versions disagree on the class; kept with the winning label."""

    def count(self, stage: str) -> None:
        """Record how many entries are left after `stage`."""
        self.stages[stage] = len(self.entries)

    def drop(self, reason: str, details: dict[str, str]) -> None:
        """Remove the ids in `details` (id -> detail) for `reason`."""
        for youtube_id in details:
            del self.entries[youtube_id]
        self.note(reason, sorted(details.items()))

    def note(self, reason: str, pairs: list[tuple[str, str]]) -> None:
        """Record rows that never became entries (duplicates) under `reason`."""
        if pairs:
            self.drops.setdefault(reason, []).extend(pairs)


def prepare_kinetics710(source: Kinetics710Source) -> dict[str, Any]:
    """Build the Kinetics-710 lists, label files and manifest described in the module docstring.

    Args:
        source: The `[source]` table of a `prepare-data` recipe (or the `umt prepare-data kinetics710` options).

    Returns:
        A short summary: output folder, class count, rows per list, drops per reason, warnings.

    Raises:
        UsageError: A missing folder or CSV, or a label map that is not a bijection onto the classes.
        DataError: A malformed CSV, or listed video paths that the list format cannot hold.
    """
    out = _absolute(source.out)
    given = {name: version for name in VERSIONS if (version := getattr(source, name)) is not None}
    versions = {name: read_version(name, version) for name, version in given.items()}
    videos = _index_videos(given, out)
    classes = order_classes(set().union(*(v.classes for v in versions.values())), source.label_map)
    root = Path(os.path.commonpath([_absolute(v.videos) for v in given.values()]))
    lists = _build_lists(versions, videos, classes, source.exclude)
    for video_list in lists:
        _drop_missing(video_list)
    _check_paths(lists, root)
    if source.verify:
        _drop_undecodable(lists, out, source)
    if (settings := _copy_settings(source)) is not None:
        root = _reencode(lists, root, out, settings, source.workers)
    manifest = _manifest(source, given, versions, videos, lists, classes, root)
    _write_outputs(out, lists, classes, root, videos, manifest)
    return {
        "out": str(out),
        "classes": len(classes),
        **{video_list.name: len(video_list.entries) for video_list in lists},
        "dropped": _drop_totals(lists),
        "warnings": manifest["warnings"] or "none",
    }


def _absolute(path: Path) -> Path:
    """An absolute, normalised path that keeps symbolic links as given (lists stay under the user's spelling)."""
    return Path(os.path.abspath(path))


def _index_videos(given: dict[str, KineticsVersion], out: Path) -> dict[str, VideoIndex]:
    """Each version's video index; versions sharing a folder share one walk. Our own output is never indexed."""
    by_folder: dict[str, VideoIndex] = {}
    for version in given.values():
        folder = os.path.realpath(version.videos)
        if folder not in by_folder:
            by_folder[folder] = index_videos(_absolute(version.videos), skip=out)
    return {name: by_folder[os.path.realpath(version.videos)] for name, version in given.items()}


def _find(videos: dict[str, VideoIndex], youtube_id: str, version: str) -> Path | None:
    """The file of an id: under its own version's folder, else under the first other version (priority order)."""
    for name in (version, *PRIORITY):
        if name in videos and youtube_id in videos[name].files:
            return videos[name].files[youtube_id]
    return None


def _build_lists(
    versions: dict[str, VersionRows], videos: dict[str, VideoIndex], classes: list[str], exclude: str
) -> list[VideoList]:
    """Train (deduplicated, evaluation ids excluded), merged val, and one val list per version."""
    train = _union_list("k710_train", "train", versions, videos, classes)
    _exclude(train, _evaluation_sources(versions), exclude)
    val = _union_list("k710_val", "val", versions, videos, classes)
    val.drop("in_train", {yid: "also in k710_train" for yid in val.entries if yid in train.entries})
    val.count("after_train_removal")
    own = [_version_val_list(versions[name], videos, classes) for name in versions]
    return [train, val, *own]


def _union_list(
    name: str, split: str, versions: dict[str, VersionRows], videos: dict[str, VideoIndex], classes: list[str]
) -> VideoList:
    """One split of all versions, deduplicated by id with priority K700 > K600 > K400; conflicts recorded."""
    labels_by_id: dict[str, dict[str, str]] = {}  # id -> version -> label, versions in priority order
    for version in (v for v in PRIORITY if v in versions):
        for youtube_id, label in versions[version].ids[split].items():
            labels_by_id.setdefault(youtube_id, {})[version] = label or ""  # train and val rows always have labels
    entries, duplicates, conflicts = {}, [], []
    for youtube_id, by_version in labels_by_id.items():
        winner, *others = by_version
        entries[youtube_id] = Entry(youtube_id, by_version[winner], winner, _find(videos, youtube_id, winner))
        duplicates += [(youtube_id, f"{other} row (kept {winner})") for other in others]
        if len(set(by_version.values())) > 1:
            conflicts.append((youtube_id, "; ".join(f"{v}={label}" for v, label in by_version.items())))
    video_list = VideoList(name, classes, entries, conflicts=sorted(conflicts))
    video_list.stages["ids_before_dedup"] = sum(len(v.ids[split]) for v in versions.values())
    video_list.count("after_dedup")
    video_list.note("duplicate", sorted(duplicates))
    return video_list


def _evaluation_sources(versions: dict[str, VersionRows]) -> dict[str, list[str]]:
    """Map each evaluation id to the CSV splits that list it, e.g. ["k400 val", "k600 test"]."""
    sources: dict[str, list[str]] = {}
    for name, rows in versions.items():
        for split in ("val", "test"):
            for youtube_id in rows.ids[split]:
                sources.setdefault(youtube_id, []).append(f"{name} {split}")
    return sources


def _exclude(train: VideoList, sources: dict[str, list[str]], rule: str) -> None:
    """Drop train ids listed for evaluation (val and test, or val only); count what each rule would leave."""
    listed = {yid: sources[yid] for yid in train.entries if yid in sources}
    in_val = {yid: ", ".join(where) for yid, where in listed.items() if any(s.endswith(" val") for s in where)}
    test_only = {yid: ", ".join(where) for yid, where in listed.items() if yid not in in_val}
    total = len(train.entries)
    train.stages["after_exclusion"] = {"val+test": total - len(listed), "val": total - len(in_val)}
    train.drop("leak_val", in_val)
    if rule == "val+test":
        train.drop("leak_test", test_only)
    train.stages["test_ids_kept"] = 0 if rule == "val+test" else len(test_only)


def _version_val_list(rows: VersionRows, videos: dict[str, VideoIndex], classes: list[str]) -> VideoList:
    """One version's val rows, labelled in that version's own class space (the 710 order restricted to it)."""
    own = [name for name in classes if name in rows.classes]
    entries = {
        yid: Entry(yid, label or "", rows.name, _find(videos, yid, rows.name)) for yid, label in rows.ids["val"].items()
    }
    video_list = VideoList(f"{rows.name}_val", own, entries)
    video_list.count("ids")
    return video_list


def _drop_missing(video_list: VideoList) -> None:
    missing = {yid: f"no {entry.version} file" for yid, entry in video_list.entries.items() if entry.path is None}
    video_list.drop("missing_file", missing)
    video_list.count("after_missing_files")


def _check_paths(lists: list[VideoList], root: Path) -> None:
    """Refuse paths that would break the unquoted `path,label` format, naming them."""
    bad = sorted(
        {
            str(entry.path)
            for video_list in lists
            for entry in video_list.entries.values()
            if any(char in str(entry.path.relative_to(root)) for char in FORBIDDEN_IN_PATHS)
        }
    )
    if bad:
        shown = ", ".join(repr(p) for p in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise DataError(f"{len(bad)} video path(s) contain ',' or a line break, which the lists cannot hold: {shown}")


def _drop_undecodable(lists: list[VideoList], out: Path, source: Kinetics710Source) -> None:
    """Probe every listed video once (cached in `out/.verify_cache.jsonl`) and drop failures by reason."""
    from umt_cli.data.prepare.verify import probe_videos

    paths = sorted({entry.path for video_list in lists for entry in video_list.entries.values()})
    results = probe_videos(
        paths, timeout_s=source.verify_timeout_s, workers=source.workers, cache=out / ".verify_cache.jsonl"
    )
    for video_list in lists:
        _drop_failures(video_list, results, "verify")
        video_list.count("after_verify")


def _drop_failures(video_list: VideoList, results: dict[Path, str | None], stage: str) -> None:
    """Drop entries whose file failed in `stage`, under the reason `<stage>_<failure reason>`."""
    failed: dict[str, dict[str, str]] = {}
    for yid, entry in video_list.entries.items():
        if (reason := results.get(entry.path)) is not None:
            failed.setdefault(f"{stage}_{reason}", {})[yid] = str(entry.path)
    for reason in sorted(failed):
        video_list.drop(reason, failed[reason])


def _copy_settings(source: Kinetics710Source) -> CopySettings | None:
    """The settings of the re-encoded copies, or None without `resize_short_side`."""
    from umt_cli.data.prepare.reencode import CopySettings

    if not source.resize_short_side:
        return None
    return CopySettings(source.resize_short_side, source.keyframe_interval, source.crf, source.fast_decode)


def _reencode(lists: list[VideoList], root: Path, out: Path, settings: CopySettings, workers: int) -> Path:
    """Re-encode every listed video into `out/videos/<settings folder>` (keeping its relative path), and point the
    lists at the copies. Copies made with other settings sit in other folders and are never reused."""
    from umt_cli.data.prepare.reencode import copies_folder, reencode_many

    copies = copies_folder(out / "videos", settings)
    sources = sorted({entry.path for video_list in lists for entry in video_list.entries.values()})
    target = {src: copies / src.relative_to(root).with_suffix(".mp4") for src in sources}
    results = reencode_many(sorted(target.items()), workers=workers, **asdict(settings))
    for video_list in lists:
        _drop_failures(video_list, results, "reencode")
        video_list.entries = {yid: replace(e, path=target[e.path]) for yid, e in video_list.entries.items()}
        video_list.count("after_reencode")
    return copies


def _drop_totals(lists: list[VideoList]) -> dict[str, int]:
    """Rows dropped per reason over all lists."""
    totals: dict[str, int] = {}
    for video_list in lists:
        for reason, pairs in video_list.drops.items():
            totals[reason] = totals.get(reason, 0) + len(pairs)
    return dict(sorted(totals.items()))


def _manifest(
    source: Kinetics710Source,
    given: dict[str, KineticsVersion],
    versions: dict[str, VersionRows],
    videos: dict[str, VideoIndex],
    lists: list[VideoList],
    classes: list[str],
    root: Path,
) -> dict[str, Any]:
    """Everything needed to audit or reproduce the lists; no time stamps, so identical runs write identical bytes."""
    label_map = source.label_map
    return {
        "tool": "umt prepare-data kinetics710",
        "umt_version": __version__,
        "options": source.model_dump(mode="json"),
        "inputs": {name: _version_inputs(given[name], versions[name], videos[name]) for name in versions},
        "label_order": {"source": "label_map", "path": str(label_map), "sha256": sha256_file(label_map)}
        if label_map is not None
        else {"source": "sorted class names"},
        "classes": {"k710": len(classes), **{name: len(rows.classes) for name, rows in versions.items()}},
        "videos_root": str(root),
        "copies": settings.record() if (settings := _copy_settings(source)) is not None else None,
        "lists": {
            v.name: {
                "rows": len(v.entries),
                "stages": v.stages,
                "dropped": {reason: len(pairs) for reason, pairs in sorted(v.drops.items())},
                "label_conflicts": len(v.conflicts),
            }
            for v in lists
        },
        "side_files": _side_file_names(lists),
        "warnings": _warnings(versions, lists) + _unused_copies(_absolute(source.out), root),
    }


def _version_inputs(version: KineticsVersion, rows: VersionRows, index: VideoIndex) -> dict[str, Any]:
    return {
        "videos": str(_absolute(version.videos)),
        "csvs": [
            {"path": str(_absolute(c.path)), "sha256": c.sha256, "rows": c.rows, "rows_by_split": c.rows_by_split}
            for c in rows.csvs
        ],
        "unique_ids": {split: len(ids) for split, ids in rows.ids.items()},
        "repeated_rows": rows.repeated_rows,
        "video_files": index.count,
        "video_ids": len(index.files),
        "duplicate_file_ids": len(index.duplicates),
    }


def _side_file_names(lists: list[VideoList]) -> list[str]:
    """`dropped_<reason>.txt` for every reason that dropped something, plus the always-written side files."""
    reasons = {reason for v in lists for reason in v.drops}
    return sorted(f"dropped_{reason}.txt" for reason in reasons) + ["duplicate_files.txt", "label_conflicts.txt"]


def _warnings(versions: dict[str, VersionRows], lists: list[VideoList]) -> list[str]:
    missing = [name for name in VERSIONS if name not in versions]
    if missing:
        return [
            f"{', '.join(missing)} not given: Kinetics-710 needs all three versions, and the val/test ids of a "
            "missing version cannot be excluded from train"
        ]
    warnings = []
    for video_list in (v for v in lists if v.name in EXPECTED_SIZES):
        expected, rows = EXPECTED_SIZES[video_list.name], len(video_list.entries)
        if abs(rows - expected) > SIZE_TOLERANCE * expected:
            warnings.append(
                f"{video_list.name} has {rows} videos, far from the {expected} of the released lists "
                "(incomplete video copies, failed probes or the exclude rule change this number)"
            )
    return warnings


def _unused_copies(out: Path, root: Path) -> list[str]:
    """A warning naming what `out/videos` holds besides the copies these lists use: copies made with other settings
    (or by an older umt, which kept them straight in `out/videos`). They are never reused, only taking space."""
    videos = out / "videos"
    if not videos.is_dir():
        return []
    unused = sorted(p.name for p in videos.iterdir() if not p.name.startswith(".") and p != root)
    if not unused:
        return []
    shown = ", ".join(unused[:5]) + (", ..." if len(unused) > 5 else "")
    return [
        f"{videos} also holds copies these lists do not use ({shown}): made with other settings or by an older "
        "umt; delete them to free space"
    ]


def _write_outputs(
    out: Path, lists: list[VideoList], classes: list[str], root: Path, videos: dict[str, VideoIndex], manifest: dict
) -> None:
    """Write every file atomically, the manifest last; remove side and per-version files an earlier run left."""
    written = {"labels_k710.txt": _lines(classes), "videos_root.txt": f"{root}\n"}
    for video_list in lists:
        index = {name: i for i, name in enumerate(video_list.classes)}
        rows = sorted(f"{e.path.relative_to(root).as_posix()},{index[e.label]}" for e in video_list.entries.values())
        written[f"{video_list.name}.csv"] = _lines(rows)
        if video_list.name.endswith("_val") and not video_list.name.startswith("k710"):
            written[f"labels_{video_list.name[:-4]}.txt"] = _lines(video_list.classes)
    written.update(_side_files(lists, videos))
    for stale in _stale_outputs(out, written):
        stale.unlink()
    for name, text in written.items():
        _write_text(out / name, text)
    _write_text(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def _side_files(lists: list[VideoList], videos: dict[str, VideoIndex]) -> dict[str, str]:
    """Tab-separated id lists, by file name.

    `dropped_<reason>.txt` and `label_conflicts.txt` hold (list, id, detail) lines; `duplicate_files.txt` holds
    (version, id, every file of that id) lines.
    """
    by_file: dict[str, list[str]] = {"label_conflicts.txt": []}
    for video_list in lists:
        for reason, pairs in [*video_list.drops.items(), ("label_conflicts", video_list.conflicts)]:
            name = "label_conflicts.txt" if reason == "label_conflicts" else f"dropped_{reason}.txt"
            by_file.setdefault(name, []).extend(f"{video_list.name}\t{yid}\t{detail}" for yid, detail in pairs)
    by_file["duplicate_files.txt"] = [
        "\t".join([name, yid, *map(str, paths)])
        for name, index in videos.items()
        for yid, paths in sorted(index.duplicates.items())
    ]
    return {name: _lines(sorted(lines)) for name, lines in by_file.items()}


def _stale_outputs(out: Path, written: dict[str, str]) -> list[Path]:
    """Files an earlier run wrote that this run would not.

    A reason that no longer drops anything, or a version no longer given, would otherwise leave a file that
    misdescribes these lists.
    """
    patterns = ("dropped_*.txt", "k[0-9]*_val.csv", "labels_k[0-9]*.txt")
    return sorted({p for pattern in patterns for p in out.glob(pattern) if p.name not in written})


def _lines(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary sibling and `os.replace`, so a reader never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
