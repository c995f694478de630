"""Seeds derived from keys, so randomness depends on *what* is drawn (seed, epoch, sample), not on who draws it."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["derive_seed", "generator_for"]


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (the same keys give the same seed on every machine)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator_for(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` seeded from `keys`, e.g. `generator_for(seed, epoch, index)` for one training sample."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*keys))
    return generator
