"""Carry a fine-tuned classifier's head to another label set by class name (K710 -> K400, K600, K700, ...).

Upstream takes the first 400 rows of a K710 head for K400 and indexes K600/K700 rows through label files it ships
(docs/official-behaviour.md, Classification fine-tuning); both silently assume an order. Here the user supplies the
checkpoint's class names and the target's (one name a line, line i naming row i), and row i of the new head is the
source row of the same name: the order of either list does not matter, and a target class the source lacks is an
error naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from umt_cli.errors import CheckpointError

__all__ = ["HEAD_KEYS", "remap_head"]

HEAD_KEYS = ("head.weight", "head.bias")
_SHOWN = 5


def remap_head(
    state_dict: Mapping[str, Tensor], source_names: Sequence[str], target_names: Sequence[str], *, source: str
) -> dict[str, Tensor]:
    """`state_dict` with `head.weight` (classes, D) and `head.bias` (classes,) re-indexed from `source_names`' order
    to `target_names`' (copies; the other tensors are passed through).

    Raises:
        CheckpointError: The head's rows are not as many as `source_names`, or target classes the source lacks
            (named).
    """
    missing_keys = [key for key in HEAD_KEYS if key not in state_dict]
    if missing_keys:
        raise CheckpointError(f"{source}: no classifier head to remap ({', '.join(missing_keys)} missing)")
    rows = state_dict["head.weight"].shape[0]
    if rows != len(source_names):
        raise CheckpointError(f"{source}: its head has {rows} classes, but its label map names {len(source_names)}")
    position = {name: row for row, name in enumerate(source_names)}
    absent = [name for name in target_names if name not in position]
    if absent:
        shown = ", ".join(repr(name) for name in absent[:_SHOWN]) + (", ..." if len(absent) > _SHOWN else "")
        raise CheckpointError(f"{source}: {len(absent)} target class(es) not in the checkpoint's label map: {shown}")
    index = [position[name] for name in target_names]
    remapped = dict(state_dict)
    for key in HEAD_KEYS:
        remapped[key] = state_dict[key][index].clone()  # (classes', ...)
    return remapped
