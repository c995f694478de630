"""Stage 1: distil a video student from a frozen CLIP teacher on the tokens its attention keeps (SPEC section 2).

`setup()` builds everything a run needs from a recipe, `step()` holds the per-step maths, `run()` owns the loop,
logging and checkpoints. `accelerate` appears only here: under `torchrun` or `accelerate launch` the Accelerator
reads the launcher's environment and wraps the student for data-parallel training; everything below is plain PyTorch.

Randomness: frame sampling, crops and flips come from generators seeded by (seed, epoch, sample index) in the
dataset, and masks from generators seeded by (seed, epoch, sample index, MASK_KEY) here, so a run's numbers do not
depend on how many processes share a batch. Only drop path uses the global torch RNG (seeded per rank, checkpointed).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor

from umt_cli import __version__
from umt_cli.data.datasets import build_train_dataset
from umt_cli.data.failures import DataHealth
from umt_cli.data.loaders import ClipBatch, ShardedSampler, build_loader, iterate_epoch
from umt_cli.errors import CheckpointError, DataError, UmtError, UsageError, from_os_error
from umt_cli.losses.uta import uta_loss
from umt_cli.masking.functional import attention_visible, invalid_attention_rows, random_visible, tube_visible
from umt_cli.models.convert import load_strict
from umt_cli.models.student import build_distill_student
from umt_cli.models.teacher import ClipTeacher, build_teacher
from umt_cli.recipe import DistillRecipe
from umt_cli.utils import checkpoint as ckpt
from umt_cli.utils.files import write_json
from umt_cli.utils.metrics import ConsoleProgress, MetricsWriter
from umt_cli.utils.optim import build_adamw, cosine_lr, scaled_lr, set_lr
from umt_cli.utils.rundir import check_run_dir, recipe_changes, write_run_files
from umt_cli.utils.seed import derive_seed, generator_for

__all__ = ["MASK_KEY", "Plan", "Components", "StepOutput", "setup", "step", "run"]

MASK_KEY = 0x6D61736B
"""Extra seed key ("mask") that keeps mask generators apart from the data generators of the same sample."""


@dataclass(frozen=True)
class Plan:
    """How long the run is and how the learning rate moves, in optimizer steps."""

    global_batch: int  # clips per optimizer step: all processes and accumulated micro-batches together
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    final_lr: float

    def lr(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warm-up from 0, then cosine (official)."""
        return cosine_lr(
            step, base=self.peak_lr, final=self.final_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps
        )


@dataclass(frozen=True)
class Components:
    """Everything `step()` and `run()` need; built once by `setup()`."""

    recipe: DistillRecipe
    run_dir: Path
    accelerator: Accelerator
    student: torch.nn.Module  # wrapped for data parallelism when several processes run
    teacher: ClipTeacher
    optimizer: torch.optim.Optimizer
    sampler: ShardedSampler
    loader: torch.utils.data.DataLoader
    plan: Plan
    resume_from: ckpt.ResumePoint | None  # the checkpoint read in full, or None for a fresh run


@dataclass(frozen=True)
class StepOutput:
    """One micro-batch: the loss to back-propagate, its named parts, and masking diagnostics."""

    total: Tensor
    parts: dict[str, Tensor]
    mask_fallback_rows: int = 0


@dataclass
class _Progress:
    """Mutable loop state: finished optimizer steps and running timings."""

    step: int = 0
    data_wait: float = 0.0
    step_time: float = 0.0
    last_loss: float | None = None  # the last logged loss (None until one is logged)


# --- setup ----------------------------------------------------------------------------------------------------------


def _accelerator(recipe: DistillRecipe) -> Accelerator:
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[recipe.run.precision]
    cuda = torch.cuda.is_available()
    if precision == "fp16" and not cuda:
        raise UsageError("run.precision = 'fp16' needs a GPU", hint="use run.precision=bf16 or run.precision=fp32")
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=recipe.optim.grad_accum, cpu=not cuda)


