import numpy as np
import pytest
import torch
from PIL import Image

from umt_cli.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    build_train_transform,
    multiscale_crop_box,
    normalize,
    random_resized_crop_box,
    resize_short_side,
    spatial_crops,
)
from umt_cli.recipe.sections import AugmentSection, RandomResizedCrop


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_clip(t: int = 4, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """Natural-ish frames (smooth gradients), so resampling differences stay small."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(t, h // 8, w // 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in small])


def test_multiscale_boxes_follow_the_official_rules():
    width, height, size = 340, 256, 224
    # sides int(256 * s) for s in (1, .875, .75, .66) = 256, 224, 192, 168; (w, h) scale indices differ by <= 1
    allowed = {(256, 256), (224, 256), (256, 224), (224, 224), (192, 224), (224, 192), (192, 192), (168, 192),
               (192, 168), (168, 168)}  # fmt: skip
    seen_offsets, seen_sizes = set(), set()
    g = gen()
    for _ in range(3000):
        left, top, w, h = multiscale_crop_box(width, height, size, generator=g)
        seen_sizes.add((w, h))
        ws, hs = (width - w) // 4, (height - h) // 4
        assert left % ws == 0 if ws else left == 0
        seen_offsets.add((left // ws if ws else 0, top // hs if hs else 0, w, h))
    assert seen_sizes == allowed
    offsets = {(a, b) for a, b, w, h in seen_offsets if (w, h) == (192, 168)}
    assert len(offsets) == 13  # corners, centre, edge midpoints, quarter points


def test_train_transform_matches_a_pil_reference_pipeline():
    """Same box and flip as the official PIL implementation; pixels within one grey level before normalising."""
    frames = smooth_clip()
    transform = TrainTransform(size=64, flip=True)
    out = transform(frames, gen(5))
    g = gen(5)
    left, top, w, h = multiscale_crop_box(128, 96, 64, generator=g)
    flip = torch.rand(1, generator=g).item() < 0.5
    reference = []
    for frame in frames:
        image = Image.fromarray(frame).crop((left, top, left + w, top + h)).resize((64, 64), Image.BILINEAR)
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        reference.append((np.asarray(image) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
    reference = torch.from_numpy(np.stack(reference)).permute(3, 0, 1, 2).float()  # (C, T, H, W)
    assert out.shape == (3, 4, 64, 64) and out.dtype == torch.float32
    max_step = 1 / (255 * min(IMAGENET_STD))
    assert (out - reference).abs().max() <= max_step + 1e-5


def test_one_crop_and_flip_for_every_frame():
    frame = smooth_clip(t=1)[0]
    out = TrainTransform(size=48)(np.stack([frame] * 6), gen(1))
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(6))


def test_flip_happens_about_half_the_time_and_mirrors():
    frames = smooth_clip(t=2)
    plain = TrainTransform(size=48, flip=False)
    flips = 0
    for seed in range(200):
        a, b = plain(frames, gen(seed)), TrainTransform(size=48, flip=True)(frames, gen(seed))
        if not torch.equal(a, b):
            assert torch.equal(a.flip(-1), b)
            flips += 1
    assert 70 < flips < 130


def test_same_generator_same_output():
    frames = smooth_clip()
    transform = TrainTransform(size=48, crop="random_resized_crop", interpolation="bicubic")
    assert torch.equal(transform(frames, gen(2)), transform(frames, gen(2)))


def test_random_resized_crop_box_properties():
    g = gen()
    for _ in range(500):
        left, top, w, h = random_resized_crop_box(320, 240, generator=g, scale=(0.5, 1.0))
        assert 0 <= left <= 320 - w and 0 <= top <= 240 - h
        assert 0.45 <= w * h / (320 * 240) <= 1.0


def test_normalize_constants_and_layout():
    video = torch.full((2, 3, 4, 5), 255, dtype=torch.uint8)
    out = normalize(video, CLIP_MEAN, CLIP_STD)
    assert out.shape == (3, 2, 4, 5) and out.is_contiguous()
    expected = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    assert torch.allclose(out[:, 0, 0, 0], expected)


def test_resize_short_side_truncates_the_long_side_like_upstream():
    video = torch.zeros(2, 3, 256, 340, dtype=torch.uint8)
    assert resize_short_side(video, 224).shape[-2:] == (224, int(224 * 340 / 256))
    assert resize_short_side(video.transpose(-1, -2), 224).shape[-2:] == (int(224 * 340 / 256), 224)


def test_three_crops_span_the_long_side():
    video = torch.arange(10 * 30).view(1, 1, 10, 30).expand(2, 3, 10, 30)
    left, centre, right = spatial_crops(video, 10, 3)
    assert left[0, 0, 0, 0] == 0 and centre[0, 0, 0, 0] == 10 and right[0, 0, 0, -1] == 29
    (only,) = spatial_crops(video, 10, 1)
    assert torch.equal(only, centre)


def test_eval_transform_views():
    frames = smooth_clip(t=2, h=60, w=80)
    assert EvalTransform(size=48)(frames).shape == (3, 2, 48, 48)
    assert EvalTransform(size=48, num_crops=3)(frames).shape == (3, 3, 2, 48, 48)


@pytest.mark.parametrize("section", [AugmentSection(), AugmentSection(crop=RandomResizedCrop(), normalize="clip")])
def test_build_train_transform(section):
    transform = build_train_transform(section, 32)
    assert transform.crop == section.crop.kind
    assert transform(smooth_clip(), gen()).shape == (3, 4, 32, 32)


def test_crop_resize_without_antialias_is_the_official_float_interpolation():
    """The fine-tuning crop (official `random_resized_crop`): float bilinear without antialias, rounded to uint8."""
    import torch.nn.functional as F

    from umt_cli.data.transforms import crop_resize

    video = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = crop_resize(video, (5, 3, 50, 30), (16, 16), antialias=False)
    expected = F.interpolate(video[:, :, 3:33, 5:55].float(), size=(16, 16), mode="bilinear", align_corners=False)
    assert out.dtype == torch.uint8 and torch.equal(out, expected.clamp(0, 255).round().to(torch.uint8))
    assert not torch.equal(out, crop_resize(video, (5, 3, 50, 30), (16, 16)))  # antialias changes the pixels
