import os

import pytest
import torch
from torch import nn

from umt_cli.errors import DataError, UsageError
from umt_cli.evaluation.probe import (
    FeatureCache,
    LinearProbe,
    feature_settings,
    probe_logits,
    settings_key,
    train_linear_probe,
)


def separable_problem(seed: int, n: int = 120, dim: int = 12, classes: int = 4):
    """Labels are the argmax of a random linear map, keeping only points with a clear margin; the features get a
    large offset and uneven scales, which the probe's standardisation must absorb."""
    g = torch.Generator().manual_seed(seed)
    true_map = torch.randn(dim, classes, generator=g)
    x = torch.randn(4 * n, dim, generator=g)
    scores = x @ true_map
    top2 = scores.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1] > 0.5).nonzero().flatten()[:n]
    scale = torch.logspace(-2, 2, dim)
    return x[keep] * scale + 100.0, scores[keep].argmax(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny steps: thread hand-offs would cost more than the maths on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CountingProgress:
    def __init__(self):
        self.infos = []

    def advance(self, n=1, info=None):
        self.infos.append((n, info))


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "adamw", "epochs": 150, "lr": 0.1, "weight_decay": 0.0},
        {"optimizer": "adamw", "epochs": 25, "lr": 0.05, "weight_decay": 1e-4, "batch_size": 32},
        {"optimizer": "lbfgs", "epochs": 10, "lr": 1.0, "weight_decay": 1e-4},
    ],
)
def test_probe_learns_a_linearly_separable_problem(options):
    x, y = separable_problem(seed=3)
    assert len(y.unique()) == 4
    bar = CountingProgress()
    probe = train_linear_probe(x, y, num_classes=4, seed=0, progress=bar, **options)
    assert isinstance(probe, nn.Linear) and not probe.training
    assert (probe_logits(probe, x).argmax(1) == y).all()
    assert len(bar.infos) == options["epochs"] and all(n == 1 and "loss" in info for n, info in bar.infos)
    assert torch.allclose(probe.feature_mean, x.mean(0)) and torch.allclose(probe.feature_std, x.std(0, unbiased=False))


def test_probe_is_deterministic_and_reloads_from_its_state_dict():
    x, y = separable_problem(seed=5)
    first = train_linear_probe(x, y, num_classes=4, epochs=5, lr=0.05, weight_decay=0.0, seed=1, batch_size=8)
    again = train_linear_probe(x, y, num_classes=4, epochs=5, lr=0.05, weight_decay=0.0, seed=1, batch_size=8)
    assert torch.equal(first.weight, again.weight)
    fresh = LinearProbe(torch.zeros(x.shape[1]), torch.ones(x.shape[1]), 4)
    fresh.load_state_dict(first.state_dict())
    assert torch.equal(probe_logits(fresh, x), probe_logits(first, x))


def test_probe_rejects_bad_labels_and_features():
    x = torch.randn(6, 3)
    with pytest.raises(DataError, match="labels"):
        train_linear_probe(x, torch.tensor([0, 1, 2, 3, 0, 1]), num_classes=3, epochs=1, lr=0.1, weight_decay=0, seed=0)
    x[2, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        train_linear_probe(x, torch.zeros(6, dtype=torch.long), num_classes=3, epochs=1, lr=0.1, weight_decay=0,
                           seed=0)  # fmt: skip


@pytest.fixture
def settings(tmp_path):
    data_list = tmp_path / "val.csv"
    data_list.write_text("a.mp4,0\nb.mp4,1\n")
    base = {
        "model": "sha256:abc",
        "data_list": data_list,
        "num_frames": 8,
        "size": 224,
        "sampling": "segments",
        "num_clips": 4,
        "num_crops": 3,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    return base


def test_every_setting_changes_the_cache_key(settings, tmp_path):
    key = settings_key(feature_settings(**settings))
    assert key == settings_key(feature_settings(**settings))
    changed = {
        "model": "sha256:abd",
        "data_list": tmp_path / "other.csv",
        "num_frames": 16,
        "size": 196,
        "sampling": "middle",
        "num_clips": 1,
        "num_crops": 1,
        "mean": (0.5, 0.456, 0.406),
        "std": (0.229, 0.224, 0.2),
    }
    (tmp_path / "other.csv").write_text("a.mp4,0\nb.mp4,1\n")
    keys = {key}
    for name, value in changed.items():
        keys.add(settings_key(feature_settings(**{**settings, name: value})))
    keys.add(settings_key(feature_settings(**settings, pooling="cls")))
    assert len(keys) == len(changed) + 2


def test_an_edited_list_file_changes_the_cache_key(settings):
    key = settings_key(feature_settings(**settings))
    data_list = settings["data_list"]
    stat = data_list.stat()
    data_list.write_text("a.mp4,0\nb.mp4,2\n")  # same size: only the modification time tells
    os.utime(data_list, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert settings_key(feature_settings(**settings)) != key
    data_list.write_text("a.mp4,0\n")
    os.utime(data_list, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time, different size
    assert settings_key(feature_settings(**settings)) != key


def test_a_missing_list_file_is_a_data_error(settings, tmp_path):
    with pytest.raises(DataError, match="gone.csv"):
        feature_settings(**{**settings, "data_list": tmp_path / "gone.csv"})


def test_cache_hit_returns_equal_tensors_and_skips_the_work(settings, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    key = feature_settings(**settings)
    g = torch.Generator().manual_seed(0)
    tensors = {"features": torch.randn(5, 7, generator=g), "labels": torch.arange(5)}
    calls = []

    def compute():
        calls.append(1)
        return tensors

    first, cached = cache.get_or_compute(key, compute)
    assert not cached and calls == [1]
    second, cached = cache.get_or_compute(key, compute)
    assert cached and calls == [1]
    assert second.keys() == tensors.keys() and all(torch.equal(second[k], tensors[k]) for k in tensors)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{settings_key(key)}.pt"]  # no temporary left
    other = feature_settings(**{**settings, "num_crops": 1})
    assert cache.load(other) is None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "other-settings"])
def test_a_bad_cache_file_is_recomputed(settings, tmp_path, damage):
    cache = FeatureCache(tmp_path)
    key = feature_settings(**settings)
    good = {"features": torch.ones(3, 2)}
    path = cache.save(key, good)
    if damage == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "foreign":
        torch.save({"features": torch.zeros(3, 2)}, path)
    else:  # a file written for other settings, put where these settings' file goes
        torch.save({"settings": "{}", "tensors": {"features": torch.zeros(3, 2)}}, path)
    assert cache.load(key) is None
    fresh = {"features": torch.full((3, 2), 2.0)}
    tensors, cached = cache.get_or_compute(key, lambda: fresh)
    assert not cached and torch.equal(tensors["features"], fresh["features"])
    assert torch.equal(cache.load(key)["features"], fresh["features"])


def test_an_unknown_optimizer_is_a_usage_error():
    with pytest.raises(UsageError, match="sgd"):
        train_linear_probe(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), num_classes=2, optimizer="sgd")
