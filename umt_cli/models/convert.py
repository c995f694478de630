"""Reading, classifying and strictly loading checkpoints (docs/official-behaviour.md, Checkpoint layouts).

Files are read with `torch.load(weights_only=True)`; legacy pickles and TorchScript archives need the explicit
`--trust-checkpoint` flag. Wrappers (`{'model': sd}`, `{'module': sd}`, a `module.` prefix) are removed, the kind is
told from tell-tale keys, and every load is strict: a mismatch raises `CheckpointError` naming the keys.
"""

from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from umt_cli.errors import CheckpointError, first_line
from umt_cli.utils.files import sha256_file

if TYPE_CHECKING:
    pass

__all__ = [
    "KINDS",
    "TRUST_FLAG",
    "read_checkpoint",
    "unwrap_state_dict",
    "sha256_file",
    "detect_kind",
    "split_clip_visual",
    "load_strict",
    "load_stage1_student",
]

TRUST_FLAG = "--trust-checkpoint"
KINDS = (
    "umt-stage1",
    "umt-stage2",
    "umt-classifier",
    "umt-retrieval",
    "umt-qa",
    "clip-visual",
    "clip-full",
    "unknown",
)
_SHOWN = 5  # keys named in an error message
_log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path, *, trust: bool = False, how_to_trust: str = f"pass {TRUST_FLAG}") -> dict:
    """Read a checkpoint file into a dict, refusing arbitrary pickles unless trusted.

    safetensors files are read directly; `torch.save` files with `weights_only=True` first, and only with
    `trust` again with `weights_only=False`; TorchScript archives (OpenAI CLIP `.pt`) only with `trust`,
    as their state dict. Trusted loads log the file's sha256.

    Args:
        path: The file.
        trust: The user allowed full unpickling (`--trust-checkpoint`, or a recipe's `trust = true`).
        how_to_trust: What the user does to allow it, named in the refusal (e.g. "set teacher.trust = true").

    Raises:
        CheckpointError: Missing file, a refused pickle or archive, or content that is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:  # SafetensorError (truncated, garbled), OSError (unreadable)
            raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(error)})") from None
    if _is_torchscript(path):
        _require_trust(path, trust, "is a TorchScript archive (e.g. an OpenAI CLIP .pt)", how_to_trust)
        return dict(torch.jit.load(path, map_location="cpu").state_dict())
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # content weights_only refuses: only trust can open it
        _require_trust(path, trust, _weights_only_refusal(error), how_to_trust)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as unpickling_error:
            raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(unpickling_error)})") from None
    except Exception as error:  # a broken file (truncated zip, EOFError): trusting it would not help
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(error).__name__}: {first_line(error)})"
        ) from None
    return _as_dict(path, obj)


def _weights_only_refusal(error: BaseException) -> str:
    """Why `weights_only=True` refused the file, from torch's long message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    refused_global = next((line for line in lines if "Unsupported global" in line), None)
    if refused_global:
        return f"holds pickled Python objects ({refused_global})"
    detail = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else repr(error))
    return f"is not a readable weights-only checkpoint ({type(error).__name__}: {detail})"


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):  # not a zip, or a damaged one: torch.load names the problem
        return False


def _require_trust(path: Path, trust: bool, reason: str, how_to_trust: str) -> None:
    """Raise a `CheckpointError` saying how to trust the file, unless the user does (then log its sha256)."""
    if trust:
        _log.warning("loading %s with full unpickling (trusted); sha256 %s", path, sha256_file(path))
        return
    raise CheckpointError(
        f"{path} {reason}. Loading it fully can execute arbitrary code: {how_to_trust} only if you trust it."
    )


def _as_dict(path: Path, obj: object) -> dict:
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def unwrap_state_dict(obj: object) -> dict[str, Tensor]:
    """Remove checkpoint wrappers: a raw state dict, `{'model': sd, ...}`, `{'module': sd}`, and a `module.` prefix.

    Raises:
        CheckpointError: Anything else, listing the top-level keys.
    """
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"expected a state dict or a {{'model': ...}} wrapper, found {_describe(obj)}")
    for wrapper in ("model", "module"):
        if isinstance(obj.get(wrapper), Mapping):
            return unwrap_state_dict(obj[wrapper])
    if not all(isinstance(value, Tensor) for value in obj.values()):
        raise CheckpointError(
            f"not a state dict and no 'model'/'module' entry; top-level keys: {_first(list(obj))}",
            hint="accepted: a raw state dict, {'model': state_dict, ...} or {'module': state_dict}",
        )
    if all(key.startswith("module.") for key in obj):
        return {key.removeprefix("module."): value for key, value in obj.items()}
    return dict(obj)


