"""The teacher interface: what a stage needs from a frozen image teacher, and the builder behind the registry.

A stage asks a teacher for two things, in two steps, because the mask depends on the teacher's own attention:

1. `encode(video)` runs the tower and returns a pass whose `cls_attn` (B, T, HW) guides masking;
2. `targets(encoded, visible)` turns that pass into the distillation targets at the visible tokens,
   (K, B, Nv, Ct), l2-normalised, so an implementation may finish its work for the kept tokens only.

It also tells the stage its output width Ct (`output_dim`, the student's alignment heads project to it) and the
pixel statistics it expects (`input_stats`); it is given the student's statistics when built and converts from them
itself, so no pairing of student and teacher normalisation can normalise twice.

`umt_cli.variants.TEACHERS` maps `teacher.arch` to a `TeacherSpec` whose builder returns a `Teacher`; the CLIP towers
(`umt_cli.models.clip`) are the first implementation. A new teacher (SigLIP, EVA-CLIP, InternViT) is one registry
entry plus a module with a builder and a class of this shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from umt_cli.data.transforms import Normalization

__all__ = ["TeacherPass", "Teacher", "build_teacher", "build_recipe_teacher"]


class TeacherPass(Protocol):
    """What `Teacher.encode` returns: the CLS attention, plus whatever the teacher keeps to finish the targets."""

    cls_attn: Tensor
    """(B, T, HW) the CLS -> patch attention of the last block, averaged over heads."""


@runtime_checkable
class Teacher(Protocol):
    """A frozen image teacher applied frame by frame to a clip (an `nn.Module` in eval mode, no gradients)."""

    output_dim: int
    """Ct: the width of the targets."""
    input_stats: Normalization
    """The pixel statistics the tower expects; clips arrive in the student's and are converted."""

    def encode(self, video: Tensor) -> TeacherPass:
        """Run the tower on a (B, 3, T, H, W) clip normalised with the student's statistics."""
        ...

    def targets(self, encoded: Any, visible: Tensor) -> Tensor:
        """Targets (K, B, Nv, Ct), l2-normalised, at the `visible` (B, N) tokens (True = kept)."""
        ...

    def to(self, device: torch.device) -> Teacher:
        """Move to a device (as `nn.Module.to`)."""
        ...


def build_teacher(section: Any, *, return_layers: int, student_stats: Normalization, seed: int = 0) -> Teacher:
    """The teacher a recipe's `[teacher]` table names, built by its registered builder with its weights loaded.

    Args:
        section: The `[teacher]` table (`arch`, `weights`, `input_size`, `input_norm`, `trust`).
        return_layers: K, the number of last layers whose targets the stage aligns to.
        student_stats: Normalisation of the student's clips, which the teacher converts from.
        seed: Seed of a random init (`weights = "random"`, tests only).
    """
    from umt_cli.registry import load_target
    from umt_cli.variants import TEACHERS

    spec = TEACHERS[TEACHERS.check(section.arch)]
    builder = load_target(spec.builder)
    return builder(section, spec, return_layers=return_layers, student_stats=student_stats, seed=seed)


TEACHER_SEED_KEY = 0x7EAC
"""Extra seed key of a random teacher's init (tests), apart from every other use of the run seed."""


def build_recipe_teacher(recipe: Any) -> Teacher:
    """The teacher of a training recipe: `[teacher]`, targets for the student's last `student.align_layers` layers,
    converting from `augment.normalize`; a random init (tests) is seeded from `run.seed`."""
    from umt_cli.data.transforms import NORMALIZATION
    from umt_cli.utils.seed import derive_seed

    return build_teacher(
        recipe.teacher,
        return_layers=recipe.student.align_layers,
        student_stats=NORMALIZATION[recipe.augment.normalize],
        seed=derive_seed(recipe.run.seed, TEACHER_SEED_KEY),
    )
