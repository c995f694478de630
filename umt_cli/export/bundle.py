"""The self-describing export bundle: a folder `umt` loads back with no other file.

```
DIR/
  model.safetensors    weights; header: format = "umt-export", umt_version, kind, config (JSON), source, source_sha256
  config.json          config.to_dict() + umt_version + source {checkpoint, sha256} + notes
  README.md            the model card (umt_cli.export.card)
  tokenizer/           video-text only: vocab.txt, tokenizer_config.json [, special_tokens_map.json, tokenizer.json]
```

The MLM head (`text_encoder.cls.*`) is left out, as downstream tasks use the bare encoder (docs/official-behaviour.md,
Text encoder), and the exported config says `mlm_head = false`, so a strict load of the bundle needs nothing else.

A bundle is written into a hidden sibling folder and renamed into place when complete, so a crash (full disk,
Ctrl-C) never leaves half a bundle behind, and `overwrite=True` replaces an old bundle only once the new one is whole.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from umt_cli import __version__
from umt_cli.errors import CheckpointError, UsageError, first_line
from umt_cli.models.config import ClassifierConfig, VideoTextConfig, build_model, config_from_dict
from umt_cli.utils.checkpoint import save_weights
from umt_cli.utils.files import sha256_file, write_json

__all__ = [
    "BUNDLE_FORMAT",
    "MODEL_FILE",
    "CONFIG_FILE",
    "CARD_FILE",
    "TOKENIZER_DIR",
    "TOKENIZER_FILES",
    "Bundle",
    "write_bundle",
    "read_bundle",
    "load_bundle",
    "is_bundle",
]

BUNDLE_FORMAT = "umt-export"
"""The `format` value in the weights header of every bundle."""
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")
"""Copied from the tokenizer folder when present (`vocab.txt` must be); never weights or a model config."""
MLM_HEAD_PREFIX = "text_encoder.cls."
_CONFIG_EXTRAS = ("umt_version", "source", "notes")
"""Top-level keys of `config.json` that describe the export rather than the model."""

ModelConfig = VideoTextConfig | ClassifierConfig


@dataclass(frozen=True)
class Bundle:
    """A bundle read from disk and checked (`read_bundle`).

    Attributes:
        config: The model's architecture and preprocessing.
        state_dict: The weights, on the CPU, in the model's own key layout.
        tokenizer_dir: The bundle's `tokenizer/` folder (video-text), or None (classifier).
        metadata: The weights header (strings) without its `config`, plus `notes` from `config.json` (a dict).
    """

    config: ModelConfig
    state_dict: dict[str, Tensor]
    tokenizer_dir: Path | None
    metadata: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------- writing
def write_bundle(
    out: Path,
    *,
    model: nn.Module,
    config: ModelConfig,
    tokenizer_dir: Path | None,
    source: str,
    source_sha256: str | None,
    notes: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extras: Callable[[Path], object] | None = None,
) -> Path:
    """Write `model` as a bundle folder `out`.

    Args:
        out: The bundle folder; it must not exist or be empty, unless `overwrite` (then it must be a bundle).
        model: A `VideoTextModel` or `VideoClassifier` whose weights fit `config`.
        config: Its architecture and preprocessing (`mlm_head` is written as False whatever it says).
        tokenizer_dir: The tokenizer folder (`vocab.txt` ...) for a video-text model; None for a classifier.
        source: The checkpoint the weights come from (a path or a name), recorded in the header and the card.
        source_sha256: Its sha256, or None when unknown.
        notes: Extra JSON-able facts (recipe, run directory) for `config.json` and the card.
        overwrite: Replace an existing bundle at `out`, once the new one is complete.
        extras: Called with the bundle's temporary folder once the weights, config and tokenizer are in it, to add
            more files (ONNX, `.pt2`) before the card lists the files; whatever it raises leaves nothing behind.

    Returns:
        `out`.

    Raises:
        UsageError: `out` is refused, or the tokenizer folder is missing, unreadable or does not fit the model.
        CheckpointError: The model's weights do not fit `config`.
        OSError: Writing failed (full disk, read-only folder); no temporary folder is left behind.
        Exception: Whatever `extras` raises; no temporary folder is left behind either.
    """
    out = Path(out)
    _refuse_existing(out, overwrite=overwrite)
    config = _export_config(config)
    state_dict = _export_state_dict(model, config)
    _check_fits(state_dict, config)
    tokenizer_files = _tokenizer_files(tokenizer_dir, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)  # the leftover of an earlier crash of this same process id
    try:
        tmp.mkdir()
        _write_weights(tmp, state_dict, config, source, source_sha256)
        _write_config(tmp, config, source, source_sha256, notes or {})
        _copy_tokenizer(tmp, tokenizer_files)
        if extras is not None:
            extras(tmp)
        _write_card(tmp, config, name=out.name, source=source, source_sha256=source_sha256, notes=notes or {})
        _publish(tmp, out)
    except BaseException:  # a full disk or Ctrl-C: leave no half bundle behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _refuse_existing(out: Path, *, overwrite: bool) -> None:
    """Refuse a file at `out`, a non-empty folder without `overwrite`, and (even with it) a folder that is not a
    bundle: replacing means deleting, and an arbitrary folder is too costly to lose to a typo."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder; choose another output folder")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise UsageError(f"{out}: folder is not empty; choose another output folder or pass overwrite to replace it")
    if not is_bundle(out):
        raise UsageError(f"{out}: not a umt bundle (no {CONFIG_FILE} + {MODEL_FILE}), so overwrite will not delete it")


