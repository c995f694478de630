"""`umt export` end to end through the CLI: a stage-2 run, an export and an official classifier file become bundles
that load back with the same outputs (bit for bit), and ONNX files that onnxruntime runs like the eager model.

References are computed independently of the export code: the source checkpoint loaded with `load_model`, its
sha256 with `hashlib`, its ONNX outputs under onnxruntime on inputs drawn here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import Tensor
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.models.loading import RUN_WEIGHTS, load_model

runner = CliRunner()

CLASSIFIER_DIM, CLASSIFIER_DEPTH, CLASSIFIER_CLASSES, PATCH = 64, 2, 5, 16
CLASSIFIER_FRAMES = 2  # run the (8-frame, 224 px) official geometry on 2 frames: 2 x 14 x 14 tokens, CPU-cheap
BLOCK_SHAPES = {
    "norm1.weight": ("D",), "norm1.bias": ("D",), "norm2.weight": ("D",), "norm2.bias": ("D",),
    "attn.qkv.weight": ("3D", "D"), "attn.q_bias": ("D",), "attn.v_bias": ("D",),
    "attn.proj.weight": ("D", "D"), "attn.proj.bias": ("D",),
    "mlp.fc1.weight": ("4D", "D"), "mlp.fc1.bias": ("4D",), "mlp.fc2.weight": ("D", "4D"), "mlp.fc2.bias": ("D",),
}  # fmt: skip
"""SPEC §5.3: one block of an official classification file, widths in units of D."""


def export(*args: str) -> str:
    """Run `umt export ARGS` and return its stdout; the command must succeed."""
    result = runner.invoke(app, ["export", *args], env={"COLUMNS": "300"})  # no summary cell cut short
    assert result.exit_code == 0, result.output
    return result.output


# --- inputs and reference outputs -----------------------------------------------------------------------------


def video_text_inputs(config, seed: int, batch: int = 3) -> dict[str, Tensor]:
    """A random clip batch and captions of random lengths (padded rows included), drawn with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    v, length = config.vision, config.preprocess.max_len
    video = torch.randn((batch, 3, v.num_frames, v.img_size, v.img_size), generator=generator)  # (B, 3, T, S, S)
    lengths = torch.randint(1, length + 1, (batch, 1), generator=generator)  # (B, 1)
    mask = (torch.arange(length) < lengths).long()  # (B, L)
    ids = torch.randint(0, config.text.vocab_size, (batch, length), generator=generator) * mask  # (B, L)
    return {"video": video, "ids": ids, "mask": mask}


