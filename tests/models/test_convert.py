"""Checkpoint reading (trust rules), unwrapping, kind detection and strict loading."""

from __future__ import annotations

import argparse
import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from umt_cli.errors import CheckpointError
from umt_cli.models.convert import (
    detect_kind,
    load_strict,
    read_checkpoint,
    sha256_file,
    split_clip_visual,
    unwrap_state_dict,
)
from umt_cli.models.layers import Attention

W = torch.zeros(2)


def test_pickled_objects_need_the_trust_flag(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and "argparse.Namespace" in str(error.value)
    loaded = read_checkpoint(path, trust=True)
    assert loaded["args"].lr == 1e-3 and torch.equal(loaded["model"]["w"], torch.ones(2))


def test_plain_and_safetensors_files_need_no_trust(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.ones(3)}, "epoch": 4, "config": {"lr": 0.1}}, tmp_path / "ours.pt")
    assert read_checkpoint(tmp_path / "ours.pt")["epoch"] == 4
    save_file({"w": torch.arange(3.0)}, str(tmp_path / "bundle.safetensors"))
    assert torch.equal(read_checkpoint(tmp_path / "bundle.safetensors")["w"], torch.arange(3.0))


def test_torchscript_archives_need_the_trust_flag(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated; OpenAI's CLIP .pt files are still archives
        torch.jit.save(torch.jit.script(nn.Linear(2, 3)), str(tmp_path / "ViT-B-16.pt"))
        with pytest.raises(CheckpointError, match="TorchScript.*--trust-checkpoint"):
            read_checkpoint(tmp_path / "ViT-B-16.pt")
        assert set(read_checkpoint(tmp_path / "ViT-B-16.pt", trust=True)) == {"weight", "bias"}


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint.*--trust-checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(tmp_path / "junk.pth", trust=True)


def test_sha256_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"umt" * 1000)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(b"umt" * 1000).hexdigest()


@pytest.mark.parametrize(
    "wrapped",
    [
        {"a.w": W, "b": W},
        {"model": {"a.w": W, "b": W}, "optimizer": {}, "epoch": 3},
        {"module": {"a.w": W, "b": W}},
        {"module.a.w": W, "module.b": W},
        {"model": {"module.a.w": W, "module.b": W}, "args": None},
    ],
)
def test_unwrap_accepts_every_wrapper(wrapped: dict) -> None:
    assert list(unwrap_state_dict(wrapped)) == ["a.w", "b"]


def test_unwrap_rejects_anything_else_listing_keys() -> None:
    with pytest.raises(CheckpointError, match=r"top-level keys: \[state, epoch\]"):
        unwrap_state_dict({"state": {"a": W}, "epoch": 1})
    with pytest.raises(CheckpointError, match="list"):
        unwrap_state_dict([W])


def keys(*names: str) -> dict[str, torch.Tensor]:
    return dict.fromkeys(names, W)


@pytest.mark.parametrize(
    ("state_dict", "kind"),
    [
        (keys("encoder.blocks.0.attn.q_bias", "encoder.norm.weight", "clip_decoder.0.head.weight"), "umt-stage1"),
        (
            keys("vision_encoder.encoder.blocks.0.attn.q_bias", "text_encoder.bert.embeddings.word_embeddings.weight"),
            "umt-stage2",
        ),
        (keys("blocks.0.attn.q_bias", "fc_norm.weight", "head.weight", "head.bias"), "umt-classifier"),
        (keys("vision_encoder.encoder.norm.weight", "text_encoder.embeddings.word_embeddings.weight"), "umt-retrieval"),
        (keys("vision_encoder.encoder.norm.weight", "text_encoder.bert.embeddings.x", "text_decoder.bert.x"), "umt-qa"),
        (keys("conv1.weight", "class_embedding", "transformer.resblocks.0.attn.in_proj_weight"), "clip-visual"),
        (keys("visual.conv1.weight", "visual.proj", "transformer.resblocks.0.ln_1.weight", "logit_scale"), "clip-full"),
        (keys("embeddings.word_embeddings.weight", "pooler.dense.weight"), "unknown"),
    ],
)
def test_detect_kind(state_dict: dict, kind: str) -> None:
    assert detect_kind(state_dict) == kind


def test_split_clip_visual() -> None:
    visual, ignored = split_clip_visual(keys("visual.conv1.weight", "visual.proj", "logit_scale", "ln_final.bias"))
    assert list(visual) == ["conv1.weight", "proj"] and ignored == ["logit_scale", "ln_final.bias"]
    already, none = split_clip_visual(keys("conv1.weight", "transformer.resblocks.0.ln_1.weight"))
    assert list(already) == ["conv1.weight", "transformer.resblocks.0.ln_1.weight"] and none == []


def test_load_strict_names_missing_unexpected_and_misshapen_keys() -> None:
    module = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))
    state = dict(module.state_dict())
    many = {f"extra.{i}": W for i in range(7)}
    with pytest.raises(
        CheckpointError, match=r"toy: 1 missing key\(s\) \[1\.bias\], 7 unexpected key\(s\) \[extra\.0,"
    ):
        load_strict(module, {k: v for k, v in state.items() if k != "1.bias"} | many, what="toy")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*0\.weight \(2, 2\) != \(3, 2\)"):
        load_strict(module, state | {"0.weight": torch.zeros(2, 2)}, what="toy")
    load_strict(module, {k: v + 1 for k, v in state.items()}, what="toy")
    torch.testing.assert_close(module[1].bias, torch.ones(3))


def test_load_strict_warns_on_all_zero_qv_biases() -> None:
    attn = Attention(dim=8, num_heads=2)
    with pytest.warns(UserWarning, match="q_bias/v_bias"):
        load_strict(attn, attn.state_dict(), what="zeros")
    state = attn.state_dict() | {"q_bias": torch.ones(8)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_strict(attn, state, what="trained")


def test_a_broken_file_is_not_blamed_on_trust(tmp_path):
    import io

    from umt_cli.errors import CheckpointError
    from umt_cli.models.convert import read_checkpoint

    buffer = io.BytesIO()
    torch.save({"w": torch.ones(64)}, buffer)
    path = tmp_path / "half.pth"
    path.write_bytes(buffer.getvalue()[:200])  # truncated: trusting it would not make it readable
    with pytest.raises(CheckpointError, match="half.pth: not a readable checkpoint") as error:
        read_checkpoint(path, how_to_trust="set init.trust = true")
    assert "trust" not in str(error.value) + str(error.value.hint or "")