def make_plan(recipe: DistillRecipe, num_clips: int, world_size: int) -> Plan:
    """Steps per epoch, total steps, warm-up and learning rates for a data set of `num_clips` clips."""
    global_batch = recipe.data.batch_size * world_size * recipe.optim.grad_accum
    steps_per_epoch = num_clips // global_batch
    if steps_per_epoch == 0:
        raise DataError(
            f"{num_clips} training clips do not fill one step of {global_batch} "
            "(data.batch_size x processes x optim.grad_accum)"
        )
    total = recipe.schedule.epochs * steps_per_epoch
    if recipe.schedule.max_steps is not None:
        total = min(total, recipe.schedule.max_steps)
    scale = global_batch if recipe.optim.scale_lr else 256
    return Plan(
        global_batch=global_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=min(int(recipe.schedule.warmup_epochs * steps_per_epoch), total),
        peak_lr=scaled_lr(recipe.optim.lr, scale),
        final_lr=scaled_lr(recipe.optim.min_lr, scale),
    )


def _models(recipe: DistillRecipe, device: torch.device, *, main: bool) -> tuple[torch.nn.Module, ClipTeacher]:
    s, t = recipe.student, recipe.teacher
    with warnings.catch_warnings():
        if not main:  # every process builds the same models: let one of them say what it noticed
            warnings.simplefilter("ignore")
        teacher = build_teacher(
            t.arch,
            weights=t.weights,
            input_size=t.input_size,
            input_norm=t.input_norm,
            return_layers=s.align_layers,
            seed=derive_seed(recipe.run.seed, 0x7EAC),
            trust=t.trust,
            how_to_trust="set teacher.trust = true (in the recipe, or the override teacher.trust=true)",
        ).to(device)
    torch.manual_seed(recipe.run.seed)  # identical initial student weights on every process
    student = build_distill_student(
        s.preset,
        img_size=s.img_size,
        num_frames=s.num_frames,
        tubelet=s.tubelet,
        drop_path=s.drop_path,
        align_layers=s.align_layers,
        teacher_dim=teacher.proj.shape[1],  # Ct
        checkpoint_blocks=s.checkpoint_blocks,
    )
    return student, teacher