@torch.no_grad()
def video_text_outputs(model, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every output a video-text model serves: video and text encodings and the ITM logits of all pairs."""
    tokens, frames = model.encode_video(inputs["video"])  # (B, N, D), (B, T, E)
    hidden, embed = model.encode_text(inputs["ids"], inputs["mask"])  # (B, L, Dtxt), (B, E)
    batch = inputs["ids"].shape[0]
    rows = torch.arange(batch).repeat_interleave(batch)  # text i against every video j
    logits = model.match_logits(hidden.repeat(batch, 1, 1), inputs["mask"].repeat(batch, 1), tokens, rows)
    return {"tokens": tokens, "frames": frames, "hidden": hidden, "embed": embed, "match": logits}


def assert_identical(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    for name, reference in expected.items():
        assert torch.equal(actual[name], reference), name


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp_min(1e-6)).item()


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_bundle(stage2_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The stage-2 run exported once for the module: (bundle folder, the command's stdout)."""
    out = tmp_path_factory.mktemp("export") / "bundle"
    return out, export("--ckpt", str(stage2_run), "--out", str(out))


def official_classifier(seed: int) -> dict[str, Tensor]:
    """A tiny official-layout classification state dict (SPEC §5.3; no `pos_embed`: the 8 x 224 px geometry)."""
    generator = torch.Generator().manual_seed(seed)
    width = {"D": CLASSIFIER_DIM, "3D": 3 * CLASSIFIER_DIM, "4D": 4 * CLASSIFIER_DIM}

    def tensor(*shape: int, around: float = 0.0) -> Tensor:
        return around + 0.05 * torch.randn(shape, generator=generator)

    state = {
        "patch_embed.proj.weight": tensor(CLASSIFIER_DIM, 3, 1, PATCH, PATCH),
        "patch_embed.proj.bias": tensor(CLASSIFIER_DIM),
    }
    for i in range(CLASSIFIER_DEPTH):
        for name, units in BLOCK_SHAPES.items():
            is_norm_weight = name.startswith("norm") and name.endswith("weight")
            state[f"blocks.{i}.{name}"] = tensor(*(width[u] for u in units), around=1.0 if is_norm_weight else 0.0)
    state |= {
        "fc_norm.weight": tensor(CLASSIFIER_DIM, around=1.0),
        "fc_norm.bias": tensor(CLASSIFIER_DIM),
        "head.weight": tensor(CLASSIFIER_CLASSES, CLASSIFIER_DIM),
        "head.bias": tensor(CLASSIFIER_CLASSES),
    }
    return state


# --- tests ----------------------------------------------------------------------------------------------------


def test_bundle_of_a_run_gives_the_same_outputs_bit_for_bit(stage2_run: Path, run_bundle) -> None:
    out, _ = run_bundle
    original, exported = load_model(stage2_run), load_model(out)
    without_mlm_head = replace(original.config, text=replace(original.config.text, mlm_head=False))
    assert exported.kind == "umt-export" and exported.config == without_mlm_head  # the MLM head is not exported
    inputs = video_text_inputs(original.config, seed=11)
    assert_identical(video_text_outputs(exported.model, inputs), video_text_outputs(original.model, inputs))


def test_bundle_files_record_the_source(stage2_run: Path, run_bundle) -> None:
    out, stdout = run_bundle
    for name in ("model.safetensors", "config.json", "README.md", "tokenizer/vocab.txt"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".tmp-*"))
    weights = stage2_run / RUN_WEIGHTS
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        header = handle.metadata()
    assert header["source"] == str(stage2_run) and header["source_sha256"] == sha
    notes = json.loads((out / "config.json").read_text())["notes"]
    assert notes["kind"] == "umt-run" and notes["frames"] == load_model(stage2_run).config.vision.num_frames
    # the summary names the folder, the source's hash and every file with its size
    assert str(out) in stdout and sha in stdout and "umt-run" in stdout
    for name in ("model.safetensors", "config.json", "README.md", "tokenizer/vocab.txt"):
        assert name in stdout, name


def test_exporting_an_export_round_trips(run_bundle, tmp_path: Path) -> None:
    out, _ = run_bundle
    again = tmp_path / "again"
    export("--ckpt", str(out), "--out", str(again))
    first, second = load_model(out), load_model(again)
    assert second.config == first.config
    first_weights, second_weights = first.model.state_dict(), second.model.state_dict()
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(second_weights[key], value) for key, value in first_weights.items())
    assert (again / "tokenizer" / "vocab.txt").read_bytes() == (out / "tokenizer" / "vocab.txt").read_bytes()
    with safe_open(str(again / "model.safetensors"), "pt") as handle:
        sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        assert handle.metadata()["source_sha256"] == sha


def test_overwrite_replaces_a_bundle_and_only_a_bundle(run_bundle, tmp_path: Path) -> None:
    out, _ = run_bundle
    target = tmp_path / "target"
    export("--ckpt", str(out), "--out", str(target))
    (target / "stale.txt").write_text("from an older export")
    refused = runner.invoke(app, ["export", "--ckpt", str(out), "--out", str(target)])
    assert refused.exit_code == 2 and (target / "stale.txt").is_file()
    export("--ckpt", str(out), "--out", str(target), "--overwrite")
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()


