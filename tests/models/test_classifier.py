"""The fine-tuned classification ViT and the import of official classification files (SPEC §4.4, §5.3): the official
key layout, logits against a forward written out here from the description (all tokens -> blocks -> mean -> LN ->
Linear), geometry inferred from a stored `pos_embed`, and refusal of a stored table that is not the official one."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from umt_cli.errors import CheckpointError, UsageError
from umt_cli.models.classifier import build_classifier
from umt_cli.models.config import ClassifierConfig, VisionConfig
from umt_cli.models.official import import_classifier, load_imported
from umt_cli.models.positions import interpolated_table

D, DEPTH, CLASSES, P = 64, 4, 5, 16  # (64, 4) is the umt-tiny preset: 4 heads
HEADS = 4


def official_classifier_file(*, depth: int = DEPTH, dim: int = D, seed: int = 0) -> dict[str, torch.Tensor]:
    """A §5.3 file written from the SPEC's key list: `patch_embed.proj.*`, 13 tensors per block, `fc_norm.*`,
    `head.*`; random values (LayerNorm weights near 1, non-zero q/v biases)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.1, around: float = 0.0) -> torch.Tensor:
        return around + scale * torch.randn(*shape, generator=generator)

    state = {"patch_embed.proj.weight": rand(dim, 3, 1, P, P, scale=0.05), "patch_embed.proj.bias": rand(dim)}
    for i in range(depth):
        block = f"blocks.{i}."
        state |= {
            block + "norm1.weight": rand(dim, around=1.0),
            block + "norm1.bias": rand(dim),
            block + "attn.qkv.weight": rand(3 * dim, dim),
            block + "attn.q_bias": rand(dim),
            block + "attn.v_bias": rand(dim),
            block + "attn.proj.weight": rand(dim, dim),
            block + "attn.proj.bias": rand(dim),
            block + "norm2.weight": rand(dim, around=1.0),
            block + "norm2.bias": rand(dim),
            block + "mlp.fc1.weight": rand(4 * dim, dim),
            block + "mlp.fc1.bias": rand(4 * dim),
            block + "mlp.fc2.weight": rand(dim, 4 * dim),
            block + "mlp.fc2.bias": rand(dim),
        }
    state |= {"fc_norm.weight": rand(dim, around=1.0), "fc_norm.bias": rand(dim)}
    state |= {"head.weight": rand(CLASSES, dim), "head.bias": rand(CLASSES)}
    return state


def hand_forward(weights: dict[str, torch.Tensor], video: torch.Tensor, pos: torch.Tensor, heads: int) -> tuple:
    """The official fine-tuned ViT written out: Conv3d patches in (t, h, w) order + table, pre-norm blocks (q/v biases,
    zero k bias, explicit softmax, erf GELU), mean of all tokens, fc_norm (eps 1e-6), head. Returns (features, logits).
    """
    w = weights
    x = F.conv3d(video, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=(1, P, P))  # (B, D, T, H, W)
    x = x.flatten(2).transpose(1, 2) + pos  # (B, N, D)
    batch, tokens, dim = x.shape
    width = dim // heads
    depth = 1 + max(int(key.split(".")[1]) for key in w if key.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), w[b + "norm1.weight"], w[b + "norm1.bias"], eps=1e-6)
        qkv = w[b + "attn.qkv.weight"]
        q = h @ qkv[:dim].T + w[b + "attn.q_bias"]
        k = h @ qkv[dim : 2 * dim].T
        v = h @ qkv[2 * dim :].T + w[b + "attn.v_bias"]
        q, k, v = (t.reshape(batch, tokens, heads, width).transpose(1, 2) for t in (q, k, v))  # (B, h, N, w)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + out @ w[b + "attn.proj.weight"].T + w[b + "attn.proj.bias"]
        h = F.layer_norm(x, (dim,), w[b + "norm2.weight"], w[b + "norm2.bias"], eps=1e-6)
        hidden = F.gelu(h @ w[b + "mlp.fc1.weight"].T + w[b + "mlp.fc1.bias"])
        x = x + hidden @ w[b + "mlp.fc2.weight"].T + w[b + "mlp.fc2.bias"]
    features = F.layer_norm(x.mean(1), (dim,), w["fc_norm.weight"], w["fc_norm.bias"], eps=1e-6)
    return features, features @ w["head.weight"].T + w["head.bias"]


