"""One entry point for every model file a user can name with `--ckpt`.

Accepted: an exported directory (`umt export`), a stage-2 run directory or its `video_text.safetensors`, and the
official files (stage-2, fine-tuned retrieval, fine-tuned classification; raw or wrapped under `model`/`module`).
Every load is strict (docs/official-behaviour.md, Loader checks): the layout is detected, mapped by explicit tables
(`umt_cli.models.official`) and anything missing or left over is an error naming the keys. Pickles that need
`weights_only=False` open only with `--trust-checkpoint`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from torch import nn

from umt_cli.errors import CheckpointError, UsageError
from umt_cli.models.config import ClassifierConfig, VideoTextConfig, build_model, build_video_text, config_from_dict
from umt_cli.models.convert import TRUST_FLAG, detect_kind, load_strict, read_checkpoint, unwrap_state_dict
from umt_cli.utils.files import sha256_file

__all__ = ["LoadedModel", "load_model", "checkpoint_record", "RUN_WEIGHTS", "DEFAULT_BERT"]

RUN_WEIGHTS = "video_text.safetensors"
"""The weights a stage-2 run directory ends with."""

DEFAULT_BERT = {768: "bert-base-uncased", 1024: "bert-large-uncased"}
"""The tokenizer an official file was trained with, by text width (a local folder or a reachable hub id)."""

Expect = Literal["video-text", "classifier", "any"]


@dataclass
class LoadedModel:
    """A model ready for evaluation or export.

    Attributes:
        model: `VideoTextModel` or `VideoClassifier`, in eval mode.
        config: Its architecture and preprocessing.
        tokenizer: The tokenizer folder or hub id (video-text models), else None.
        source: What was loaded (the path as given).
        kind: `umt-export`, `umt-run` (our stage-2 weights), or the official kind (`umt-stage2`, ...).
        sha256: The weights file's sha256.
        ignored: Keys of the file left out on purpose (the frozen teacher, the position-id buffer, ...).
    """

    model: nn.Module
    config: VideoTextConfig | ClassifierConfig
    tokenizer: str | None
    source: str
    kind: str
    sha256: str | None
    ignored: list[str] = field(default_factory=list)


def checkpoint_record(loaded: LoadedModel) -> dict[str, object]:
    """The load report stored with every result: what was loaded, its kind and sha256, and the keys of the file
    left out on purpose (docs/official-behaviour.md, Loader checks)."""
    return {"source": loaded.source, "kind": loaded.kind, "sha256": loaded.sha256, "ignored_keys": len(loaded.ignored),
            "ignored_examples": loaded.ignored[:5]}  # fmt: skip


def load_model(
    path: str | Path,
    *,
    expect: Expect = "any",
    trust: bool = False,
    text_encoder: str | None = None,
    num_frames: int | None = None,
    img_size: int | None = None,
) -> LoadedModel:
    """Load `path` (see the module docstring) strictly.

    Args:
        path: A file or directory.
        expect: The model family the command needs; another one is a `CheckpointError` saying which it is.
        trust: Allow full unpickling of legacy `.pth` files (`--trust-checkpoint`).
        text_encoder: The tokenizer folder (or hub id) for files that carry none (official files); overrides the one
            our weights record.
        num_frames: Run the model on this many frames (the position table is regenerated for video-text models).
        img_size: The input side of an official video-text file (its weights do not record it; default 224). Our
            own files record theirs.

    Raises:
        CheckpointError / UsageError: Unreadable or unknown files, a family mismatch, key mismatches.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"--ckpt: {path} not found")
    if path.is_dir():
        loaded = _load_directory(path, num_frames)
    elif path.suffix == ".safetensors":
        loaded = _load_run_weights(path, num_frames)
    else:
        loaded = _load_official(path, trust=trust, num_frames=num_frames, img_size=img_size, text_encoder=text_encoder)
    family = loaded.config.kind
    if expect != "any" and family != expect:
        raise CheckpointError(f"{path}: a {family} model ({loaded.kind}), but this command needs a {expect} model")
    if text_encoder is not None and family == "video-text":
        loaded.tokenizer = text_encoder
    if family == "video-text" and loaded.tokenizer is None:
        raise UsageError(f"{path}: no tokenizer is known for this file: pass --text-encoder FOLDER (a BERT folder)")
    return loaded


def _load_directory(path: Path, num_frames: int | None) -> LoadedModel:
    from umt_cli.export.bundle import is_bundle, read_bundle

    if is_bundle(path):
        bundle = read_bundle(path)
        config = _with_frames(bundle.config, num_frames)
        model = build_model(config)
        load_strict(model, bundle.state_dict, what=f"exported model {path}")
        tokenizer = str(bundle.tokenizer_dir) if bundle.tokenizer_dir else None
        return LoadedModel(model.eval(), config, tokenizer, str(path), "umt-export",
                           sha256_file(path / "model.safetensors"))  # fmt: skip
    if (path / RUN_WEIGHTS).is_file():
        return _load_run_weights(path / RUN_WEIGHTS, num_frames)
    raise UsageError(
        f"--ckpt: {path} is neither an exported model (config.json + model.safetensors) nor a finished stage-2 run "
        f"({RUN_WEIGHTS})"
    )


