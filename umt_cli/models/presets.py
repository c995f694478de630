"""Model presets as plain data (no torch import), shared by the models and the recipe checks."""

from __future__ import annotations

__all__ = ["STUDENT_GEOMETRY", "TEACHER_GEOMETRY"]

STUDENT_GEOMETRY: dict[str, dict[str, int]] = {
    "umt-tiny": {"dim": 64, "depth": 4, "num_heads": 4, "patch_size": 16},
    "umt-b16": {"dim": 768, "depth": 12, "num_heads": 12, "patch_size": 16},
    "umt-l16": {"dim": 1024, "depth": 24, "num_heads": 16, "patch_size": 16},
}
"""Student ViT shapes (docs/official-behaviour.md, Student ViT); frames, resolution and drop path come from the
recipe."""

TEACHER_GEOMETRY: dict[str, dict[str, int]] = {
    "clip-b16": {"width": 768, "layers": 12, "heads": 12, "patch_size": 16, "output_dim": 512, "input_size": 224},
    "clip-l14": {"width": 1024, "layers": 24, "heads": 16, "patch_size": 14, "output_dim": 768, "input_size": 196},
    "clip-tiny": {"width": 64, "layers": 4, "heads": 4, "patch_size": 16, "output_dim": 32, "input_size": 64},
    "clip-tiny14": {"width": 64, "layers": 4, "heads": 4, "patch_size": 14, "output_dim": 32, "input_size": 56},
}
"""CLIP visual towers (docs/official-behaviour.md, CLIP teacher); `input_size` is the default resolution the teacher
runs at (L/14: 196 px, so its 14x14 grid matches a 224-px /16 student)."""
