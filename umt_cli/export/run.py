"""What `umt export` does after parsing: load the model, write the bundle (and ONNX / `.pt2` files), summarise.

Everything lands in one folder and appears only once complete: ONNX and `.pt2` files are written into the bundle's
temporary folder (`write_bundle(..., extras=...)`) and checked there, so a failed check, a full disk or Ctrl-C leaves
neither a temporary folder nor a half bundle behind, and `--overwrite` replaces an old bundle only after the new one
passed every check.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from umt_cli.errors import UsageError

if TYPE_CHECKING:
    from umt_cli.models.config import ClassifierConfig, VideoTextConfig
    from umt_cli.models.loading import LoadedModel

__all__ = ["run_export", "progress"]

TEXT_ENCODER_OPTION = "--text-encoder"
IGNORED_LISTED = 5
"""Up to this many ignored keys are listed by name in the bundle's notes; more are counted."""


def progress(message: str) -> None:
    """One progress line on stderr (stdout keeps only the summary); exports of large models take minutes."""
    print(message, file=sys.stderr, flush=True)


def run_export(**options: Any) -> dict[str, Any]:
    """`umt export` (options as the command's parameters: ckpt, out, onnx, pt2, frames, text_encoder,
    trust_checkpoint, overwrite, no_check); returns the summary.

    Raises:
        UsageError: A missing `--ckpt`, a refused `--out`, no local tokenizer folder, the ONNX extra not installed.
        CheckpointError: A checkpoint that cannot be loaded as a video-text model or classifier.
        UmtError: An ONNX or `.pt2` file whose outputs differ from eager (nothing is written then).
        OSError: Writing failed (full disk, read-only folder); nothing is left behind.
    """
    from umt_cli.export.bundle import write_bundle
    from umt_cli.export.onnx import require_onnx
    from umt_cli.models.loading import load_model

    o = options
    ckpt, out = Path(o["ckpt"]), Path(o["out"])
    _check_out(out, overwrite=o["overwrite"])  # before minutes of loading, not after
    if o["onnx"]:
        require_onnx()
    progress(f"loading {ckpt}")
    loaded = load_model(ckpt, expect="any", trust=o["trust_checkpoint"], text_encoder=o["text_encoder"],
                        num_frames=o["frames"])  # fmt: skip
    if o["text_encoder"] is not None and loaded.config.kind == "classifier":
        warnings.warn(f"{TEXT_ENCODER_OPTION} ignored: a classifier has no tokenizer", stacklevel=1)
    tokenizer_dir = _tokenizer_folder(loaded)
    model = loaded.model.cpu()  # ONNX / pt2 tolerances assume float32 CPU maths (GPU convolutions may run in TF32)
    formats = [name for name, wanted in (("onnx", o["onnx"]), ("pt2", o["pt2"])) if wanted]
    check = not o["no_check"]
    progress(f"writing weights, config and model card to {out}")
    write_bundle(
        out,
        model=model,
        config=loaded.config,
        tokenizer_dir=tokenizer_dir,
        source=str(ckpt),
        source_sha256=loaded.sha256,
        notes=_notes(loaded, formats),
        overwrite=o["overwrite"],
        extras=lambda folder: _write_extras(folder, model, loaded.config, formats, check=check),
    )
    return _summary(out, loaded, formats, checked=check)


def _check_out(out: Path, *, overwrite: bool) -> None:
    """Refuse `--out` early, in the command's words: a file, a non-empty folder without `--overwrite`, or (even with
    it) a folder that is not an export, which replacing would delete. `write_bundle` checks again when it writes."""
    from umt_cli.export.bundle import is_bundle

    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder; choose another output folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise UsageError(f"--out: {out} is not empty; choose another folder, or pass --overwrite to replace an export")
    if not is_bundle(out):
        raise UsageError(
            f"--out: {out} is not a umt export (no config.json + model.safetensors), so --overwrite will not delete it"
        )


def _tokenizer_folder(loaded: LoadedModel) -> Path | None:
    """The local tokenizer folder a video-text bundle copies (None for a classifier).

    A bundle must load with no other file, so a hub id (what an official file defaults to) is not enough.
    """
    if loaded.config.kind != "video-text":
        return None
    tokenizer = Path(str(loaded.tokenizer))
    if not tokenizer.is_dir():
        raise UsageError(
            f"{TEXT_ENCODER_OPTION}: {tokenizer} is not a local folder; the bundle copies the tokenizer files, so "
            f"pass {TEXT_ENCODER_OPTION} DIR (a BERT folder with vocab.txt)"
        )
    return tokenizer


def _notes(loaded: LoadedModel, formats: list[str]) -> dict[str, Any]:
    """What `config.json` and the card record about the export beyond the model: the source's kind, the keys left
    out of it on purpose, the frame count and the formats written."""
    return {
        "kind": loaded.kind,
        "ignored_keys": _ignored_note(loaded.ignored),
        "frames": loaded.config.vision.num_frames,
        "formats": ["safetensors", *formats],
    }


def _ignored_note(ignored: list[str]) -> list[str] | str:
    """The checkpoint keys left out on purpose: a short list by name, a long one counted."""
    if len(ignored) <= IGNORED_LISTED:
        return list(ignored)
    return f"{len(ignored)} keys, e.g. {', '.join(ignored[:3])}"


def _write_extras(
    folder: Path, model: nn.Module, config: VideoTextConfig | ClassifierConfig, formats: list[str], *, check: bool
) -> None:
    """ONNX and `.pt2` files into the bundle's temporary `folder`, each checked against eager as it is written."""
    from umt_cli.export.onnx import export_onnx, export_pt2

    if "onnx" in formats:
        progress("exporting ONNX" + (" and checking it under onnxruntime" if check else " (not checked: --no-check)"))
        export_onnx(model, config, folder, check=check)
    if "pt2" in formats:
        progress("exporting torch.export (.pt2) programs and checking them")
        export_pt2(model, config, folder)


def _summary(out: Path, loaded: LoadedModel, formats: list[str], *, checked: bool) -> dict[str, Any]:
    """The closing summary: where, what, from which file, the files with their sizes, and how they were checked."""
    from umt_cli.export.onnx import ONNX_TOLERANCE, PT2_TOLERANCE

    files = sorted(path for path in out.rglob("*") if path.is_file())
    summary: dict[str, Any] = {
        "out": str(out),
        "model": loaded.config.kind,
        "source kind": loaded.kind,
        "source": loaded.source,
        "source sha256": loaded.sha256 or "unknown",
        "frames": loaded.config.vision.num_frames,
        "files": {path.relative_to(out).as_posix(): _size(path.stat().st_size) for path in files},
    }
    # export_onnx / export_pt2 raise past their tolerance rather than report the error they measured
    if "onnx" in formats:
        summary["onnx"] = _checked("onnxruntime", ONNX_TOLERANCE) if checked else "not checked (--no-check)"
    if "pt2" in formats:
        summary["pt2"] = _checked("torch.export.load after a save / load round trip", PT2_TOLERANCE)
    return summary


def _checked(how: str, tolerance: float) -> str:
    return f"checked under {how} (max relative error <= {tolerance:g} vs eager)"


def _size(count: int) -> str:
    """A byte count as people read it: 532 B, 14.2 kB, 348.1 MB, 1.2 GB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
