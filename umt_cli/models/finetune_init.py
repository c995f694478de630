"""Initialise a classifier for fine-tuning from any UMT checkpoint that holds a video ViT, strictly.

Sources (official or ours; raw or wrapped, `.pth` or `.safetensors`, or a folder holding one):

- stage 1 (`student.safetensors`, `{b16,l16}_ptk710_f8_res224.pth`): the ViT under `encoder.`; `clip_decoder.*`
  and the final `encoder.norm.*` are left out;
- stage 2 or retrieval (`video_text.safetensors`, `b16_25m.pth`, `ret_*.pth`): the ViT under
  `vision_encoder.encoder.`; the text side, projections, teacher, `pool_norm` and the final norm are left out;
- a fine-tuned classifier: `patch_embed.*`, `blocks.*`, `fc_norm.*`, `head.*`; a stored `pos_embed` is left out (the
  table is regenerated).

From a backbone, `fc_norm` and `head` are fresh (`VideoClassifier.reset_head`), as upstream. From a classifier they
are loaded too, the head re-indexed by class name when the label maps are given (`head_remap.remap_head`). Every
backbone key the model has must be in the file and of the right shape; a file of another kind is refused. Upstream
strips prefixes and loads non-strictly, so a wrong file initialises nothing and says so in a log line nobody reads
(docs/pitfalls.md, P2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from umt_cli.errors import CheckpointError
from umt_cli.models.classifier import VideoClassifier
from umt_cli.models.convert import TRUST_FLAG, detect_kind, load_strict, read_checkpoint, unwrap_state_dict
from umt_cli.models.head_remap import remap_head
from umt_cli.utils.files import sha256_file

__all__ = ["BACKBONE_PREFIX", "InitReport", "init_classifier", "weights_file"]

BACKBONE_PREFIX = {
    "umt-stage1": "encoder.",
    "umt-stage2": "vision_encoder.encoder.",
    "umt-retrieval": "vision_encoder.encoder.",
    "umt-classifier": "",
}
"""Where the video ViT sits in each kind of file (`convert.detect_kind`)."""
FOLDER_FILES = ("model.safetensors", "video_text.safetensors", "student.safetensors")
"""The weights file of a folder: an exported bundle, a stage-2 run, a stage-1 run (first found)."""
HEAD_PARTS = ("fc_norm.", "head.")


@dataclass(frozen=True)
class InitReport:
    """What an initialisation loaded: the file, its kind and sha256, how many tensors came from it, the keys left out
    on purpose, and whether the head came from the file (`head`: "fresh", "loaded" or "remapped by class name")."""

    source: str
    kind: str
    sha256: str
    loaded: int
    head: str
    ignored: list[str] = field(default_factory=list)


def weights_file(path: str | Path) -> Path:
    """`path`, or the weights file of the folder it names."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = next((path / name for name in FOLDER_FILES if (path / name).is_file()), None)
    if found is None:
        raise CheckpointError(f"{path}: a folder without weights ({', '.join(FOLDER_FILES)})")
    return found


def init_classifier(
    model: VideoClassifier,
    path: str | Path,
    *,
    trust: bool = False,
    how_to_trust: str = f"pass {TRUST_FLAG}",
    label_maps: tuple[Sequence[str], Sequence[str]] | None = None,
) -> InitReport:
    """Load the video ViT of the checkpoint at `path` into `model` (and its head, from a classifier), strictly.

    Args:
        model: The classifier to fine-tune, at its own frame count, size and class count.
        path: A checkpoint file or a folder holding one (`weights_file`).
        trust, how_to_trust: Full unpickling of legacy `.pth` files, and how the user allows it.
        label_maps: (the checkpoint's class names, the model's), row i named by entry i: re-index a classifier's
            head by name. Without them a classifier's head must already have the model's class count.

    Raises:
        CheckpointError: Another kind of file, a missing, extra or misshapen key (named), a head of another class
            count without label maps, or a target class the checkpoint's label map lacks.
    """
    file = weights_file(path)
    state = unwrap_state_dict(read_checkpoint(file, trust=trust, how_to_trust=how_to_trust))
    kind = detect_kind(state)
    if kind not in BACKBONE_PREFIX:
        raise CheckpointError(f"{file}: a {kind} checkpoint; fine-tuning starts from a UMT stage-1, stage-2, "
                              "retrieval or classification checkpoint")  # fmt: skip
    weights, ignored = _backbone(state, BACKBONE_PREFIX[kind])
    head = "fresh"
    if kind == "umt-classifier":
        weights, head = _classifier_head(weights, model, label_maps, str(file))
    loaded = len(weights)
    if head == "fresh":  # upstream's fresh fc_norm and head (`VideoClassifier.reset_head`)
        weights |= {key: value for key, value in model.state_dict().items() if key.startswith(HEAD_PARTS)}
    load_strict(model, weights, what=f"init of the classifier from {file} ({kind})")
    return InitReport(str(file), kind, sha256_file(file), loaded, head, ignored)


def _backbone(state: dict[str, Tensor], prefix: str) -> tuple[dict[str, Tensor], list[str]]:
    """The ViT's tensors under `prefix` (renamed to the classifier's names) and the keys left out: everything else,
    the final `norm` (unused under mean pooling) and a stored `pos_embed` (the table is regenerated)."""
    weights, ignored = {}, []
    for key, value in state.items():
        name = key[len(prefix) :] if key.startswith(prefix) else None
        if name is None or name.startswith("norm.") or name == "pos_embed":
            ignored.append(key)
        else:
            weights[name] = value
    return weights, ignored


def _classifier_head(
    weights: dict[str, Tensor],
    model: VideoClassifier,
    label_maps: tuple[Sequence[str], Sequence[str]] | None,
    source: str,
) -> tuple[dict[str, Tensor], str]:
    classes = model.head.out_features
    if label_maps is not None:
        source_names, target_names = label_maps
        return remap_head(weights, source_names, target_names, source=source), "remapped by class name"
    rows = weights["head.weight"].shape[0] if "head.weight" in weights else classes
    if rows != classes:
        raise CheckpointError(f"{source}: its head has {rows} classes, the model {classes}: give the checkpoint's "
                              "label map to remap the head by class name")  # fmt: skip
    return weights, "loaded"