def setup(
    recipe: DistillRecipe, run_dir: Path, *, resume: str | None = None, overrides: list[str] | None = None
) -> Components:
    """Build the accelerator, models, data and optimizer; prepare the run directory (or find the resume point)."""
    accelerator = _accelerator(recipe)
    main = accelerator.is_main_process
    check_run_dir(run_dir, resume)  # every process looks before any process writes
    resume_from = ckpt.open_resume_point(
        run_dir, resume, rank_file=f"rank{accelerator.process_index}.pt", warn=_warn if main else lambda _: None
    )
    train_list = Path(recipe.data.train_list)
    if not train_list.is_file():
        problem = "is a folder, not a list file" if train_list.is_dir() else "not found"
        raise UsageError(f"data.train_list: {train_list} {problem}")
    student, teacher = _models(recipe, accelerator.device, main=main)
    torch.manual_seed(derive_seed(recipe.run.seed, accelerator.process_index))  # drop path differs per process
    status = run_dir / ".decoding" / f"rank{accelerator.process_index}" if recipe.data.num_workers else None
    dataset = build_train_dataset(recipe, status_dir=None if status is None else str(status))
    sampler = ShardedSampler(
        len(dataset),
        batch_size=recipe.data.batch_size,
        seed=recipe.run.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    loader = build_loader(
        dataset,
        sampler,
        num_workers=recipe.data.num_workers,
        prefetch_factor=recipe.data.prefetch_factor,
        pin_memory=recipe.data.pin_memory and accelerator.device.type == "cuda",
        timeout_s=recipe.decode.loader_timeout_s,
    )
    plan = make_plan(recipe, len(dataset), accelerator.num_processes)
    o = recipe.optim
    optimizer = build_adamw(student, lr=plan.peak_lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps)
    # Everything that can fail on a bad input has been built: only now does the run folder get written.
    accelerator.wait_for_everyone()
    if main and resume_from is None:
        write_run_files(run_dir, recipe, overrides or [], world_size=accelerator.num_processes)
    if main:
        ckpt.remove_partial_saves(run_dir / "checkpoints")
    accelerator.wait_for_everyone()
    if status is not None:  # workers name the file they decode here, so a hung decoder can be reported
        status.mkdir(parents=True, exist_ok=True)
    student, optimizer = accelerator.prepare(student, optimizer)
    return Components(recipe, run_dir, accelerator, student, teacher, optimizer, sampler, loader, plan, resume_from)


# --- one step ---------------------------------------------------------------------------------------------------------


def make_visible(recipe: DistillRecipe, cls_attn: Tensor, indices: Tensor, epoch: int) -> tuple[Tensor, int]:
    """The visible tokens (B, N) bool (True = kept) of a batch, one generator per sample; plus the number of
    attention rows that were unusable and fell back to uniform sampling."""
    batch, frames, hw = cls_attn.shape
    seed, masking = recipe.run.seed, recipe.masking
    generators = [generator_for(seed, epoch, int(i), MASK_KEY, device=cls_attn.device) for i in indices]
    if masking.kind == "attention":
        fallback = int(invalid_attention_rows(cls_attn).sum())
        return attention_visible(cls_attn, masking.mask_ratio, generators=generators), fallback
    make = tube_visible if masking.kind == "tube" else random_visible
    return make(batch, frames, hw, masking.mask_ratio, generators=generators, device=cls_attn.device), 0


def step(c: Components, batch: ClipBatch, epoch: int) -> StepOutput:
    """Teacher -> masking -> student on the visible tokens -> UTA loss against the teacher's targets."""
    video = batch.video.to(c.accelerator.device, non_blocking=True)  # (B, C, T, H, W)
    with torch.no_grad(), c.accelerator.autocast():
        hidden = c.teacher.encode(video, defer_last=True)  # K - 1 layers (K-1, B, N, Dt), cls_attn (B, T, HW)
    visible, fallback = make_visible(c.recipe, hidden.cls_attn.float(), batch.index, epoch)  # (B, N)
    with torch.no_grad(), c.accelerator.autocast():
        targets = c.teacher.targets(hidden, visible)  # (K, B, Nv, Ct) unit vectors; last block on visible tokens
    with c.accelerator.autocast():
        predicted = c.student(video, visible)  # (K, B, Nv, Ct), unit vectors
    loss_cfg = c.recipe.loss
    beta = getattr(loss_cfg, "beta", 1.0)
    uta = uta_loss(predicted.float(), targets.float(), kind=loss_cfg.kind, beta=beta)
    total = loss_cfg.weight * uta
    return StepOutput(total=total, parts={"loss/uta": uta.detach()}, mask_fallback_rows=fallback)


# --- the loop ---------------------------------------------------------------------------------------------------------


def _check_finite(c: Components, out: StepOutput, step_index: int, batch: ClipBatch) -> None:
    """Stop on a non-finite loss (on every process at once), naming the step and samples; the last checkpoint stays."""
    bad = torch.tensor([0.0 if torch.isfinite(out.total) else 1.0], device=c.accelerator.device)
    if c.accelerator.num_processes > 1:
        bad = c.accelerator.reduce(bad, reduction="sum")
    if bad.item() == 0:
        return
    loss = float(out.total.detach())
    report = {"step": step_index + 1, "loss": str(loss), "sample_indices": batch.index.tolist()}
    if c.accelerator.is_main_process:
        write_json(c.run_dir / "nonfinite.json", report)
    raise UmtError(
        f"non-finite loss ({loss}) at step {step_index + 1} (samples {batch.index.tolist()}); "
        f"details in {c.run_dir / 'nonfinite.json'}",
        hint=_nonfinite_hint(c),
    )


def _nonfinite_hint(c: Components) -> str:
    """What to do about a non-finite loss, true to this run: what is kept, and what a new run could change."""
    kept = ckpt.latest_checkpoint(c.run_dir)
    where = f"the last good checkpoint, {kept}, is kept" if kept else "no checkpoint had been written yet"
    fixes = ["a lower optim.lr", "optim.grad_clip"]
    if c.recipe.run.precision != "fp32":
        fixes.append("run.precision=fp32")
    return f"{where}; a changed recipe cannot resume, so start a new run directory with {', '.join(fixes)}"


def _optimizer_step(c: Components, batches: Iterator[ClipBatch], epoch: int, p: _Progress) -> dict[str, float]:
    """One optimizer step over `optim.grad_accum` micro-batches; returns the step's metrics."""
    lr = c.plan.lr(p.step)
    set_lr(c.optimizer, lr)
    started, waited, losses, fallback = time.monotonic(), 0.0, [], 0
    for _ in range(c.recipe.optim.grad_accum):
        before = time.monotonic()
        batch = next(batches)
        waited += time.monotonic() - before
        with c.accelerator.accumulate(c.student):
            out = step(c, batch, epoch)
            _check_finite(c, out, p.step, batch)
            c.accelerator.backward(out.total)
            grad_norm = _clip(c) if c.accelerator.sync_gradients else None
            c.optimizer.step()
            c.optimizer.zero_grad(set_to_none=True)
        losses.append(out.total.detach())
        fallback += out.mask_fallback_rows
    p.data_wait, p.step_time = waited, time.monotonic() - started
    loss = torch.stack(losses).mean()
    return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "mask_fallback_rows": fallback}


