"""Stage 1: distil a video student from a frozen image teacher on the tokens the teacher's attention keeps.

Each step: the teacher encodes the clip and gives its CLS attention; the masker draws the visible tokens from it;
the student sees only those and regresses the teacher's targets there (unmasked token alignment, UTA). See
docs/official-behaviour.md for what this reproduces, and `umt_cli.training` for the loop around `step`.

Randomness: frame sampling, crops and flips come from generators seeded by (seed, epoch, sample index) in the
dataset, and masks from generators seeded by (seed, epoch, sample index, MASK_KEY), so a run's numbers do not
depend on how many processes share a batch. Only drop path uses the global torch RNG (seeded per process and
checkpointed by the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from umt_cli import __version__
from umt_cli.data.datasets import build_train_dataset
from umt_cli.data.loaders import ClipBatch
from umt_cli.losses.uta import uta_loss
from umt_cli.masking.build import MaskDraw, TokenGrid, build_masker, build_token_grid, mask_generators
from umt_cli.models.student import build_distill_student
from umt_cli.models.teacher import Teacher, build_recipe_teacher
from umt_cli.recipe import DistillRecipe
from umt_cli.training.loop import StepOutput, WeightsExport, fit
from umt_cli.training.plan import make_plan
from umt_cli.training.session import Run, Session, assemble, open_session
from umt_cli.utils.optim import build_adamw

__all__ = ["Components", "setup", "step", "run", "build_models"]


@dataclass(frozen=True)
class Components:
    """What `step` needs besides the batch; `training` is the engine's view of the same run (model, optimizer, data,
    plan)."""

    recipe: DistillRecipe
    training: Run
    teacher: Teacher
    masker: Callable[..., MaskDraw]  # the registered masker of `masking.kind`, its ratio bound
    grid: TokenGrid  # the teacher's token grid of a clip (T frames), which masks are drawn on


def build_models(recipe: DistillRecipe, device: torch.device) -> tuple[torch.nn.Module, Teacher]:
    """The trainable student (identical initial weights on every process) and the frozen teacher on `device`."""
    s = recipe.student
    teacher = build_recipe_teacher(recipe).to(device)
    torch.manual_seed(recipe.run.seed)
    student = build_distill_student(
        s.preset,
        img_size=s.img_size,
        num_frames=s.num_frames,
        tubelet=s.tubelet,
        drop_path=s.drop_path,
        align_layers=s.align_layers,
        teacher_dim=teacher.output_dim,  # Ct
        checkpoint_blocks=s.checkpoint_blocks,
    )
    return student, teacher


def setup(recipe: DistillRecipe, session: Session, overrides: list[str]) -> Components:
    """Data, models, plan and optimizer of a stage-1 run; the run directory is written only once all are built."""
    dataset = build_train_dataset(recipe, status_dir=session.decoding_status_dir())
    with session.main_warns():
        student, teacher = build_models(recipe, session.accelerator.device)
    session.seed_process()  # drop path differs per process
    sampler, loader = session.train_loader(dataset)
    plan = make_plan(
        len(dataset),
        batch_size=recipe.data.batch_size,
        world_size=session.accelerator.num_processes,
        optim=recipe.optim,
        schedule=recipe.schedule,
    )
    o = recipe.optim
    optimizer = build_adamw(student, lr=plan.peak_lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps)
    training = assemble(
        session, model=student, optimizer=optimizer, sampler=sampler, loader=loader, plan=plan, overrides=overrides
    )
    return Components(recipe, training, teacher, build_masker(recipe.masking), build_token_grid(recipe.student))


def step(c: Components, batch: ClipBatch, epoch: int) -> StepOutput:
    """Teacher -> masking -> student on the visible tokens -> UTA loss against the teacher's targets."""
    acc = c.training.accelerator
    video = batch.video.to(acc.device, non_blocking=True)  # (B, C, T, H, W)
    with torch.no_grad(), acc.autocast():
        encoded = c.teacher.encode(video)  # cls_attn (B, T, HW); the last block waits for the mask
    cls_attn = encoded.cls_attn.float()  # (B, T, HW)
    draw = c.masker(
        c.grid,
        cls_attn=cls_attn,
        generators=mask_generators(c.recipe.run.seed, epoch, batch.index, cls_attn.device),
    )
    with torch.no_grad(), acc.autocast():
        targets = c.teacher.targets(encoded, draw.visible)  # (K, B, Nv, Ct) unit vectors
    with acc.autocast():
        predicted = c.training.model(video, draw.visible)  # (K, B, Nv, Ct) unit vectors
    loss = c.recipe.loss
    uta = uta_loss(predicted.float(), targets.float(), kind=loss.kind, **loss.options())
    return StepOutput(
        total=loss.weight * uta, parts={"loss/uta": uta.detach()}, counts={"mask_fallback_rows": draw.fallback_rows}
    )


def run(
    recipe: DistillRecipe, run_dir: Path, *, resume: str | None = None, overrides: list[str] | None = None
) -> dict[str, object]:
    """Train, checkpoint and export the student to `student.safetensors`; returns the run summary (also written to
    `summary.json`). Resuming a run that already finished changes nothing and returns its recorded summary."""
    c = setup(recipe, open_session(recipe, run_dir, resume=resume), overrides or [])
    return fit(c.training, partial(step, c), WeightsExport("student.safetensors", _weights_metadata(recipe)))


def _weights_metadata(recipe: DistillRecipe) -> dict[str, str]:
    """What `student.safetensors` says about itself (safetensors headers hold strings)."""
    s, t = recipe.student, recipe.teacher
    return {
        "format": "umt-stage1",
        "umt_version": __version__,
        "preset": s.preset,
        "num_frames": str(s.num_frames),
        "img_size": str(s.img_size),
        "tubelet": str(s.tubelet),
        "align_layers": str(s.align_layers),
        "teacher": t.arch,
        "teacher_input_norm": t.input_norm,
        "pos_embed": "sinusoid (regenerated)",
    }
