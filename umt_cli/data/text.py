"""Captions for stage 2 of UMT (Li et al., "Unmasked Teacher", ICCV 2023, https://arxiv.org/abs/2303.16058):
cleaning exactly as the official `pre_text` does it, and BERT tokenisation in the official `[CLS] X` form (no
trailing `[SEP]`, the ALBEF convention) or the stock `[CLS] X [SEP]`.

See docs/official-behaviour.md, Captions and tokenisation, and docs/pitfalls.md, P25.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from umt_cli.errors import UsageError, first_line

if TYPE_CHECKING:  # torch and transformers load on first use: caption cleaning needs neither
    import torch
    from torch import Tensor
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "SPECIAL_TOKENS",
    "clean_caption",
    "TextBatch",
    "build_tokenizer",
    "tokenize",
    "word_piece_counts",
    "write_tiny_bert",
]

_DELETE = re.compile(r"[,.'!?\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


def clean_caption(text: str, max_words: int | None = None) -> str:
    """Lowercase; delete , . ' ! ? " ( ) * # : ; ~ ; turn - and / into spaces; `<person>` -> `person`; collapse
    runs of whitespace; strip. `max_words` keeps the first words only. Idempotent."""
    text = _DELETE.sub("", text.lower())
    text = text.replace("-", " ").replace("/", " ").replace("<person>", "person")
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    if max_words is not None:
        text = " ".join(text.split(" ")[:max_words])
    return text


@dataclass(frozen=True)
class TextBatch:
    """Tokenised captions.

    Attributes:
        ids: (B, L) long token ids: `[CLS]` first, `[PAD]` (0 in BERT vocabularies) after the text.
        attention_mask: (B, L) long, 1 = token, 0 = padding.
    """

    ids: Tensor
    attention_mask: Tensor

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> TextBatch:
        """The same batch on `device`."""
        return TextBatch(
            self.ids.to(device, non_blocking=non_blocking), self.attention_mask.to(device, non_blocking=non_blocking)
        )


def build_tokenizer(source: str | Path, *, add_sep: bool = False, cached_only: bool = False) -> PreTrainedTokenizerBase:
    """The WordPiece tokenizer of a BERT folder (`vocab.txt`, optional `tokenizer_config.json`) or hub id.

    A `transformers` fast BERT tokenizer whose single-sentence template is the official `[CLS] X` (no `[SEP]`,
    docs/pitfalls.md, P25) unless `add_sep`; pairs keep `[CLS] A [SEP] B [SEP]` as upstream. Its truncation counts
    the template's special tokens, so calling it directly with `padding="max_length", truncation=True` gives what
    `tokenize` gives (tested). `cached_only`: a hub id is read from the hub cache, never downloaded.

    Raises:
        UsageError: Not a folder with `vocab.txt` nor a reachable hub id, or an unreadable vocabulary.
    """
    from tokenizers.processors import TemplateProcessing
    from transformers import BertTokenizerFast

    from umt_cli.models.text_loading import resolve_bert_folder

    folder = resolve_bert_folder(source, files=("vocab.txt",), cached_only=cached_only)
    try:
        tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UsageError(f"{source}: not a readable BERT tokenizer ({first_line(error)})") from None
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    special = [(cls, tokenizer.cls_token_id), (sep, tokenizer.sep_token_id)]
    single = f"{cls}:0 $A:0" + (f" {sep}:0" if add_sep else "")
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=single, pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1", special_tokens=special
    )
    return tokenizer


def tokenize(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str], *, max_len: int, add_sep: bool) -> TextBatch:
    """Tokenise cleaned captions into `[CLS] X` (official) or `[CLS] X [SEP]` (`add_sep`), padded to `max_len`.

    What the official tokenizer gives with `padding="max_length", truncation=True, max_length=max_len`: the
    WordPiece tokens are cut from the end so that the sequence *with* its special tokens is `max_len` long
    (`max_len - 1` text tokens officially, `max_len - 2` with `[SEP]`), and `[PAD]` fills the rest on the right.
    The sequence is assembled here rather than by the tokenizer's template, so it does not depend on how the
    tokenizer was built.

    Args:
        tokenizer: A BERT tokenizer (`build_tokenizer`).
        captions: B captions, already cleaned (`clean_caption`).
        max_len: L, including the special tokens.
        add_sep: Append `[SEP]` (stock BERT); False is the official form.

    Returns:
        `TextBatch` of (B, L) ids and attention mask.
    """
    import torch

    specials = 2 if add_sep else 1
    if max_len < specials:
        raise ValueError(f"max_len {max_len} leaves no room for the {specials} special token(s)")
    pieces = _word_pieces(tokenizer, captions)
    ids = torch.full((len(pieces), max_len), tokenizer.pad_token_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(pieces), max_len), dtype=torch.long)  # (B, L)
    tail = [tokenizer.sep_token_id] if add_sep else []
    for row, words in enumerate(pieces):
        sequence = [tokenizer.cls_token_id, *words[: max_len - specials], *tail]
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return TextBatch(ids, mask)


def word_piece_counts(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str]) -> list[int]:
    """How many WordPiece tokens each caption has before `tokenize` cuts it (special tokens not counted): a caption
    with more than `max_len - 1` (official form) is truncated."""
    return [len(pieces) for pieces in _word_pieces(tokenizer, captions)]


def _word_pieces(tokenizer: PreTrainedTokenizerBase, captions: Sequence[str]) -> list[list[int]]:
    """The WordPiece ids of each caption, without special tokens and uncut (`tokenize` cuts them)."""
    if not captions:
        return []
    # verbose=False: captions longer than the model's 512 positions are cut afterwards, so the warning is noise.
    encoded = tokenizer(list(captions), add_special_tokens=False, return_attention_mask=False, verbose=False)
    return encoded["input_ids"]


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""The special tokens `write_tiny_bert` puts first in its vocabulary, so `[PAD]` is 0 as in BERT's."""


def write_tiny_bert(
    folder: str | Path,
    *,
    words: Sequence[str],
    hidden: int = 32,
    layers: int = 4,
    heads: int = 2,
    intermediate: int = 64,
    max_positions: int = 64,
    dropout: float = 0.1,
) -> Path:
    """Write a tiny uncased BERT folder without weights, for tests and the quickstart (no download).

    `vocab.txt` holds `SPECIAL_TOKENS` (ids 0-4) then `words` (lowercased, deduplicated, in order; `##x` pieces
    allowed); `config.json` is a `transformers.BertConfig`; `tokenizer_config.json` says uncased. Build the
    tokenizer with `build_tokenizer(folder)` and a random encoder with
    `build_text_encoder(folder, ..., random=True)`. `dropout` is BERT's hidden and attention dropout (0.1).

    Returns:
        The folder.
    """
    from transformers import BertConfig

    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *(word.lower() for word in words)]))
    bad = [word for word in vocab if not word or any(ch.isspace() for ch in word)]
    if bad:
        raise ValueError(f"vocabulary words must be non-empty and without spaces: {bad[:5]}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{word}\n" for word in vocab), encoding="utf-8")
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    config.to_json_file(str(folder / "config.json"))
    settings = {"do_lower_case": True, "model_max_length": max_positions, "tokenizer_class": "BertTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return folder
