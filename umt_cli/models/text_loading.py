"""Loading the fusion BERT: Hugging Face BERT files mapped onto `umt_cli.models.text.TextEncoder` by an explicit key
map, strictly; BERT folders found locally or on the hub (where the network allows).

The pooler and the next-sentence head of a BERT file are dropped on purpose (UMT uses neither), and the new
cross-attention layers are the only weights a stock BERT file may lack (docs/official-behaviour.md, Stage 2 model).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from umt_cli.errors import CheckpointError, UsageError, first_line
from umt_cli.models.convert import load_strict, read_checkpoint
from umt_cli.models.text import TextEncoder

__all__ = ["WEIGHT_FILES", "TextLoadReport", "load_bert_weights", "resolve_bert_folder", "build_text_encoder"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""The weight files a local BERT folder may hold, in the order they are preferred."""

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_FOLDER_HINT = "must be a local BERT folder (config.json, vocab.txt, model.safetensors) or a reachable hub id"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextLoadReport:
    """What `load_bert_weights` did besides loading.

    Attributes:
        dropped: Keys of the file ignored on purpose (pooler, NSP head, position/token-type id buffers, and the MLM
            head when the encoder has none).
        initialised: Keys of the encoder the file does not hold, left at their init (the cross-attention).
    """

    dropped: tuple[str, ...]
    initialised: tuple[str, ...]


_DROPPED = re.compile(r"bert\.pooler\..*|cls\.seq_relationship\..*|bert\.embeddings\.(position|token_type)_ids")
_DECODER_TIES = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def load_bert_weights(encoder: TextEncoder, state_dict: Mapping[str, Tensor], *, source: str) -> TextLoadReport:
    """Load a Hugging Face BERT state dict into `encoder` through an explicit key map, strictly.

    Accepted layouts: `BertForMaskedLM` / `BertForPreTraining` (`bert.*`, `cls.predictions.*`,
    `cls.seq_relationship.*`) and `BertModel` (bare `embeddings.*`, `encoder.*`, `pooler.*`, which get the `bert.`
    prefix). Old TensorFlow-era names `LayerNorm.gamma` / `.beta` become `weight` / `bias`. Dropped on purpose: the
    pooler and the next-sentence head (UMT uses neither), the `position_ids` / `token_type_ids` buffers, and
    `cls.predictions.*` when the encoder has no MLM head. The tied decoder keys, which `save_pretrained` leaves
    out, are filled from the word embeddings and `cls.predictions.bias`. The cross-attention weights are the only
    keys that may be absent (a stock BERT has none): then they keep their init.

    Args:
        encoder: The encoder to fill.
        state_dict: The file's tensors.
        source: The file, for messages.

    Raises:
        CheckpointError: Any other missing, unexpected or misshapen key, or an untied decoder, naming the keys.
    """
    weights = _canonical_names(state_dict)
    dropped = sorted(key for key in weights if _DROPPED.fullmatch(key))
    if not encoder.has_mlm_head:
        dropped += sorted(key for key in weights if key.startswith("cls.predictions."))
    for key in dropped:
        del weights[key]
    if encoder.has_mlm_head:
        _fill_tied_decoder(weights, source)
    own = encoder.state_dict()
    cross = [key for key in own if ".crossattention." in key]
    initialised = cross if not any(".crossattention." in key for key in weights) else []
    weights.update((key, own[key]) for key in initialised)
    load_strict(encoder, weights, what=f"text encoder from {source}")
    report = TextLoadReport(dropped=tuple(dropped), initialised=tuple(initialised))
    _log.info(
        "%s: %d tensors loaded, %d dropped, %d left at init (cross-attention)",
        source,
        len(weights) - len(initialised),
        len(dropped),
        len(initialised),
    )
    return report


