"""Caption cleaning exactly as the official `pre_text` does it.

See docs/official-behaviour.md, Captions and tokenisation.
"""

from __future__ import annotations

import re

__all__ = ["clean_caption"]

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
