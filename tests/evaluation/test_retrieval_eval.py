"""`evaluate_retrieval` end to end on the tiny stage-2 run (SPEC §4.1), against an independent recomputation.

The reference encodes each video and each caption alone (`encode_video` / `encode_text` on a batch of one), forms
the frame-mean cosine matrix and the ITM logits pair by pair in Python, and ranks with Python's `sorted`. The
evaluation's own score matrices are recorded (a wrapper around the functions it calls) and compared with the
reference's; its metrics are compared with brute-force rankings.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import numbered_frames, read_frame_number
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import umt_cli.evaluation.retrieval as retrieval
from umt_cli.data.prepare.encode import write_h264
from umt_cli.data.text import build_tokenizer, clean_caption, tokenize
from umt_cli.errors import CheckpointError, DataError, UsageError
from umt_cli.evaluation.features import ClipReader
from umt_cli.evaluation.retrieval import RetrievalProtocol, RetrievalSettings, evaluate_retrieval
from umt_cli.models.loading import load_model

SETTINGS = RetrievalSettings(batch_size=3, show_progress=False)  # 3 does not divide 4 videos or 12 texts


# --- the reference ---------------------------------------------------------------------------------------------


@dataclass
class Reference:
    """One-at-a-time features of the synthetic test set and the scores built from them in Python."""

    videos: list[str]
    texts: list[str]
    text_video: list[int]  # each caption's video
    itc: list[list[float]]  # (Nv, Nt) frame-mean cosine
    itm: list[list[float]]  # (Nv, Nt) raw ITM logit of every pair


def protocol_for(loaded, **changes) -> RetrievalProtocol:
    pre = loaded.config.preprocess
    fields = {"split": "test", "num_frames": pre.num_frames, "size": pre.size, "max_len": pre.max_len, **changes}
    return RetrievalProtocol(**fields)


@pytest.fixture(scope="module")
def loaded(stage2_run):
    return load_model(stage2_run, expect="video-text")


@pytest.fixture(scope="module")
def reference(loaded, synthetic_dir) -> Reference:
    model, pre = loaded.model.eval(), loaded.config.preprocess
    entries = json.loads((synthetic_dir / "test.json").read_text())
    videos = [entry["video"] for entry in entries]
    texts, text_video = [], []
    for v, entry in enumerate(entries):
        for caption in entry["caption"]:
            texts.append(clean_caption(caption))
            text_video.append(v)
    reader = ClipReader(pre)
    tokenizer = build_tokenizer(loaded.tokenizer, add_sep=pre.add_sep)
    with torch.no_grad():
        clips = [model.encode_video(reader(synthetic_dir / name)[None]) for name in videos]  # (1, N, D), (1, T, E)
        captions = []
        for text in texts:
            batch = tokenize(tokenizer, [text], max_len=pre.max_len, add_sep=pre.add_sep)
            captions.append((*model.encode_text(batch.ids, batch.attention_mask), batch.attention_mask))
        itm = [[float(model.match_logits(hidden, mask, tokens)[0]) for hidden, _, mask in captions]
               for tokens, _ in clips]  # fmt: skip
    itc = []
    for _, frames in clips:
        per_frame = frames[0].tolist()  # T lists of E floats
        row = []
        for _, embed, _ in captions:
            e = embed[0].tolist()
            row.append(sum(sum(a * b for a, b in zip(f, e)) for f in per_frame) / len(per_frame))
        itc.append(row)
    return Reference(videos, texts, text_video, itc, itm)


# --- brute-force rankings and metrics ----------------------------------------------------------------------------


def transpose(matrix: list[list[float]]) -> list[list[float]]:
    return [list(column) for column in zip(*matrix)]


def truth_sets(ref: Reference, direction: str) -> list[set[int]]:
    if direction == "t2v":
        return [{v} for v in ref.text_video]
    return [{t for t, owner in enumerate(ref.text_video) if owner == v} for v in range(len(ref.videos))]


def itc_order(row: list[float]) -> list[int]:
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def rerank_order(itc_row: list[float], itm_row: list[float], k: int) -> list[int]:
    """Top-k by ITC re-ordered by ITM (ties: ITC, then index), the rest after them in ITC order."""
    order = itc_order(itc_row)
    top = sorted(order[:k], key=lambda j: (-itm_row[j], -itc_row[j], j))
    return top + order[k:]


def summary(ranks: list[int]) -> dict[str, float]:
    n = len(ranks)
    result = {f"R@{k}": 100.0 * sum(r < k for r in ranks) / n for k in (1, 5, 10)}
    result["MdR"] = float(statistics.median(r + 1 for r in ranks))
    result["MnR"] = sum(r + 1 for r in ranks) / n
    result["count"] = n
    return result


def metrics_of(orders: list[list[int]], truth: list[set[int]]) -> dict[str, float]:
    ranks = [next(pos for pos, j in enumerate(order) if j in correct) for order, correct in zip(orders, truth)]
    return summary(ranks)


def assert_metrics(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key


# --- recording what the evaluation computed ----------------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch):
    """The evaluation's ITC matrix (Nv, Nt) and its ITM logits per direction, (Q, k'), as it computed them."""
    seen: dict[str, object] = {"itm": {}}
    real_similarity, real_rerank = retrieval.frame_similarity, retrieval._rerank

    def similarity(frames, embeds):
        seen["itc"] = real_similarity(frames, embeds)
        return seen["itc"]

    def rerank(model, texts, tokens, itc, direction, *args):
        seen["itm"][direction] = real_rerank(model, texts, tokens, itc, direction, *args)
        return seen["itm"][direction]

    monkeypatch.setattr(retrieval, "frame_similarity", similarity)
    monkeypatch.setattr(retrieval, "_rerank", rerank)
    return seen


def run(loaded, synthetic_dir, annotations=None, settings=SETTINGS, **protocol):
    annotations = annotations or synthetic_dir / "test.json"
    return evaluate_retrieval(loaded, annotations, synthetic_dir, protocol_for(loaded, **protocol), settings)


# --- the tests ---------------------------------------------------------------------------------------------------


def test_itc_scores_and_metrics_equal_a_one_at_a_time_recomputation(loaded, synthetic_dir, reference, recorded):
    result = run(loaded, synthetic_dir)
    itc = recorded["itc"]  # (Nv, Nt)
    assert itc.shape == (4, 12)
    torch.testing.assert_close(itc.double(), torch.tensor(reference.itc, dtype=torch.float64), rtol=0, atol=2e-6)
    matrix = itc.tolist()
    for direction, rows in (("v2t", matrix), ("t2v", transpose(matrix))):
        expected = metrics_of([itc_order(row) for row in rows], truth_sets(reference, direction))
        assert_metrics(result["metrics"]["itc"][direction], expected)
    assert result["counts"] == {"texts": 12, "videos": 4, "skipped_videos": 0, "dropped_texts": 0}
    assert result["skipped"] == []
    # chance with one correct video of 4 (T2V) and 3 correct texts of 12 (V2T): 1 - C(12 - g, K) / C(12, K)
    assert result["chance"]["t2v"] == pytest.approx({"R@1": 25.0, "R@5": 100.0, "R@10": 100.0})
    assert result["chance"]["v2t"]["R@5"] == pytest.approx(100 * (1 - 126 / 792))


def test_reranking_every_candidate_equals_ranking_the_pairwise_itm_matrix(loaded, synthetic_dir, reference, recorded):
    result = run(loaded, synthetic_dir, k=12)  # k >= both gallery sizes: every pair is re-scored
    itc = recorded["itc"].tolist()
    for direction, itc_rows, itm_rows in (("v2t", itc, reference.itm),
                                          ("t2v", transpose(itc), transpose(reference.itm))):  # fmt: skip
        got = recorded["itm"][direction]  # (Q, k') in each query's ITC order
        for q, row in enumerate(itc_rows):
            candidates = itc_order(row)
            expected = [itm_rows[q][j] for j in candidates]
            torch.testing.assert_close(got[q].double(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-5)
        orders = [rerank_order(itc_rows[q], itm_rows[q], len(itc_rows[q])) for q in range(len(itc_rows))]
        assert_metrics(result["metrics"]["rerank"][direction], metrics_of(orders, truth_sets(reference, direction)))


def test_reranking_the_top_two_leaves_the_rest_in_itc_order(loaded, synthetic_dir, reference, recorded):
    result = run(loaded, synthetic_dir, k=2)
    itc = recorded["itc"].tolist()
    for direction, itc_rows, itm_rows in (("v2t", itc, reference.itm),
                                          ("t2v", transpose(itc), transpose(reference.itm))):  # fmt: skip
        assert recorded["itm"][direction].shape == (len(itc_rows), 2)
        orders = [rerank_order(itc_rows[q], itm_rows[q], 2) for q in range(len(itc_rows))]
        assert_metrics(result["metrics"]["rerank"][direction], metrics_of(orders, truth_sets(reference, direction)))


def test_rerank_chunks_hold_one_video_each_and_block_sizes_do_not_change_the_numbers(
    loaded, synthetic_dir, recorded, monkeypatch
):
    videos_per_call: list[int] = []
    real_match = loaded.model.match_logits

    def match(text_hidden, mask, tokens, vision_rows=None):
        videos_per_call.append(tokens.shape[0])
        return real_match(text_hidden, mask, tokens, vision_rows=vision_rows)

    monkeypatch.setattr(loaded.model, "match_logits", match)
    # 12 texts x 4 videos = 48 T2V pairs in one block, sorted by video and cut into chunks of 12: one video each
    # (blocks of rerank_batch // k = 3 queries would put all 4 videos in every chunk)
    grouped = RetrievalSettings(batch_size=3, rerank_batch=12, rerank_block=256, show_progress=False)
    result = run(loaded, synthetic_dir, settings=grouped, k=4)
    # T2V runs first: 4 chunks of one video; then V2T's 16 pairs (4 per query video) in chunks of 12: 3 videos, 1
    assert videos_per_call == [1, 1, 1, 1, 3, 1]
    itm = dict(recorded["itm"])
    videos_per_call.clear()
    one_by_one = RetrievalSettings(batch_size=3, rerank_batch=1, rerank_block=1, show_progress=False)
    again = run(loaded, synthetic_dir, settings=one_by_one, k=4)
    assert videos_per_call == [1] * (16 + 48)
    for direction in ("t2v", "v2t"):
        torch.testing.assert_close(recorded["itm"][direction], itm[direction], rtol=0, atol=1e-6)
    assert again["metrics"] == result["metrics"]


def test_a_missing_video_is_skipped_named_and_its_captions_dropped(loaded, synthetic_dir, tmp_path):
    entries = json.loads((synthetic_dir / "test.json").read_text())
    entries.insert(2, {"video": "videos/test/gone.mp4", "caption": ["a lost clip", "nobody saw it"]})
    annotations = tmp_path / "test.json"
    annotations.write_text(json.dumps(entries))
    result = run(loaded, synthetic_dir, annotations=annotations)
    plain = run(loaded, synthetic_dir)
    assert result["counts"] == {"texts": 12, "videos": 4, "skipped_videos": 1, "dropped_texts": 2}
    [skipped] = result["skipped"]
    assert skipped["video"] == "videos/test/gone.mp4"
    assert skipped["reason"].startswith("missing") and "gone.mp4" in skipped["reason"]
    assert result["metrics"] == plain["metrics"]  # what is left is exactly the plain test set
    assert result["chance"] == plain["chance"]


def test_no_decodable_video_is_an_error_naming_one(loaded, synthetic_dir, tmp_path):
    with pytest.raises(DataError) as caught:
        evaluate_retrieval(loaded, synthetic_dir / "test.json", tmp_path, protocol_for(loaded), SETTINGS)
    message = str(caught.value)
    assert "none of its 4 videos" in message and str(tmp_path / "videos" / "test" / "test_0000.mp4") in message


def test_paragraph_mode_has_one_text_per_video(loaded, synthetic_dir, reference, recorded):
    result = run(loaded, synthetic_dir, mode="paragraph")
    assert result["counts"]["texts"] == result["counts"]["videos"] == 4
    assert result["protocol"]["mode"] == "paragraph"
    for ranking in ("itc", "rerank"):
        assert result["metrics"][ranking]["t2v"]["count"] == result["metrics"][ranking]["v2t"]["count"] == 4
    assert recorded["itc"].shape == (4, 4)
    assert result["chance"]["v2t"]["R@1"] == pytest.approx(25.0)  # one correct paragraph among 4
    matrix = recorded["itc"].tolist()
    diagonal = [{q} for q in range(4)]
    assert_metrics(result["metrics"]["itc"]["v2t"], metrics_of([itc_order(row) for row in matrix], diagonal))
    assert_metrics(result["metrics"]["itc"]["t2v"], metrics_of([itc_order(r) for r in transpose(matrix)], diagonal))


def test_trimmed30_samples_within_the_first_30_seconds(tmp_path, loaded):
    path = tmp_path / "long.mp4"
    write_h264(path, numbered_frames(160, 64, 48), fps=2, width=64, height=48)  # 80 s at 2 fps
    pre = loaded.config.preprocess  # 4 frames, `middle` of equal segments

    def sampled(trimmed: bool) -> list[int]:
        clip = ClipReader(pre, trimmed30=trimmed)(path)  # (C, T, S, S) normalised
        mean, std = torch.tensor(pre.mean)[:, None, None, None], torch.tensor(pre.std)[:, None, None, None]
        pixels = ((clip * std + mean) * 255).clamp(0, 255).permute(1, 2, 3, 0).numpy()  # (T, S, S, C)
        return [read_frame_number(np.asarray(frame)) for frame in pixels]

    # 30 s = 60 frames in 4 segments of 15: middles 15i + 7; all 160 frames in segments of 40: 40i + 19
    assert sampled(True) == [7, 22, 37, 52]
    assert sampled(False) == [19, 59, 99, 139]


def test_a_short_video_is_not_trimmed(tmp_path, loaded):
    path = tmp_path / "short.mp4"
    write_h264(path, numbered_frames(40, 64, 48), fps=2, width=64, height=48)  # 20 s
    reader, trimmed = ClipReader(loaded.config.preprocess), ClipReader(loaded.config.preprocess, trimmed30=True)
    torch.testing.assert_close(reader(path), trimmed(path), rtol=0, atol=0)


def test_non_finite_weights_are_a_checkpoint_error(stage2_run, synthetic_dir, tmp_path):
    weights = stage2_run / "video_text.safetensors"
    with safe_open(str(weights), "pt") as handle:
        meta = handle.metadata()
    state = load_file(weights)
    state["vision_proj.weight"][0, 0] = float("nan")
    (tmp_path / "run").mkdir()
    save_file(state, str(tmp_path / "run" / "video_text.safetensors"), metadata=meta)
    broken = load_model(tmp_path / "run", expect="video-text")
    with pytest.raises(CheckpointError, match="non-finite ITC similarities"):
        run(broken, synthetic_dir)


def test_a_tokenizer_folder_that_is_gone_names_the_option_to_pass(stage2_run, synthetic_dir, tmp_path):
    shutil.copytree(synthetic_dir / "bert", tmp_path / "bert")
    weights = stage2_run / "video_text.safetensors"
    with safe_open(str(weights), "pt") as handle:
        meta = {**handle.metadata(), "text_encoder": str(tmp_path / "bert")}
    (tmp_path / "run").mkdir()
    save_file(load_file(weights), str(tmp_path / "run" / "video_text.safetensors"), metadata=meta)
    moved = load_model(tmp_path / "run", expect="video-text")
    shutil.rmtree(tmp_path / "bert")
    with pytest.raises(UsageError) as caught:
        run(moved, synthetic_dir)
    assert str(tmp_path / "bert") in str(caught.value) and "pass --text-encoder" in str(caught.value)


def test_the_result_is_strict_json(loaded, synthetic_dir):
    result = run(loaded, synthetic_dir)
    text = json.dumps(result, allow_nan=False)  # raises on NaN / inf
    assert json.loads(text)["protocol"]["k"] == 128
    assert Path(result["annotations"]) == synthetic_dir / "test.json"