def clip(frames: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def test_key_layout_and_tensor_count():
    official = official_classifier_file()
    assert len(official) == 4 + 13 * DEPTH + 2  # SPEC §5.3 (162 for B/16)
    config = ClassifierConfig(vision=VisionConfig(dim=D, depth=DEPTH, num_heads=HEADS, img_size=32), num_classes=5)
    model = build_classifier(config)
    state = model.state_dict()
    assert set(state) == set(official)
    assert not any(key.startswith("norm.") for key in state)
    assert model.fc_norm.eps == 1e-6  # SPEC §4.4: fc_norm = LN(D, eps 1e-6)


@pytest.mark.parametrize("wrapper", ["raw", "model", "module", "module-prefix"])
def test_logits_match_the_hand_forward(wrapper):
    official = official_classifier_file()
    wrapped = {
        "raw": official,
        "model": {"model": official, "epoch": torch.tensor(3)},
        "module": {"module": official},
        "module-prefix": {f"module.{key}": value for key, value in official.items()},
    }[wrapper]
    imported = import_classifier(wrapped, source="cls.pth", img_size=32)  # an 8-frame file run at 32 px
    vision = imported.config.vision
    assert (vision.dim, vision.depth, vision.num_heads, vision.patch_size) == (D, DEPTH, HEADS, P)
    assert (vision.num_frames, vision.img_size, vision.pos_temporal) == (8, 32, "interpolate")
    assert imported.config.num_classes == CLASSES
    model = build_classifier(imported.config)
    report = load_imported(model, imported, what="classifier", sha256="abc")
    assert (report.loaded, report.ignored, report.sha256) == (len(official), [], "abc")

    video = clip(8, 32)
    pos = interpolated_table(D, (8, 14, 14), target=(8, 2, 2))
    features, logits = hand_forward(official, video, pos, HEADS)
    with torch.no_grad():
        torch.testing.assert_close(model(video), logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.features(video), features, atol=1e-5, rtol=1e-5)
    assert model(video).shape == (2, CLASSES)


def test_without_pos_embed_the_file_is_8_frames_at_224():
    imported = import_classifier(official_classifier_file(), source="cls.pth")
    vision = imported.config.vision
    assert (vision.num_frames, vision.img_size) == (8, 224)
    assert (imported.config.preprocess.num_frames, imported.config.preprocess.size) == (8, 224)


def test_a_size_that_is_no_multiple_of_the_patch_is_a_usage_error():
    with pytest.raises(UsageError, match="100 px"):
        import_classifier(official_classifier_file(depth=1), source="cls.pth", img_size=100)


def test_sixteen_frames_from_a_stored_table():
    official = official_classifier_file()
    official["pos_embed"] = interpolated_table(D, (8, 14, 14), target=(16, 2, 2))  # (1, 64, D): 16 frames at 32 px
    imported = import_classifier({"module": official}, source="f16.pth", num_frames=16)
    assert (imported.config.vision.num_frames, imported.config.vision.img_size) == (16, 32)
    assert imported.ignored == ["pos_embed"]
    by_size = import_classifier(official, source="f16.pth", img_size=32).config.vision
    assert (by_size.num_frames, by_size.img_size) == (16, 32)

    model = build_classifier(imported.config)
    report = load_imported(model, imported, what="classifier")
    assert report.loaded == len(official) - 1
    torch.testing.assert_close(model.pos_embed, official["pos_embed"], atol=0, rtol=0)
    video = clip(16, 32)
    weights = {key: value for key, value in official.items() if key != "pos_embed"}
    _, logits = hand_forward(weights, video, official["pos_embed"], HEADS)
    with torch.no_grad():
        torch.testing.assert_close(model(video), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("frames", "size", "rows"), [(16, 224, 3136), (8, 384, 4608)])
def test_official_geometries_are_told_from_the_rows_alone(frames, size, rows):
    official = official_classifier_file(depth=2)
    official["pos_embed"] = interpolated_table(D, (8, 14, 14), target=(frames, size // P, size // P))
    assert official["pos_embed"].shape == (1, rows, D)
    vision = import_classifier(official, source="cls.pth").config.vision
    assert (vision.num_frames, vision.img_size) == (frames, size)
    assert vision.num_heads == 1  # (64, 2) is no preset: 64 channels a head


def test_rows_that_fit_no_official_geometry_are_refused():
    official = official_classifier_file(depth=2)
    official["pos_embed"] = interpolated_table(D, (8, 14, 14), target=(16, 2, 2))  # 64 rows: 16 f at 32 px
    with pytest.raises(CheckpointError, match="64 rows"):
        import_classifier(official, source="cls.pth")
    with pytest.raises(CheckpointError, match="num_frames 12"):
        import_classifier(official, source="cls.pth", num_frames=12)


def test_a_tampered_stored_table_is_refused():
    official = official_classifier_file(depth=2)
    table = interpolated_table(D, (8, 14, 14), target=(16, 14, 14)).clone()
    table[0, 100, 7] += 1e-3
    official["pos_embed"] = table
    with pytest.raises(CheckpointError, match=r"stored pos_embed differs.*max \|Δ\| = 0.001"):
        import_classifier(official, source="cls.pth")


def test_an_extended_table_is_not_taken_for_the_interpolated_one():
    official = official_classifier_file(depth=2)
    official["pos_embed"] = torch.from_numpy(_sinusoid(3136, D))[None]  # the `extend` rule's 16-frame table
    with pytest.raises(CheckpointError, match="differs"):
        import_classifier(official, source="cls.pth")


def test_a_half_precision_table_is_compared_at_its_precision():
    official = official_classifier_file(depth=2)
    table = interpolated_table(D, (8, 14, 14), target=(8, 24, 24))
    official["pos_embed"] = table.half()
    assert import_classifier(official, source="fp16.pth").config.vision.img_size == 384
    official["pos_embed"] = (table + 0.05).half()
    with pytest.raises(CheckpointError, match="differs"):
        import_classifier(official, source="fp16.pth")


def test_extend_uses_the_one_dimensional_sinusoid():
    vision = VisionConfig(dim=D, depth=1, num_heads=4, img_size=32, num_frames=16, pos_temporal="extend")
    model = build_classifier(ClassifierConfig(vision=vision, num_classes=3))
    torch.testing.assert_close(model.pos_embed[0], torch.from_numpy(_sinusoid(64, D)), atol=1e-6, rtol=0)
    other = ClassifierConfig(vision=replace(vision, pos_temporal="interpolate"), num_classes=3)
    interpolating = build_classifier(other)
    assert not torch.allclose(interpolating.pos_embed, model.pos_embed, atol=1e-3)
    assert "pos_embed" not in model.state_dict()


def test_a_fresh_head_starts_near_zero():
    vision = VisionConfig(dim=D, depth=1, num_heads=4, img_size=32, num_frames=2)
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(vision=vision, num_classes=7))
    assert model.head.weight.abs().max() < 0.001 and not model.head.bias.any()


def _sinusoid(n: int, dim: int) -> np.ndarray:
    """The 1-D sinusoid, vectorised in NumPy (float64 -> float32)."""
    pos = np.arange(n)[:, None]
    j = np.arange(dim)[None]
    angle = pos / np.power(10000.0, 2 * (j // 2) / dim)
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)
