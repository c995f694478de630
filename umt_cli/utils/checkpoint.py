"""Checkpoint I/O for run directories: atomic `step_NNNNNN/` directories, a `latest` pointer, pruning.

```
checkpoints/
  step_001000/  model.safetensors  state.pt  meta.json  [rank{r}.pt ...]
  latest                           # text file naming the newest complete checkpoint directory
```

What the files hold is defined by `umt_cli.training.state`; this module only reads and writes them.

A checkpoint is written into `.tmp-step_NNNNNN/` and renamed with `os.replace`, so a crash never leaves a
half-written `step_*` directory; readers ignore `.tmp-*`. `state.pt` and rank files hold plain data only (tensors,
numbers, strings, lists, dicts), so they load with `torch.load(weights_only=True)`.

Saving (rank 0 owns the directory; with one process the barriers are no-ops)::

    tmp = tmp_checkpoint_dir(checkpoints_dir, step)                 # every rank
    write_rank_file(tmp, f"rank{rank}.pt", {...})                   # every rank, its own file
    barrier()
    if rank == 0:
        finalize_checkpoint(checkpoints_dir, step, model_state=..., state=..., meta=..., keep_last=3)
    barrier()                                                       # nobody reads before the rename
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from umt_cli.errors import CheckpointError, UsageError, first_line
from umt_cli.utils.files import atomic_path

__all__ = [
    "MODEL_FILE",
    "STATE_FILE",
    "META_FILE",
    "LATEST_FILE",
    "tmp_checkpoint_dir",
    "write_rank_file",
    "finalize_checkpoint",
    "latest_checkpoint",
    "resolve_resume",
    "ResumePoint",
    "open_resume_point",
    "remove_partial_saves",
    "load_checkpoint",
    "load_rank_file",
    "save_weights",
    "capture_rng",
    "restore_rng",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
LATEST_FILE = "latest"
_CORE_FILES = (MODEL_FILE, STATE_FILE, META_FILE)
_TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"step_(\d+)")
_PLAIN_LEAVES = (Tensor, bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


# ---------------------------------------------------------------------------------------------------------- writing
def tmp_checkpoint_dir(checkpoints_dir: Path, step: int) -> Path:
    """Create (if needed; safe from several ranks) and return `checkpoints_dir/.tmp-step_{step:06d}/`."""
    tmp_dir = Path(checkpoints_dir) / f"{_TMP_PREFIX}{_step_name(step)}"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return tmp_dir


def write_rank_file(tmp_dir: Path, name: str, obj: Any) -> None:
    """Save one rank's plain-data `obj` (e.g. its global RNG state) as `tmp_dir/name` with `torch.save`."""
    if name in _CORE_FILES or name == LATEST_FILE or Path(name).name != name or name.startswith("."):
        raise ValueError(f"rank file name {name!r} must be a plain file name other than {_CORE_FILES}")
    _check_plain(obj, name)
    _save_durably(obj, Path(tmp_dir) / name)


