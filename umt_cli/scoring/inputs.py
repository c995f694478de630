"""What `umt score` reads: prompt files, video folders or lists, and the pairing of prompts with videos by id.

Prompts: a JSON object `{id: prompt}`; a JSON list or JSON lines of objects with an id (`id`, or `video`, whose
file stem is the id) and a prompt (`prompt`, `caption` or `text`), the annotation files of FETV and ChronoMagic
included; or a CSV with a header naming those columns. Videos: a folder (its video files, by stem) or a text file
of paths, one a line (relative to its folder). A prompt id is matched with the video of the same stem.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from umt_cli.errors import DataError, UsageError
from umt_cli.utils.files import not_utf8_message

__all__ = ["VIDEO_SUFFIXES", "read_prompts", "list_videos", "Pairing", "pair_prompts"]

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mkv", ".avi", ".mov", ".m4v")
ID_KEYS = ("id", "video", "video_id", "prompt_id")
PROMPT_KEYS = ("prompt", "caption", "text")


def read_prompts(path: str | Path) -> dict[str, str]:
    """{id: prompt} from `path` (see the module docstring), in file order.

    Raises:
        UsageError: A missing file. DataError: An unreadable, empty or malformed file, or a repeated id, named with
            the line or entry.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--prompts: {path} {'is a folder' if path.is_dir() else 'not found'}")
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"--prompts {path}: the file is empty")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        prompts = _from_records(rows, path, what="row", first=2)
    elif path.suffix.lower() == ".jsonl":
        prompts = _from_records(_json_lines(text, path), path, what="line", first=1)
    else:
        prompts = _from_json(_json(text, path), path)
    if not prompts:
        raise DataError(f"--prompts {path}: no prompts in the file")
    return prompts


def _read_text(path: Path, option: str = "--prompts") -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{option} {path}: cannot be read ({error.strerror or error})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{option} {not_utf8_message(path, data, error.start)}") from None


def _json(text: str, path: Path) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"--prompts {path}: not JSON (line {error.lineno}: {error.msg})") from None


def _json_lines(text: str, path: Path) -> list[object]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"--prompts {path}: line {number} is not JSON ({error.msg})") from None
    return records


def _from_json(value: object, path: Path) -> dict[str, str]:
    if isinstance(value, dict):
        bad = next((key for key, prompt in value.items() if not isinstance(prompt, str)), None)
        if bad is not None:
            raise DataError(f"--prompts {path}: the prompt of id {bad!r} is not a string")
        return {str(key): prompt for key, prompt in value.items()}
    if isinstance(value, list):
        return _from_records(value, path, what="entry", first=0)
    raise DataError(f"--prompts {path}: expected an object {{id: prompt}} or a list of records")


def _from_records(records: list, path: Path, *, what: str, first: int) -> dict[str, str]:
    """{id: prompt} of records that each name an id and a prompt; `what`/`first` number them in errors."""
    prompts: dict[str, str] = {}
    for number, record in enumerate(records, first):
        where = f"--prompts {path}: {what} {number}"
        if not isinstance(record, dict):
            raise DataError(f"{where} is not an object")
        id_key = next((k for k in ID_KEYS if record.get(k) not in (None, "")), None)
        prompt_key = next((k for k in PROMPT_KEYS if isinstance(record.get(k), str)), None)
        if id_key is None or prompt_key is None:
            missing = " or ".join(ID_KEYS if id_key is None else PROMPT_KEYS)
            raise DataError(f"{where} has no {missing}")
        key = str(record[id_key])
        key = Path(key).stem if id_key == "video" else key
        if key in prompts:
            raise DataError(f"{where} repeats the id {key!r}")
        prompts[key] = record[prompt_key]
    return prompts


def list_videos(source: str | Path, *, option: str = "--videos") -> dict[str, Path]:
    """{id: path} of a folder's video files (id = file stem) or of a list file's paths.

    Raises:
        UsageError: A missing source. DataError: No videos, or two files with the same stem.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    elif source.is_file():
        lines = _read_text(source, option).splitlines()
        paths = [source.parent / line.strip() for line in lines if line.strip() and not line.startswith("#")]
    else:
        raise UsageError(f"{option}: {source} not found")
    if not paths:
        raise DataError(f"{option} {source}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    videos: dict[str, Path] = {}
    for path in paths:
        if path.stem in videos:
            raise DataError(f"{option} {source}: two videos with the id {path.stem!r}: {videos[path.stem]}, {path}")
        videos[path.stem] = path
    return videos


@dataclass(frozen=True)
class Pairing:
    """Prompts matched with videos by id: `ids`, `prompts` and `videos` aligned; `no_video` lists prompt ids
    without a video, `unused_videos` counts videos without a prompt."""

    ids: list[str]
    prompts: list[str]
    videos: list[Path]
    no_video: list[str]
    unused_videos: int


def pair_prompts(prompts: dict[str, str], videos: dict[str, Path]) -> Pairing:
    """Match by id, in prompt order.

    Raises:
        DataError: Not one prompt has a video (a wrong folder, or ids that do not match the file names).
    """
    ids = [key for key in prompts if key in videos]
    if not ids:
        shown = ", ".join(list(prompts)[:3])
        examples = ", ".join(p.name for p in list(videos.values())[:3])
        raise DataError(f"no prompt id matches a video file name (ids such as {shown}; videos such as {examples})")
    return Pairing(
        ids=ids,
        prompts=[prompts[key] for key in ids],
        videos=[videos[key] for key in ids],
        no_video=[key for key in prompts if key not in videos],
        unused_videos=len(set(videos) - set(prompts)),
    )
