"""Recognise a truncated video file from its container structure, before any decoder reads it.

A download cut short keeps its header, and decoders disagree about such a file: decord refuses to open it, PyAV opens
it and decodes the frames that are there, so the same file would count as a failure with one backend and quietly
train on a part of the video with the other. `open_video` (and re-encoding) ask `find_truncation` first, so both
backends report it as "truncated". Two container families are read, those of Kinetics-style downloads:

- ISO BMFF (mp4, mov, m4v, 3gp): a top-level box that runs past the end of the file, or no `moov` box (the index an
  interrupted writer or download never wrote);
- Matroska / WebM: a Segment whose declared size runs past the end of the file (unless it declares "unknown").

Other containers are left to the decoders. Only a few header bytes are read, so the check costs next to nothing.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

__all__ = ["find_truncation"]

BMFF_FIRST_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide"})
"""Box types a real MP4/QuickTime file starts with (`wide`/`mdat`/`moov` in old QuickTime files)."""
EBML_MAGIC = bytes.fromhex("1a45dfa3")
MATROSKA_SEGMENT = bytes.fromhex("18538067")


def find_truncation(path: str | Path) -> str | None:
    """Why `path` looks cut short (e.g. "its mdat box needs 4028 bytes, the file has 2685"), or None.

    None also for files in containers this module does not read and for files damaged in other ways: deciding those
    is the decoder's job.
    """
    with open(path, "rb") as file:
        head = file.read(8)
        size = file.seek(0, 2)
        if head[4:8] in BMFF_FIRST_BOXES:
            return _bmff_truncation(file, size)
        if head[:4] == EBML_MAGIC:
            return _matroska_truncation(file, size)
    return None


def _bmff_truncation(file: BinaryIO, size: int) -> str | None:
    """Walk the top-level boxes (8-byte header: 32-bit size, type; size 1 = a 64-bit size follows)."""
    offset, seen_moov = 0, False
    while offset + 8 <= size:
        file.seek(offset)
        header = file.read(16)
        box_size, kind = struct.unpack(">I4s", header[:8])
        name = kind.decode("latin-1")
        if box_size == 1:
            if len(header) < 16:
                return f"the header of its {name} box is cut off at byte {size}"
            box_size = struct.unpack(">Q", header[8:16])[0]
        if box_size == 0:  # "to the end of the file": nothing declared that could be missing
            return None if seen_moov or kind == b"moov" else "it has no moov box (the index of its frames)"
        if box_size < 8 or not all(32 < c < 127 for c in kind):
            return None  # not a box header (damage or trailing junk): for the decoder to judge, not a missing tail
        if offset + box_size > size:
            return f"its {name} box needs {offset + box_size} bytes, the file has {size}"
        seen_moov = seen_moov or kind == b"moov"
        offset += box_size
    return None if seen_moov else "it has no moov box (the index of its frames)"


def _matroska_truncation(file: BinaryIO, size: int) -> str | None:
    """Skip the EBML header element, then compare the Segment's declared size with the bytes that follow it."""
    file.seek(0)
    head = file.read(4 + 8)
    header_size, start = _vint(head, 4)
    if header_size is None:
        return None
    file.seek(start + header_size)
    segment = file.read(4 + 8)
    if segment[:4] != MATROSKA_SEGMENT:
        return None
    segment_size, data_start = _vint(segment, 4)
    if segment_size is None:  # "unknown size" (live streams): nothing declared
        return None
    needed = start + header_size + data_start + segment_size
    return f"its Segment needs {needed} bytes, the file has {size}" if needed > size else None


def _vint(data: bytes, pos: int) -> tuple[int | None, int]:
    """An EBML variable-length size at `pos`: (value, or None for "unknown" or unreadable; position after it)."""
    if pos >= len(data) or data[pos] == 0:
        return None, pos
    length = 9 - data[pos].bit_length()  # the count of leading zero bits, plus one
    if pos + length > len(data):
        return None, pos
    value = data[pos] & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = value << 8 | byte
    return (None if value == (1 << 7 * length) - 1 else value), pos + length
