import json
from pathlib import Path

import pytest
import torch

from umt_cli.data.text import SPECIAL_TOKENS, build_tokenizer, clean_caption, tokenize, write_tiny_bert
from umt_cli.errors import UsageError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("A man, (smiling) says: 'Hi!'", "a man smiling says hi"),
        ("a well-known road/street", "a well known road street"),
        ("<person> walks   a dog.\n", "person walks a dog"),
        ("  Spaces ~ *everywhere* #tag ;  ", "spaces everywhere tag"),
        ('He said "yes?"', "he said yes"),
    ],
)
def test_clean_caption_matches_the_official_rules(raw, clean):
    assert clean_caption(raw) == clean


def test_clean_caption_is_idempotent_and_truncates():
    text = "The <person> -- rides/a bike, FAST!!"
    once = clean_caption(text)
    assert clean_caption(once) == once
    assert clean_caption(text, max_words=2) == "the person"


# ------------------------------------------------------------------------------------------------ tokenisation

WORDS = ["a", "man", "rides", "horse", "##s", "the", "dog", "runs"]
PAD, UNK, CLS, SEP, MASK = range(5)
A, MAN, RIDES, HORSE, S, THE, DOG, RUNS = range(5, 13)
CAPTIONS = ["a man rides horses", "the dog", "", "a man rides the horse the dog runs", "A Man juggles"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny", words=WORDS)


def test_write_tiny_bert_puts_the_special_tokens_first(tiny_bert: Path):
    assert tiny_bert.joinpath("vocab.txt").read_text().split("\n")[:-1] == [*SPECIAL_TOKENS, *WORDS]
    config = json.loads(tiny_bert.joinpath("config.json").read_text())
    assert config["vocab_size"] == 13 and config["pad_token_id"] == 0 and config["model_type"] == "bert"
    tokenizer = build_tokenizer(tiny_bert)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id) == (PAD, UNK, CLS)
    assert (tokenizer.sep_token_id, tokenizer.mask_token_id) == (SEP, MASK)


def test_the_official_form_is_cls_then_text_without_sep(tiny_bert: Path):
    batch = tokenize(build_tokenizer(tiny_bert), CAPTIONS, max_len=7, add_sep=False)
    assert batch.ids.dtype == batch.attention_mask.dtype == torch.long
    assert batch.ids.tolist() == [
        [CLS, A, MAN, RIDES, HORSE, S, PAD],  # short: [PAD] right after the last word
        [CLS, THE, DOG, PAD, PAD, PAD, PAD],
        [CLS, PAD, PAD, PAD, PAD, PAD, PAD],  # an empty caption is [CLS] alone
        [CLS, A, MAN, RIDES, THE, HORSE, THE],  # truncated: max_len - 1 = 6 words, no [SEP]
        [CLS, A, MAN, UNK, PAD, PAD, PAD],  # lowercased; unknown words are [UNK]
    ]
    assert batch.attention_mask.tolist() == [
        [1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0],
    ]


def test_add_sep_gives_the_stock_form(tiny_bert: Path):
    batch = tokenize(build_tokenizer(tiny_bert, add_sep=True), CAPTIONS, max_len=7, add_sep=True)
    assert batch.ids.tolist() == [
        [CLS, A, MAN, RIDES, HORSE, S, SEP],
        [CLS, THE, DOG, SEP, PAD, PAD, PAD],
        [CLS, SEP, PAD, PAD, PAD, PAD, PAD],
        [CLS, A, MAN, RIDES, THE, HORSE, SEP],  # max_len - 2 = 5 words
        [CLS, A, MAN, UNK, SEP, PAD, PAD],
    ]
    assert batch.attention_mask.sum(1).tolist() == [7, 4, 2, 7, 5]


def test_truncation_cuts_word_pieces_like_the_official_tokenizer(tiny_bert: Path):
    tokenizer = build_tokenizer(tiny_bert)
    assert tokenize(tokenizer, ["horses"], max_len=2, add_sep=False).ids.tolist() == [[CLS, HORSE]]
    assert tokenize(tokenizer, ["horses"], max_len=1, add_sep=False).ids.tolist() == [[CLS]]
    with pytest.raises(ValueError, match="no room"):
        tokenize(tokenizer, ["horses"], max_len=1, add_sep=True)


@pytest.mark.parametrize("add_sep", [False, True])
@pytest.mark.parametrize("max_len", [2, 3, 6, 12])
def test_calling_the_built_tokenizer_directly_agrees_with_tokenize(tiny_bert: Path, add_sep: bool, max_len: int):
    tokenizer = build_tokenizer(tiny_bert, add_sep=add_sep)
    direct = tokenizer(CAPTIONS, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    batch = tokenize(tokenizer, CAPTIONS, max_len=max_len, add_sep=add_sep)
    assert torch.equal(direct["input_ids"], batch.ids)
    assert torch.equal(direct["attention_mask"], batch.attention_mask)


def test_build_tokenizer_refuses_a_folder_without_a_vocabulary(tmp_path: Path):
    with pytest.raises(UsageError, match=r"no vocab\.txt"):
        build_tokenizer(tmp_path)
    with pytest.raises(UsageError, match="no such folder"):
        build_tokenizer(tmp_path / "missing")