def _canonical_names(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename `LayerNorm.gamma/beta` to `weight/bias` and give a bare `BertModel` file the `bert.` prefix."""
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
        if key.split(".", 1)[0] in ("embeddings", "encoder", "pooler"):
            key = f"bert.{key}"
        renamed[key] = value
    return renamed


def _fill_tied_decoder(weights: dict[str, Tensor], source: str) -> None:
    """Fill the tied decoder keys from their sources, or check that the file's copies equal them."""
    for key, tied_to in _DECODER_TIES.items():
        if tied_to not in weights:
            continue  # reported as missing by the strict load
        if key not in weights:
            weights[key] = weights[tied_to]
        elif not torch.equal(weights[key], weights[tied_to]):
            raise CheckpointError(f"text encoder from {source}: {key} differs from {tied_to}, but they are tied")


def resolve_bert_folder(
    source: str | Path, *, files: Sequence[str] = ("config.json",), weights: bool = False, cached_only: bool = False
) -> Path:
    """The local folder of a BERT `source`: a folder as is, or a Hugging Face hub id fetched through the hub cache.

    A hub id works offline when cached (`HF_HUB_OFFLINE=1` never touches the network); a missing folder fails at
    once, without asking the hub.

    Args:
        source: A folder, or a hub id such as `bert-base-uncased`.
        files: Files the folder must hold (`config.json`, `vocab.txt`).
        weights: It must also hold a weight file (`WEIGHT_FILES`).
        cached_only: A hub id is looked up in the hub cache only, never downloaded.

    Raises:
        UsageError: One line naming `source`: not a folder and not a reachable hub id, or a needed file missing.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path
    elif path.exists() or not _HUB_ID.fullmatch(str(source)):
        raise UsageError(f"{source}: no such folder; the text encoder source {_FOLDER_HINT}")
    else:
        folder = _from_hub(str(source), files, weights, cached_only)
    missing = [name for name in files if not (folder / name).is_file()]
    if weights and _weight_file(folder) is None:
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise UsageError(f"{source}: no {', '.join(missing)} in this folder; the text encoder source {_FOLDER_HINT}")
    return folder


def _from_hub(repo_id: str, files: Sequence[str], weights: bool, cached_only: bool = False) -> Path:
    """Fetch the needed files of a hub repository (or find them in the cache); their snapshot folder."""
    from functools import partial

    from huggingface_hub import hf_hub_download

    hf_hub_download = partial(hf_hub_download, local_files_only=cached_only)  # noqa: N806 (shadowed on purpose)
    try:
        paths = [hf_hub_download(repo_id, name) for name in files]
        for name in ("tokenizer_config.json", "tokenizer.json") if "vocab.txt" in files else ():
            try:  # optional: vocab.txt alone is a complete uncased tokenizer
                hf_hub_download(repo_id, name)
            except _hub_errors():
                pass
        if weights:
            paths.append(_first_available(repo_id, WEIGHT_FILES))
    except _hub_errors() as error:
        if cached_only:
            raise UsageError(f"{repo_id}: not a local folder, and not in the Hugging Face cache (nothing is downloaded "
                             "here): pass a BERT folder with vocab.txt") from None  # fmt: skip
        raise UsageError(
            f"{repo_id}: not a local folder and not reachable as a Hugging Face hub id ({first_line(error)}); "
            f"the text encoder source {_FOLDER_HINT}"
        ) from None
    return Path(paths[0]).parent


def _first_available(repo_id: str, names: Sequence[str]) -> str:
    """Download the first of `names` the repository has; re-raise the first failure if it has none."""
    from huggingface_hub import hf_hub_download

    failures = []
    for name in names:
        try:
            return hf_hub_download(repo_id, name)
        except _hub_errors() as error:
            failures.append(error)
    raise failures[0]


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What the hub client raises for an unknown, unreachable or uncached repository."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: tuple[type[BaseException], ...] = (OSError, ValueError, HfHubHTTPError)
    try:
        import httpx  # huggingface_hub >= 1.0 speaks httpx, whose errors are not OSErrors

        errors += (httpx.HTTPError,)
    except ImportError:
        pass
    return errors


def _weight_file(folder: Path) -> Path | None:
    return next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)


def build_text_encoder(
    source: str | Path, *, fusion_layer: int, encoder_width: int, random: bool = False, mlm_head: bool = True
) -> TextEncoder:
    """Build the fusion BERT from a Hugging Face BERT folder (or hub id) and load its weights.

    The folder holds `config.json` and `model.safetensors` or `pytorch_model.bin` (read with `weights_only=True`),
    e.g. a local copy of `bert-base-uncased`. With `random=True` only `config.json` is read and the weights stay
    randomly initialised (with a warning): that is for tests and the quickstart only
    (`umt_cli.data.text.write_tiny_bert` writes such a folder).

    Args:
        source: The folder or hub id.
        fusion_layer: First layer with cross-attention (9 for BERT-base, 19 for BERT-large in UMT).
        encoder_width: D, the vision width.
        random: Skip the weights.
        mlm_head: Build (and load) the MLM head.

    Raises:
        UsageError: A source that is not a BERT folder or reachable hub id, or an unsupported config.
        CheckpointError: Weights that do not map onto the encoder.
    """
    from transformers import BertConfig

    folder = resolve_bert_folder(source, files=("config.json",), weights=not random)
    try:
        config = BertConfig.from_json_file(str(folder / "config.json"))
        encoder = TextEncoder.from_bert_config(
            config, fusion_layer=fusion_layer, encoder_width=encoder_width, mlm_head=mlm_head
        )
    except (ValueError, OSError) as error:  # json.JSONDecodeError is a ValueError
        raise UsageError(f"{source}: {first_line(error)}") from None
    if random:
        warnings.warn(f"random text encoder from {source}: tests and the quickstart only", stacklevel=2)
        return encoder
    weight_file = _weight_file(folder)
    load_bert_weights(encoder, read_checkpoint(weight_file), source=str(weight_file))
    return encoder
