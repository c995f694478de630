"""The fault catalogue of `umt eval retrieval`: every bad checkpoint, annotation file, option or output folder ends in
one `error:` line naming the culprit, with exit code 1 (data, checkpoint, disk) or 2 (usage), never a traceback."""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_fault_catalogue import Fault, check_fault, fail_writes_under, runner

from umt_cli.cli.app import app
from umt_cli.models.classifier import build_classifier
from umt_cli.models.config import ClassifierConfig, VisionConfig


@dataclass(frozen=True)
class EvalInputs:
    """A finished stage-2 run and the synthetic set whose `test.json` it is evaluated on (both read-only)."""

    run: Path
    data: Path


@pytest.fixture
def eval_inputs(stage2_run: Path, synthetic_dir: Path) -> EvalInputs:
    return EvalInputs(stage2_run, synthetic_dir)


def eval_args(tmp_path: Path, inputs: EvalInputs, *extra: str, ckpt: Path | None = None, data: Path | None = None):
    ckpt = ckpt if ckpt is not None else inputs.run
    data = data if data is not None else inputs.data / "test.json"
    return ["eval", "retrieval", "--ckpt", str(ckpt), "--data", str(data), "--out", str(tmp_path / "out"), *extra]


def row(name: str, make, code: int, culprit: str) -> Fault:
    return Fault(name, make, code, culprit, fixture="eval_inputs")


# --- bad checkpoints -------------------------------------------------------------------------------------------


def _run_copy(tmp_path: Path, inputs: EvalInputs, *, text_encoder: str | None = None, nan: bool = False) -> Path:
    """The run's weights in a new run folder, with another recorded tokenizer folder or a NaN weight."""
    weights = inputs.run / "video_text.safetensors"
    with safe_open(str(weights), "pt") as handle:
        meta = dict(handle.metadata())
    if text_encoder is not None:
        meta["text_encoder"] = text_encoder
    state = load_file(weights)
    if nan:
        state["text_proj.weight"][0, 0] = float("nan")
    folder = tmp_path / "copied-run"
    folder.mkdir()
    save_file(state, str(folder / "video_text.safetensors"), metadata=meta)
    return folder