def _with_frames(
    config: VideoTextConfig | ClassifierConfig, num_frames: int | None
) -> VideoTextConfig | ClassifierConfig:
    """`config` run on `num_frames` frames (video-text models regenerate their position table); None keeps it."""
    if num_frames is None or num_frames == config.vision.num_frames:
        return config
    if isinstance(config, VideoTextConfig):
        return config.with_frames(num_frames)
    raise UsageError(
        f"--frames {num_frames}: a fine-tuned classifier runs on its own {config.vision.num_frames} frames"
    )


def _load_run_weights(path: Path, num_frames: int | None) -> LoadedModel:
    """Our stage-2 or fine-tuned classifier weights: the config in the header rebuilds the model; a stage-2 file's
    text folder gives the tokenizer."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
    except Exception as error:  # SafetensorError, OSError
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    if "config" not in meta:
        fmt = meta.get("format", "no format")
        raise CheckpointError(f"{path}: {fmt} weights without a model config: only stage-2 or fine-tuned classifier "
                              "weights can be evaluated")  # fmt: skip
    try:
        config = config_from_dict(json.loads(meta["config"]), source=str(path))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: the model config in the header is not JSON") from None
    config = _with_frames(config, num_frames)
    state_dict = read_checkpoint(path)
    model = build_model(config)  # a stage-2 model, or a classifier of `umt finetune`
    load_strict(model, state_dict, what=f"{config.kind} weights {path}")
    return LoadedModel(model.eval(), config, meta.get("text_encoder") or None, str(path), "umt-run", sha256_file(path))


def _load_official(
    path: Path, *, trust: bool, num_frames: int | None, img_size: int | None, text_encoder: str | None
) -> LoadedModel:
    from umt_cli.models import official

    state_dict = unwrap_state_dict(read_checkpoint(path, trust=trust, how_to_trust=f"pass {TRUST_FLAG}"))
    kind = detect_kind(state_dict)
    if kind in ("umt-stage2", "umt-retrieval"):
        imported = official.import_video_text(state_dict, kind=kind, source=str(path))
        config = _official_geometry(_with_frames(imported.config, num_frames), img_size, text_encoder)
        model = build_video_text(config)
        tokenizer = DEFAULT_BERT.get(config.text.hidden_size)
    elif kind == "umt-classifier":
        imported = official.import_classifier(state_dict, source=str(path), num_frames=num_frames)
        config = imported.config
        model = build_model(config)
        tokenizer = None
    elif kind == "umt-stage1":
        raise CheckpointError(
            f"{path}: a stage-1 (distillation) checkpoint has no text side or classifier head: use it as "
            "init.student of `umt pretrain` (or, later, `umt finetune`)"
        )
    else:
        raise CheckpointError(f"{path}: an {kind} checkpoint, not a UMT video-text or classification model")
    official.load_imported(model, imported, what=f"{kind} model from {path}")
    return LoadedModel(model.eval(), config, tokenizer, str(path), kind, sha256_file(path), list(imported.ignored))


def _official_geometry(config: VideoTextConfig, img_size: int | None, text_encoder: str | None) -> VideoTextConfig:
    """An official video-text file records neither its input side (224 unless `img_size` says otherwise) nor its
    text attention heads and LayerNorm eps (guessed from the width): the `config.json` of the `text_encoder` folder,
    the BERT the model was trained from, decides them when its width matches."""
    if img_size is not None:
        if img_size % config.vision.patch_size:
            raise UsageError(f"--size {img_size}: must be a multiple of the patch size {config.vision.patch_size}")
        config = replace(config, vision=replace(config.vision, img_size=img_size),
                         preprocess=replace(config.preprocess, size=img_size))  # fmt: skip
    bert = _bert_config(text_encoder)
    if bert.get("hidden_size") != config.text.hidden_size:  # a folder of another width lends its vocabulary only
        return config
    heads = bert.get("num_attention_heads", config.text.num_heads)
    if not isinstance(heads, int) or heads < 1 or config.text.hidden_size % heads:
        raise UsageError(f"--text-encoder {text_encoder}: num_attention_heads {heads!r} does not divide the text "
                         f"width {config.text.hidden_size}")  # fmt: skip
    eps = float(bert.get("layer_norm_eps", config.text.layer_norm_eps))
    return replace(config, text=replace(config.text, num_heads=heads, layer_norm_eps=eps))


def _bert_config(text_encoder: str | None) -> dict:
    """The `config.json` of a local BERT folder ({} for a hub id, or a folder without one)."""
    if text_encoder is None or not (Path(text_encoder) / "config.json").is_file():
        return {}
    path = Path(text_encoder) / "config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"--text-encoder: {path} is not readable JSON ({error})") from None
    return value if isinstance(value, dict) else {}
