"""UMT-FVD: the distance against a NumPy/SciPy reference written here, the subsets against Python's global `random`,
the command on feature files (ChronoMagic's fp16 reference tensors included) and on video folders, whose features
equal the model's by hand and are cached by checkpoint and protocol."""

from __future__ import annotations

import json
import random
import statistics

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.numpy import load_file, save_file
from test_protocols import reference_clip
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.scoring.fvd import feature_stats, frechet_distance, fvd_runs, subset_indices

runner = CliRunner()


def reference_fvd(fake: np.ndarray, real: np.ndarray) -> float:
    """The published formula with NumPy's own mean and population covariance."""
    mu_f, mu_r = fake.astype(np.float64).mean(0), real.astype(np.float64).mean(0)
    cov_f = np.cov(fake.astype(np.float64), rowvar=False, bias=True)
    cov_r = np.cov(real.astype(np.float64), rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(cov_f @ cov_r)
    return float(np.real(((mu_f - mu_r) ** 2).sum() + np.trace(cov_f + cov_r - 2 * root)))


def reference_subset(n: int, size: int, seed: int) -> list[int]:
    random.seed(seed)
    return random.sample(list(range(n)), size) if size < n else list(range(n))


@pytest.mark.parametrize(("n_fake", "n_real"), [(200, 300), (900, 1000)], ids=["n < 768", "n > 768"])
def test_the_distance_equals_a_numpy_scipy_reference(n_fake, n_real):
    rng = np.random.default_rng(0)
    fake = rng.normal(0.2, 1.0, (n_fake, 768)).astype(np.float32)
    real = (rng.normal(0.0, 1.0, (n_real, 768)) * np.linspace(0.5, 1.5, 768)).astype(np.float32)
    ours = frechet_distance(feature_stats(fake), feature_stats(real))
    assert ours == pytest.approx(reference_fvd(fake, real), rel=1e-6)
    assert ours > 1.0 and frechet_distance(feature_stats(real), feature_stats(real)) == pytest.approx(
        0, abs=1e-4
    )  # of ~900


def test_subsets_are_those_of_the_global_random_module_and_all_items_when_n_is_large():
    for n, size, seed in [(1649, 1024, 12), (150, 32, 42), (300, 300, 22), (150, 1024, 32)]:
        rows = subset_indices(n, size, seed)
        assert (list(range(n)) if rows is None else rows) == reference_subset(n, size, seed)
    features = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
    runs = fvd_runs(features, features[:30], sizes=[30, 40, 64], seeds=[12])
    assert [(r.real, r.fake) for r in runs] == [(30, 30), (40, 30), (40, 30)]
    assert runs[1].fvd == runs[2].fvd  # N >= n: every item, whatever N


def fvd(tmp_path, *args):
    out = tmp_path / "out"
    result = runner.invoke(app, ["score", "fvd", *map(str, args), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "fvd.json").read_text()), result.output


def test_feature_files_give_every_run_and_both_labelled_figures(tmp_path):
    rng = np.random.default_rng(2)
    real = torch.from_numpy(rng.normal(size=(1100, 16))).half()  # ChronoMagic ships fp16 (n, 768) tensors as .pt
    torch.save(real, tmp_path / "gt_feats.pt")
    fake = rng.normal(0.3, 1.2, (300, 16)).astype(np.float32)
    save_file({"features": fake}, str(tmp_path / "fake.safetensors"))
    result, output = fvd(tmp_path, "--real", tmp_path / "gt_feats.pt", "--fake", tmp_path / "fake.safetensors",
                         "--n", "64,300", "--n", "1024", "--seeds", "12", "--seeds", "42")  # fmt: skip
    real32 = real.float().numpy()
    expected = {(size, seed): reference_fvd(fake[reference_subset(300, size, seed)],
                                            real32[reference_subset(1100, size, seed)])
                for size in (64, 300, 1024) for seed in (12, 42)}  # fmt: skip
    assert [(r["size"], r["seed"]) for r in result["runs"]] == list(expected)
    for run in result["runs"]:
        assert run["fvd"] == pytest.approx(expected[run["size"], run["seed"]], rel=1e-6)
        assert (run["real"], run["fake"]) == (min(run["size"], 1100), min(run["size"], 300))
    figures = result["figures"]
    assert figures["fetv"]["value"] == pytest.approx(statistics.fmean([expected[1024, 12], expected[1024, 42]]))
    assert figures["chronomagic"]["value"] == pytest.approx(statistics.fmean(expected.values()))
    assert "N = 1024" in figures["fetv"]["label"] and "(N, seed)" in figures["chronomagic"]["label"]
    assert figures["fetv"]["label"] in output and figures["chronomagic"]["label"] in output
    assert result["features"]["real"] == {"source": str(tmp_path / "gt_feats.pt"), "count": 1100,
                                          "from": "feature file"}  # fmt: skip


def by_hand_features(model, folder, antialias: bool) -> np.ndarray:
    """Per video: the mean over frames of vision_proj(pool_norm(frame mean of the final tokens))."""
    rows = []
    for key in range(5):
        video = reference_clip(folder / f"{key}.mp4", "fetv", 32, antialias)[None]  # (1, 3, 12, 32, 32)
        with torch.no_grad():
            tokens = model.vision_encoder.encoder(video, None, last=True).last  # (1, 48, 64)
            frames = model.vision_encoder.pool_norm(tokens.view(1, 12, 4, 64).mean(2))  # (1, 12, 64)
            rows.append(model.vision_proj(frames).mean(1)[0].numpy())  # (16,)
    return np.stack(rows)


def test_video_folders_are_encoded_once_then_read_from_the_cache(tmp_path, official_model, score_videos, monkeypatch):
    import shutil

    folder = tmp_path / "videos"
    shutil.copytree(score_videos, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    args = ["--real", folder, "--fake", folder, "--ckpt", official_model.path, "--text-encoder", official_model.bert,
            "--size", "32", "--n", "4", "--seeds", "12"]  # fmt: skip
    first, _ = fvd(tmp_path / "1", *args)
    assert first["features"]["real"]["from"] == "computed" and first["features"]["fake"]["from"] == "cache"
    assert first["runs"][0]["fvd"] == pytest.approx(0, abs=1e-4)  # a set against itself
    cache = first["features"]["real"]["cache"]
    np.testing.assert_allclose(load_file(cache)["features"], by_hand_features(official_model.model, folder, False),
                               rtol=1e-5, atol=1e-5)  # fmt: skip

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the features are cached")

    monkeypatch.setattr("umt_cli.models.loading.load_model", no_model)
    second, _ = fvd(tmp_path / "2", *args)
    assert second["features"]["real"]["from"] == "cache" and second["runs"] == first["runs"]
    monkeypatch.undo()

    third, _ = fvd(tmp_path / "3", *args, "--antialias")  # another protocol setting: other features
    assert third["features"]["real"]["from"] == "computed" and third["features"]["real"]["cache"] != cache
    np.testing.assert_allclose(load_file(third["features"]["real"]["cache"])["features"],
                               by_hand_features(official_model.model, folder, True), rtol=1e-5, atol=1e-5)  # fmt: skip

    other = tmp_path / "other.pth"  # the same weights in another file, one of them changed
    state = torch.load(official_model.path, weights_only=True)
    state["model"]["vision_proj.bias"] += 1.0
    torch.save(state, other)
    fourth, _ = fvd(tmp_path / "4", *args[:4], "--ckpt", other, *args[6:])
    assert fourth["features"]["real"]["from"] == "computed" and fourth["features"]["real"]["cache"] != cache
    assert len(list(folder.glob("umt-fvd-features-*.safetensors"))) == 3


def test_align_leaves_the_features_fvd_then_reads(tmp_path, official_model, score_videos, monkeypatch):
    import shutil

    folder = tmp_path / "videos"
    shutil.copytree(score_videos, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({str(k): "a red square" for k in range(5)}))
    common = ["--ckpt", str(official_model.path), "--text-encoder", str(official_model.bert), "--size", "32"]
    result = runner.invoke(app, ["score", "align", "--videos", str(folder), "--prompts", str(prompts), *common,
                                 "--raw-text", "--out", str(tmp_path / "align")])  # fmt: skip
    assert result.exit_code == 0, result.output
    cache = json.loads((tmp_path / "align" / "scores.json").read_text())["fvd_features"]

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although align cached the features")

    monkeypatch.setattr("umt_cli.models.loading.load_model", no_model)
    result, _ = fvd(tmp_path / "fvd", "--real", folder, "--fake", folder, *common, "--n", "4", "--seeds", "12")
    assert result["features"]["fake"] == {"source": str(folder), "count": 5, "from": "cache", "cache": cache,
                                          "skipped": {}}  # fmt: skip
    np.testing.assert_allclose(load_file(cache)["features"], by_hand_features(official_model.model, folder, False),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
