import pytest
import torch
from PIL import Image

from umt_cli.evaluation.confusion import confusion_layout, confusion_png


def cell_luminance(image: Image.Image, layout, row: int, col: int) -> float:
    """Grey level just inside the cell's top-left corner (away from the count written in its middle)."""
    x = layout.left + col * layout.cell + 2
    y = layout.top + row * layout.cell + 2
    return float(sum(image.getpixel((x, y)))) / 3


@pytest.mark.parametrize("num_classes", [4, 30])
def test_png_is_valid_and_darker_on_a_heavy_diagonal(tmp_path, num_classes):
    g = torch.Generator().manual_seed(num_classes)
    noise = torch.randint(0, 3, (num_classes, num_classes), generator=g)
    matrix = noise + 40 * torch.eye(num_classes, dtype=torch.long)
    names = [f"a rather long class name number {c}" for c in range(num_classes)]
    path = confusion_png(matrix, names, tmp_path / "out" / "confusion.png")
    assert path == tmp_path / "out" / "confusion.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    image = Image.open(path).convert("RGB")
    layout = confusion_layout(names)
    assert image.size == (layout.width, layout.height)
    assert 100 <= image.width <= 2000 and 100 <= image.height <= 2000
    diagonal = [cell_luminance(image, layout, c, c) for c in range(num_classes)]
    off = [cell_luminance(image, layout, r, c) for r in range(num_classes) for c in range(num_classes) if r != c]
    assert max(diagonal) < min(off)
    assert sorted(p.name for p in path.parent.iterdir()) == ["confusion.png"]  # written atomically, nothing left


def test_colours_are_normalised_per_row(tmp_path):
    matrix = [[90, 10, 0], [9, 1, 0], [0, 0, 0]]  # rows 0 and 1 have the same fractions, row 2 no videos
    path = confusion_png(matrix, ["a", "b", "c"], tmp_path / "m.png")
    image = Image.open(path).convert("RGB")
    layout = confusion_layout(["a", "b", "c"])
    for col in range(3):
        assert cell_luminance(image, layout, 0, col) == cell_luminance(image, layout, 1, col)
    lum = {(r, c): cell_luminance(image, layout, r, c) for r in range(3) for c in range(3)}
    assert lum[0, 0] < lum[0, 1] < lum[2, 0]
    assert cell_luminance(image, layout, 2, 2) == cell_luminance(image, layout, 0, 2)  # empty row: all white


def test_too_many_classes_write_nothing(tmp_path):
    names = [str(c) for c in range(51)]
    assert confusion_png(torch.eye(51, dtype=torch.long), names, tmp_path / "big.png") is None
    assert not (tmp_path / "big.png").exists()
    assert confusion_png(torch.eye(51, dtype=torch.long), names, tmp_path / "big.png", max_classes=60) is not None


def test_a_matrix_that_does_not_fit_the_names_is_refused(tmp_path):
    with pytest.raises(ValueError, match="matrix"):
        confusion_png(torch.zeros(3, 3), ["a", "b"], tmp_path / "x.png")
