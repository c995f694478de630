"""ONNX and torch.export files of a tiny video-text model match eager outputs on fresh inputs of other batch sizes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from umt_cli.errors import UmtError, UsageError
from umt_cli.export import onnx as onnx_module
from umt_cli.export.onnx import ExportPart, export_onnx, export_pt2
from umt_cli.models.classifier import build_classifier
from umt_cli.models.config import (
    ClassifierConfig,
    Preprocess,
    TextConfig,
    VideoTextConfig,
    VisionConfig,
    build_video_text,
)

VOCAB, MAX_LEN = 12, 8


def tiny_model() -> tuple[nn.Module, VideoTextConfig]:
    config = VideoTextConfig(
        vision=VisionConfig(dim=64, depth=2, num_heads=4, patch_size=16, img_size=32, num_frames=2),
        text=TextConfig(
            vocab_size=VOCAB, hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, fusion_layer=1
        ),
        embed_dim=16,
        preprocess=Preprocess(size=32, num_frames=2, max_len=MAX_LEN),
    )
    torch.manual_seed(0)
    model = build_video_text(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every parameter random: q/v biases and LayerNorms start as constants
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval(), config


def fresh_inputs(batch: int, seed: int) -> dict[str, Tensor]:
    """Inputs drawn independently of the exporter's own, with padded captions of several lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([MAX_LEN, 1, 5, 3][:batch])[:, None]  # (B, 1)
    mask = (torch.arange(MAX_LEN) < lengths).long()  # (B, L)
    ids = torch.randint(0, VOCAB, (batch, MAX_LEN), generator=generator) * mask  # [PAD] = 0 after the text
    return {"video": torch.randn(batch, 3, 2, 32, 32, generator=generator), "input_ids": ids, "attention_mask": mask}


def eager_outputs(model: nn.Module, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    with torch.no_grad():
        tokens, frames = model.encode_video(inputs["video"])
        hidden, embed = model.encode_text(inputs["input_ids"], inputs["attention_mask"])
    return {"tokens": tokens, "frame_embeds": frames, "hidden": hidden, "text_embed": embed}


def relative_error(actual: Tensor, expected: Tensor) -> float:
    assert actual.shape == expected.shape
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp_min(1e-6)).item()


def test_onnx_matches_eager_on_another_batch_size(tmp_path: Path) -> None:
    import onnxruntime

    model, config = tiny_model()
    files = export_onnx(model, config, tmp_path / "onnx")
    names = sorted(path.name for path in files)
    assert names == ["text_encoder.onnx", "text_encoder.onnx.data", "video_encoder.onnx", "video_encoder.onnx.data"]
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == names  # no staging folder left

    for batch in (3, 1):
        inputs = fresh_inputs(batch, seed=10 + batch)
        expected = eager_outputs(model, inputs)
        for part, input_names in [("video_encoder", ["video"]), ("text_encoder", ["input_ids", "attention_mask"])]:
            session = onnxruntime.InferenceSession(
                str(tmp_path / "onnx" / f"{part}.onnx"), providers=["CPUExecutionProvider"]
            )
            assert [i.name for i in session.get_inputs()] == input_names
            assert all(isinstance(i.shape[0], str) for i in session.get_inputs())  # a symbolic batch dimension
            output_names = [o.name for o in session.get_outputs()]
            outputs = session.run(output_names, {name: inputs[name].numpy() for name in input_names})
            for name, value in zip(output_names, outputs):
                assert relative_error(torch.from_numpy(value), expected[name]) <= 1e-4, (part, name, batch)
    assert set(expected) == {"tokens", "frame_embeds", "hidden", "text_embed"}


