"""Linear probe on frozen video features, and an on-disk cache of those features.

The probe is multinomial logistic regression on standardised features (the train mean and std travel with the
probe as buffers, so the same scaling is applied at test time). Features are expensive to extract and cheap to
store, so `FeatureCache` keeps them on disk, keyed by a sha256 of every setting that produced them: a changed
checkpoint, list file, frame count, size, sampling or crop count gives another key and never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from umt_cli.errors import DataError, UsageError, first_line
from umt_cli.utils.files import atomic_path
from umt_cli.utils.progress import Progress

__all__ = [
    "LinearProbe",
    "train_linear_probe",
    "probe_logits",
    "file_fingerprint",
    "feature_settings",
    "settings_key",
    "FeatureCache",
]

MIN_STD = 1e-6
"""Floor of a feature's train std: a constant feature is centred, not blown up."""


class LinearProbe(nn.Linear):
    """`nn.Linear` on standardised features: `linear((x - feature_mean) / feature_std)`.

    Args:
        mean, std: (D,) the train features' statistics, saved with the weights.
        num_classes: Output rows.
    """

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__(mean.numel(), num_classes, device=mean.device)
        self.register_buffer("feature_mean", mean.detach().float().clone())
        self.register_buffer("feature_std", std.detach().float().clamp_min(MIN_STD))

    def standardise(self, x: Tensor) -> Tensor:
        """(N, D) raw features -> (N, D) standardised with the train statistics."""
        return (x.float() - self.feature_mean) / self.feature_std

    def forward(self, x: Tensor) -> Tensor:
        """(N, D) raw features -> (N, classes) logits."""
        return super().forward(self.standardise(x))


