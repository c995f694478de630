"""The fault catalogue of `umt score`: bad prompt files, videos, feature files, checkpoints, options and output
folders end in one `error:` line naming the culprit (exit 1 for data, checkpoints and disks, 2 for usage), never a
traceback; a prompt without a video and an undecodable video are skipped, counted and named instead."""

from __future__ import annotations

import errno
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))  # the catalogue's shared check lives with the CLI tests
from test_fault_catalogue import Fault, check_fault, fail_writes_under, runner  # noqa: E402

from umt_cli.cli.app import app  # noqa: E402

PROMPTS = {"0": "a red square", "1": "a blue circle", "2": "a green square", "3": "a dog", "4": "a cat"}


@dataclass(frozen=True)
class ScoreInputs:
    ckpt: Path
    bert: Path
    videos: Path


@pytest.fixture
def score_inputs(official_model, score_videos) -> ScoreInputs:
    return ScoreInputs(official_model.path, official_model.bert, score_videos)


def prompts_file(tmp_path: Path, content: str | bytes, name: str = "prompts.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def align_args(tmp_path: Path, inputs: ScoreInputs, *extra: str, prompts: Path | None = None,
               videos: Path | None = None) -> list[str]:  # fmt: skip
    prompts = prompts or prompts_file(tmp_path, json.dumps(PROMPTS))
    return ["score", "align", "--videos", str(videos or inputs.videos), "--prompts", str(prompts), "--ckpt",
            str(inputs.ckpt), "--text-encoder", str(inputs.bert), "--size", "32", "--out", str(tmp_path / "out"),
            *extra]  # fmt: skip


def fvd_args(tmp_path: Path, real: Path, fake: Path, *extra: str) -> list[str]:
    return ["score", "fvd", "--real", str(real), "--fake", str(fake), "--out", str(tmp_path / "out"), *extra]


def features(tmp_path: Path, name: str, width: int, rows: int = 10) -> Path:
    path = tmp_path / name
    save_file({"features": np.random.default_rng(0).normal(size=(rows, width)).astype(np.float32)}, str(path))
    return path


def row(name: str, make, code: int, culprit: str) -> Fault:
    return Fault(name, make, code, culprit, fixture="score_inputs")


def _prompts(content: str | bytes, name: str = "prompts.json"):
    return lambda t, m, i: align_args(t, i, prompts=prompts_file(t, content, name))


def _truncated_checkpoint(tmp_path: Path, m: pytest.MonkeyPatch, inputs: ScoreInputs) -> list[str]:
    cut = tmp_path / "ckpt_best.pth"
    cut.write_bytes(inputs.ckpt.read_bytes()[:5000])
    return align_args(tmp_path, replace_ckpt(inputs, cut))


def replace_ckpt(inputs: ScoreInputs, ckpt: Path) -> ScoreInputs:
    return ScoreInputs(ckpt, inputs.bert, inputs.videos)


def _read_only_out(tmp_path: Path, m: pytest.MonkeyPatch, inputs: ScoreInputs) -> list[str]:
    args = align_args(tmp_path, inputs)
    fail_writes_under(m, tmp_path / "out", errno.EROFS)
    return args


def _duplicate_ids(tmp_path: Path, m: pytest.MonkeyPatch, inputs: ScoreInputs) -> list[str]:
    folder = tmp_path / "videos"
    shutil.copytree(inputs.videos, folder)
    (folder / "0.gif").write_bytes(b"GIF89a")
    return align_args(tmp_path, inputs, videos=folder)


def _wrong_width(tmp_path: Path, m: pytest.MonkeyPatch, inputs: ScoreInputs) -> list[str]:
    return fvd_args(tmp_path, features(tmp_path, "real.safetensors", 768), features(tmp_path, "fake.safetensors", 512))


def _not_features(tmp_path: Path, m: pytest.MonkeyPatch, inputs: ScoreInputs) -> list[str]:
    garbage = tmp_path / "gt1649_feats.pt"
    garbage.write_bytes(b"PK\x03\x04 not a torch file")
    return fvd_args(tmp_path, garbage, features(tmp_path, "fake.safetensors", 16))


def _three_dims(tmp_path: Path, m: pytest.MonkeyPatch, inputs: ScoreInputs) -> list[str]:
    path = tmp_path / "real.pt"
    torch.save(torch.zeros(4, 12, 16), path)
    return fvd_args(tmp_path, path, features(tmp_path, "fake.safetensors", 16))


def _nan_features(tmp_path: Path, m: pytest.MonkeyPatch, inputs: ScoreInputs) -> list[str]:
    path = tmp_path / "real.npy"
    values = np.ones((5, 16), np.float32)
    values[2, 3] = np.nan
    np.save(path, values)
    return fvd_args(tmp_path, path, features(tmp_path, "fake.safetensors", 16))


