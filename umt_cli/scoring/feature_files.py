"""UMT-FVD feature files: reading the ones users bring (ChronoMagic's fp16 reference tensors, our own), and the cache
of computed features kept next to the videos.

A cache file is `umt-fvd-features-<digest>.safetensors` in the videos' folder: the (n, E) float32 features in video
id order, with the key they were made under in the header. The key holds every setting that made them: the
checkpoint's sha256, the protocol's video settings as used (precision included), the decode backend, the videos' folder,
and each video's id, size and modification time. The digest is the key's sha256, so a changed checkpoint, protocol
or video set reads another file, and a file is used only if its stored key equals the key asked for.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from umt_cli.errors import DataError, first_line
from umt_cli.utils.files import atomic_path

__all__ = ["FORMAT", "VIDEO_SETTINGS", "read_features", "cache_key", "cache_file", "load_cached", "save_cached"]

FORMAT = "umt-fvd-features/1"
VIDEO_SETTINGS = ("frames", "sampling", "size", "antialias", "precision")
"""The protocol settings a video's features depend on (the prompt settings do not): `umt score align` and
`umt score fvd` under one protocol share a cache."""
FEATURE_SUFFIXES = (".safetensors", ".pt", ".pth", ".npy")


def read_features(path: str | Path, *, option: str) -> np.ndarray:
    """(n, D) float32 features from a `.safetensors` (key `features`, or its only tensor), a `.pt`/`.pth` tensor
    (read with `weights_only=True`; fp16 is fine) or a `.npy` array.

    Raises:
        DataError: Unreadable, not one 2-D tensor, fewer than 2 rows, or non-finite values; named with `option`.
    """
    path = Path(path)
    where = f"{option} {path}"
    try:
        value = _load(path, where)
    except DataError:
        raise
    except Exception as error:  # each format fails with its own exception types
        raise DataError(f"{where}: not a readable feature file ({first_line(error)})") from None
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise DataError(f"{where}: features must be one (videos, width) matrix, got shape {tuple(array.shape)}")
    if len(array) < 2:
        raise DataError(f"{where}: {len(array)} feature row(s); a covariance needs at least 2")
    if not np.isfinite(array).all():
        raise DataError(f"{where}: the features hold NaN or infinite values")
    return array


def _load(path: Path, where: str) -> object:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "features" in tensors:
            return tensors["features"].float().numpy()
        return _only_tensor(tensors, where).float().numpy()
    if suffix in (".pt", ".pth"):
        import torch

        value = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(value, Mapping):
            value = _only_tensor(value, where)
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{where}: holds a {type(value).__name__}, not a feature tensor")
        return value.float().numpy()
    raise DataError(f"{where}: not a folder, nor a feature file ({', '.join(FEATURE_SUFFIXES)})")


def _only_tensor(tensors: Mapping[str, object], where: str) -> object:
    if len(tensors) != 1:
        names = ", ".join(list(tensors)[:5])
        raise DataError(f"{where}: {len(tensors)} tensors ({names}); expected `features` or a single tensor")
    return next(iter(tensors.values()))


def cache_key(
    checkpoint_sha256: str, protocol: Mapping[str, object], backend: str, videos: Mapping[str, Path]
) -> dict[str, object]:
    """Everything the features depend on (see the module docstring)."""
    settings = {key: protocol[key] for key in VIDEO_SETTINGS}
    files = []
    for key, path in videos.items():
        try:
            stat = path.stat()
            files.append([key, stat.st_size, stat.st_mtime_ns])
        except OSError:
            files.append([key, None, None])  # unreadable now: it fails (and is named) when decoded
    folders = sorted({str(path.parent.resolve()) for path in videos.values()})
    return {"format": FORMAT, "checkpoint_sha256": checkpoint_sha256, "protocol": settings, "backend": backend,
            "folders": folders, "videos": files}  # fmt: skip


def cache_file(folder: Path, key: Mapping[str, object]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"umt-fvd-features-{digest}.safetensors"


def load_cached(path: Path, key: Mapping[str, object]) -> tuple[np.ndarray, dict[str, str]] | None:
    """(features, {video id: why it was left out}) if `path` holds features made under exactly `key`, else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as handle:
            stored = json.loads((handle.metadata() or {}).get("key", "null"))
            if stored != json.loads(json.dumps(key)):
                return None
            failed = json.loads(handle.metadata().get("failed", "{}"))
            return handle.get_tensor("features"), failed
    except Exception:  # a damaged cache is recomputed, never trusted
        return None


def save_cached(path: Path, features: np.ndarray, key: Mapping[str, object], failed: Mapping[str, str]) -> bool:
    """Write the cache atomically: the features of the videos that decoded, and why the others did not. A folder
    that cannot be written is a warning (the run goes on uncached)."""
    from safetensors.numpy import save_file

    try:
        with atomic_path(path) as tmp:
            header = {"format": FORMAT, "key": json.dumps(key), "failed": json.dumps(dict(failed))}
            save_file({"features": np.ascontiguousarray(features, dtype=np.float32)}, str(tmp), metadata=header)
    except OSError as error:
        warnings.warn(f"features not cached: {path.parent} cannot be written ({error.strerror or error})",
                      stacklevel=2)  # fmt: skip
        return False
    return True
