"""Student building blocks: the exact sinusoid table, drop path, patch order, attention, blocks, token selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from umt_cli.models.layers import Attention, Block, DropPath, PatchEmbed3D, select_visible, sinusoid_table


def numpy_sinusoid(n: int, d: int) -> np.ndarray:
    """The position table (docs/official-behaviour.md) written independently:
    angle(pos, j) = pos / 10000 ** (2 * floor(j / 2) / d), interleaved."""
    pos = np.arange(n, dtype=np.float64)[:, None]
    j = np.arange(d)[None, :]
    angle = pos / np.power(10000.0, 2 * (j // 2) / d)
    return np.where(j % 2 == 0, np.sin(angle), np.cos(angle))


@pytest.mark.parametrize(("n", "d"), [(64, 64), (1568, 768), (50, 10)])
def test_sinusoid_table_matches_float64_formula(n: int, d: int) -> None:
    table = sinusoid_table(n, d)
    assert table.shape == (1, n, d) and table.dtype == torch.float32
    expected = torch.from_numpy(numpy_sinusoid(n, d)).float()
    # Bit-equal here; 1e-7 leaves room for a libm that rounds one float64 ulp differently.
    torch.testing.assert_close(table[0], expected, rtol=0, atol=1e-7)


def test_sinusoid_golden_values() -> None:
    d = 768
    table = sinusoid_table(1568, d)[0].double()
    for p in (0, 1, 7, 196, 1567):
        assert table[p, 0].item() == pytest.approx(math.sin(p), abs=1e-7)
        assert table[p, 1].item() == pytest.approx(math.cos(p), abs=1e-7)
        assert table[p, d - 1].item() == pytest.approx(math.cos(p / 10000 ** ((d - 2) / d)), abs=1e-7)


def test_sinusoid_shorter_clip_is_a_prefix() -> None:
    eight, four = sinusoid_table(8 * 196, 768), sinusoid_table(4 * 196, 768)
    assert torch.equal(four, eight[:, : 4 * 196])


def test_drop_path_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(8, 5, 4)
    assert DropPath(0.5).eval()(x) is x
    assert DropPath(0.0).train()(x) is x


def test_drop_path_drops_whole_samples_and_rescales() -> None:
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 2)
    out = DropPath(0.25).train()(x)
    per_sample = out.flatten(1)
    kept = per_sample[:, 0] != 0
    assert torch.all(per_sample == per_sample[:, :1])  # one decision per sample
    assert torch.allclose(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03


def test_patch_embed_token_order_is_t_h_w() -> None:
    torch.manual_seed(0)
    embed = PatchEmbed3D(patch_size=4, tubelet=1, dim=6)
    video = torch.randn(2, 3, 3, 8, 12)  # T=3, H=2, W=3 tokens
    tokens = embed(video)
    assert tokens.shape == (2, 18, 6)
    w, b = embed.proj.weight[:, :, 0], embed.proj.bias
    for t, h, x in [(0, 0, 0), (1, 0, 2), (2, 1, 1), (2, 1, 2)]:
        patch = video[:, :, t, 4 * h : 4 * h + 4, 4 * x : 4 * x + 4]
        expected = torch.einsum("bchw,dchw->bd", patch, w) + b
        torch.testing.assert_close(tokens[:, t * 6 + h * 3 + x], expected, rtol=1e-5, atol=1e-5)


def reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """The official VideoMAE/UMT attention, written out (explicit q * scale @ k^T)."""
    b, n, c = x.shape
    bias = torch.cat((attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias))
    qkv = F.linear(x, attn.qkv.weight, bias).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = ((q * (c // attn.num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, -1))


def randomize_(module: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))


def test_attention_matches_explicit_reference_with_q_and_v_bias() -> None:
    g = torch.Generator().manual_seed(0)
    attn = Attention(dim=32, num_heads=4)
    randomize_(attn, g)
    assert attn.qkv.bias is None
    x = torch.randn(3, 11, 32, generator=g)
    torch.testing.assert_close(attn(x), reference_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_block_is_pre_norm_with_exact_gelu() -> None:
    g = torch.Generator().manual_seed(1)
    block = Block(dim=32, num_heads=4, drop_path=0.3).eval()
    randomize_(block, g)
    x = torch.randn(2, 7, 32, generator=g)
    assert block.norm1.eps == 1e-6 and block.norm2.eps == 1e-6
    mid = x + reference_attention(block.attn, block.norm1(x))
    hidden = F.gelu(block.mlp.fc1(block.norm2(mid)), approximate="none")
    torch.testing.assert_close(block(x), mid + block.mlp.fc2(hidden), rtol=1e-5, atol=1e-5)


def test_select_visible_keeps_ascending_order() -> None:
    x = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1).expand(2, 6, 3)
    visible = torch.tensor([[True, False, True, False, False, True], [False, True, True, True, False, False]])
    out = select_visible(x, visible)
    assert out[..., 0].tolist() == [[0, 2, 5], [7, 8, 9]]
    assert select_visible(x, None) is x


def test_select_visible_rejects_unequal_counts_and_bad_masks() -> None:
    x = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="same number"):
        select_visible(x, torch.tensor([[True, True, False, False], [True, False, False, False]]))
    with pytest.raises(ValueError, match="bool"):
        select_visible(x, torch.ones(2, 4))
