import pytest

from umt_cli.data.text import clean_caption


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