def _truncated_weights(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    folder = tmp_path / "run"
    folder.mkdir()
    data = (inputs.run / "video_text.safetensors").read_bytes()
    (folder / "video_text.safetensors").write_bytes(data[: len(data) // 2])
    return eval_args(tmp_path, inputs, ckpt=folder)


def _pickled(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    path = tmp_path / "b16_25m.pth"
    torch.save({"model": {"vision_encoder.encoder.norm.weight": torch.ones(2)}, "args": Fault}, path)  # a class
    return eval_args(tmp_path, inputs, ckpt=path)


def _stage1(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    path = tmp_path / "b16_ptk710_f8_res224.pth"
    torch.save({"encoder.blocks.0.attn.q_bias": torch.ones(64), "clip_decoder.0.head.weight": torch.ones(32, 64)},
               path)  # fmt: skip
    return eval_args(tmp_path, inputs, ckpt=path)


def _classifier(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    vision = VisionConfig(dim=64, depth=1, num_heads=1, num_frames=8)
    state = build_classifier(ClassifierConfig(vision=vision, num_classes=3)).state_dict()
    generator = torch.Generator().manual_seed(0)
    for key in ("blocks.0.attn.q_bias", "blocks.0.attn.v_bias"):  # all-zero q/v biases are refused first
        state[key] = 0.1 * torch.randn(state[key].shape, generator=generator)
    path = tmp_path / "b16_ptk710_ftk710_f8_res224.pth"
    torch.save(state, path)
    return eval_args(tmp_path, inputs, ckpt=path)


def _official_without_tokenizer(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    path = tmp_path / "ret_msrvtt.pth"
    state = load_file(inputs.run / "video_text.safetensors")
    torch.save({key.replace("text_encoder.bert.", "text_encoder.", 1): value for key, value in state.items()
                if not key.startswith(("text_encoder.cls.", "vision_encoder.clip_decoder."))}, path)  # fmt: skip
    return eval_args(tmp_path, inputs, "--size", "64", ckpt=path)


def _tokenizer_gone(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    """Run weights copied to another machine: the BERT folder they record is not there."""
    return eval_args(tmp_path, inputs, ckpt=_run_copy(tmp_path, inputs, text_encoder=str(tmp_path / "gone-bert")))


def _checkpoint_rows() -> list[Fault]:
    return [
        row("ckpt missing", lambda t, m, i: eval_args(t, i, ckpt=t / "gone.pth"), 2, "gone.pth not found"),
        row("ckpt folder that is neither a run nor an export",
            lambda t, m, i: eval_args(t, i, ckpt=t), 2, "is neither an exported model"),
        row("truncated run weights", _truncated_weights, 1, "video_text.safetensors: not a readable safetensors"),
        row("pickled .pth without --trust-checkpoint", _pickled, 1, "--trust-checkpoint"),
        row("stage-1 checkpoint", _stage1, 1, "a stage-1 (distillation) checkpoint"),
        row("classifier checkpoint", _classifier, 1, "needs a video-text model"),
        row("official file without a tokenizer", _official_without_tokenizer, 2, "pass --text-encoder"),
        row("tokenizer folder of the run gone", _tokenizer_gone, 2, "gone-bert does not exist"),
        row("tokenizer folder of the run gone (the way out)", _tokenizer_gone, 2, "pass --text-encoder"),
        row("--text-encoder folder missing",
            lambda t, m, i: eval_args(t, i, "--text-encoder", str(t / "no-bert")), 2, "--text-encoder: "),
        row("--text-encoder folder missing (names it)",
            lambda t, m, i: eval_args(t, i, "--text-encoder", str(t / "no-bert")), 2, "no-bert: no such folder"),
        row("weights that give NaN", lambda t, m, i: eval_args(t, i, ckpt=_run_copy(t, i, nan=True)), 1,
            "non-finite"),
    ]  # fmt: skip


# --- bad annotation files --------------------------------------------------------------------------------------


def _annotations(tmp_path: Path, inputs: EvalInputs, content: str | None) -> list[str]:
    """`--data ann.json` holding `content` (a folder when None), with the synthetic set as `--root`."""
    path = tmp_path / "ann.json"
    path.mkdir() if content is None else path.write_text(content, encoding="utf-8")
    return eval_args(tmp_path, inputs, "--root", str(inputs.data), data=path)


def _every_video_missing(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    entries = [{"video": f"videos/clip_{i}.mp4", "caption": f"clip {i}"} for i in range(3)]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return eval_args(tmp_path, inputs, data=path)  # the root is the annotation folder: no videos there


def _annotation_rows() -> list[Fault]:
    one = '{"video": "videos/test/test_0000.mp4", "caption": "a red square"}'
    return [
        row("--data missing", lambda t, m, i: eval_args(t, i, data=t / "gone.json"), 2, "gone.json not found"),
        row("--data is a folder", lambda t, m, i: _annotations(t, i, None), 2, "is a folder, not an annotation file"),
        row("--data not JSON", lambda t, m, i: _annotations(t, i, f'[{one},\n {{"video" "b.mp4"}}]'), 1,
            "ann.json line 2"),
        row("entry with an empty caption list",
            lambda t, m, i: _annotations(t, i, f'[{one}, {{"video": "b.mp4", "caption": []}}]'), 1,
            "ann.json: entry 1 needs `caption`"),
        row("caption not a string", lambda t, m, i: _annotations(t, i, '[{"video": "a.mp4", "caption": 7}]'), 1,
            "ann.json: entry 0 needs `caption`"),
        row("caption empty once cleaned", lambda t, m, i: _annotations(t, i, '[{"video": "a.mp4", "caption": "?"}]'),
            1, "ann.json: entry 0 (a.mp4): caption 0 is empty"),
        row("entry without a video", lambda t, m, i: _annotations(t, i, f'[{one}, {{"caption": "x"}}]'), 1,
            "ann.json: entry 1 needs exactly one of `video` or `image`"),
        row("JSON that is not a list of objects", lambda t, m, i: _annotations(t, i, '["a.mp4", "b.mp4"]'), 1,
            "ann.json: entry 0 needs exactly one of `video` or `image`"),
        row("entry that is an image",
            lambda t, m, i: _annotations(t, i, f'{one}\n{{"image": "images/a.png", "caption": "x"}}\n'), 1,
            "ann.json: entry 1 is an image"),
        row("video listed twice", lambda t, m, i: _annotations(t, i, f"[{one}, {one}]"), 1,
            "entry 1 repeats the video videos/test/test_0000.mp4"),
        row("no entries", lambda t, m, i: _annotations(t, i, "[]"), 1, "ann.json: no entries to evaluate"),
        row("every video missing", _every_video_missing, 1, "missing: "),
        row("every video missing (names one)", _every_video_missing, 1, "clip_0.mp4"),
    ]  # fmt: skip


# --- bad options and output folders ----------------------------------------------------------------------------


def _read_only_out(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    fail_writes_under(m, tmp_path / "out", errno.EROFS)
    return eval_args(tmp_path, inputs)


def _out_is_a_file(tmp_path: Path, m: pytest.MonkeyPatch, inputs: EvalInputs) -> list[str]:
    (tmp_path / "out").write_text("notes\n")
    return eval_args(tmp_path, inputs)


def _option_rows() -> list[Fault]:
    return [
        row("--mode invalid", lambda t, m, i: eval_args(t, i, "--mode", "paragraphs"), 2, "--mode 'paragraphs'"),
        row("--size mismatch", lambda t, m, i: eval_args(t, i, "--size", "96"), 2,
            "--size 96: this model runs at 64 px"),
        row("--size not a multiple of the patch", lambda t, m, i: eval_args(t, i, "--size", "72"), 2,
            "--size 72: must be a multiple of the patch size 16"),
        row("--root not a folder", lambda t, m, i: eval_args(t, i, "--root", str(t / "nowhere")), 2, "--root"),
        row("--device cuda without a GPU", lambda t, m, i: eval_args(t, i, "--device", "cuda"), 2, "--device cuda"),
        row("read-only --out", _read_only_out, 1, "Read-only file system"),
        row("--out is a file", _out_is_a_file, 2, "out: is a file, not a folder"),
    ]  # fmt: skip


ROWS = _checkpoint_rows() + _annotation_rows() + _option_rows()


@pytest.mark.parametrize("fault", ROWS, ids=[fault.name for fault in ROWS])
def test_a_bad_eval_input_ends_in_one_error_line(fault, tmp_path, monkeypatch, request):
    if fault.name.startswith("--device cuda") and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    check_fault(fault, tmp_path, monkeypatch, request)


def test_a_refused_evaluation_leaves_no_output_folder(tmp_path, eval_inputs):
    args = eval_args(tmp_path / "deep", eval_inputs, ckpt=tmp_path / "gone.pth")
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "deep").exists()


def test_a_failed_evaluation_keeps_an_existing_output_folder_and_its_files(tmp_path, eval_inputs):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine\n")
    shutil.copytree(eval_inputs.run, tmp_path / "run")
    (tmp_path / "run" / "video_text.safetensors").write_bytes(b"\0" * 16)
    result = runner.invoke(app, eval_args(tmp_path, eval_inputs, ckpt=tmp_path / "run"))
    assert result.exit_code == 1, result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
