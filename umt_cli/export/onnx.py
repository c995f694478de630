"""ONNX and `torch.export` (`.pt2`) files of an exported model, each checked against the eager model.

A model is exported in parts, each a tiny wrapper whose forward returns a tuple (named outputs need one):

| part | inputs | outputs |
|---|---|---|
| `video_encoder` | `video` (B, 3, T, S, S) float32 | `tokens` (B, N, D), `frame_embeds` (B, T, E) l2-normalised |
| `text_encoder` | `input_ids`, `attention_mask` (B, L) int64 | `hidden` (B, L, Dtxt), `text_embed` (B, E) |
| `classifier` | `video` (B, 3, T, S, S) float32 | `logits` (B, classes) |

B is dynamic; everything else is fixed by the config (L is `max_len`). ONNX goes through the dynamo exporter
(`torch.onnx.export(..., dynamo=True)`, itself built on `torch.export`), which writes the weights to a
`<name>.onnx.data` sidecar next to each `.onnx` file: keep the two together. The TorchScript-based exporter is not
used (TorchScript is deprecated in recent torch; docs/official-behaviour.md, Export).

Every file is checked on fresh random inputs whose batch size differs from the one used to export, so a batch
dimension that was silently fixed at export time fails the check: ONNX under onnxruntime (CPU) within
`ONNX_TOLERANCE`, `.pt2` through `torch.export.load(...).module()` within `PT2_TOLERANCE`, both as
`max |a - b| / max(max |b|, 1e-6)` against eager. Files are written into a hidden folder and moved into `out_dir` only
once they pass, so a failed check leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from umt_cli.errors import UmtError, UsageError, first_line
from umt_cli.models.config import ClassifierConfig, VideoTextConfig

__all__ = [
    "require_onnx",
    "EXPORT_BATCH",
    "CHECK_BATCH",
    "ONNX_TOLERANCE",
    "PT2_TOLERANCE",
    "ExportPart",
    "export_parts",
    "export_onnx",
    "export_pt2",
    "max_relative_error",
]

EXPORT_BATCH = 2
"""Batch size of the example inputs traced at export time (not 1: torch.export specialises size-1 dimensions)."""
CHECK_BATCH = 3
"""Batch size of the check inputs; differs from `EXPORT_BATCH` so a batch dimension fixed by mistake fails."""
ONNX_TOLERANCE = 1e-4
PT2_TOLERANCE = 1e-5
_EXPORT_SEED, _CHECK_SEED = 0, 1
_ONNX_EXTRA_HINT = "ONNX export needs the export extra: pip install 'umt[export]'"

ModelConfig = VideoTextConfig | ClassifierConfig


# ------------------------------------------------------------------------------------------------------------ parts
class VideoEncoderPart(nn.Module):
    """`video` -> (`tokens`, `frame_embeds`): `VideoTextModel.encode_video`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.training = False  # the wrapper only: the model's own mode is the caller's (export sets eval)
        self.model = model

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        tokens, frames = self.model.encode_video(video)  # (B, N, D), (B, T, E)
        return tokens, frames


class TextEncoderPart(nn.Module):
    """(`input_ids`, `attention_mask`) -> (`hidden`, `text_embed`): `VideoTextModel.encode_text`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.training = False
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        hidden, embed = self.model.encode_text(input_ids, attention_mask)  # (B, L, Dtxt), (B, E)
        return hidden, embed


class ClassifierPart(nn.Module):
    """`video` -> (`logits`,): the classifier's forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.training = False
        self.model = model

    def forward(self, video: Tensor) -> tuple[Tensor]:
        return (self.model(video),)  # (B, classes)


@dataclass(frozen=True)
class ExportPart:
    """One exported file's module and interface.

    Attributes:
        name: File stem (`video_encoder`, `text_encoder`, `classifier`).
        module: The wrapper; its forward takes the inputs in order and returns the outputs as a tuple.
        input_names, output_names: Names of the inputs and outputs, in order.
        make_inputs: (batch size, generator) -> example inputs, on the model's device.
    """

    name: str
    module: nn.Module
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    make_inputs: Callable[[int, torch.Generator], tuple[Tensor, ...]]

    def dynamic_shapes(self) -> tuple[dict[int, object], ...]:
        """Dimension 0 of every input is the one shared, dynamic batch size."""
        batch = torch.export.Dim("batch", min=1)
        return tuple({0: batch} for _ in self.input_names)


