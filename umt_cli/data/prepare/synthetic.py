"""`umt prepare-data synthetic`: a tiny, seeded video-text data set of coloured shapes moving in four directions.

The class label is the direction of motion, which no single frame shows, so a model must use time to classify.
Each video also has three captions ("a red circle moves to the left", ...) for retrieval and video-text training;
the first frame of every training video is also saved as a still image with captions of its own ("a red circle"),
an image-text corpus for stage 2, and `bert/` is a tiny WordPiece vocabulary of the captions' words with a tiny BERT
config (no weights), so the quickstart's text encoder needs no download.
Output (relative paths throughout):
    videos/{split}/{split}_{i:04d}.mp4   {split}.csv (`path,label`)
    {split}.json ([{"video", "caption": [...], "label", "colour", "shape", "direction"}])
    images/train/train_{i:04d}.png       train_images.json ([{"image", "caption": [...]}])
    bert/{vocab.txt, config.json, tokenizer_config.json}
    classes.txt                          manifest.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umt_cli.data.prepare.encode import write_h264
from umt_cli.data.text import write_tiny_bert
from umt_cli.recipe.prepare import SyntheticSource
from umt_cli.utils.progress import progress

__all__ = [
    "COLOURS",
    "SHAPES",
    "DIRECTIONS",
    "VideoSpec",
    "video_spec",
    "render_frames",
    "motion_caption",
    "prepare_synthetic",
]

FORMAT = 4
"""Version of the layout above (2: still images and the tiny BERT folder; 3: each video entry also names its
`colour`, `shape` and `direction`; 4: the tiny BERT has no dropout); `umt quickstart` regenerates older sets."""

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy) in image coordinates
SPLITS = ("train", "val", "test")
WHERE = {"left": "to the left", "right": "to the right", "up": "upwards", "down": "downwards"}


def motion_caption(colour: str, shape: str, direction: str) -> str:
    """The first caption of a video: `a red circle moves to the left`. Captions that differ only in `direction`
    describe what no single frame shows (the quickstart's motion check compares them)."""
    return f"a {colour} {shape} moves {WHERE[direction]}"


@dataclass(frozen=True)
class VideoSpec:
    """What one synthetic video shows."""

    colour: str
    shape: str
    direction: str
    start: tuple[float, float]  # centre (x, y) in pixels at frame 0
    radius: float
    speed: float  # pixels per frame

    @property
    def label(self) -> int:
        return list(DIRECTIONS).index(self.direction)

    def still_captions(self) -> list[str]:
        """Captions of the first frame alone (no motion to describe)."""
        return [f"a {self.colour} {self.shape}", f"a {self.shape} that is {self.colour}"]

    def captions(self) -> list[str]:
        where = WHERE[self.direction]
        return [
            motion_caption(self.colour, self.shape, self.direction),
            f"a {self.shape} that is {self.colour} moving {self.direction}",
            f"the {self.colour} {self.shape} slides {where} across the frame",
        ]


def video_spec(
    rng: np.random.Generator,
    index: int,
    *,
    width: int,
    height: int,
    num_frames: int,
    colours: int = len(COLOURS),
    shapes: int = len(SHAPES),
) -> VideoSpec:
    """Draw one video. Its direction, colour and shape cycle with `index` over every combination of the first
    `colours` colours and `shapes` shapes, so each split is balanced and a split of one full cycle shows each
    combination once; position, size and speed are random."""
    direction = list(DIRECTIONS)[index % len(DIRECTIONS)]
    appearance = (index // len(DIRECTIONS)) % (colours * shapes)
    colour, shape = list(COLOURS)[appearance // shapes], SHAPES[appearance % shapes]
    radius = float(rng.uniform(0.12, 0.18) * min(width, height))
    dx, dy = DIRECTIONS[direction]
    travel_room = (width if dx else height) - 2 * radius - 2
    speed = float(rng.uniform(0.5, 0.9) * travel_room / max(num_frames - 1, 1))
    travel = speed * (num_frames - 1)

    def start_on(axis_len: float, moves: int) -> float:
        low, high = radius + 1, axis_len - radius - 1
        if moves > 0:
            high -= travel
        elif moves < 0:
            low += travel
        return float(rng.uniform(low, max(low, high)))

    return VideoSpec(
        colour=colour,
        shape=shape,
        direction=direction,
        start=(start_on(width, dx), start_on(height, dy)),
        radius=radius,
        speed=speed,
    )


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A static, low-contrast texture, so frames are not flat but the only motion is the shape's."""
    coarse = rng.integers(30, 80, size=(height // 8 + 1, width // 8 + 1, 1), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:height, :width].repeat(3, axis=2)


def render_frames(spec: VideoSpec, background: np.ndarray, num_frames: int) -> np.ndarray:
    """uint8 (T, H, W, 3) frames of the moving shape over `background`."""
    height, width = background.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = DIRECTIONS[spec.direction]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        cx, cy = spec.start[0] + dx * spec.speed * t, spec.start[1] + dy * spec.speed * t
        u, v, r = xs - cx, ys - cy, spec.radius
        if spec.shape == "circle":
            inside = u * u + v * v <= r * r
        elif spec.shape == "square":
            inside = (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
        else:  # upward-pointing triangle
            inside = (v >= -r) & (v <= r) & (np.abs(u) <= (v + r) * 0.6)
        frames[t] = background
        frames[t][inside] = COLOURS[spec.colour]
    return frames


def prepare_synthetic(source: SyntheticSource) -> dict[str, object]:
    """Write the data set described by `source`; returns a summary. The same seed writes the same files."""
    out = Path(source.out)
    sizes = {"train": source.train, "val": source.val, "test": source.test}
    counts: dict[str, int] = {}
    stills: list[dict[str, object]] = []
    with progress("synthetic videos", sum(sizes.values())) as bar:
        for split_id, split in enumerate(SPLITS):
            rows, annotations = [], []
            for i in range(sizes[split]):
                rng = np.random.default_rng([source.seed, split_id, i])
                spec = video_spec(rng, i, width=source.width, height=source.height, num_frames=source.num_frames,
                                  colours=source.colours, shapes=source.shapes)  # fmt: skip
                rel = f"videos/{split}/{split}_{i:04d}.mp4"
                frames = render_frames(spec, _background(rng, source.width, source.height), source.num_frames)
                write_h264(out / rel, frames, fps=source.fps, width=source.width, height=source.height)
                rows.append(f"{rel},{spec.label}")
                annotations.append(_annotation(rel, spec))
                if split == "train":
                    stills.append(_write_still(out, i, spec, frames[0]))
                bar.advance()
            (out / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
            (out / f"{split}.json").write_text(json.dumps(annotations, indent=1) + "\n", encoding="utf-8")
            counts[split] = len(rows)
    (out / "train_images.json").write_text(json.dumps(stills, indent=1) + "\n", encoding="utf-8")
    (out / "classes.txt").write_text("\n".join(f"moving {d}" for d in DIRECTIONS) + "\n", encoding="utf-8")
    # No dropout: a BERT trained from scratch on these few dozen captions aligns far faster without it (contrastive
    # only, 800 steps of 64 on 512 videos: test text->video R@1 0.31-0.38 without dropout, 0.08 with 0.1; chance 0.02).
    write_tiny_bert(out / "bert", words=caption_words(), dropout=0.0)
    manifest = {"kind": "synthetic", "format": FORMAT, "options": source.model_dump(mode="json"), "videos": counts,
                "images": len(stills), "classes": 4}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return {"out": str(out), "videos": counts, "images": len(stills), "classes": len(DIRECTIONS)}


def _annotation(rel: str, spec: VideoSpec) -> dict[str, object]:
    """A video's annotation entry: its captions, its class, and what it shows."""
    return {"video": rel, "caption": spec.captions(), "label": spec.label, "colour": spec.colour, "shape": spec.shape,
            "direction": spec.direction}  # fmt: skip


def _write_still(out: Path, index: int, spec: VideoSpec, frame: np.ndarray) -> dict[str, object]:
    """Save a video's first frame as a PNG; its annotation entry."""
    from PIL import Image

    rel = f"images/train/train_{index:04d}.png"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(out / rel)
    return {"image": rel, "caption": spec.still_captions()}


def caption_words() -> list[str]:
    """Every word any synthetic caption can use (the tiny BERT vocabulary), in a fixed order."""
    fixed = "a the that is moves moving slides to left right upwards downwards up down across frame".split()
    return [*fixed, *COLOURS, *SHAPES]
