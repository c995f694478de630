"""`umt eval classification` end to end on the synthetic set: zero-shot and linear probe on the tiny stage-2 run,
fine-tuned on a tiny official-layout classifier file. Each run's numbers are checked against a loop written here
over the same model, one video and one view at a time (softmax per view, averaged), so a mix-up of views, videos,
labels or shards in the command would show."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.data.datasets import parse_video_list
from umt_cli.data.text import build_tokenizer
from umt_cli.evaluation.classification import zero_shot_logits, zero_shot_weights
from umt_cli.evaluation.classify import view_layout
from umt_cli.evaluation.report import classification_markdown
from umt_cli.evaluation.views import EvalClipDataset
from umt_cli.models.loading import load_model
from umt_cli.models.positions import interpolated_table

runner = CliRunner()

D, DEPTH, CLASSES, PATCH = 64, 2, 4, 16
CLASSIFIER_FRAMES, CLASSIFIER_SIZE = 8, 32  # a test-sized geometry, read back from the stored pos_embed


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def write_classifier_pth(path: Path, seed: int = 0) -> Path:
    """A tiny official fine-tuned classification file (SPEC §5.3 key list), D 64, depth 2, 4 classes, with the
    `pos_embed` of 8 frames at 32 px so the import infers that geometry."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.1, around: float = 0.0) -> torch.Tensor:
        return around + scale * torch.randn(*shape, generator=g)

    state = {"patch_embed.proj.weight": rand(D, 3, 1, PATCH, PATCH, scale=0.05), "patch_embed.proj.bias": rand(D)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state |= {
            b + "norm1.weight": rand(D, around=1.0), b + "norm1.bias": rand(D),
            b + "attn.qkv.weight": rand(3 * D, D), b + "attn.q_bias": rand(D), b + "attn.v_bias": rand(D),
            b + "attn.proj.weight": rand(D, D), b + "attn.proj.bias": rand(D),
            b + "norm2.weight": rand(D, around=1.0), b + "norm2.bias": rand(D),
            b + "mlp.fc1.weight": rand(4 * D, D), b + "mlp.fc1.bias": rand(4 * D),
            b + "mlp.fc2.weight": rand(D, 4 * D), b + "mlp.fc2.bias": rand(D),
        }  # fmt: skip
    state |= {"fc_norm.weight": rand(D, around=1.0), "fc_norm.bias": rand(D)}
    state |= {"head.weight": rand(CLASSES, D, scale=2.0), "head.bias": rand(CLASSES)}  # spread-out predictions
    side = CLASSIFIER_SIZE // PATCH
    state["pos_embed"] = interpolated_table(D, (8, 14, 14), target=(CLASSIFIER_FRAMES, side, side))
    torch.save({"module": state}, path)
    return path


def classify(ckpt: Path, synthetic_dir: Path, out: Path, *extra: str) -> dict:
    args = ["eval", "classification", "--ckpt", str(ckpt), "--data", str(synthetic_dir / "test.csv"),
            "--classes", str(synthetic_dir / "classes.txt"), "--out", str(out), "--device", "cpu", *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return json.loads((out / "results.json").read_text())


def read_predictions(out: Path) -> dict[str, tuple[int, float, list[int]]]:
    """video -> (predicted class, its probability, the classes best first)."""
    with (out / "predictions.csv").open(newline="") as handle:
        rows = csv.DictReader(handle)
        return {r["video"]: (int(r["predicted"]), float(r["score"]), [int(c) for c in r["top4"].split()]) for r in rows}


def views_of(synthetic_dir: Path, loaded, **geometry) -> EvalClipDataset:
    pre = loaded.config.preprocess
    entries = parse_video_list(synthetic_dir / "test.csv")
    return EvalClipDataset(entries, synthetic_dir, size=pre.size, mean=pre.mean, std=pre.std, **geometry)


def hand_metrics(predicted: list[int], labels: list[int]) -> tuple[float, list[list[int]]]:
    """Top-1 in percent and the confusion counts (rows true, columns predicted), by plain loops."""
    confusion = [[0] * CLASSES for _ in range(CLASSES)]
    for p, y in zip(predicted, labels, strict=True):
        confusion[y][p] += 1
    return 100.0 * sum(p == y for p, y in zip(predicted, labels)) / len(labels), confusion


def check_against(result: dict, out: Path, probs: list[torch.Tensor], dataset: EvalClipDataset) -> None:
    """The command's metrics and predictions.csv against per-video class probabilities computed by hand."""
    predicted = [int(p.argmax()) for p in probs]
    labels = [e.label for e in dataset.entries]
    top1, confusion = hand_metrics(predicted, labels)
    assert result["metrics"]["top1"] == pytest.approx(top1)
    assert result["metrics"]["confusion"] == confusion
    saved = read_predictions(out)
    assert list(saved) == [e.path for e in dataset.entries]
    for entry, p in zip(dataset.entries, probs):
        best, score, order = saved[entry.path]
        assert best == int(p.argmax()) and order == p.argsort(descending=True).tolist()
        assert score == pytest.approx(float(p.max()), rel=1e-4)
    assert result["counts"] == {"videos": 4, "evaluated": 4, "skipped_videos": 0}
    assert result["chance"]["top1"] == pytest.approx(100.0 / CLASSES)


def test_zero_shot_matches_a_hand_computation(stage2_run, synthetic_dir, tmp_path):
    out = tmp_path / "zs"
    result = classify(stage2_run, synthetic_dir, out)
    p = result["protocol"]
    assert (p["mode"], p["sampling"], p["num_clips"], p["num_crops"], p["videos"], p["classes"]) == (
        "zero-shot", "middle", 1, 1, 4, CLASSES
    )  # fmt: skip
    assert p["templates"] == ["a video of {}.", "{}"]
    loaded = load_model(stage2_run, expect="video-text")
    assert p["num_frames"] == loaded.config.vision.num_frames
    pre = loaded.config.preprocess
    class_names = (synthetic_dir / "classes.txt").read_text().split("\n")[:CLASSES]
    tokenizer = build_tokenizer(loaded.tokenizer, add_sep=pre.add_sep)
    weights = zero_shot_weights(loaded.model, tokenizer, class_names, max_len=pre.max_len, add_sep=pre.add_sep)
    dataset = views_of(synthetic_dir, loaded, num_frames=p["num_frames"], sampling="middle")
    probs = []
    with torch.no_grad():
        for i in range(len(dataset)):
            frames = loaded.model.encode_video(dataset[i].video)[1]  # (1, T, E): the one view
            probs.append(zero_shot_logits(frames, weights)[0].softmax(-1))
    check_against(result, out, probs, dataset)
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "zero-shot · split test · 4 videos · 4 classes" in report and "![confusion matrix](confusion.png)" in report


def test_finetuned_averages_the_softmax_over_clips_and_crops(synthetic_dir, tmp_path):
    ckpt = write_classifier_pth(tmp_path / "cls.pth")
    out = tmp_path / "ft"
    result = classify(ckpt, synthetic_dir, out, "--clips", "2", "--crops", "2", "--batch-size", "3")
    p = result["protocol"]
    assert (p["mode"], p["sampling"], p["num_clips"], p["num_crops"], p["views"]) == ("finetuned", "segments", 2, 2, 4)
    assert (p["num_frames"], p["size"]) == (CLASSIFIER_FRAMES, CLASSIFIER_SIZE)
    assert result["checkpoint"]["kind"] == "umt-classifier"
    loaded = load_model(ckpt, expect="classifier")
    dataset = views_of(synthetic_dir, loaded, num_frames=CLASSIFIER_FRAMES, sampling="segments", num_clips=2,
                       num_crops=2)  # fmt: skip
    probs = []
    with torch.no_grad():
        for i in range(len(dataset)):
            views = dataset[i].video  # (4, C, T, S, S)
            probs.append(sum(loaded.model(view[None]).softmax(-1)[0] for view in views) / len(views))
    assert len({int(p.argmax()) for p in probs}) > 1  # the check would be weak if every video got the same class
    check_against(result, out, probs, dataset)


def test_linear_probe_caches_the_features_and_reuses_them(stage2_run, synthetic_dir, tmp_path):
    out, cache = tmp_path / "probe", tmp_path / "cache"
    extra = ("--mode", "linear-probe", "--train-list", str(synthetic_dir / "train.csv"), "--cache", str(cache),
             "--probe-epochs", "30", "--probe-lr", "0.05")  # fmt: skip
    first = classify(stage2_run, synthetic_dir, out, *extra)
    assert first["probe"]["train_videos"] == 8
    assert [first["probe"]["cache"][s]["hit"] for s in ("train", "test")] == [False, False]
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 2
    stamps = {f: f.stat().st_mtime_ns for f in files}
    # The cached train features are the frozen vision side's per-frame pooled tokens, averaged over frames.
    loaded = load_model(stage2_run, expect="video-text")
    train = torch.load(first["probe"]["cache"]["train"]["path"], weights_only=True)["tensors"]
    pre = loaded.config.preprocess
    entries = parse_video_list(synthetic_dir / "train.csv")
    view = EvalClipDataset(entries, synthetic_dir, num_frames=loaded.config.vision.num_frames, size=pre.size,
                           mean=pre.mean, std=pre.std)[5].video  # fmt: skip
    with torch.no_grad():
        expected = loaded.model.vision_encoder(view, per_frame=True).pooled.mean(1)  # (1, D)
    assert train["features"].shape == (8, 1, expected.shape[-1])
    torch.testing.assert_close(train["features"][5], expected, atol=1e-5, rtol=1e-5)

    second = classify(stage2_run, synthetic_dir, tmp_path / "again", *extra)
    assert [second["probe"]["cache"][s]["hit"] for s in ("train", "test")] == [True, True]
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # read, not rewritten
    assert second["metrics"] == first["metrics"]
    assert read_predictions(tmp_path / "again") == read_predictions(out)


def test_view_defaults_follow_the_mode():
    assert view_layout("finetuned", None, None) == ("segments", 4, 3)  # the official Kinetics test
    assert view_layout("zero-shot", None, None) == ("middle", 1, 1)
    assert view_layout("linear-probe", 3, None) == ("segments", 3, 1)  # more than one clip needs segments
    assert view_layout("finetuned", 1, 1) == ("segments", 1, 1)


def test_many_classes_get_no_picture_and_the_report_says_so(stage2_run, synthetic_dir, tmp_path):
    names = [f"class {i}" for i in range(51)]
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(names) + "\n")
    out = tmp_path / "many"
    args = ["eval", "classification", "--ckpt", str(stage2_run), "--data", str(synthetic_dir / "test.csv"),
            "--classes", str(classes), "--out", str(out), "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["confusion_png"] is None and not (out / "confusion.png").exists()
    assert saved["chance"]["top1"] == pytest.approx(100 / 51)
    assert "Not drawn: 51 classes" in (out / "report.md").read_text()
    assert classification_markdown(saved) == (out / "report.md").read_text()


# --- sharding: two CPU processes (gloo) give what one gives --------------------------------------------------------


def mean_per_view(video: torch.Tensor) -> torch.Tensor:
    """(B, V, C, T, S, S) -> (B, V): a stand-in model whose output identifies each view's pixels."""
    return video.flatten(2).mean(-1)


def shard_inputs(synthetic_dir: Path):
    from umt_cli.data.datasets import ListEntry

    entries = parse_video_list(synthetic_dir / "test.csv")
    entries = [*entries[:2], ListEntry("videos/test/missing.mp4", 1), *entries[2:]]  # 5 videos, one missing
    return EvalClipDataset(entries, synthetic_dir, num_frames=4, size=32, mean=(0.5,) * 3, std=(0.25,) * 3,
                           sampling="segments", num_clips=2, num_crops=2)  # fmt: skip


def shard_worker(rank: int, folder: str, synthetic_dir: str) -> None:
    import os

    import torch.distributed as dist

    from umt_cli.evaluation.classify import ClassificationSettings, map_views

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        settings = ClassificationSettings(batch_size=2, rank=rank, world=2, show_progress=False)
        rows = map_views(mean_per_view, shard_inputs(Path(synthetic_dir)), settings, item_shape=(4,), what="t")
        torch.save({"values": rows.values, "kept": rows.kept, "skipped": rows.skipped}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_numbers_of_one(synthetic_dir, tmp_path):
    import torch.multiprocessing as mp

    from umt_cli.evaluation.classify import ClassificationSettings, map_views

    mp.start_processes(shard_worker, args=(str(tmp_path), str(synthetic_dir)), nprocs=2, join=True,
                       start_method="spawn")  # fmt: skip
    single = map_views(mean_per_view, shard_inputs(synthetic_dir), ClassificationSettings(batch_size=2,
                       show_progress=False), item_shape=(4,), what="t")  # fmt: skip
    assert single.kept.tolist() == [True, True, False, True, True]
    assert [(i, Path(p).name, r) for i, p, r in single.skipped] == [(2, "missing.mp4", "missing")]
    assert len(single.values[single.kept].unique()) == 16  # 4 videos x 4 views, all different
    assert single.values[2].eq(0).all()  # the skipped row
    for rank in range(2):
        shard = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        torch.testing.assert_close(shard["values"], single.values, rtol=0, atol=0)
        assert shard["kept"].tolist() == single.kept.tolist()
        assert shard["skipped"] == single.skipped