def _clip(c: Components) -> Tensor:
    """The gradient norm (before clipping), clipping it to `optim.grad_clip` when that is set."""
    if c.recipe.optim.grad_clip:
        return c.accelerator.clip_grad_norm_(c.student.parameters(), c.recipe.optim.grad_clip)
    c.accelerator.unscale_gradients()  # fp16: measure true gradients (a no-op otherwise)
    grads = [p.grad for p in c.student.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # one pass, no rescaling pass


def _log_values(c: Components, raw: dict[str, float], p: _Progress, health: DataHealth) -> dict[str, float]:
    """Reduce a step's numbers over processes (collective: every process calls it at the same steps)."""
    acc = c.accelerator
    loss = acc.reduce(raw["loss"].reshape(1), reduction="mean") if acc.num_processes > 1 else raw["loss"]
    failed = torch.tensor([health.failed, health.delivered], dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        failed = acc.reduce(failed, reduction="sum")
    return {
        "loss": float(loss),
        "lr": raw["lr"],
        "grad_norm": float(raw["grad_norm"]),
        "clips_per_s": c.plan.global_batch / max(p.step_time, 1e-9),
        "data_wait": p.data_wait / max(p.step_time, 1e-9),
        "mask_fallback_rows": raw["mask_fallback_rows"],
        "data/failed": int(failed[0]),
        "data/delivered": int(failed[1]),
    }


def _save(c: Components, p: _Progress, health: DataHealth) -> None:
    """Atomic checkpoint: every process writes its own file (RNG state, data-health counters) into the temporary
    folder, then the main process writes the weights and state, renames the folder into place, points `latest`
    at it and prunes old ones. A failed save (a full disk) removes its temporary folder and names what is kept."""
    acc = c.accelerator
    folder = c.run_dir / "checkpoints"
    try:
        tmp = ckpt.tmp_checkpoint_dir(folder, p.step)
        acc.wait_for_everyone()
        own = {"rng": ckpt.capture_rng(), "data_health": health.state_dict()}
        ckpt.write_rank_file(tmp, f"rank{acc.process_index}.pt", own)
        acc.wait_for_everyone()
        if acc.is_main_process:
            _write_checkpoint(c, p, folder)
    except OSError as error:
        ckpt.remove_partial_saves(folder)
        kept = ckpt.latest_checkpoint(folder)
        failure = from_os_error(error, doing=f"saving the checkpoint of step {p.step}")
        failure.hint = f"{failure.hint or 'fix the cause'}; " + (
            f"resume with --resume auto from {kept}" if kept else "no earlier checkpoint exists"
        )
        raise failure from None
    acc.wait_for_everyone()


def _write_checkpoint(c: Components, p: _Progress, folder: Path) -> None:
    """The main process's part of a save: weights, optimizer and scaler state, meta."""
    acc = c.accelerator
    scaler = acc.scaler.state_dict() if acc.scaler is not None else None
    state = {"step": p.step, "optimizer": c.optimizer.state_dict(), "scaler": scaler, "last_loss": p.last_loss}
    meta = {
        "step": p.step,
        "umt_version": __version__,
        "schema_version": c.recipe.schema_version,
        "world_size": acc.num_processes,
        "recipe": c.recipe.model_dump(mode="json"),
    }
    model_state = acc.unwrap_model(c.student).state_dict()
    ckpt.finalize_checkpoint(
        folder, p.step, model_state=model_state, state=state, meta=meta, keep_last=c.recipe.checkpoint.keep_last
    )


def _resume(c: Components, p: _Progress, health: DataHealth) -> None:
    """Continue exactly where a checkpoint left off: weights, optimizer, scaler, step, and this process's RNG and
    data-health counters."""
    point = c.resume_from
    assert point is not None
    _check_resumable(c, point)
    load_strict(c.accelerator.unwrap_model(c.student), point.model_state, what=str(point.path))
    try:
        c.optimizer.load_state_dict(point.state["optimizer"])
        if c.accelerator.scaler is not None and point.state.get("scaler") is not None:
            c.accelerator.scaler.load_state_dict(point.state["scaler"])
        ckpt.restore_rng(point.rank_state["rng"])
        health.load_state_dict(point.rank_state["data_health"])
        p.step = int(point.state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{point.path}: training state does not fit this run ({error})") from None
    p.last_loss = point.state.get("last_loss")


def _check_resumable(c: Components, point: ckpt.ResumePoint) -> None:
    """Refuse a checkpoint made with another recipe or another number of processes."""
    saved = point.meta.get("recipe")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{point.path / ckpt.META_FILE}: no recipe recorded")
    changes = recipe_changes(saved, c.recipe.model_dump(mode="json"))
    if changes:
        raise UsageError(
            f"the recipe differs from the one {point.path} was trained with: " + "; ".join(changes[:8]),
            hint="resume with the run's own recipe.toml, or start a new run directory",
        )
    if point.meta.get("world_size", 1) != c.accelerator.num_processes:
        raise UsageError(
            f"{point.path} was written by {point.meta.get('world_size')} processes; "
            f"this run has {c.accelerator.num_processes}"
        )
    if point.rank_state is None:
        raise UsageError(f"{point.path} has no state for process {c.accelerator.process_index}")


def _should_save(c: Components, p: _Progress) -> bool:
    every = c.recipe.checkpoint.every_steps
    end_of_epoch = p.step % c.plan.steps_per_epoch == 0
    return p.step == c.plan.total_steps or (p.step % every == 0 if every else end_of_epoch)


def _train(
    c: Components, p: _Progress, health: DataHealth, metrics: MetricsWriter | None, console: ConsoleProgress
) -> None:
    c.student.train()
    while p.step < c.plan.total_steps:
        epoch, offset = divmod(p.step, c.plan.steps_per_epoch)
        c.sampler.set_epoch(epoch, offset * c.recipe.optim.grad_accum)
        batches = iterate_epoch(c.loader, health)
        for _ in range(offset, c.plan.steps_per_epoch):
            raw = _optimizer_step(c, batches, epoch, p)
            p.step += 1
            if p.step % c.recipe.log.every == 0 or p.step == c.plan.total_steps:
                values = _log_values(c, raw, p, health)
                p.last_loss = values["loss"]
                if metrics is not None:
                    metrics.write(p.step, {"epoch": epoch, **values})
                console.update(p.step, values)
            if _should_save(c, p):
                _save(c, p, health)
            if p.step >= c.plan.total_steps:
                break
        batches.close()
        if p.step % c.plan.steps_per_epoch == 0:
            _report_skipped(c, _all_processes(c, health))
            health.check(final=True)


def _export(c: Components) -> Path:
    """The trained student alone, as safetensors with a JSON-able metadata header."""
    path = c.run_dir / "student.safetensors"
    s, t = c.recipe.student, c.recipe.teacher
    metadata = {
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
    ckpt.save_weights(path, c.accelerator.unwrap_model(c.student).state_dict(), metadata)
    return path


def run(
    recipe: DistillRecipe, run_dir: Path, *, resume: str | None = None, overrides: list[str] | None = None
) -> dict[str, object]:
    """Train, checkpoint, export; returns the run summary (also written to `summary.json`).

    Resuming a run that already finished changes nothing and returns its recorded summary.
    """
    started = time.monotonic()
    c = setup(recipe, run_dir, resume=resume, overrides=overrides)
    p = _Progress()
    health = DataHealth(max_fail_ratio=recipe.decode.max_fail_ratio)
    if c.resume_from is not None:
        _resume(c, p, health)
        finished = _finished_summary(c, p)
        if finished is not None:
            return finished
    main = c.accelerator.is_main_process
    metrics = (
        MetricsWriter(run_dir, tensorboard=recipe.log.tensorboard, resume_step=p.step if c.resume_from else None)
        if main
        else None
    )
    console = ConsoleProgress(c.plan.total_steps, p.step, every=recipe.log.every, enabled=main)
    try:
        _train(c, p, health, metrics, console)
    finally:
        console.close()
        if metrics is not None:
            metrics.close()
    weights = _export(c) if main else None
    everyone = _all_processes(c, health)
    c.accelerator.wait_for_everyone()
    summary = {
        "run_dir": str(run_dir),
        "steps": p.step,
        "epochs": p.step / c.plan.steps_per_epoch,
        "global_batch": c.plan.global_batch,
        "final_loss": p.last_loss,
        "weights": str(weights or run_dir / "student.safetensors"),
        "data": everyone.line(),
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    if main:
        write_json(run_dir / "summary.json", summary)
    c.accelerator.end_training()
    return summary


def _finished_summary(c: Components, p: _Progress) -> dict[str, object] | None:
    """The recorded summary of a run that already finished (resumed at its last step), else None."""
    path = c.run_dir / "summary.json"
    if p.step < c.plan.total_steps or not path.is_file() or not (c.run_dir / "student.safetensors").is_file():
        return None  # not finished, or killed between the last checkpoint and the export: finish it
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # an unreadable summary is rewritten
    if c.accelerator.is_main_process:
        print(f"{c.run_dir} already finished at step {p.step} of {c.plan.total_steps}: nothing to do", file=sys.stderr)
    c.accelerator.end_training()
    return summary


def _all_processes(c: Components, health: DataHealth) -> DataHealth:
    """Every process's data-health counters and skipped files together (collective: every process calls it)."""
    if c.accelerator.num_processes == 1:
        return health
    from accelerate.utils import gather_object

    return DataHealth.merged(gather_object([health.state_dict()]), max_fail_ratio=health.max_fail_ratio)


def _report_skipped(c: Components, everyone: DataHealth) -> None:
    """Name the skipped files (a few per reason) on the console and in `skipped.json` of the run directory."""
    if not c.accelerator.is_main_process or not everyone.failed:
        return
    headline, *reasons = everyone.report()
    _warn(headline)
    for line in reasons:
        print(line, file=sys.stderr, flush=True)
    write_json(c.run_dir / "skipped.json", everyone.state_dict())


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def is_main_process() -> bool:
    """Whether this process prints summaries (rank 0 of a launcher, or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0