def finalize_checkpoint(
    checkpoints_dir: Path,
    step: int,
    *,
    model_state: Mapping[str, Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int,
    keep_every: int | None = None,
) -> Path:
    """Write the model, state and meta files into the tmp directory, rename it, update `latest`, prune.

    In multi-process runs only rank 0 calls this, after a barrier that follows every rank's `write_rank_file`.

    Args:
        checkpoints_dir: the run's `checkpoints/` directory (created if needed).
        step: optimizer steps done; names the directory.
        model_state: weights, written to `model.safetensors` (CPU, contiguous; tied tensors stored once per name).
        state: plain data for `state.pt` (optimizer, scaler, counters).
        meta: JSON-able data for `meta.json` (`step` is added).
        keep_last: complete checkpoints to keep (>= 1); the new one always stays.
        keep_every: also keep every checkpoint whose step is a multiple of this.

    Returns:
        The checkpoint directory.
    """
    if keep_last < 1 or (keep_every is not None and keep_every < 1):
        raise ValueError(f"need keep_last >= 1 and keep_every >= 1 or None, got {keep_last}, {keep_every}")
    checkpoints_dir = Path(checkpoints_dir)
    tmp_dir = tmp_checkpoint_dir(checkpoints_dir, step)
    _check_plain(state, "state")
    try:
        _save_weights_file(model_state, tmp_dir / MODEL_FILE, metadata=None)
        _save_durably(state, tmp_dir / STATE_FILE)
        _write_text_durably(tmp_dir / META_FILE, json.dumps({**meta, "step": step}, indent=2) + "\n")
        final_dir = _publish(tmp_dir, checkpoints_dir / _step_name(step))
    except BaseException:  # a full disk or Ctrl-C: leave no half-written folder behind
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    with atomic_path(checkpoints_dir / LATEST_FILE) as tmp_latest:
        _write_text_durably(tmp_latest, final_dir.name + "\n")
    _fsync_dir(checkpoints_dir)
    _prune(checkpoints_dir, step, keep_last=keep_last, keep_every=keep_every)
    return final_dir


def save_weights(path: Path, state_dict: Mapping[str, Tensor], metadata: dict[str, str]) -> None:
    """Write a weights-only safetensors file atomically, with `metadata` in its header.

    safetensors headers hold string values only: JSON-encode anything structured (`json.dumps(config)`).
    Read it back with `safetensors.safe_open(path, "pt").metadata()`.
    """
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("safetensors metadata must map str to str; json.dumps structured values first")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        _save_weights_file(state_dict, tmp, metadata=metadata)


# ---------------------------------------------------------------------------------------------------------- reading
def latest_checkpoint(run_dir_or_checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run: the one `latest` names, else the highest complete `step_*`.

    Accepts the run directory or its `checkpoints/` directory; `.tmp-*` directories are never returned.
    """
    checkpoints_dir = Path(run_dir_or_checkpoints_dir)
    if (checkpoints_dir / "checkpoints").is_dir():
        checkpoints_dir = checkpoints_dir / "checkpoints"
    named = _read_pointer(checkpoints_dir / LATEST_FILE)
    if named is not None:
        return named
    for _, path in sorted(_step_dirs(checkpoints_dir), reverse=True):
        if _is_complete(path):
            return path
    return None


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint `--resume` asks for.

    `None` -> None; `"auto"` -> the latest checkpoint in `run_dir`, or None for a fresh run; a path to a checkpoint
    directory, a run (or `checkpoints/`) directory or a `latest` file -> that checkpoint, or `UsageError`.
    """
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir) if Path(run_dir).is_dir() else None
    path = Path(resume).expanduser()
    if path.is_file() and path.name == LATEST_FILE:
        found = _read_pointer(path)
    elif _is_complete(path):
        found = path
    elif path.is_dir():
        found = latest_checkpoint(path)
    else:
        found = None
    if found is None:
        raise UsageError(
            f"--resume {resume}: no complete checkpoint found there",
            hint="pass a checkpoint directory (step_NNNNNN), a run directory, its `latest` file, or `auto`",
        )
    return found


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint directory: (model state on CPU, training state, meta). Loads with `weights_only=True`.

    Raises:
        CheckpointError: a missing, truncated or otherwise unreadable file, named in the message.
    """
    path = Path(path)
    if not _is_complete(path):
        raise CheckpointError(f"{path} is not a complete umt checkpoint (needs {', '.join(_CORE_FILES)})")
    try:
        model_state = load_file(path / MODEL_FILE, device="cpu")
    except Exception as error:  # SafetensorError for truncated or garbled files, OSError for unreadable ones
        raise _unreadable(path / MODEL_FILE, error) from None
    state = _load_plain(path / STATE_FILE)
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _unreadable(path / META_FILE, error) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / META_FILE}: expected a JSON object")
    return model_state, state, meta


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint read in full: where it is, its weights, training state, meta and this process's own file."""

    path: Path
    model_state: dict[str, Tensor]
    state: dict[str, Any]
    meta: dict[str, Any]
    rank_state: Any | None  # None when the checkpoint has no file for this process


def open_resume_point(
    run_dir: Path, resume: str | None, *, rank_file: str, warn: Callable[[str], None]
) -> ResumePoint | None:
    """Read the checkpoint `--resume` asks for.

    `None` -> None. `"auto"` -> the newest checkpoint of `run_dir` that reads in full; an unreadable one (truncated
    by a full disk, say) is skipped with a warning naming it, so the run continues from the newest complete one;
    None when the run has no checkpoint (a fresh start). An explicit path must read, else `CheckpointError`.
    """
    if resume is None:
        return None
    if resume != "auto":
        return _read_resume_point(resolve_resume(run_dir, resume), rank_file)
    candidates = _resume_candidates(Path(run_dir) / "checkpoints")
    for path in candidates:
        try:
            return _read_resume_point(path, rank_file)
        except CheckpointError as error:
            warn(f"skipping checkpoint {path}: {error}; trying an earlier one")
    if candidates:
        raise CheckpointError(
            f"no readable checkpoint in {Path(run_dir) / 'checkpoints'} ({len(candidates)} tried)",
            hint="start a new run directory, or pass --resume with a checkpoint that reads",
        )
    return None


def _read_resume_point(path: Path, rank_file: str) -> ResumePoint:
    model_state, state, meta = load_checkpoint(path)
    return ResumePoint(path, model_state, state, meta, load_rank_file(path, rank_file))


def _resume_candidates(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, newest first: the one `latest` names, then those of earlier steps.

    Steps above the `latest` one are left out: they belong to a run that was later resumed from an earlier step.
    """
    steps = sorted(((s, p) for s, p in _step_dirs(checkpoints_dir) if _is_complete(p)), reverse=True)
    named = _read_pointer(checkpoints_dir / LATEST_FILE)
    if named is None:
        return [path for _, path in steps]
    newest = _step_of(named)
    return [named] + [path for step, path in steps if step < newest]


def remove_partial_saves(checkpoints_dir: Path) -> None:
    """Delete the `.tmp-*` leftovers of saves that were killed midway (call before a run writes checkpoints)."""
    if Path(checkpoints_dir).is_dir():
        for path in Path(checkpoints_dir).glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def load_rank_file(checkpoint_dir: Path, name: str) -> Any | None:
    """A rank file of a checkpoint (`weights_only=True`), or None when it has none (e.g. another world size)."""
    path = Path(checkpoint_dir) / name
    return _load_plain(path) if path.is_file() else None


# -------------------------------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Tensor]:
    """The global torch RNG states this process uses (dropout, drop-path, init): CPU, plus CUDA once in use."""
    state = {"torch": torch.get_rng_state()}
    # Only once initialised: querying CUDA would otherwise create a context in a CPU run.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: Mapping[str, Tensor]) -> None:
    """Restore what `capture_rng` captured; a CUDA state is skipped when CUDA is unavailable (resuming on CPU)."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


# ---------------------------------------------------------------------------------------------------------- helpers
def _step_name(step: int) -> str:
    """`step_{step:06d}`."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"step_{step:06d}"


def _step_dirs(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every `step_*` directory (complete or not); none if the directory does not exist."""
    if not checkpoints_dir.is_dir():
        return []
    found = [(_STEP_DIR.fullmatch(p.name), p) for p in checkpoints_dir.iterdir() if p.is_dir()]
    return [(int(match.group(1)), path) for match, path in found if match]


def _is_complete(path: Path) -> bool:
    """A checkpoint directory holding all three core files."""
    return path.is_dir() and all((path / name).is_file() for name in _CORE_FILES)


def _read_pointer(pointer: Path) -> Path | None:
    """The complete checkpoint a `latest` file names, or None (no file, or it names nothing usable)."""
    if not pointer.is_file():
        return None
    target = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    return target if target.name and _is_complete(target) else None


def _load_plain(path: Path) -> Any:
    """`torch.load(weights_only=True)` on CPU, with a `CheckpointError` naming the file on failure."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot load with weights_only=True ({error})") from error


def _check_plain(obj: Any, where: str) -> None:
    """Refuse anything `torch.load(weights_only=True)` might not rebuild, naming where it sits."""
    if type(obj) in (dict, collections.OrderedDict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            _check_plain(value, f"{where}[{key!r}]")
    elif type(obj) in (list, tuple):
        for index, value in enumerate(obj):
            _check_plain(value, f"{where}[{index}]")
    elif not isinstance(obj, _PLAIN_LEAVES):
        raise TypeError(f"{where}: {type(obj).__name__} is not plain data (tensors, numbers, str, list, dict)")


def _safetensors_ready(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; a tensor sharing storage with an earlier one (tied weights) is cloned."""
    ready: dict[str, Tensor] = {}
    storages: set[int] = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name}: weights must be tensors, got {type(tensor).__name__}")
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in storages:  # safetensors refuses tensors that share memory
            tensor = tensor.clone()
        storages.add(pointer)
        ready[name] = tensor
    return ready


def _save_weights_file(state_dict: Mapping[str, Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    """A safetensors file with a canonical header, written by Python and flushed to disk.

    Writing the bytes ourselves makes a full disk an `OSError` naming the file (the library's own writer reports
    it differently) and gives the file the usual permissions (it writes 0600).
    """
    data = _canonical_header(safetensors_bytes(_safetensors_ready(state_dict), metadata=metadata))
    _write_bytes_durably(path, data)


def _canonical_header(data: bytes) -> bytes:
    """Rewrite a safetensors header with sorted metadata and tensors in file order, so equal weights and metadata
    always give equal bytes (the library's header order can vary between runs)."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    canonical: dict[str, Any] = {}
    if "__metadata__" in header:
        canonical["__metadata__"] = dict(sorted(header.pop("__metadata__").items()))
    canonical.update(sorted(header.items(), key=lambda item: (item[1]["data_offsets"], item[0])))
    text = json.dumps(canonical, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text + data[8 + size :]


def _save_durably(obj: Any, path: Path) -> None:
    """`torch.save` through a Python file, so a full disk is an `OSError` naming the file."""
    with _durable_file(path) as handle:
        torch.save(obj, handle)


def _write_text_durably(path: Path, text: str) -> None:
    """Write UTF-8 text, flushed to disk."""
    _write_bytes_durably(path, text.encode("utf-8"))


def _write_bytes_durably(path: Path, data: bytes) -> None:
    with _durable_file(path) as handle:
        handle.write(data)


@contextmanager
def _durable_file(path: Path) -> Iterator[BinaryIO]:
    """`open(path, "wb")`, flushed to disk on success (so a rename after it cannot expose an empty file after a
    power loss); its errors name the file (a failed `write` raises an OSError without a file name)."""
    try:
        with open(path, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def _unreadable(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(f"{path}: unreadable ({type(error).__name__}: {first_line(error)})")


def _step_of(path: Path) -> int:
    match = _STEP_DIR.fullmatch(path.name)
    return int(match.group(1)) if match else -1


def _fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (POSIX only; other systems cannot open a directory)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _publish(tmp_dir: Path, final_dir: Path) -> Path:
    """Rename `tmp_dir` to `final_dir`; an existing `final_dir` (a re-save of the same step) is swapped out first."""
    if not final_dir.exists():
        os.replace(tmp_dir, final_dir)
        return final_dir
    # Directories cannot replace non-empty ones, so park the old copy under a `.tmp-` name readers ignore.
    parked = final_dir.with_name(f"{_TMP_PREFIX}old-{final_dir.name}")
    shutil.rmtree(parked, ignore_errors=True)
    os.replace(final_dir, parked)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(parked, ignore_errors=True)
    return final_dir


def _prune(checkpoints_dir: Path, current_step: int, *, keep_last: int, keep_every: int | None) -> None:
    """Delete complete `step_*` directories at or below `current_step` beyond the newest `keep_last` (and not
    milestones), and `.tmp-step_*` leftovers of interrupted saves of earlier steps.

    Directories above `current_step` (left by a run resumed from an earlier checkpoint) are left alone: they are
    overwritten as the run reaches those steps again.
    """
    older = sorted((s, p) for s, p in _step_dirs(checkpoints_dir) if s <= current_step and _is_complete(p))
    for step, path in older[: max(len(older) - keep_last, 0)]:
        if step != current_step and not (keep_every and step % keep_every == 0):
            shutil.rmtree(path, ignore_errors=True)
    for path in checkpoints_dir.glob(f"{_TMP_PREFIX}step_*"):
        match = _STEP_DIR.fullmatch(path.name.removeprefix(_TMP_PREFIX))
        if path.is_dir() and match and int(match.group(1)) < current_step:
            shutil.rmtree(path, ignore_errors=True)
