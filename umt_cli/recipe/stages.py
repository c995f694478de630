"""Whole-recipe models, one per `stage`, with the cross-field checks only the whole recipe can make."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from umt_cli.recipe.base import Recipe
from umt_cli.recipe.prepare import DataSource
from umt_cli.recipe.sections import (
    AugmentSection,
    DataSection,
    DecodeSection,
    Masking,
    RunSection,
    Sampling,
    SparseSampling,
    StudentSection,
)

__all__ = ["DistillRecipe", "PrepareDataRecipe", "AnyRecipe", "RECIPE_TYPES"]


class DistillRecipe(Recipe):
    """Stage 1: distil a video student from a frozen CLIP teacher on the tokens its attention keeps."""

    stage: Literal["distill"] = "distill"
    data: DataSection
    """Training clips."""
    decode: DecodeSection = DecodeSection()
    """Video decoding and bad-video handling."""
    sampling: Sampling = SparseSampling()
    """Frame sampling (`kind`: sparse, dense or interval)."""
    augment: AugmentSection = AugmentSection()
    """Training augmentation."""
    student: StudentSection = StudentSection()
    """Student input geometry."""
    masking: Masking
    """Token masking (`kind`: attention, tube or random)."""
    run: RunSection = RunSection()
    """Run-wide settings."""

    @model_validator(mode="after")
    def _geometry(self) -> DistillRecipe:
        s = self.student
        problems = []
        if s.num_frames % s.tubelet:
            problems.append(f"student.num_frames: {s.num_frames} is not a multiple of student.tubelet ({s.tubelet})")
        if s.img_size % s.patch_size:
            problems.append(f"student.img_size: {s.img_size} is not a multiple of student.patch_size ({s.patch_size})")
        if problems:  # one "key: problem" line each, so every problem is reported under its own key
            raise ValueError("\n".join(problems))
        return self


class PrepareDataRecipe(Recipe):
    """Inputs of `umt prepare-data`: which data set to build and where."""

    stage: Literal["prepare-data"] = "prepare-data"
    source: DataSource
    """The data set (`kind`: kinetics710, synthetic or video-text)."""


RECIPE_TYPES = {"distill": DistillRecipe, "prepare-data": PrepareDataRecipe}
"""Stage name -> recipe model."""

AnyRecipe = Annotated[DistillRecipe | PrepareDataRecipe, Field(discriminator="stage")]
