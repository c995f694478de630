"""Checkpoint cadence, atomic saves from every process, and exact resume (`umt_cli.utils.checkpoint` does the I/O)."""

from __future__ import annotations

from pathlib import Path

from umt_cli import __version__
from umt_cli.data.failures import DataHealth
from umt_cli.errors import CheckpointError, UsageError, from_os_error
from umt_cli.models.convert import load_strict
from umt_cli.training.session import Run
from umt_cli.training.state import ProcessState, RunMeta, SharedState, TrainState, rank_file_name
from umt_cli.utils import checkpoint as ckpt
from umt_cli.utils.rundir import recipe_changes

__all__ = ["should_save", "save", "restore"]


def should_save(run: Run, state: TrainState) -> bool:
    """At the last step, and every `checkpoint.every_steps` steps (unset: at the end of every epoch)."""
    every, done = run.recipe.checkpoint.every_steps, state.steps_done
    end_of_epoch = done % run.plan.steps_per_epoch == 0
    return done == run.plan.total_steps or (done % every == 0 if every else end_of_epoch)


def save(run: Run, state: TrainState, health: DataHealth) -> None:
    """Atomic checkpoint: every process writes its own file into the temporary folder, then the main process writes
    the weights, shared state and meta, renames the folder into place, points `latest` at it and prunes old ones.

    A failed save (a full disk) removes its temporary folder and names the checkpoint that is kept.
    """
    acc, folder = run.accelerator, run.run_dir / "checkpoints"
    try:
        tmp = ckpt.tmp_checkpoint_dir(folder, state.steps_done)
        acc.wait_for_everyone()
        own = ProcessState(rng=ckpt.capture_rng(), data_health=health.state_dict())
        ckpt.write_rank_file(tmp, rank_file_name(acc.process_index), own.to_plain())
        acc.wait_for_everyone()
        if run.main:
            _write_shared(run, state, folder)
    except OSError as error:
        ckpt.remove_partial_saves(folder)
        kept = ckpt.latest_checkpoint(folder)
        failure = from_os_error(error, doing=f"saving the checkpoint of step {state.steps_done}")
        failure.hint = f"{failure.hint or 'fix the cause'}; " + (
            f"resume with --resume auto from {kept}" if kept else "no earlier checkpoint exists"
        )
        raise failure from None
    acc.wait_for_everyone()


def _write_shared(run: Run, state: TrainState, folder: Path) -> None:
    """The main process's part of a save: weights, shared state, meta."""
    acc = run.accelerator
    shared = SharedState(
        steps_done=state.steps_done,
        optimizer=run.optimizer.state_dict(),
        scaler=acc.scaler.state_dict() if acc.scaler is not None else None,
        last_loss=state.last_loss,
    )
    meta = RunMeta(__version__, run.recipe.schema_version, acc.num_processes, run.recipe.model_dump(mode="json"))
    ckpt.finalize_checkpoint(
        folder,
        state.steps_done,
        model_state=acc.unwrap_model(run.model).state_dict(),
        state=shared.to_plain(),
        meta=meta.to_plain(),
        keep_last=run.recipe.checkpoint.keep_last,
    )


def restore(run: Run, state: TrainState, health: DataHealth) -> None:
    """Continue exactly where the resume point left off: weights, optimizer, scaler, counters, and this process's
    RNG and data-health counters.

    Raises:
        UsageError: The checkpoint was made with another recipe or another number of processes.
        CheckpointError: Its contents do not fit this run.
    """
    point = run.resume_from
    assert point is not None, "restore() needs a run opened with a resume point"
    _check_resumable(run, point)
    shared = SharedState.from_plain(point.state, point.path / ckpt.STATE_FILE)
    own = ProcessState.from_plain(point.rank_state, point.path / rank_file_name(run.accelerator.process_index))
    load_strict(run.accelerator.unwrap_model(run.model), point.model_state, what=str(point.path))
    try:
        run.optimizer.load_state_dict(shared.optimizer)
        if run.accelerator.scaler is not None and shared.scaler is not None:
            run.accelerator.scaler.load_state_dict(shared.scaler)
        ckpt.restore_rng(own.rng)
        health.load_state_dict(own.data_health)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{point.path}: training state does not fit this run ({error})") from None
    state.steps_done, state.last_loss = shared.steps_done, shared.last_loss


def _check_resumable(run: Run, point: ckpt.ResumePoint) -> None:
    """Refuse a checkpoint made with another recipe or another number of processes."""
    meta = RunMeta.from_plain(point.meta, point.path / ckpt.META_FILE)
    changes = recipe_changes(meta.recipe, run.recipe.model_dump(mode="json"))
    if changes:
        raise UsageError(
            f"the recipe differs from the one {point.path} was trained with: " + "; ".join(changes[:8]),
            hint="resume with the run's own recipe.toml, or start a new run directory",
        )
    processes = run.accelerator.num_processes
    if meta.world_size != processes:
        raise UsageError(f"{point.path} was written by {meta.world_size} processes; this run has {processes}")
    if point.rank_state is None:
        raise UsageError(f"{point.path} has no state for process {run.accelerator.process_index}")
