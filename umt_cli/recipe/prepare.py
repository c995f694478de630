"""Tables of `stage = "prepare-data"` recipes: one variant per data set (`[source] kind = ...`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from umt_cli.recipe.base import Section, Seed, TomlPath

__all__ = ["KineticsVersion", "Kinetics710Source", "SyntheticSource", "VideoTextSource", "DataSource"]


class KineticsVersion(Section):
    """One local Kinetics copy: its videos and its official CSVs."""

    videos: TomlPath
    """Folder holding the videos (searched recursively; a file is matched by the 11-character YouTube id that
    starts its name)."""
    annotations: TomlPath | None = None
    """A folder of official CSVs (train/validate/test), or one CSV; unset = `<videos>/annotations`, else `<videos>`."""


class Kinetics710Source(Section):
    """Kinetics-710: the K400/K600/K700 train sets merged to 710 classes, evaluation ids removed.

    See docs/official-behaviour.md, Kinetics-710.
    """

    kind: Literal["kinetics710"] = "kinetics710"
    k400: KineticsVersion | None = None
    """The Kinetics-400 copy."""
    k600: KineticsVersion | None = None
    """The Kinetics-600 copy."""
    k700: KineticsVersion | None = None
    """The Kinetics-700 copy."""
    out: TomlPath = Path("data/k710")
    """Output folder for the lists, label files and manifest."""
    exclude: Literal["val+test", "val"] = "val+test"
    """Drop train ids found in any val or test CSV (`val+test`, leak-free) or in val only (`val`, released lists)."""
    label_map: TomlPath | None = None
    """A file with one class name per line that fixes the class order (e.g. OpenGVLab's label_map_k710.txt, so
    released K710 heads line up); unset = sorted order."""
    verify: bool = False
    """Probe every listed video for decodability (in parallel, with a timeout) and drop the ones that fail."""
    verify_timeout_s: float = Field(60.0, gt=0)
    """Seconds one probe may take before the video counts as undecodable."""
    resize_short_side: Annotated[int, Field(gt=0)] | None = None
    """Re-encode every listed video so its shorter side has this many pixels (lists then point at the copies)."""
    keyframe_interval: Annotated[int, Field(gt=0)] = 16
    """Frames between keyframes in re-encoded videos: short intervals make sparse frame sampling seek cheaply."""
    crf: Annotated[int, Field(ge=0, le=51)] = 23
    """x264 quality of re-encoded videos (lower = better, larger)."""
    fast_decode: bool = True
    """Encode copies for decoding speed (x264 tune=fastdecode, no B-frames): ~2x faster to decode, ~25% larger."""
    workers: Annotated[int, Field(ge=0)] = 0
    """Parallel processes for --verify and re-encoding; 0 = one per CPU core."""

    @model_validator(mode="after")
    def _needs_a_version(self) -> Kinetics710Source:
        if self.k400 is None and self.k600 is None and self.k700 is None:
            raise ValueError("give at least one of k400, k600, k700")
        return self


class SyntheticSource(Section):
    """A tiny generated video-text data set: coloured shapes moving in one of four directions."""

    kind: Literal["synthetic"] = "synthetic"
    out: TomlPath = Path("data/synthetic")
    """Output folder."""
    train: Annotated[int, Field(ge=1)] = 64
    """Training videos."""
    val: Annotated[int, Field(ge=1)] = 16
    """Validation videos."""
    test: Annotated[int, Field(ge=1)] = 16
    """Test videos."""
    num_frames: Annotated[int, Field(ge=2)] = 32
    """Frames per video."""
    fps: Annotated[int, Field(ge=1)] = 16
    """Frame rate written into the files."""
    width: Annotated[int, Field(ge=16)] = 96
    """Frame width in pixels (even)."""
    height: Annotated[int, Field(ge=16)] = 80
    """Frame height in pixels (even)."""
    colours: Annotated[int, Field(ge=1, le=4)] = 4
    """How many of the colours (red, green, blue, yellow) the videos use."""
    shapes: Annotated[int, Field(ge=1, le=3)] = 3
    """How many of the shapes (circle, square, triangle) the videos use."""
    seed: Seed = 0
    """Seed of the generator: the same seed writes the same videos."""

    @model_validator(mode="after")
    def _even_size(self) -> SyntheticSource:
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even (H.264 4:2:0)")
        return self


class VideoTextSource(Section):
    """Check and normalise a video-text annotation file (JSON list or JSONL of {video|image, caption})."""

    kind: Literal["video-text"] = "video-text"
    annotations: TomlPath
    """The annotation file: a JSON list (or JSONL) of objects with `video` or `image` and `caption`."""
    root: TomlPath = Path(".")
    """Folder the media paths are relative to."""
    out: TomlPath
    """Where the normalised annotation file is written (its manifest goes beside it)."""
    verify: bool = False
    """Also probe every video for decodability (slower)."""
    verify_timeout_s: float = Field(60.0, gt=0)
    """Seconds one probe may take before the video counts as undecodable."""
    workers: Annotated[int, Field(ge=0)] = 0
    """Parallel processes for --verify; 0 = one per CPU core."""


DataSource = Annotated[Kinetics710Source | SyntheticSource | VideoTextSource, Field(discriminator="kind")]