def test_official_classifier_exports_with_the_imported_logits(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cls.pth"
    torch.save({"module": official_classifier(seed=3)}, checkpoint)
    out = tmp_path / "cls_bundle"
    stdout = export("--ckpt", str(checkpoint), "--out", str(out), "--frames", str(CLASSIFIER_FRAMES))
    assert "umt-classifier" in stdout and not (out / "tokenizer").exists()
    imported = load_model(checkpoint, num_frames=CLASSIFIER_FRAMES)
    exported = load_model(out)
    assert exported.config == imported.config and exported.config.num_classes == CLASSIFIER_CLASSES
    v = imported.config.vision
    assert v.num_frames == CLASSIFIER_FRAMES
    video = torch.randn((2, 3, v.num_frames, v.img_size, v.img_size), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected, actual = imported.model(video), exported.model(video)  # (B, classes)
    assert expected.shape == (2, CLASSIFIER_CLASSES)
    assert torch.equal(actual, expected)


def test_onnx_files_run_under_onnxruntime_like_the_model(stage2_run: Path, tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx_bundle"
    stdout = export("--ckpt", str(stage2_run), "--out", str(out), "--onnx")
    assert "onnxruntime" in stdout and "video_encoder.onnx" in stdout
    card = (out / "README.md").read_text()
    for name in ("video_encoder.onnx", "text_encoder.onnx"):
        assert (out / name).is_file() and (out / f"{name}.data").is_file(), name
        assert name in card, name  # the card lists every file of the bundle
    reference = load_model(stage2_run)
    inputs = video_text_inputs(reference.config, seed=23, batch=4)  # a batch size the exporter never saw
    expected = video_text_outputs(reference.model, inputs)
    video = onnxruntime.InferenceSession(str(out / "video_encoder.onnx"), providers=["CPUExecutionProvider"])
    tokens, frames = video.run(["tokens", "frame_embeds"], {"video": inputs["video"].numpy()})
    text = onnxruntime.InferenceSession(str(out / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": inputs["ids"].numpy(), "attention_mask": inputs["mask"].numpy()}
    hidden, embed = text.run(["hidden", "text_embed"], feed)
    actual = {"tokens": tokens, "frames": frames, "hidden": hidden, "embed": embed}
    for name, value in actual.items():
        assert relative_error(torch.from_numpy(value), expected[name]) <= 1e-4, name


def test_trusted_legacy_pickle_exports_and_records_its_hash(tmp_path: Path) -> None:
    checkpoint = tmp_path / "legacy.pth"  # official trainers pickle their argparse namespace next to the weights
    torch.save({"model": official_classifier(seed=4), "args": argparse.Namespace(lr=1e-3)}, checkpoint)
    out = tmp_path / "legacy_bundle"
    export("--ckpt", str(checkpoint), "--out", str(out), "--frames", str(CLASSIFIER_FRAMES), "--trust-checkpoint")
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        assert handle.metadata()["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # the bundle itself never needs trust again: it loads weights-only
    assert load_model(out).config.num_classes == CLASSIFIER_CLASSES


def test_classifier_pt2_program_matches_the_imported_model(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cls.pth"
    torch.save(official_classifier(seed=6), checkpoint)  # a raw state dict, no wrapper
    out = tmp_path / "pt2_bundle"
    stdout = export("--ckpt", str(checkpoint), "--out", str(out), "--frames", str(CLASSIFIER_FRAMES), "--pt2")
    assert "torch.export" in stdout and (out / "classifier.pt2").is_file()
    imported = load_model(checkpoint, num_frames=CLASSIFIER_FRAMES)
    v = imported.config.vision
    video = torch.randn((3, 3, v.num_frames, v.img_size, v.img_size), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        (logits,) = torch.export.load(str(out / "classifier.pt2")).module()(video)  # (B, classes)
        expected = imported.model(video)
    assert relative_error(logits, expected) <= 1e-5