def detect_kind(state_dict: Mapping[str, Tensor]) -> str:
    """Classify an unwrapped state dict by tell-tale keys; one of `KINDS`.

    The layouts are in docs/official-behaviour.md, Checkpoint layouts.
    """
    keys = set(state_dict)

    def has_prefix(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    if has_prefix("text_decoder."):
        return "umt-qa"
    if has_prefix("vision_encoder.") and has_prefix("text_encoder.bert."):
        return "umt-stage2"
    if has_prefix("vision_encoder.") and has_prefix("text_encoder.embeddings."):
        return "umt-retrieval"
    if "encoder.blocks.0.attn.q_bias" in keys and has_prefix("clip_decoder."):
        return "umt-stage1"
    if has_prefix("blocks.") and {"fc_norm.weight", "head.weight"} <= keys:
        return "umt-classifier"
    if "visual.conv1.weight" in keys:
        return "clip-full"
    if "conv1.weight" in keys and has_prefix("transformer.resblocks."):
        return "clip-visual"
    return "unknown"


def split_clip_visual(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The visual tower of a CLIP state dict, with `visual.` stripped, and the keys left out (text tower etc.).

    A state dict that is already a visual tower (no `visual.` keys) is returned as is, with nothing left out.
    """
    if detect_kind(state_dict) != "clip-full":
        return dict(state_dict), []
    visual = {key.removeprefix("visual."): value for key, value in state_dict.items() if key.startswith("visual.")}
    return visual, [key for key in state_dict if not key.startswith("visual.")]


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, what: str) -> None:
    """`load_state_dict(strict=True)` with readable errors and the q/v-bias sanity check.

    See docs/official-behaviour.md, Loader checks, and docs/pitfalls.md, P2 and P31.

    Args:
        module: The module to fill.
        state_dict: Keys exactly in the module's layout.
        what: What is being loaded, for messages ("stage-1 student", "CLIP teacher").

    Raises:
        CheckpointError: Missing or unexpected keys, or shape mismatches, naming the first few with counts.
    """
    own = module.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: {len(missing)} missing key(s) {_first(missing)}, {len(unexpected)} unexpected key(s) "
            f"{_first(unexpected)}"
        )
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if state_dict[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{what}: {len(wrong)} shape mismatch(es) (checkpoint != model): {_first(wrong)}")
    module.load_state_dict(state_dict, strict=True)
    _warn_if_zero_qv_bias(module, state_dict, what)


def _warn_if_zero_qv_bias(module: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> None:
    """Zero q/v biases after loading a file that has them point at a broken export (transformers v5 zero-loads them);
    a fresh model has zeros too, so this only warns."""
    names = [key for key in state_dict if key.rpartition(".")[2] in ("q_bias", "v_bias")]
    params = dict(module.named_parameters())
    if names and all(not params[name].any() for name in names if name in params):
        warnings.warn(f"{what}: all {len(names)} q_bias/v_bias tensors are zero after loading", stacklevel=3)


def load_stage1_student(
    student: nn.Module, path: str | Path, *, trust: bool = False, how_to_trust: str = f"pass {TRUST_FLAG}"
) -> None:
    """Load an official stage-1 file or one of our stage-1 checkpoints (same layout) into `student` — a module whose
    children are `encoder` and `clip_decoder` (a `DistillStudent`, or stage 2's vision side) — strictly.

    Raises:
        CheckpointError: Unreadable file, another checkpoint kind, or a key/shape mismatch.
    """
    state_dict = unwrap_state_dict(read_checkpoint(path, trust=trust, how_to_trust=how_to_trust))
    kind = detect_kind(state_dict)
    if kind != "umt-stage1":
        raise CheckpointError(f"{path}: a {kind} checkpoint, not a UMT stage-1 (distillation) checkpoint")
    load_strict(student, state_dict, what=f"stage-1 student from {path}")


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return f"[{shown}{', ...' if len(items) > _SHOWN else ''}]"


def _describe(obj: object) -> str:
    return "an empty dict" if isinstance(obj, Mapping) else type(obj).__name__
