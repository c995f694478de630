"""Token masking. Every masker returns `visible` (B, N) bool with True = kept (fed to the student).

The official code passes `bool_masked_pos` (True = masked) instead; convert with `visible = ~masked` at the boundary.
`gather_visible` is the one place tokens are selected with such a mask.
"""

from umt_cli.masking.functional import (
    attention_visible,
    invalid_attention_rows,
    random_visible,
    tube_visible,
    visible_per_frame,
)
from umt_cli.masking.gather import gather_visible

__all__ = [
    "attention_visible",
    "gather_visible",
    "invalid_attention_rows",
    "random_visible",
    "tube_visible",
    "visible_per_frame",
]
