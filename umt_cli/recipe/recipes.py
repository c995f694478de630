"""Whole-recipe models, one per command (`stage`), with the cross-field checks only the whole recipe can make."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from umt_cli.recipe.base import Recipe
from umt_cli.recipe.prepare import DataSource
from umt_cli.recipe.sections import (
    AugmentSection,
    CheckpointSection,
    ClassifierSection,
    CosineLoss,
    DataSection,
    DecodeSection,
    FinetuneAugment,
    FinetuneDataSection,
    FinetuneEval,
    FinetuneInit,
    FloorCosineSchedule,
    InitSection,
    IntervalSampling,
    LogSection,
    Loss,
    MaskingSection,
    OptimSection,
    PretrainDataSection,
    PretrainLoss,
    PretrainMasking,
    RandomResizedCrop,
    RunSection,
    Sampling,
    ScheduleSection,
    SegmentSampling,
    SparseSampling,
    StudentSection,
    TeacherSection,
    TextSection,
    VideoTextSection,
)
from umt_cli.variants import STUDENT_PRESETS, TEACHERS

__all__ = ["DistillRecipe", "PretrainRecipe", "FinetuneRecipe", "PrepareDataRecipe", "AnyRecipe", "RECIPE_TYPES"]


class DistillRecipe(Recipe):
    """Stage 1: distil a video student from a frozen CLIP teacher on the tokens its attention keeps."""

    stage: Literal["distill"] = "distill"
    """The command this recipe is for: `umt distill`."""
    data: DataSection
    """Training clips."""
    decode: DecodeSection = DecodeSection()
    """Video decoding and bad-video handling."""
    sampling: Sampling = SparseSampling()
    """Frame sampling (`kind`: sparse, dense or interval)."""
    augment: AugmentSection = AugmentSection()
    """Training augmentation."""
    student: StudentSection = StudentSection()
    """The video ViT student."""
    teacher: TeacherSection
    """The frozen image teacher."""
    masking: MaskingSection
    """Token masking."""
    loss: Loss = CosineLoss()
    """UTA loss (`kind`: cosine, mse or smooth_l1)."""
    optim: OptimSection = OptimSection()
    """Optimizer."""
    schedule: ScheduleSection = ScheduleSection()
    """Training length and learning-rate schedule."""
    checkpoint: CheckpointSection = CheckpointSection()
    """Checkpoint cadence."""
    log: LogSection = LogSection()
    """Metrics and console output."""
    run: RunSection = RunSection()
    """Run-wide settings."""

    @model_validator(mode="after")
    def _geometry(self) -> DistillRecipe:
        problems = _student_problems(self.student) + _teacher_problems(self.student, self.teacher)
        problems += _schedule_problems(self.optim, self.schedule)
        if problems:  # one "key: problem" line each, so every problem is reported under its own key
            raise ValueError("\n".join(problems))
        return self


def _grid_problems(key: str, s: StudentSection | ClassifierSection) -> list[str]:
    """Frames that fill whole tubelets and a size that fills whole patches, for the ViT of section `key`."""
    patch = STUDENT_PRESETS[s.preset]["patch_size"]
    problems = []
    if s.num_frames % s.tubelet:
        problems.append(f"{key}.num_frames: {s.num_frames} is not a multiple of {key}.tubelet ({s.tubelet})")
    if s.img_size % patch:
        problems.append(f"{key}.img_size: {s.img_size} is not a multiple of {s.preset}'s patch {patch}")
    return problems


def _student_problems(s: StudentSection) -> list[str]:
    preset = STUDENT_PRESETS[s.preset]
    problems = _grid_problems("student", s)
    if s.align_layers > preset["depth"]:
        problems.append(f"student.align_layers: {s.align_layers} exceeds {s.preset}'s depth {preset['depth']}")
    return problems


def _teacher_problems(s: StudentSection, t: TeacherSection) -> list[str]:
    spec, student_patch = TEACHERS[t.arch], STUDENT_PRESETS[s.preset]["patch_size"]
    size = t.input_size or spec.input_size
    problems = []
    if size % spec.patch_size:
        problems.append(f"teacher.input_size: {size} is not a multiple of {t.arch}'s patch {spec.patch_size}")
    elif size // spec.patch_size != s.img_size // student_patch:
        grid = s.img_size // student_patch
        problems.append(
            f"teacher.input_size: {t.arch} at {size} px has a {size // spec.patch_size}-token grid, the student "
            f"a {grid}-token grid (use {grid * spec.patch_size})"
        )
    if s.align_layers > spec.layers:
        problems.append(f"student.align_layers: {s.align_layers} exceeds {t.arch}'s {spec.layers} layers")
    if s.tubelet != 1:  # the image teacher gives one target and one attention map per frame
        problems.append(
            f"student.tubelet: the student is aligned with an image teacher frame by frame, so its tokens must be "
            f"single frames (tubelet 1, as in the official recipes), not {s.tubelet}"
        )
    return problems


def _schedule_problems(o: OptimSection, s: ScheduleSection | FloorCosineSchedule) -> list[str]:
    # Both would run without complaint: the learning rate would rise along the "decay", or never reach its peak.
    problems = []
    if o.min_lr > o.lr:
        problems.append(f"optim.min_lr: {o.min_lr} exceeds optim.lr ({o.lr}); the cosine decays from lr to min_lr")
    if s.warmup_epochs > s.epochs:
        problems.append(f"schedule.warmup_epochs: {s.warmup_epochs} exceeds schedule.epochs ({s.epochs})")
    return problems


class PretrainRecipe(Recipe):
    """Stage 2: align the distilled video encoder with a BERT text encoder on video-text and image-text corpora,
    with the teacher's alignment loss kept on."""

    stage: Literal["pretrain"] = "pretrain"
    """The command this recipe is for: `umt pretrain`."""
    data: PretrainDataSection
    """Video-text corpora."""
    decode: DecodeSection = DecodeSection()
    """Video decoding and bad-media handling."""
    sampling: Sampling = IntervalSampling()
    """Frame sampling (`kind`: interval (official stage 2), sparse or dense)."""
    augment: AugmentSection = AugmentSection(crop=RandomResizedCrop())
    """Training augmentation (official stage 2: random resized crop, scale 0.5-1, bicubic; flip)."""
    student: StudentSection = StudentSection(num_frames=4)
    """The video encoder (the stage-1 student)."""
    init: InitSection = InitSection()
    """Where the video encoder starts from."""
    teacher: TeacherSection
    """The frozen image teacher of the alignment loss."""
    text: TextSection
    """The BERT text encoder."""
    model: VideoTextSection = VideoTextSection()
    """The joint embedding."""
    masking: PretrainMasking = PretrainMasking()
    """Masks for videos and images."""
    loss: PretrainLoss = PretrainLoss()
    """Loss weights and options."""
    optim: OptimSection = OptimSection(lr=1e-4, min_lr=1e-6, scale_lr=False, betas=(0.9, 0.999), weight_decay=0.02)
    """Optimizer (official stage 2: lr 1e-4 not scaled by batch, betas (0.9, 0.999), weight decay 0.02)."""
    schedule: FloorCosineSchedule = FloorCosineSchedule()
    """Training length and learning-rate schedule."""
    checkpoint: CheckpointSection = CheckpointSection()
    """Checkpoint cadence."""
    log: LogSection = LogSection()
    """Metrics and console output."""
    run: RunSection = RunSection()
    """Run-wide settings."""

    @model_validator(mode="after")
    def _geometry(self) -> PretrainRecipe:
        problems = _student_problems(self.student) + _teacher_problems(self.student, self.teacher)
        problems += _schedule_problems(self.optim, self.schedule)
        if self.text.fusion_layer < 1:
            problems.append("text.fusion_layer: the text-only layers must come first")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class FinetuneRecipe(Recipe):
    """Action-recognition fine-tuning of the stage-1 (or stage-2) video encoder with the official recipe: layer-wise
    learning-rate decay, RandAugment, Mixup/CutMix, label smoothing, repeated augmentation."""

    stage: Literal["finetune"] = "finetune"
    """The command this recipe is for: `umt finetune`."""
    data: FinetuneDataSection
    """Labelled clips and class names."""
    decode: DecodeSection = DecodeSection()
    """Video decoding and bad-video handling."""
    sampling: Sampling = SegmentSampling()
    """Training frame sampling (official: `segment`)."""
    augment: FinetuneAugment = FinetuneAugment()
    """Training augmentation."""
    model: ClassifierSection = ClassifierSection()
    """The classifier."""
    init: FinetuneInit = FinetuneInit()
    """Where it starts from."""
    optim: OptimSection = OptimSection(lr=2e-4, min_lr=1e-6, betas=(0.9, 0.999), weight_decay=0.05)
    """Optimizer (official B/16 on K710: base lr 2e-4, scaled by clips x repeats / 256; betas (0.9, 0.999))."""
    schedule: ScheduleSection = ScheduleSection(epochs=35, warmup_epochs=2)
    """Training length and learning-rate schedule (official B/16 on K710: 35 epochs, 2 of warm-up)."""
    eval: FinetuneEval = FinetuneEval()
    """Validation and the final test."""
    checkpoint: CheckpointSection = CheckpointSection()
    """Checkpoint cadence."""
    log: LogSection = LogSection()
    """Metrics and console output."""
    run: RunSection = RunSection()
    """Run-wide settings."""

    @model_validator(mode="after")
    def _geometry(self) -> FinetuneRecipe:
        problems = _schedule_problems(self.optim, self.schedule) + _grid_problems("model", self.model)
        views = self.data.batch_size * self.data.repeats
        if (self.augment.mixup > 0 or self.augment.cutmix > 0) and views % 2:
            problems.append(f"data.batch_size: {self.data.batch_size} clips x data.repeats {self.data.repeats} = "
                            f"{views} views; Mixup/CutMix pair the views, so their count must be even")  # fmt: skip
        if problems:
            raise ValueError("\n".join(problems))
        return self


class PrepareDataRecipe(Recipe):
    """Inputs of `umt prepare-data`: which data set to build and where."""

    stage: Literal["prepare-data"] = "prepare-data"
    """The command this recipe is for: `umt prepare-data`."""
    source: DataSource
    """The data set (`kind`: kinetics710, synthetic or video-text)."""


RECIPE_TYPES = {
    "distill": DistillRecipe,
    "pretrain": PretrainRecipe,
    "finetune": FinetuneRecipe,
    "prepare-data": PrepareDataRecipe,
}
"""Stage name -> recipe model."""

AnyRecipe = Annotated[DistillRecipe | PretrainRecipe | FinetuneRecipe | PrepareDataRecipe, Field(discriminator="stage")]
