"""The stage-1 student: parity with the official computation, the official key layout, strict loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from umt_cli.errors import CheckpointError
from umt_cli.models.convert import load_stage1_student
from umt_cli.models.heads import AlignHeads
from umt_cli.models.student import DistillStudent, StudentOutput, VideoViT, build_distill_student

TINY = dict(img_size=64, num_frames=4, tubelet=1, drop_path=0.0, align_layers=2, teacher_dim=32)
DEPTH, HEADS, DIM, K = 4, 4, 64, 2


def tiny_student(seed: int = 0, **overrides: object) -> DistillStudent:
    torch.manual_seed(seed)
    student = build_distill_student("umt-tiny", **{**TINY, **overrides})
    with torch.no_grad():  # non-trivial biases and norms, so the parity test sees every parameter
        for param in student.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return student


def random_visible(batch: int, tokens: int, keep: int, generator: torch.Generator) -> torch.Tensor:
    visible = torch.zeros(batch, tokens, dtype=torch.bool)
    for row in range(batch):
        visible[row, torch.randperm(tokens, generator=generator)[:keep]] = True
    return visible


def official_table(n: int, d: int) -> torch.Tensor:
    pos = np.arange(n, dtype=np.float64)[:, None]
    angle = pos / np.power(10000, 2 * (np.arange(d)[None, :] // 2) / d)
    angle[:, 0::2], angle[:, 1::2] = np.sin(angle[:, 0::2]), np.cos(angle[:, 1::2])
    return torch.tensor(angle, dtype=torch.float).unsqueeze(0)


def reference_forward(sd: dict[str, torch.Tensor], video: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Stage-1 student written as the official `modeling_pretrain_umt.py` computes it (`masked` True = hidden)."""
    x = F.conv3d(video, sd["encoder.patch_embed.proj.weight"], sd["encoder.patch_embed.proj.bias"], stride=(1, 16, 16))
    x = x.flatten(2).transpose(1, 2)
    b, n, c = x.shape
    pos = official_table(n, c)
    x = x + pos
    x = x[~masked].reshape(b, -1, c)
    return_index = [DEPTH - i - 1 for i in range(K)]
    taps = []
    for idx in range(DEPTH):
        x = reference_block(sd, f"encoder.blocks.{idx}.", x)
        if idx in return_index:
            taps.append(x)
    taps = F.layer_norm(torch.stack(taps), (c,), sd["encoder.norm.weight"], sd["encoder.norm.bias"], 1e-6)
    pos_vis = pos.repeat(b, 1, 1)[~masked].view(b, -1, c).unsqueeze(0).repeat(K, 1, 1, 1)
    full = taps + pos_vis
    out = []
    for k in range(K):
        p = f"clip_decoder.{k}."
        y = F.linear(full[k], sd[p + "head.weight"], sd[p + "head.bias"])
        y = F.layer_norm(y, y.shape[-1:], sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)
        out.append(y / y.norm(dim=-1, keepdim=True))
    return torch.stack(out)