ROWS = [
    row("align: empty prompt file", _prompts(""), 1, "prompts.json: the file is empty"),
    row("align: prompt file not JSON", _prompts("{'0': 'a cat'"), 1, "prompts.json: not JSON (line 1"),
    row("align: prompt file not UTF-8", _prompts(b'{"0": "caf\xe9"}'), 1, "prompts.json line 1: not UTF-8"),
    row(
        "align: a record without a prompt",
        _prompts('[{"video": "0.mp4", "title": "x"}]'),
        1,
        "entry 0 has no prompt or caption or text",
    ),
    row("align: a CSV without an id column", _prompts("name,prompt\n0,a cat\n", "p.csv"), 1, "p.csv: row 2 has no id"),
    row("align: no prompt matches a video", _prompts('{"cat": "a cat"}'), 1, "no prompt id matches a video file name"),
    row("align: --videos missing", lambda t, m, i: align_args(t, i, videos=t / "absent"), 2, "absent not found"),
    row("align: two videos with one id", _duplicate_ids, 1, "two videos with the id '0'"),
    row("align: unknown protocol", lambda t, m, i: align_args(t, i, "--protocol", "vbench"), 2, "--protocol 'vbench'"),
    row("align: unknown head", lambda t, m, i: align_args(t, i, "--head", "softmax"), 2, "--head 'softmax'"),
    row(
        "align: half precision on the CPU",
        lambda t, m, i: align_args(t, i, "--precision", "fp16", "--device", "cpu"),
        2,
        "--precision fp16 needs a GPU",
    ),
    row("align: truncated checkpoint", _truncated_checkpoint, 1, "ckpt_best.pth"),
    row(
        "align: a tokenizer hub id not in the cache (nothing is downloaded)",
        lambda t, m, i: align_args(t, ScoreInputs(i.ckpt, Path("nobody/bert-missing"), i.videos)),
        2,
        "nobody/bert-missing: not a local folder, and not in the Hugging Face cache",
    ),
    row(
        "align: --out is a file",
        lambda t, m, i: align_args(t, i, "--out", str(prompts_file(t, "x", "taken"))),
        2,
        "taken: is a file",
    ),
    row("align: read-only output folder", _read_only_out, 1, "out"),
    row("fvd: features of another width", _wrong_width, 1, "features 512 wide, but --real"),
    row("fvd: not a feature file", _not_features, 1, "gt1649_feats.pt: not a readable feature file"),
    row("fvd: a 3-D feature tensor", _three_dims, 1, "real.pt: features must be one (videos, width) matrix"),
    row("fvd: NaN features", _nan_features, 1, "real.npy: the features hold NaN"),
    row("fvd: a video folder without --ckpt", lambda t, m, i: fvd_args(t, i.videos, i.videos), 2, "--ckpt: needed"),
    row(
        "fvd: --n not a number",
        lambda t, m, i: fvd_args(
            t, features(t, "a.npy.safetensors", 4), features(t, "b.safetensors", 4), "--n", "32,abc"
        ),
        2,
        "--n 'abc': not an integer",
    ),
    row(
        "fvd: --real missing",
        lambda t, m, i: fvd_args(t, t / "absent.pt", features(t, "b.safetensors", 4)),
        2,
        "--real: ",
    ),
    row(
        "fvd: --real of an unknown kind",
        lambda t, m, i: fvd_args(t, prompts_file(t, "x", "real.txt"), features(t, "b.safetensors", 4)),
        2,
        "real.txt: not a folder of videos, nor a feature file",
    ),
]


@pytest.mark.parametrize("fault", ROWS, ids=[r.name for r in ROWS])
def test_a_bad_score_input_ends_in_one_error_line(fault, tmp_path, monkeypatch, request):
    check_fault(fault, tmp_path, monkeypatch, request)


def test_prompts_without_videos_and_unreadable_videos_are_skipped_counted_and_named(tmp_path, score_inputs):
    folder = tmp_path / "videos"
    shutil.copytree(score_inputs.videos, folder)
    (folder / "1.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(100))  # damaged
    (folder / "4.mp4").write_bytes(b"")  # empty
    prompts = prompts_file(tmp_path, json.dumps({**PROMPTS, "7": "no video for this one"}))
    result = runner.invoke(app, align_args(tmp_path, score_inputs, prompts=prompts, videos=folder))
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert list(scores["scores"]) == ["0", "2", "3"] and scores["count"] == 3
    assert scores["skipped"]["no_video"] == ["7"]
    assert set(scores["skipped"]["unreadable"]) == {"1", "4"}
    assert scores["skipped"]["unreadable"]["4"].startswith("empty:")
    assert "2 video(s) could not be decoded and were not scored: 1 (" in result.output
    assert "1 prompt id(s) have no video and were not scored: 7" in result.output
