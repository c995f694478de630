"""UMT-FVD: the Fréchet distance between two sets of UMT video features (docs/official-behaviour.md, Text-to-video
scores), computed as the FETV and ChronoMagic-Bench scripts compute it.

- Statistics in float64 from float32 features: μ = Σx / n, Σ = Σxxᵀ / n − μμᵀ (the population covariance).
- d = ‖μ_fake − μ_real‖² + Tr(Σ_fake + Σ_real − 2·Re(sqrtm(Σ_fake Σ_real))), `scipy.linalg.sqrtm`.
- Subsets: for each seed s, `random.seed(s); random.sample(range(n), N)` of each set, or all items when N ≥ n.
- Two summaries, not comparable with each other: FETV's, the mean over seeds at N = 1024; ChronoMagic's, the mean
  over every (N, seed).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SIZES",
    "SEEDS",
    "FETV_SIZE",
    "feature_stats",
    "frechet_distance",
    "subset_indices",
    "FvdRun",
    "fvd_runs",
    "summaries",
]

SIZES = (32, 64, 128, 256, 300, 512, 1024)
"""Subset sizes N of the FETV and ChronoMagic scripts (`fvd32_16f` ... `fvd1024_16f`)."""
SEEDS = (12, 22, 32, 42)
"""Their subsampling seeds."""
FETV_SIZE = 1024
"""The N whose seed mean FETV reports."""


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(μ (D,), Σ (D, D)) in float64 of (n, D) features, first rounded to float32 as upstream does."""
    x = np.asarray(features, dtype=np.float32).astype(np.float64)  # (n, D)
    n = x.shape[0]
    mean = x.sum(axis=0) / n
    return mean, x.T @ x / n - np.outer(mean, mean)


def frechet_distance(fake: tuple[np.ndarray, np.ndarray], real: tuple[np.ndarray, np.ndarray]) -> float:
    """The Fréchet distance between two Gaussians given as (μ, Σ); the square root is of Σ_fake·Σ_real."""
    import scipy.linalg

    (mu_fake, sigma_fake), (mu_real, sigma_real) = fake, real
    root = scipy.linalg.sqrtm(sigma_fake @ sigma_real)
    distance = np.square(mu_fake - mu_real).sum() + np.trace(sigma_fake + sigma_real - 2 * root)
    return float(np.real(distance))


def subset_indices(n: int, size: int, seed: int) -> list[int] | None:
    """The items of a set of `n` used at subset size `size`: `random.seed(seed); random.sample(range(n), size)`
    (a private generator, the same draws), or None (all items, in order) when `size >= n`."""
    if size >= n:
        return None
    return random.Random(seed).sample(range(n), size)


@dataclass(frozen=True)
class FvdRun:
    """One distance: subset size `size`, `seed`, how many real and fake items it used, and `fvd`."""

    size: int
    seed: int
    real: int
    fake: int
    fvd: float


def fvd_runs(real: np.ndarray, fake: np.ndarray, sizes: Sequence[int], seeds: Sequence[int]) -> list[FvdRun]:
    """The distance for every (N, seed) between (n_real, D) and (n_fake, D) features, N-major."""
    runs = []
    for size in sizes:
        for seed in seeds:
            real_rows, fake_rows = (subset_indices(len(x), size, seed) for x in (real, fake))
            real_part = real if real_rows is None else real[real_rows]
            fake_part = fake if fake_rows is None else fake[fake_rows]
            distance = frechet_distance(feature_stats(fake_part), feature_stats(real_part))
            runs.append(FvdRun(size, seed, len(real_part), len(fake_part), distance))
    return runs


def summaries(runs: Sequence[FvdRun]) -> dict[str, dict[str, object]]:
    """The two published summaries, each labelled; FETV's is None when N = 1024 was not run."""
    at_fetv_size = [run.fvd for run in runs if run.size == FETV_SIZE]
    return {
        "fetv": {
            "value": statistics.fmean(at_fetv_size) if at_fetv_size else None,
            "label": f"FETV UMT-FVD: mean over {len(at_fetv_size)} seed(s) at N = {FETV_SIZE}",
        },
        "chronomagic": {
            "value": statistics.fmean(run.fvd for run in runs) if runs else None,
            "label": f"ChronoMagic UMT-FVD: mean over all {len(runs)} (N, seed) runs (one generation run)",
        },
    }