def export_parts(model: nn.Module, config: ModelConfig) -> list[ExportPart]:
    """The parts `model` is exported as: video and text encoders (video-text), or the classifier."""
    device = next(model.parameters()).device
    video = _video_maker(config, device)
    if isinstance(config, ClassifierConfig):
        return [ExportPart("classifier", ClassifierPart(model), ("video",), ("logits",), video)]
    return [
        ExportPart("video_encoder", VideoEncoderPart(model), ("video",), ("tokens", "frame_embeds"), video),
        ExportPart(
            "text_encoder",
            TextEncoderPart(model),
            ("input_ids", "attention_mask"),
            ("hidden", "text_embed"),
            _text_maker(config, device),
        ),
    ]


def _video_maker(config: ModelConfig, device: torch.device) -> Callable[[int, torch.Generator], tuple[Tensor, ...]]:
    v = config.vision

    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        shape = (batch, 3, v.num_frames, v.img_size, v.img_size)
        return (torch.randn(shape, generator=generator).to(device),)  # (B, 3, T, S, S)

    return make


def _text_maker(config: VideoTextConfig, device: torch.device) -> Callable[[int, torch.Generator], tuple[Tensor, ...]]:
    length, vocab, pad = config.preprocess.max_len, config.text.vocab_size, config.text.pad_token_id

    def make(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        # Captions of random lengths (1..L), so padded positions are exercised as well as full rows.
        lengths = torch.randint(1, length + 1, (batch, 1), generator=generator)  # (B, 1)
        mask = (torch.arange(length) < lengths).long()  # (B, L)
        ids = torch.randint(0, vocab, (batch, length), generator=generator).masked_fill(mask == 0, pad)  # (B, L)
        return ids.to(device), mask.to(device)

    return make


# ------------------------------------------------------------------------------------------------------------- ONNX
def export_onnx(
    model: nn.Module, config: ModelConfig, out_dir: Path, *, opset: int | None = None, check: bool = True
) -> list[Path]:
    """Export `model` as ONNX files in `out_dir` (one per part, each with its `.onnx.data` sidecar).

    Args:
        model: A `VideoTextModel` or `VideoClassifier`, best on the CPU (the tolerance assumes float32 CPU maths;
            GPU convolutions may run in TF32); exported in eval mode, its modes restored afterwards.
        config: Its config (input shapes).
        out_dir: Where the files go (created if needed); files of the same names are replaced.
        opset: ONNX opset version; None = the exporter's default.
        check: Run each file under onnxruntime (CPU) on fresh inputs of another batch size and compare with eager.

    Returns:
        The files written, `.onnx` files and their sidecars.

    Raises:
        UsageError: onnx, onnxruntime or onnxscript is not installed.
        UmtError: A file that onnxruntime cannot run or whose outputs differ from eager, naming the file.
    """
    require_onnx()
    with _staging(Path(out_dir)) as stage, _eval_mode(model):
        for part in export_parts(model, config):
            path = _export_onnx_part(part, stage / f"{part.name}.onnx", opset)
            if check:
                _check_onnx_part(part, path)
        return _publish(stage, Path(out_dir))


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UsageError(_ONNX_EXTRA_HINT) from None


def _export_onnx_part(part: ExportPart, path: Path, opset: int | None) -> Path:
    example = part.make_inputs(EXPORT_BATCH, torch.Generator().manual_seed(_EXPORT_SEED))
    with warnings.catch_warnings():
        # Inputs sharing one batch Dim make the exporter say it keeps only one of the (identical) names.
        warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
        torch.onnx.export(
            part.module,
            example,
            str(path),
            dynamo=True,
            input_names=list(part.input_names),
            output_names=list(part.output_names),
            dynamic_shapes=part.dynamic_shapes(),
            opset_version=opset,
            external_data=True,
            verbose=False,
        )
    return path


def _check_onnx_part(part: ExportPart, path: Path) -> None:
    """Compare onnxruntime's outputs on fresh inputs (batch `CHECK_BATCH`) with eager's."""
    import onnxruntime

    inputs = part.make_inputs(CHECK_BATCH, torch.Generator().manual_seed(_CHECK_SEED))
    feed = {name: tensor.cpu().numpy() for name, tensor in zip(part.input_names, inputs)}
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = session.run(list(part.output_names), feed)
    except Exception as error:  # onnxruntime raises its own exception types for invalid graphs and failed runs
        reason = f"{type(error).__name__}: {first_line(error)}"
        raise UmtError(f"{path.name}: onnxruntime cannot run it ({reason})") from None
    _compare(path.name, part, [torch.from_numpy(out) for out in outputs], inputs, ONNX_TOLERANCE)


# -------------------------------------------------------------------------------------------------------------- pt2
def export_pt2(model: nn.Module, config: ModelConfig, out_dir: Path) -> list[Path]:
    """Export `model` with `torch.export` (one `.pt2` per part), each checked after a save / load round trip.

    Load one with `torch.export.load(path).module()`; call it with the inputs in the order of the module docstring.

    Args:
        model: As for `export_onnx` (best on the CPU; exported in eval mode, its modes restored afterwards).
        config: Its config (input shapes).
        out_dir: Where the files go (created if needed); files of the same names are replaced.

    Returns:
        The files written.

    Raises:
        UmtError: A reloaded program whose outputs differ from eager by more than `PT2_TOLERANCE`, naming the file.
    """
    with _staging(Path(out_dir)) as stage, _eval_mode(model):
        for part in export_parts(model, config):
            example = part.make_inputs(EXPORT_BATCH, torch.Generator().manual_seed(_EXPORT_SEED))
            program = torch.export.export(part.module, example, dynamic_shapes=part.dynamic_shapes())
            path = stage / f"{part.name}.pt2"
            torch.export.save(program, str(path))
            _check_pt2_part(part, path)
        return _publish(stage, Path(out_dir))


def _check_pt2_part(part: ExportPart, path: Path) -> None:
    inputs = part.make_inputs(CHECK_BATCH, torch.Generator().manual_seed(_CHECK_SEED))
    with torch.no_grad():
        outputs = torch.export.load(str(path)).module()(*inputs)
    _compare(path.name, part, list(outputs), inputs, PT2_TOLERANCE)


# ----------------------------------------------------------------------------------------------------------- shared
def max_relative_error(actual: Tensor, expected: Tensor) -> float:
    """`max |actual - expected| / max(max |expected|, 1e-6)`, in float64 (inf when the shapes differ)."""
    if actual.shape != expected.shape:
        return float("inf")
    actual, expected = actual.detach().cpu().double(), expected.detach().cpu().double()
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, 1e-6)
    return (actual - expected).abs().max().item() / scale if expected.numel() else 0.0


def _compare(file: str, part: ExportPart, outputs: list[Tensor], inputs: tuple[Tensor, ...], tolerance: float) -> None:
    """Raise `UmtError` naming `file` when an output differs from eager by more than `tolerance`."""
    with torch.no_grad():
        expected = part.module(*inputs)
    for name, actual, reference in zip(part.output_names, outputs, expected):
        error = max_relative_error(actual, reference)
        if not error <= tolerance:  # also catches NaN
            raise UmtError(
                f"{file}: output {name} differs from the eager model (max relative error {error:.3g} > {tolerance:g}, "
                f"shape {tuple(actual.shape)} vs {tuple(reference.shape)}); nothing was written"
            )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, no drop path) for the export, then every submodule's own mode back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder inside `out_dir` to write into, removed afterwards whatever happens."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = out_dir / f".tmp-export-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, out_dir: Path) -> list[Path]:
    """Move every file of `stage` into `out_dir` (same names: an `.onnx` file finds its sidecar by relative name)."""
    written = []
    for path in sorted(stage.iterdir()):
        target = out_dir / path.name
        os.replace(path, target)
        written.append(target)
    return written