def _export_config(config: ModelConfig) -> ModelConfig:
    """The config as exported: without the MLM head."""
    if isinstance(config, VideoTextConfig) and config.text.mlm_head:
        return replace(config, text=replace(config.text, mlm_head=False))
    return config


def _export_state_dict(model: nn.Module, config: ModelConfig) -> dict[str, Tensor]:
    """The model's weights without the MLM head (its decoder is tied to the word embeddings, so nothing is lost)."""
    weights = model.state_dict()
    if isinstance(config, VideoTextConfig):
        return {key: value for key, value in weights.items() if not key.startswith(MLM_HEAD_PREFIX)}
    return dict(weights)


def _check_fits(state_dict: Mapping[str, Tensor], config: ModelConfig) -> None:
    """Refuse weights that would not load back into `config`'s model: every export must round-trip.

    The reference model is built on the meta device, so the check costs no memory whatever the model's size.
    """
    with torch.device("meta"):
        reference = build_model(config).state_dict()
    missing = sorted(set(reference) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(reference))
    wrong = [key for key in reference if key in state_dict and state_dict[key].shape != reference[key].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"the model's weights do not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"misshapen {wrong[:3]}"
        )


def _tokenizer_files(tokenizer_dir: Path | None, config: ModelConfig) -> list[Path]:
    """The tokenizer files to copy: `vocab.txt` (required, at most `vocab_size` words) and those of `TOKENIZER_FILES`
    that exist."""
    if isinstance(config, ClassifierConfig):
        if tokenizer_dir is not None:
            raise UsageError(f"{tokenizer_dir}: a classifier bundle has no tokenizer; pass none")
        return []
    if tokenizer_dir is None:
        raise UsageError("a video-text bundle needs its tokenizer folder (vocab.txt); none was given")
    folder = Path(tokenizer_dir)
    vocab = folder / TOKENIZER_FILES[0]
    if not vocab.is_file():
        raise UsageError(f"{folder}: not a tokenizer folder (no {vocab.name})")
    try:
        words = len(vocab.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{vocab}: unreadable ({first_line(error)})") from None
    if words > config.text.vocab_size:
        raise UsageError(f"{vocab}: {words} words, more than the model's vocab_size {config.text.vocab_size}")
    return [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]


def _header(config: ModelConfig, source: str, source_sha256: str | None) -> dict[str, str]:
    """The weights header (safetensors holds strings only; an unknown sha256 is "")."""
    return {
        "format": BUNDLE_FORMAT,
        "umt_version": __version__,
        "kind": config.kind,
        "config": config.to_json(),
        "source": source,
        "source_sha256": source_sha256 or "",
    }


def _write_weights(
    folder: Path, state_dict: Mapping[str, Tensor], config: ModelConfig, source: str, sha: str | None
) -> None:
    save_weights(folder / MODEL_FILE, state_dict, _header(config, source, sha))


def _write_config(folder: Path, config: ModelConfig, source: str, sha: str | None, notes: Mapping[str, Any]) -> None:
    extras = {"umt_version": __version__, "source": {"checkpoint": source, "sha256": sha}, "notes": dict(notes)}
    write_json(folder / CONFIG_FILE, {**config.to_dict(), **extras})


def _copy_tokenizer(folder: Path, files: list[Path]) -> None:
    if not files:
        return
    (folder / TOKENIZER_DIR).mkdir()
    for file in files:
        shutil.copyfile(file, folder / TOKENIZER_DIR / file.name)


def _write_card(
    folder: Path, config: ModelConfig, *, name: str, source: str, source_sha256: str | None, notes: Mapping[str, Any]
) -> None:
    from umt_cli.export.card import model_card

    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    card = model_card(
        config,
        name=name,
        source=source,
        source_sha256=source_sha256,
        weights_sha256=sha256_file(folder / MODEL_FILE),
        files=sorted([*files, CARD_FILE]),
        umt_version=__version__,
        notes=notes,
    )
    (folder / CARD_FILE).write_text(card, encoding="utf-8")


def _publish(tmp: Path, out: Path) -> None:
    """Rename the complete `tmp` folder to `out`; an existing `out` is parked first and deleted only afterwards (a
    folder cannot replace a non-empty one in a single rename)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    parked = out.with_name(f".tmp-old-{os.getpid()}-{out.name}")
    shutil.rmtree(parked, ignore_errors=True)
    os.replace(out, parked)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(parked, out)  # put the old bundle back
        raise
    shutil.rmtree(parked, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------- reading
def is_bundle(path: str | Path) -> bool:
    """Whether `path` is a folder holding `config.json` and `model.safetensors`."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file()


def read_bundle(folder: str | Path) -> Bundle:
    """Read and check a bundle: its config, weights, header and tokenizer folder.

    Raises:
        CheckpointError: One line naming the file: a missing or unparseable `config.json`, a missing or unreadable
            `model.safetensors`, a header that is not a umt export or whose config differs from `config.json`, or
            a video-text bundle without its tokenizer folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such bundle folder")
    config_path, model_path = folder / CONFIG_FILE, folder / MODEL_FILE
    data = _read_json_object(config_path)
    notes = data.get("notes", {})
    model_part = {key: value for key, value in data.items() if key not in _CONFIG_EXTRAS}
    config = config_from_dict(model_part, source=str(config_path))
    header, state_dict = _read_weights(model_path)
    _check_header(header, model_part, config_path, model_path)
    header.pop("config")
    return Bundle(config, state_dict, _tokenizer_of(folder, config), {**header, "notes": notes})


def load_bundle(folder: str | Path) -> tuple[nn.Module, ModelConfig, Path | None]:
    """The model of a bundle, loaded strictly and in eval mode, with its config and tokenizer folder.

    Raises:
        CheckpointError: Anything `read_bundle` refuses, or weights that do not fit the config (naming the file).
    """
    from umt_cli.models.convert import load_strict

    bundle = read_bundle(folder)
    model = build_model(bundle.config)
    load_strict(model, bundle.state_dict, what=str(Path(folder) / MODEL_FILE))
    return model.eval(), bundle.config, bundle.tokenizer_dir


def _read_json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a bundle folder holds {CONFIG_FILE} and {MODEL_FILE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({type(error).__name__}: {first_line(error)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_weights(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(header metadata, weights on the CPU) of a safetensors file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a bundle folder holds {CONFIG_FILE} and {MODEL_FILE}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
        weights = load_file(str(path), device="cpu")
    except Exception as error:  # SafetensorError for truncated or garbled files, OSError for unreadable ones
        raise CheckpointError(f"{path}: unreadable ({type(error).__name__}: {first_line(error)})") from None
    return header, weights


def _check_header(
    header: Mapping[str, str], model_part: Mapping[str, Any], config_path: Path, model_path: Path
) -> None:
    """The header must be a umt export's, and its config the one in `config.json` (an edited `config.json` would
    otherwise build a model the weights were never trained as)."""
    if header.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{model_path}: not a umt export (header format {header.get('format')!r})")
    try:
        stored = json.loads(header["config"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{model_path}: no readable model config in the header ({first_line(error)})") from None
    difference = _first_difference(stored, dict(model_part))
    if difference is not None:
        raise CheckpointError(
            f"{config_path} and {model_path} disagree on the model config at {difference}; "
            "re-export the bundle rather than editing config.json"
        )


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted key path of the first difference between two JSON values, or None when they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found is not None:
                return found
        return None
    return None if a == b else (where or "<root>")


def _tokenizer_of(folder: Path, config: ModelConfig) -> Path | None:
    if isinstance(config, ClassifierConfig):
        return None
    tokenizer = folder / TOKENIZER_DIR
    if not (tokenizer / TOKENIZER_FILES[0]).is_file():
        raise CheckpointError(f"{tokenizer}: missing or without {TOKENIZER_FILES[0]}; a video-text bundle holds it")
    return tokenizer
