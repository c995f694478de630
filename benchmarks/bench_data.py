"""Training-clip throughput per worker (one decode thread): a naive official-style baseline vs this pipeline.

Settings, measured in the same run on the same generated clips (10 s, 30 fps, 340x256 H.264, the encoder's default
keyframe interval of 250 frames, like raw Kinetics files); 8 frames, TSN sparse sampling, multi-scale crop to 224,
flip, ImageNet normalisation:
  (1) naive: full-resolution decord decode of the selected frames, then per-frame PIL crop + resize and per-frame
      normalisation, the way the official implementation computes it;
  (2) umt on the original clips (default backend, uint8 crop/resize on the whole clip, one fused normalisation);
  (3) umt on the same clips after `umt prepare-data --resize-short-side N` (its default keyframe interval and
      fast-decode encoding).
(2) and (3) use the default backend (`auto`: PyAV); a last line shows the decord backend.
Prints the median clips/s of each over several rounds, the ratios to (1), and the change in disk size.

    python benchmarks/bench_data.py [--clips 16] [--rounds 5] [--short-side 256] [--keyframe-interval 8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from umt_cli.data.datasets import ClipLoader, VideoListDataset
from umt_cli.data.prepare.encode import write_h264
from umt_cli.data.prepare.reencode import reencode_many
from umt_cli.data.sampling import FrameSampler, sparse_indices
from umt_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TrainTransform, multiscale_crop_box
from umt_cli.utils.seed import generator_for

SIZE, FRAMES = 224, 8


def make_clip(path: Path, seed: int, *, seconds: int = 10, fps: int = 30, width: int = 340, height: int = 256) -> None:
    """Camera-like content: a panning textured background with moving blobs (compresses like real footage)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((width * 2, height * 2), Image.BICUBIC))
    ys, xs = np.mgrid[0:height, 0:width]
    blobs = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-3, 3), rng.uniform(-2, 2)) for _ in range(3)]

    def frames():
        for t in range(seconds * fps):
            ox, oy = int(width / 2 + 100 * np.sin(t / 60)), int(height / 2 + 60 * np.cos(t / 80))
            frame = texture[oy : oy + height, ox : ox + width].copy()
            for bx, by, vx, vy in blobs:
                cx, cy = (bx + vx * t) % width, (by + vy * t) % height
                frame[(xs - cx) ** 2 + (ys - cy) ** 2 < 400] = (230, 80, 40)
            yield frame

    write_h264(path, frames(), fps=fps, width=width, height=height, keyframe_interval=None, preset="medium")


def naive_clip(path: Path, generator: torch.Generator) -> torch.Tensor:
    """The official recipe: decord at full resolution, then per-frame PIL crop/resize/flip and normalisation."""
    import decord

    reader = decord.VideoReader(str(path), num_threads=1)
    frames = reader.get_batch(sparse_indices(len(reader), FRAMES, generator=generator)).asnumpy()
    images = [Image.fromarray(f) for f in frames]
    left, top, w, h = multiscale_crop_box(images[0].width, images[0].height, SIZE, generator=generator)
    images = [im.crop((left, top, left + w, top + h)).resize((SIZE, SIZE), Image.BILINEAR) for im in images]
    if torch.rand(1, generator=generator).item() < 0.5:
        images = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]
    stacked = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(3, 0, 1, 2).float().div(255)
    for channel, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD)):  # GroupNormalize, one channel at a time
        stacked[channel].sub_(mean).div_(std)
    return stacked  # (C, T, H, W)


def clips_per_second(load, paths: list[Path], rounds: int) -> float:
    """Median over rounds of clips/s when loading every clip once, sequentially, in this one process. Round r uses
    the generator of (seed 0, epoch r, sample i), so every setting decodes the same frames with the same crops."""
    rates = []
    for r in range(rounds):
        start = time.perf_counter()
        for i, path in enumerate(paths):
            load(path, (r, i), generator_for(0, r, i, 0))  # the dataset's own per-sample generator
        rates.append(len(paths) / (time.perf_counter() - start))
    return statistics.median(rates)


def umt_loader(root: Path, paths: list[Path], backend: str = "auto") -> VideoListDataset:
    """The training dataset exactly as a distill recipe builds it (defaults: backend auto = PyAV)."""
    (root / f"{backend}.csv").write_text("".join(f"{p.relative_to(root)},0\n" for p in paths))
    loader = ClipLoader(FrameSampler("sparse", FRAMES, train=True), backend=backend)
    return VideoListDataset(root / f"{backend}.csv", root, loader=loader, transform=TrainTransform(SIZE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--short-side", type=int, default=256)
    parser.add_argument("--keyframe-interval", type=int, default=None, help="default: prepare-data's default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        originals = [root / "orig" / f"clip_{i:03d}.mp4" for i in range(args.clips)]
        print(f"generating {args.clips} clips (10 s, 30 fps, 340x256, keyframe interval 250) ...", flush=True)
        for i, path in enumerate(originals):
            make_clip(path, i)
        resized = [root / "small" / p.name for p in originals]
        from umt_cli.recipe.prepare import Kinetics710Source

        gop = args.keyframe_interval or Kinetics710Source.model_fields["keyframe_interval"].default
        crf = Kinetics710Source.model_fields["crf"].default
        failures = reencode_many(
            list(zip(originals, resized)), short_side=args.short_side, keyframe_interval=gop, crf=crf, workers=2
        )
        assert not any(failures.values()), failures
        dataset_orig, dataset_small = umt_loader(root, originals), umt_loader(root, resized)
        decord_orig, decord_small = umt_loader(root, originals, "decord"), umt_loader(root, resized, "decord")
        naive = clips_per_second(lambda p, key, g: naive_clip(p, g), originals, args.rounds)
        ours = clips_per_second(lambda p, key, g: dataset_orig[key], originals, args.rounds)
        ours_small = clips_per_second(lambda p, key, g: dataset_small[key], resized, args.rounds)
        info = [
            clips_per_second(lambda p, key, g: decord_orig[key], originals, args.rounds),
            clips_per_second(lambda p, key, g: decord_small[key], resized, args.rounds),
        ]
        size = sum(p.stat().st_size for p in originals), sum(p.stat().st_size for p in resized)
    print(f"torch {torch.__version__}, 1 thread, {args.clips} clips x {args.rounds} rounds, medians")
    print(f"(1) naive baseline, original clips          {naive:7.2f} clips/s  1.00x")
    print(f"(2) umt pipeline, original clips            {ours:7.2f} clips/s  {ours / naive:.2f}x")
    print(
        f"(3) umt pipeline, short side {args.short_side}, keyframes every {gop}"
        f"  {ours_small:7.2f} clips/s  {ours_small / naive:.2f}x"
    )
    print(f"disk: {size[0] / 2**20:.1f} MiB -> {size[1] / 2**20:.1f} MiB ({size[1] / size[0]:.2f}x)")
    print(f"(info) backend decord: original {info[0]:.2f} clips/s ({info[0] / naive:.2f}x), "
          f"re-encoded {info[1]:.2f} clips/s ({info[1] / naive:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
