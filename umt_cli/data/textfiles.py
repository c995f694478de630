"""Reading the text files users hand us (lists, CSVs, label maps, annotations) with one-line errors.

A file in another encoding, a CSV with a runaway quote, a folder where a file belongs or a broken JSON line must end
in one line that names the file and the line, not in a `UnicodeDecodeError`, `csv.Error` or `IsADirectoryError`
traceback. Every reader of user-supplied text in `umt_cli.data` goes through `read_text` and, for CSV and JSON,
`csv_rows` and `json_records`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from umt_cli.errors import DataError, UsageError
from umt_cli.utils.files import not_utf8_message

__all__ = ["read_text", "csv_rows", "json_records"]


def read_text(path: str | Path, *, what: str = "text") -> str:
    """The text of a UTF-8 file (a leading byte-order mark removed, line ends kept).

    Args:
        path: The file.
        what: What the file holds, for messages ("label map", "video list", ...).

    Raises:
        UsageError: `path` does not exist or is a folder.
        DataError: `path` cannot be read, or is not UTF-8 (the message names the line and column).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not the {what} file") from None
    except FileNotFoundError:
        raise UsageError(f"{path}: {what} file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the {what} file ({error.strerror})") from None
    data = data.removeprefix(codecs.BOM_UTF8)  # Excel and Notepad write one; it is no part of the first field
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{not_utf8_message(path, data, error.start)}; save the file as UTF-8") from None


class _CountedLines:
    """The lines of a text, counting how many were handed out (the csv module's `line_num` lags on errors)."""

    def __init__(self, text: str) -> None:
        self._lines = iter(io.StringIO(text, newline=""))  # splits at \n, \r\n and \r only, as a CSV file would
        self.count = 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        return line


def csv_rows(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, fields) for each non-blank row of a CSV text; a malformed CSV is a `DataError`.

    The field size limit of the csv module (128 KiB) stays: no Kinetics field comes near it, and the usual cause of
    reaching it is a quote that is never closed, which swallows the rest of the file into one field.
    """
    lines = _CountedLines(text)
    reader = csv.reader(lines)
    while True:
        start = lines.count + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            hint = " (an unclosed quote?)" if "field limit" in str(error) else ""
            raise DataError(f"{path} line {start}: not a readable CSV row: {error}{hint}") from None
        if any(field.strip() for field in fields):
            yield start, fields


def json_records(path: Path, text: str) -> list[object]:
    """The items of a JSON list (the text starts with `[`) or of JSON lines (one value per non-blank line).

    Raises:
        DataError: Invalid JSON, naming the line (of the file, also for JSON lines) and the column.
    """
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(_bad_json(path, error.lineno, error)) from None
    records = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(_bad_json(path, number, error)) from None
    return records


def _bad_json(path: Path, line: int, error: json.JSONDecodeError) -> str:
    return f"{path} line {line}: not valid JSON or JSON lines ({error.msg} at column {error.colno})"