def train_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    *,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
    batch_size: int | None = None,
    optimizer: Literal["adamw", "lbfgs"] = "adamw",
    progress: Progress | None = None,
) -> LinearProbe:
    """Fit a linear classifier on frozen features with cross-entropy.

    The weights start at zero (the problem is convex, so the start only changes the path); `seed` drives the batch
    order. `adamw` takes `epochs` passes of mini-batches (full batch when `batch_size` is None) with decoupled
    weight decay; `lbfgs` takes `epochs` full-batch L-BFGS steps on the loss plus `weight_decay / 2 * |W|^2`.

    Args:
        train_x: (N, D) features; train_y: (N,) class indices.
        progress: Advanced once per epoch with the epoch's mean loss (`umt_cli.utils.progress.progress`).

    Returns:
        The trained probe, in eval mode, on the features' device.

    Raises:
        DataError: Empty or non-finite features, or a label outside `0..num_classes - 1`.
        UsageError: An unknown optimizer.
    """
    _check_training_data(train_x, train_y, num_classes)
    x, y = train_x.float(), train_y.long().to(train_x.device)
    probe = LinearProbe(x.mean(0), x.std(0, unbiased=False), num_classes)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    probe.train()
    fit = {"adamw": _fit_adamw, "lbfgs": _fit_lbfgs}.get(optimizer)
    if fit is None:
        raise UsageError(f"linear probe optimizer {optimizer!r}: expected adamw or lbfgs")
    with torch.no_grad():
        standardised = probe.standardise(x)  # (N, D), computed once: the statistics are fixed
    fit(
        probe,
        standardised,
        y,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    return probe.eval()


def _check_training_data(x: Tensor, y: Tensor, num_classes: int) -> None:
    if x.dim() != 2 or y.shape != x.shape[:1] or len(y) == 0:
        raise DataError(
            f"linear probe: expected features (N, D) and labels (N,), N > 0; got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if not torch.isfinite(x).all():
        raise DataError("linear probe: the train features contain NaN or infinity")
    if (y < 0).any() or (y >= num_classes).any():
        raise DataError(f"linear probe: labels must be in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")


def _fit_adamw(
    probe: nn.Linear,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    seed: int,
    batch_size: int | None,
    progress: Progress | None,
) -> None:
    opt = torch.optim.AdamW([probe.weight, probe.bias], lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)  # CPU: the same batch order on every device
    step = min(batch_size or len(y), len(y))
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator).to(y.device)
        total = 0.0
        for start in range(0, len(y), step):
            rows = order[start : start + step]
            loss = nn.functional.cross_entropy(nn.functional.linear(x[rows], probe.weight, probe.bias), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        if progress is not None:
            progress.advance(1, info=f"loss {total / len(y):.4f}")


def _fit_lbfgs(
    probe: nn.Linear,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    seed: int,
    batch_size: int | None,
    progress: Progress | None,
) -> None:
    """Full batch: `seed` and `batch_size` do not apply."""
    opt = torch.optim.LBFGS([probe.weight, probe.bias], lr=lr, max_iter=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        logits = nn.functional.linear(x, probe.weight, probe.bias)
        loss = nn.functional.cross_entropy(logits, y) + weight_decay / 2 * probe.weight.square().sum()
        loss.backward()
        return loss

    for _ in range(epochs):
        loss = opt.step(closure)
        if progress is not None:
            progress.advance(1, info=f"loss {float(loss.detach()):.4f}")


@torch.no_grad()
def probe_logits(probe: LinearProbe, x: Tensor) -> Tensor:
    """(N, D) raw features -> (N, classes) logits."""
    return probe(x.to(probe.weight.device))


def file_fingerprint(path: str | Path) -> dict[str, Any]:
    """What identifies a file's contents without reading it: resolved path, size and modification time (ns).

    Raises:
        DataError: The file does not exist.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as error:
        raise DataError(f"{path}: cannot read it to key the feature cache ({first_line(error)})") from None
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def feature_settings(
    *,
    model: str,
    data_list: str | Path,
    num_frames: int,
    size: int,
    sampling: str,
    num_clips: int,
    num_crops: int,
    mean: Sequence[float],
    std: Sequence[float],
    **extra: Any,
) -> dict[str, Any]:
    """Every setting that decides a feature file, as plain data for `FeatureCache` (all keyword-only and required,
    so none can be forgotten).

    Args:
        model: An identity of the weights that change the features: a sha256 of the checkpoint file, or another
            string that changes whenever they do.
        data_list: The list file; its fingerprint (`file_fingerprint`) is recorded, so an edited list is new data.
        extra: Anything else that changes the features (the backbone's pooling, the root folder, a dtype...); must
            be JSON-serialisable.
    """
    return {
        "model": model,
        "data_list": file_fingerprint(data_list),
        "num_frames": num_frames,
        "size": size,
        "sampling": sampling,
        "num_clips": num_clips,
        "num_crops": num_crops,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        **extra,
    }


def settings_key(settings: Mapping[str, Any]) -> str:
    """Hex sha256 of the settings' canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(_canonical(settings).encode("utf-8")).hexdigest()


def _canonical(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


class FeatureCache:
    """Feature tensors on disk, one file per settings key: `<folder>/<sha256>.pt`.

    A file holds the settings' JSON next to the tensors and is loaded with `weights_only=True` (no pickled code).
    A file that cannot be read, or whose settings differ from the ones asked for, is a miss: it is recomputed and
    overwritten, never trusted and never fatal. Files are written atomically, so an interrupted run leaves none.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, settings: Mapping[str, Any]) -> Path:
        """Where the features of `settings` are stored."""
        return self.folder / f"{settings_key(settings)}.pt"

    def load(self, settings: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """The cached tensors of `settings`, or None when there are none usable."""
        path = self.path(settings)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any unreadable file (truncated, foreign, corrupt) is only a cache miss
            return None
        if not _valid_entry(stored, settings):
            return None
        return dict(stored["tensors"])

    def save(self, settings: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Path:
        """Store `tensors` (moved to the CPU) under `settings`; returns the file."""
        path = self.path(settings)
        entry = {"settings": _canonical(settings), "tensors": {k: v.detach().cpu() for k, v in tensors.items()}}
        with atomic_path(path) as tmp:
            torch.save(entry, tmp)
        return path

    def get_or_compute(
        self, settings: Mapping[str, Any], compute: Callable[[], Mapping[str, Tensor]]
    ) -> tuple[dict[str, Tensor], bool]:
        """The cached tensors of `settings`, or `compute()`'s, stored first. Returns (tensors, was_cached)."""
        cached = self.load(settings)
        if cached is not None:
            return cached, True
        tensors = dict(compute())
        self.save(settings, tensors)
        return tensors, False


def _valid_entry(stored: object, settings: Mapping[str, Any]) -> bool:
    """A dict written by `FeatureCache.save` for exactly these settings."""
    return (
        isinstance(stored, dict)
        and stored.get("settings") == _canonical(settings)
        and isinstance(stored.get("tensors"), dict)
        and all(isinstance(v, Tensor) for v in stored["tensors"].values())
    )
