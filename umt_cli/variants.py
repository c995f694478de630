"""Every variant a recipe can name, in one place (torch-free: the recipe checks read the names from here).

| recipe key | registry | implementation signature |
|---|---|---|
| `student.preset` | `STUDENT_PRESETS` | geometry (dim, depth, num_heads, patch_size) for `models.student` |
| `teacher.arch` | `TEACHERS` | `TeacherSpec`: a builder of a `models.teacher.Teacher`; geometry for the recipe checks |
| `masking.kind` | `MASKERS` | `masking.build.Masker`: `(grid, mask_ratio, *, cls_attn, generators) -> MaskDraw` |
| `loss.kind` | `UTA_LOSSES` | `(student, teacher, **options) -> Tensor`, options = the recipe section's other keys |

To add a variant, add one entry here and write its implementation; `docs/architecture.md` walks through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from umt_cli.models.presets import STUDENT_GEOMETRY, TEACHER_GEOMETRY
from umt_cli.registry import Registry

__all__ = ["TeacherSpec", "STUDENT_PRESETS", "TEACHERS", "MASKERS", "UTA_LOSSES"]


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher architecture: how to build it, and the geometry the recipe checks against the student's.

    Attributes:
        builder: `(section, spec, *, return_layers, student_stats, seed) -> Teacher`, or `"module:function"`.
        patch_size: Pixels per patch side.
        layers: Transformer blocks (the most layers a student can align to).
        input_size: Default side in pixels the tower runs at (`teacher.input_size` overrides it).
        shape: The builder's own architecture numbers (CLIP: width, heads, output_dim).
    """

    builder: Any
    patch_size: int
    layers: int
    input_size: int
    shape: Mapping[str, int] = field(default_factory=dict)


def _clip(name: str) -> TeacherSpec:
    geometry = dict(TEACHER_GEOMETRY[name])
    common = {key: geometry.pop(key) for key in ("patch_size", "layers", "input_size")}
    return TeacherSpec("umt_cli.models.clip:build_clip_teacher", shape=geometry, **common)


STUDENT_PRESETS = Registry("student.preset", STUDENT_GEOMETRY)
"""Video ViT shapes: umt-b16 (12 x 768), umt-l16 (24 x 1024), umt-tiny (4 x 64, tests and the quickstart)."""

TEACHERS = Registry("teacher.arch", {name: _clip(name) for name in TEACHER_GEOMETRY})
"""Frozen image teachers: the OpenAI CLIP towers clip-b16 (UMT-B), clip-l14 (UMT-L), clip-tiny / clip-tiny14 (tests)."""

MASKERS = Registry(
    "masking.kind",
    {
        "attention": "umt_cli.masking.build:attention_masker",  # official: guided by the teacher's CLS attention
        "tube": "umt_cli.masking.build:tube_masker",  # one random set of positions in every frame
        "random": "umt_cli.masking.build:random_masker",  # a uniform random subset of the whole clip
    },
)
"""Token maskers: which tokens the student sees."""

UTA_LOSSES = Registry(
    "loss.kind",
    {
        "cosine": "umt_cli.losses.uta:cosine_distance",  # official `l2`
        "mse": "umt_cli.losses.uta:mean_squared_error",
        "smooth_l1": "umt_cli.losses.uta:smooth_l1",
    },
)
"""Distances between the student's and the teacher's tokens (unmasked token alignment)."""
