"""`umt score align` on an official-layout retrieval file: UMTScore is the raw `itm_head(fusion [CLS])[1]` and the
clip score the mean of frame cosines, both computed here by hand from the model's parts on pixels and tokens built
independently (PyAV, torchvision, the tokenizer called directly); a wrong file fails naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from test_protocols import reference_clip
from torch.nn import functional as F
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.data.text import build_tokenizer, clean_caption
from umt_cli.models.config import build_video_text

runner = CliRunner()
PROMPTS = {
    "0": "A red square moves right.",
    "1": "a blue circle, on the grass!",
    "2": "The dog runs left",
    "3": "green squares move up and down " * 6,  # longer than 32 tokens: truncated and counted
    "4": "A video of a cat",
}


def score(tmp_path, official_model, videos, *extra, prompts=PROMPTS, name="prompts.json"):
    path = tmp_path / name
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prompts) if isinstance(prompts, dict) else prompts)
    out = tmp_path / "out"
    args = ["score", "align", "--videos", str(videos), "--prompts", str(path), "--ckpt", str(official_model.path),
            "--text-encoder", str(official_model.bert), "--size", "32", "--out", str(out), *extra]  # fmt: skip
    result = runner.invoke(app, args)
    return result, out / "scores.json"


def by_hand(official_model, videos, protocol: str, clean: bool, antialias: bool, frames: int, prompts=PROMPTS):
    """(itm, itc) per prompt id from the model's parts; `videos` maps an id to its file (default `<id>.mp4`)."""
    model = official_model.model
    if frames != model.vision_encoder.encoder.num_tokens // 4:  # the same weights on another frame count
        model = build_video_text(tiny_config().with_frames(frames)).eval()
        model.load_state_dict(official_model.model.state_dict())
    tokenizer = build_tokenizer(official_model.bert)
    itm, itc = {}, {}
    for key, prompt in prompts.items():
        text = clean_caption(prompt) if clean else prompt
        tokens = tokenizer([text], padding="max_length", truncation=True, max_length=32, return_tensors="pt")
        assert tokens.input_ids[0, 0] == tokenizer.cls_token_id and tokenizer.sep_token_id not in tokens.input_ids
        path = videos[key] if isinstance(videos, dict) else videos / f"{key}.mp4"
        video = reference_clip(path, protocol, 32, antialias)[None]  # (1, 3, T, 32, 32)
        with torch.no_grad():
            vision = model.vision_encoder.encoder(video, None, last=True).last  # (1, T·4, 64): all frame tokens
            hidden = model.text_encoder.encode_text(tokens.input_ids, tokens.attention_mask)  # (1, 32, 32)
            fused = model.text_encoder.fuse(hidden, tokens.attention_mask, vision)
            itm[key] = model.itm_head(fused[:, 0])[0, 1].item()
            per_frame = model.vision_encoder.pool_norm(vision.view(1, frames, -1, 64).mean(2))  # (1, T, 64)
            frame_embeds = F.normalize(model.vision_proj(per_frame), dim=-1)[0]  # (T, 16)
            text_embed = F.normalize(model.text_proj(hidden[:, 0]), dim=-1)[0]  # (16,)
            itc[key] = (frame_embeds @ text_embed).mean().item()
    return itm, itc