def test_pt2_matches_eager_and_restores_modes(tmp_path: Path) -> None:
    model, config = tiny_model()
    model.train()
    model.vision_encoder.eval()  # a mixed state, to check that each module's own mode comes back
    files = export_pt2(model, config, tmp_path / "pt2")
    assert sorted(path.name for path in files) == ["text_encoder.pt2", "video_encoder.pt2"]
    assert model.training and model.text_encoder.training and not model.vision_encoder.training

    model.eval()
    video = torch.export.load(str(tmp_path / "pt2" / "video_encoder.pt2")).module()
    text = torch.export.load(str(tmp_path / "pt2" / "text_encoder.pt2")).module()
    for batch in (3, 1):
        inputs = fresh_inputs(batch, seed=20 + batch)
        expected = eager_outputs(model, inputs)
        with torch.no_grad():
            tokens, frames = video(inputs["video"])
            hidden, embed = text(inputs["input_ids"], inputs["attention_mask"])
        actual = {"tokens": tokens, "frame_embeds": frames, "hidden": hidden, "text_embed": embed}
        for name, value in actual.items():
            assert relative_error(value, expected[name]) <= 1e-5, (name, batch)


def test_missing_onnx_extra_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    model, config = tiny_model()
    with pytest.raises(UsageError, match=r"pip install 'umt\[export\]'"):
        export_onnx(model, config, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


def test_unrunnable_onnx_file_fails_the_check_and_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    def broken_export(part: ExportPart, path: Path, opset: int | None) -> Path:
        path.write_bytes(b"not an onnx model")
        return path

    monkeypatch.setattr(onnx_module, "_export_onnx_part", broken_export)
    model, config = tiny_model()
    with pytest.raises(UmtError) as error:
        export_onnx(model, config, tmp_path / "onnx")
    assert str(error.value).startswith("video_encoder.onnx: onnxruntime cannot run it") and "\n" not in str(error.value)
    assert list((tmp_path / "onnx").iterdir()) == []


class Doubler(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (2 * x,)


def test_check_tolerance_is_relative_to_the_largest_reference_value() -> None:
    part = ExportPart("doubler", Doubler(), ("x",), ("y",), lambda batch, generator: (torch.randn(batch, 4),))
    x = torch.tensor([[1000.0, -2000.0, 3.0, 0.5]])  # eager y = 2x, largest |y| = 4000
    close = 2 * x + torch.tensor([[0.0, 0.0, 0.3, 0.0]])  # 0.3 / 4000 = 7.5e-5 <= 1e-4
    far = 2 * x + torch.tensor([[0.0, 0.0, 0.5, 0.0]])  # 0.5 / 4000 = 1.25e-4 > 1e-4
    onnx_module._compare("doubler.onnx", part, [close], (x,), 1e-4)
    with pytest.raises(UmtError, match=r"doubler.onnx: output y differs .* 0.000125"):
        onnx_module._compare("doubler.onnx", part, [far], (x,), 1e-4)
    with pytest.raises(UmtError, match="doubler.onnx"):  # NaN never passes
        onnx_module._compare("doubler.onnx", part, [torch.full_like(x, float("nan"))], (x,), 1e-4)


def test_classifier_onnx_and_pt2_match_eager(tmp_path: Path) -> None:
    import onnxruntime

    config = ClassifierConfig(
        vision=VisionConfig(dim=32, depth=1, num_heads=2, patch_size=16, img_size=32, num_frames=2),
        num_classes=5,
        preprocess=Preprocess(size=32, num_frames=2),
    )
    torch.manual_seed(0)
    model = build_classifier(config)
    with torch.no_grad():  # a fresh head is scaled by 1e-3; make the logits far from zero
        model.head.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    onnx_files = export_onnx(model, config, tmp_path)
    pt2_files = export_pt2(model, config, tmp_path)
    names = sorted(p.name for p in onnx_files + pt2_files)
    assert names == ["classifier.onnx", "classifier.onnx.data", "classifier.pt2"]

    video = torch.randn(4, 3, 2, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(video)  # (B, classes)
        (from_pt2,) = torch.export.load(str(tmp_path / "classifier.pt2")).module()(video)  # outputs are tuples
    session = onnxruntime.InferenceSession(str(tmp_path / "classifier.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    (from_onnx,) = session.run(["logits"], {"video": video.numpy()})
    assert relative_error(torch.from_numpy(from_onnx), expected) <= 1e-4
    assert relative_error(from_pt2, expected) <= 1e-5