def reference_block(sd: dict[str, torch.Tensor], p: str, x: torch.Tensor) -> torch.Tensor:
    b, n, c = x.shape
    h = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
    q_bias, v_bias = sd[p + "attn.q_bias"], sd[p + "attn.v_bias"]
    bias = torch.cat((q_bias, torch.zeros_like(v_bias), v_bias))
    qkv = F.linear(h, sd[p + "attn.qkv.weight"], bias).reshape(b, n, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q * (c // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    h = (attn @ v).transpose(1, 2).reshape(b, n, -1)
    x = x + F.linear(h, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
    h = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
    h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"])
    return x + h + sd[p + "mlp.fc2.bias"]


def test_matches_official_computation_on_visible_tokens() -> None:
    student = tiny_student().eval()
    g = torch.Generator().manual_seed(1)
    video = torch.randn(3, 3, 4, 64, 64, generator=g)
    visible = random_visible(3, 64, 13, g)
    with torch.no_grad():
        out = student(video, visible)
        expected = reference_forward(student.state_dict(), video, ~visible)
    assert out.shape == (K, 3, 13, 32)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_matches_official_computation_on_all_tokens() -> None:
    student = tiny_student(seed=2).eval()
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = student(video, None)
        expected = reference_forward(student.state_dict(), video, torch.zeros(2, 64, dtype=torch.bool))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(K, 2, 64))


def test_encoder_returns_normalised_taps_in_ascending_order() -> None:
    student = tiny_student().eval()
    assert student.encoder.tap_indices == (2, 3)
    video = torch.randn(1, 3, 4, 64, 64)
    output = student.encoder(video)
    assert isinstance(output, StudentOutput) and output.layers.shape == (K, 1, 64, DIM)
    ln = student.encoder.norm
    x = student.encoder.patch_embed(video) + student.encoder.pos_embed
    for block in student.encoder.blocks[:3]:
        x = block(x)
    torch.testing.assert_close(output.layers[0], ln(x))
    torch.testing.assert_close(output.layers[1], ln(student.encoder.blocks[3](x)))


def test_unequal_visible_counts_are_refused() -> None:
    student = tiny_student()
    visible = torch.zeros(2, 64, dtype=torch.bool)
    visible[0, :10], visible[1, :11] = True, True
    with pytest.raises(ValueError, match="same number"):
        student(torch.randn(2, 3, 4, 64, 64), visible)


def test_wrong_clip_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="tokens"):
        tiny_student().encoder(torch.randn(1, 3, 8, 64, 64))


def test_activation_checkpointing_gives_the_same_values_and_gradients() -> None:
    plain, checkpointed = tiny_student(drop_path=0.2), tiny_student(drop_path=0.2, checkpoint_blocks=3)
    checkpointed.load_state_dict(plain.state_dict())
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(4))
    visible = random_visible(2, 64, 16, torch.Generator().manual_seed(5))
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(7)  # same drop-path draws
        loss = model.train()(video, visible).square().sum()
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def official_stage1_keys(depth: int, k: int) -> list[str]:
    """The stage-1 key template (docs/official-behaviour.md, Stage 1 files)."""
    keys = ["encoder.patch_embed.proj.weight", "encoder.patch_embed.proj.bias"]
    block = [
        "norm1.weight",
        "norm1.bias",
        "attn.q_bias",
        "attn.v_bias",
        "attn.qkv.weight",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
    for i in range(depth):
        keys += [f"encoder.blocks.{i}.{name}" for name in block]
    keys += ["encoder.norm.weight", "encoder.norm.bias"]
    for j in range(k):
        keys += [f"clip_decoder.{j}.{name}" for name in ("head.weight", "head.bias", "norm.weight", "norm.bias")]
    return keys


def test_state_dict_is_the_official_stage1_layout() -> None:
    keys = list(tiny_student().state_dict())
    expected = official_stage1_keys(DEPTH, K)
    assert sorted(keys) == sorted(expected)
    # 13 tensors per block (the template above; the official model has the same): the official B/16 and L/16
    # stage-1 models have 184 and 340 tensors (a count of 4 + 12·depth + 4·K, 172 / 316, misses one per block).
    assert len(keys) == 4 + 13 * DEPTH + 4 * K
    assert not any("pos_embed" in key for key in keys)


@pytest.mark.parametrize(("preset", "depth", "count"), [("umt-b16", 12, 184), ("umt-l16", 24, 340)])
def test_full_size_key_counts(preset: str, depth: int, count: int) -> None:
    with torch.device("meta"):
        student = build_distill_student(
            preset, img_size=224, num_frames=8, tubelet=1, drop_path=0.1, align_layers=6, teacher_dim=512
        )
    keys = list(student.state_dict())
    assert len(keys) == count == 4 + 13 * depth + 4 * 6
    assert sorted(keys) == sorted(official_stage1_keys(depth, 6))
    assert student.encoder.tap_indices == tuple(range(depth - 6, depth))


def test_official_layout_file_loads_strictly(tmp_path: Path) -> None:
    source, target = tiny_student(seed=1), tiny_student(seed=2)
    path = tmp_path / "b16_ptk710_f8_res224.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    load_stage1_student(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_extra_or_missing_keys_raise_checkpoint_error(tmp_path: Path) -> None:
    student = tiny_student()
    extra = dict(student.state_dict(), **{"encoder.cls_token": torch.zeros(1, 1, DIM)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\) \[encoder\.cls_token\]"):
        load_stage1_student(student, tmp_path / "extra.pth")
    missing = dict(student.state_dict())
    del missing["encoder.blocks.1.attn.v_bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \[encoder\.blocks\.1\.attn\.v_bias\]"):
        load_stage1_student(student, tmp_path / "missing.pth")


def test_align_heads_stage2_variant_and_non_persistent_table() -> None:
    heads = AlignHeads(num_tokens=8, dim=16, out_dim=4, num_layers=3, eps=1e-5, l2=False)
    assert list(heads.state_dict()) == [
        f"{k}.{n}" for k in range(3) for n in ("head.weight", "head.bias", "norm.weight", "norm.bias")
    ]
    assert heads[1].norm.eps == 1e-5
    layers = torch.randn(3, 2, 8, 16)
    out = heads(layers, None)
    expected = heads[2].norm(heads[2].head(layers[2] + heads.pos_embed))
    torch.testing.assert_close(out[2], expected)


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown student.preset .umt-h14.; valid: umt-tiny, umt-b16, umt-l16"):
        build_distill_student("umt-h14", **TINY)


def test_video_vit_constructor_checks() -> None:
    with pytest.raises(ValueError, match="align_layers"):
        VideoViT(img_size=64, patch_size=16, num_frames=4, tubelet=1, dim=32, depth=2, num_heads=2, align_layers=3)
