"""A confusion-matrix heat map as a PNG, drawn with Pillow alone (no plotting library to install).

Rows are true classes and columns predicted ones; a cell's colour is its count divided by its row's total, so a
rare class is as readable as a common one, from white (0) to dark blue (1). Counts are written in the cells when
the grid is small enough to read them. Past `max_classes` classes a picture is unreadable, so none is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from umt_cli.utils.files import atomic_path

__all__ = ["ConfusionLayout", "confusion_layout", "confusion_png"]

MAX_NAME = 24
"""Characters of a class name shown on an axis; longer names end in `…`."""
COUNTS_UP_TO = 20
"""Counts are written in the cells of grids with at most this many classes."""
LOW, HIGH = (255, 255, 255), (8, 48, 107)  # white -> dark blue, for row fractions 0 -> 1
GRID_LINE, TEXT = (224, 224, 224), (0, 0, 0)
PAD = 8
TITLE = "Confusion matrix (rows: true, columns: predicted; colour: fraction of the row)"


@dataclass(frozen=True)
class ConfusionLayout:
    """Where the grid sits in the image: cell (row r, column c) spans x in [left + c * cell, left + (c + 1) * cell)
    and y in [top + r * cell, top + (r + 1) * cell)."""

    left: int
    top: int
    cell: int
    width: int
    height: int


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def _text_size(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def confusion_layout(class_names: Sequence[str], title: str = TITLE) -> ConfusionLayout:
    """The geometry `confusion_png` draws with: cells of 14 to 40 px (about 600 px of grid), names on the left and
    (turned) on top, the title above."""
    font = _font()
    cell = max(14, min(40, 600 // max(len(class_names), 1)))
    names = [_short(n) for n in class_names] or [""]
    label = max(_text_size(font, n)[0] for n in names) + PAD
    line = _text_size(font, "Ag")[1] + PAD
    left = PAD + line + label  # axis title "true", then the row names
    top = PAD + line + line + label  # title, axis title "predicted", then the turned column names
    grid = cell * len(class_names)
    width = max(left + grid + PAD, PAD + _text_size(font, title)[0] + PAD)
    return ConfusionLayout(left=left, top=top, cell=cell, width=width, height=top + grid + PAD)


def _row_fractions(matrix: torch.Tensor) -> torch.Tensor:
    """Each row divided by its total (rows without videos stay 0)."""
    totals = matrix.sum(1, keepdim=True).clamp_min(1)
    return matrix / totals  # (C, C)


def _colour(fraction: float) -> tuple[int, int, int]:
    return tuple(round(lo + (hi - lo) * fraction) for lo, hi in zip(LOW, HIGH))  # type: ignore[return-value]


def _draw_cells(draw: ImageDraw.ImageDraw, counts: torch.Tensor, layout: ConfusionLayout, font: object) -> None:
    fractions = _row_fractions(counts.double())
    size = len(counts)
    for r in range(size):
        for c in range(size):
            x0, y0 = layout.left + c * layout.cell, layout.top + r * layout.cell
            box = (x0, y0, x0 + layout.cell - 1, y0 + layout.cell - 1)
            draw.rectangle(box, fill=_colour(float(fractions[r, c])), outline=GRID_LINE)
            if size <= COUNTS_UP_TO and counts[r, c]:
                ink = (255, 255, 255) if fractions[r, c] > 0.5 else TEXT  # readable on dark and light cells
                centre = (x0 + layout.cell / 2, y0 + layout.cell / 2)
                draw.text(centre, str(int(counts[r, c])), fill=ink, font=font, anchor="mm")


def _draw_labels(image: Image.Image, names: Sequence[str], layout: ConfusionLayout, font: object, title: str) -> None:
    draw = ImageDraw.Draw(image)
    line = _text_size(font, "Ag")[1] + PAD  # type: ignore[arg-type]
    draw.text((PAD, PAD), title, fill=TEXT, font=font)
    draw.text((layout.left, PAD + line), "predicted", fill=TEXT, font=font)
    axis = Image.new("RGB", _text_size(font, "true"), "white")  # type: ignore[arg-type]
    ImageDraw.Draw(axis).text((0, 0), "true", fill=TEXT, font=font, anchor="lt")
    image.paste(axis.rotate(90, expand=True), (PAD, layout.top))
    for i, name in enumerate(_short(n) for n in names):
        middle = layout.top + i * layout.cell + layout.cell / 2
        draw.text((layout.left - PAD // 2, middle), name, fill=TEXT, font=font, anchor="rm")
        w, h = _text_size(font, name)  # type: ignore[arg-type]
        label = Image.new("RGB", (w + 2, h + 2), "white")
        ImageDraw.Draw(label).text((1, 0), name, fill=TEXT, font=font, anchor="lt")
        turned = label.rotate(90, expand=True)  # reads bottom to top, ending next to its column
        x = layout.left + i * layout.cell + (layout.cell - turned.width) // 2
        image.paste(turned, (x, layout.top - PAD // 2 - turned.height))


def confusion_png(
    matrix: torch.Tensor | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | Path,
    *,
    max_classes: int = 50,
    title: str = TITLE,
) -> Path | None:
    """Draw a confusion matrix as a PNG heat map, atomically.

    Args:
        matrix: (C, C) counts, rows = true class, columns = predicted.
        class_names: C names, in label order (long ones are shortened).
        path: Where to write the PNG.
        max_classes: Above this many classes nothing is written.
        title: Printed above the grid.

    Returns:
        The file written, or None when there are more than `max_classes` classes (the caller says so).
    """
    counts = torch.as_tensor(matrix, dtype=torch.long)
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"expected a ({len(class_names)}, {len(class_names)}) matrix, got {tuple(counts.shape)}")
    if len(class_names) > max_classes:
        return None
    font = _font()
    layout = confusion_layout(class_names, title)
    image = Image.new("RGB", (layout.width, layout.height), "white")
    _draw_cells(ImageDraw.Draw(image), counts, layout, font)
    _draw_labels(image, class_names, layout, font, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