@pytest.mark.parametrize(
    ("protocol", "clean", "antialias", "frames"),
    [("fetv", True, False, 12), ("chronomagic", True, True, 12), ("t2v-metrics", False, False, 4)],
)
def test_align_equals_the_itm_logit_and_the_frame_cosines_by_hand(
    tmp_path, official_model, score_videos, protocol, clean, antialias, frames
):
    itm, itc = by_hand(official_model, score_videos, protocol, clean, antialias, frames)
    results = {}
    for head in ("itm", "itc"):
        result, path = score(tmp_path / head, official_model, score_videos, "--protocol", protocol, "--head", head)
        assert result.exit_code == 0, result.output
        results[head] = json.loads(path.read_text())
    for head, expected in (("itm", itm), ("itc", itc)):
        scores = results[head]["scores"]
        assert list(scores) == list(PROMPTS)
        torch.testing.assert_close(torch.tensor(list(scores.values())), torch.tensor(list(expected.values())),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        assert results[head]["mean"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-5)
    assert len(set(itm.values())) == len(itm)  # the scores tell the pairs apart
    assert all(-1 <= value <= 1 for value in results["itc"]["scores"].values())
    record = results["itm"]["protocol"]
    assert (record["name"], record["frames"], record["antialias"], record["clean_text"]) == (
        protocol, frames, antialias, clean)  # fmt: skip
    assert record["overridden"]["size"] == {"protocol": 224, "used": 32}
    assert record["device"] == "cpu" and record["precision"] == "fp32"
    assert record["weights"]["file"] == str(official_model.path) and len(record["weights"]["sha256"]) == 64
    assert results["itm"]["metric"] == "UMTScore" and results["itc"]["metric"] == "UMT clip score"
    assert results["itm"]["warnings"] == {"truncated_prompts": 1, "truncated_ids": ["3"]}


def test_the_output_names_the_protocol_and_every_override(tmp_path, official_model, score_videos):
    result, path = score(tmp_path, official_model, score_videos, "--frames", "4", "--raw-text")
    assert result.exit_code == 0, result.output
    record = json.loads(path.read_text())["protocol"]
    assert record["overridden"] == {"size": {"protocol": 224, "used": 32}, "frames": {"protocol": 12, "used": 4},
                                    "clean_text": {"protocol": True, "used": False},
                                    "precision": {"protocol": "fp16", "used": "fp32",
                                                  "why": "the CPU computes in fp32"}}  # fmt: skip
    assert "fetv · 4 frames (middle) · 32 px, no antialias · raw text, 32 tokens · fp32 on cpu" in result.output
    line = next(line for line in result.output.splitlines() if line.startswith("protocol: "))
    changes = line.split("overridden: ")[1].split(", ")
    assert sorted(changes) == ["clean_text True -> False", "frames 12 -> 4", "precision fp16 -> fp32", "size 224 -> 32"]
    assert "1 prompt(s) longer than 32 tokens were truncated: 3" in result.output


@pytest.mark.parametrize(
    ("change", "culprit"),
    [("missing", "text_encoder.encoder.layer.2.output.dense.bias"), ("extra", "vision_encoder.extra.weight")],
)
def test_a_missing_or_extra_key_fails_naming_it(tmp_path, official_model, score_videos, change, culprit):
    state = torch.load(official_model.path, weights_only=True)["model"]
    if change == "missing":
        del state[culprit]
    else:
        state[culprit] = torch.zeros(2)
    bad = tmp_path / "bad.pth"
    torch.save({"model": state}, bad)
    result = runner.invoke(app, ["score", "align", "--videos", str(score_videos), "--prompts",
                                 str(_prompts(tmp_path)), "--ckpt", str(bad), "--text-encoder",
                                 str(official_model.bert), "--size", "32", "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert culprit in result.output
    assert not (tmp_path / "out").exists()  # no scores, and no empty folder left behind


def _prompts(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROMPTS))
    return path


def test_prompt_formats_and_unmatched_ids(tmp_path, official_model, score_videos):
    jsonl = "\n".join(json.dumps({"video": f"{key}.mp4", "caption": text}) for key, text in PROMPTS.items())
    result, path = score(tmp_path / "a", official_model, score_videos, prompts=jsonl, name="p.jsonl")
    assert result.exit_code == 0, result.output
    from_jsonl = json.loads(path.read_text())["scores"]
    csv = "id,prompt\n" + "\n".join(f'{key},"{text}"' for key, text in PROMPTS.items()) + "\n9,no video here\n"
    result, path = score(tmp_path / "b", official_model, score_videos, prompts=csv, name="p.csv")
    assert result.exit_code == 0, result.output
    from_csv = json.loads(path.read_text())
    assert from_csv["scores"] == from_jsonl
    assert from_csv["skipped"]["no_video"] == ["9"]
    assert "1 prompt id(s) have no video and were not scored: 9" in result.output


def test_a_gif_is_scored_from_its_rgb_frames(tmp_path, official_model):
    from PIL import Image

    folder = tmp_path / "gifs"
    folder.mkdir()
    frames = []
    for i in range(9):  # palette-exact colours survive GIF quantisation; alpha is dropped, not blended
        frame = np.zeros((48, 64, 4), np.uint8)
        frame[..., 3] = 255
        frame[..., 0] = 255
        frame[8:24, 4 * i : 4 * i + 16] = (0, 0, 255, 128)
        frames.append(Image.fromarray(frame, "RGBA"))
    frames[0].save(folder / "7.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    prompts = {"7": "a blue square moves right"}
    result, path = score(tmp_path, official_model, folder, prompts=prompts)
    assert result.exit_code == 0, result.output
    itm, _ = by_hand(official_model, {"7": folder / "7.gif"}, "fetv", True, False, 12, prompts=prompts)
    assert json.loads(path.read_text())["scores"]["7"] == pytest.approx(itm["7"], abs=1e-5)
