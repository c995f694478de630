"""Importing the official UMT checkpoints (OpenGVLab/unmasked_teacher; Li et al., ICCV 2023,
https://arxiv.org/abs/2303.16058) into our modules, strictly (docs/official-behaviour.md, Checkpoint layouts).

Each official layout has an explicit table of (official prefix -> our prefix) rows and a short allow-list of keys that
may be dropped. Every key of a file must match a row or the allow-list; anything else is a `CheckpointError` naming
the keys. The architecture is inferred from tensor shapes (`VisionConfig`, `TextConfig`, `ClassifierConfig`), the
file is sanity-checked (the temperature's range, a stored position table against the regenerated one, q/v biases),
and `load_imported` loads it with `strict=True`, naming missing, unexpected or misshapen keys by their names in the
file.

| kind | file keys | our module |
|---|---|---|
| `umt-stage1` | `encoder.*`, `clip_decoder.*` | `DistillStudent` (same names) |
| `umt-stage2` | `vision_encoder.*`, `text_encoder.{bert,cls}.*`, heads; drops `clip_teacher.*` | `VideoTextModel` |
| `umt-retrieval` | `text_encoder.{embeddings,encoder}.*` (no `bert.`/`cls.`), no `clip_decoder` | `VideoTextModel` |
| `umt-classifier` | `patch_embed.*`, `blocks.*`, `fc_norm.*`, `head.*`, optional `pos_embed` | `VideoClassifier` |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor, nn

from umt_cli.errors import CheckpointError, UsageError
from umt_cli.models.config import ClassifierConfig, Preprocess, TextConfig, VideoTextConfig, VisionConfig
from umt_cli.models.convert import detect_kind, load_strict, unwrap_state_dict
from umt_cli.models.positions import CHECKPOINT_FRAMES, CHECKPOINT_SIZE, checkpoint_grid, interpolated_table
from umt_cli.models.presets import STUDENT_GEOMETRY
from umt_cli.models.video_text import TEMP_RANGE  # clamped into it at every training forward: outside, no UMT file

__all__ = [
    "KeyTable",
    "STAGE1_TABLE",
    "STAGE2_TABLE",
    "RETRIEVAL_TABLE",
    "CLASSIFIER_TABLE",
    "ImportedModel",
    "ImportedClassifier",
    "LoadReport",
    "remap_keys",
    "import_stage1",
    "import_video_text",
    "import_classifier",
    "load_imported",
]

_SHOWN = 5  # keys named in an error message


@dataclass(frozen=True)
class KeyTable:
    """How one official layout maps onto our module's names.

    A row or ignore entry ending in `.` is a prefix; any other is one exact key. Rows are tried in order; ignores
    first, so an allow-listed buffer under a mapped prefix (`...embeddings.position_ids`) is dropped.

    Attributes:
        layout: Name used in messages ("official stage-2").
        rows: (official prefix, our prefix) pairs.
        ignore: Keys or prefixes that may be present and are dropped.
    """

    layout: str
    rows: tuple[tuple[str, str], ...]
    ignore: tuple[str, ...] = ()

    def to_ours(self, key: str) -> str | None:
        """Our name for a file key, or None when no row matches."""
        return _rename(key, self.rows)

    def to_official(self, key: str) -> str:
        """The file's name for one of our keys (the key itself when no row matches)."""
        return _rename(key, tuple((ours, theirs) for theirs, ours in self.rows)) or key

    def ignores(self, key: str) -> bool:
        return any(_matches(key, entry) for entry in self.ignore)


def _matches(key: str, entry: str) -> bool:
    return key.startswith(entry) if entry.endswith(".") else key == entry


def _rename(key: str, rows: tuple[tuple[str, str], ...]) -> str | None:
    for source, target in rows:
        if _matches(key, source):
            return target + key[len(source) :]
    return None


STAGE1_TABLE = KeyTable(
    layout="official stage-1",
    rows=(("encoder.", "encoder."), ("clip_decoder.", "clip_decoder.")),
)
"""§5.2 `{b16,l16}_ptk710_f8_res224.pth` -> `DistillStudent` (the names are ours already)."""

STAGE2_TABLE = KeyTable(
    layout="official stage-2",
    rows=(
        ("vision_encoder.encoder.", "vision_encoder.encoder."),
        ("vision_encoder.clip_decoder.", "vision_encoder.clip_decoder."),
        ("vision_encoder.pool_norm.", "vision_encoder.pool_norm."),
        ("text_encoder.bert.", "text_encoder.bert."),
        ("text_encoder.cls.", "text_encoder.cls."),
        ("vision_proj.", "vision_proj."),
        ("text_proj.", "text_proj."),
        ("temp", "temp"),
        ("itm_head.", "itm_head."),
    ),
    # The frozen teacher travels inside upstream's model; older transformers saved the position_ids buffer.
    ignore=("clip_teacher.", "text_encoder.bert.embeddings.position_ids"),
)
"""§5.4 `{b16,l16}_{5m,17m,25m}.pth` -> `VideoTextModel` with the MLM head."""

RETRIEVAL_TABLE = KeyTable(
    layout="official retrieval fine-tuned",
    rows=(
        ("vision_encoder.encoder.", "vision_encoder.encoder."),
        ("vision_encoder.pool_norm.", "vision_encoder.pool_norm."),
        ("text_encoder.embeddings.", "text_encoder.bert.embeddings."),
        ("text_encoder.encoder.", "text_encoder.bert.encoder."),
        ("vision_proj.", "vision_proj."),
        ("text_proj.", "text_proj."),
        ("temp", "temp"),
        ("itm_head.", "itm_head."),
    ),
    ignore=("text_encoder.embeddings.position_ids",),
)
"""§5.5 `ret_*_{b16,l16}_25m.pth` -> `VideoTextModel` without alignment heads or MLM head."""

CLASSIFIER_TABLE = KeyTable(
    layout="official fine-tuned classifier",
    rows=(("patch_embed.", "patch_embed."), ("blocks.", "blocks."), ("fc_norm.", "fc_norm."), ("head.", "head.")),
)
"""§5.3 `{b16,l16}_ptk710_ftk710[...]_f{8,16}_res{224,384}.pth` -> `VideoClassifier`; a stored `pos_embed` is
checked against the regenerated table and dropped before the table is applied."""

_VIDEO_TEXT_TABLES = {"umt-stage2": STAGE2_TABLE, "umt-retrieval": RETRIEVAL_TABLE}
_STAGE2_HEADS = ("vision_proj.", "text_proj.", "itm_head.")
# Tensors upstream ties (the MLM decoder shares the word embeddings; its bias is `predictions.bias`); loading two
# different values into one parameter would silently keep one of them.
_TIED = (
    ("text_encoder.cls.predictions.decoder.weight", "text_encoder.bert.embeddings.word_embeddings.weight"),
    ("text_encoder.cls.predictions.decoder.bias", "text_encoder.cls.predictions.bias"),
)


@dataclass(frozen=True)
class ImportedModel:
    """An official video-text file in our layout.

    Attributes:
        config: The architecture; its `preprocess` is the default one, for the caller to replace.
        state_dict: Keys exactly as `build_video_text(config).state_dict()`.
        ignored: File keys that were dropped by the allow-list (teacher, position_ids).
        table: The key table used (`load_imported` names bad keys by their names in the file).
    """

    config: VideoTextConfig
    state_dict: dict[str, Tensor]
    ignored: list[str]
    table: KeyTable = field(repr=False, default=STAGE2_TABLE)


@dataclass(frozen=True)
class ImportedClassifier:
    """An official fine-tuned classification file in our layout (`build_classifier(config)`'s names).

    Attributes:
        config: Geometry, classes and `pos_temporal = "interpolate"`.
        state_dict: Keys exactly as `VideoClassifier.state_dict()`.
        ignored: Dropped file keys (the stored `pos_embed`, after it was checked).
        table: The key table used.
    """

    config: ClassifierConfig
    state_dict: dict[str, Tensor]
    ignored: list[str]
    table: KeyTable = field(repr=False, default=CLASSIFIER_TABLE)


@dataclass(frozen=True)
class LoadReport:
    """What a strict load did (the lead writes it into the run directory).

    Attributes:
        loaded: Tensors loaded.
        ignored: File keys dropped by the allow-list.
        sha256: The file's digest when the caller knows it.
    """

    loaded: int
    ignored: list[str]
    sha256: str | None = None


def remap_keys(
    state_dict: Mapping[str, Tensor], table: KeyTable, *, source: str
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a file's keys by `table`: (state dict in our names, ignored file keys).

    Raises:
        CheckpointError: Keys matched by no row and not allow-listed, named (first few and the count).
    """
    mapped: dict[str, Tensor] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in state_dict.items():
        if table.ignores(key):
            ignored.append(key)
            continue
        ours = table.to_ours(key)
        if ours is None:
            unknown.append(key)
        else:
            mapped[ours] = value
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} key(s) outside the {table.layout} layout: {_first(unknown)}")
    return mapped, ignored


# ---------------------------------------------------------------------------------------------------------- stage 1


def import_stage1(state_dict: Mapping[str, Any], *, source: str) -> tuple[VisionConfig, dict[str, Tensor]]:
    """An official stage-1 file (§5.2) as (the student's config, a state dict for `DistillStudent`).

    The geometry is the stage-1 one (8 frames, 224 px); alignment heads K and Ct come from `clip_decoder`.

    Raises:
        CheckpointError: Another kind of file, or keys outside the layout.
    """
    weights = unwrap_state_dict(state_dict)
    _require_kind(weights, "umt-stage1", source)
    mapped, _ = remap_keys(weights, STAGE1_TABLE, source=source)
    vision = replace(
        _infer_vision(mapped, "encoder.", source=source),
        num_frames=CHECKPOINT_FRAMES,
        img_size=CHECKPOINT_SIZE,
        **_infer_align_heads(mapped, "clip_decoder.", source=source),
    )
    return vision, mapped


# ------------------------------------------------------------------------------------------------------ video-text


def import_video_text(
    state_dict: Mapping[str, Any], *, kind: str, source: str, text_overrides: Mapping[str, Any] | None = None
) -> ImportedModel:
    """An official stage-2 (§5.4) or retrieval fine-tuned (§5.5) file in `VideoTextModel`'s layout.

    Args:
        state_dict: The file's content: raw, `{'model': ...}`, `{'module': ...}` or with a `module.` prefix.
        kind: `umt-stage2` or `umt-retrieval` (`convert.detect_kind`); the file must be of that kind.
        source: The file, for messages.
        text_overrides: `TextConfig` fields that shapes cannot tell (e.g. `num_heads` of a non-BERT text tower,
            `layer_norm_eps`).

    Raises:
        CheckpointError: A QA file, the known bad stage-2 upload (no projection / ITM heads), another kind, keys
            outside the layout, a temperature outside [0.001, 0.5], or tied tensors that differ.
        UsageError: An unknown `text_overrides` field.
    """
    if kind not in _VIDEO_TEXT_TABLES:
        raise ValueError(f"kind must be one of {sorted(_VIDEO_TEXT_TABLES)}, got {kind!r}")
    weights = unwrap_state_dict(state_dict)
    _refuse_qa_and_bad_uploads(weights, source)
    _require_kind(weights, kind, source)
    table = _VIDEO_TEXT_TABLES[kind]
    mapped, ignored = remap_keys(weights, table, source=source)
    _check_temperature(mapped, source)
    _check_tied(mapped, source)
    vision = replace(
        _infer_vision(mapped, "vision_encoder.encoder.", source=source),
        **_infer_align_heads(mapped, "vision_encoder.clip_decoder.", source=source),
    )
    text = _apply_overrides(_infer_text(mapped, source=source), text_overrides)
    embed_dim = _shape(mapped, "vision_proj.weight", source)[0]
    config = VideoTextConfig(vision=vision, text=text, embed_dim=embed_dim)
    return ImportedModel(config=config, state_dict=mapped, ignored=ignored, table=table)


def _refuse_qa_and_bad_uploads(weights: Mapping[str, Tensor], source: str) -> None:
    """QA files hold `text_decoder.*`; `b16_25m.pth` was once such a file under the stage-2 name (§5.7, #26)."""
    lacking = [prefix.rstrip(".") for prefix in _STAGE2_HEADS if not any(key.startswith(prefix) for key in weights)]
    if any(key.startswith("text_decoder.") for key in weights):
        detail = f"; it lacks {', '.join(lacking)}" if lacking else ""
        raise CheckpointError(
            f"{source}: a QA checkpoint (it holds text_decoder.*{detail}); QA checkpoints are not supported",
            hint="use the stage-2 (b16_25m.pth, l16_25m.pth) or a ret_* retrieval file; b16_25m.pth was once "
            "uploaded as a QA file, so download it again if that is the name you used",
        )
    if lacking and any(key.startswith("vision_encoder.") for key in weights):
        raise CheckpointError(
            f"{source}: not a complete stage-2 checkpoint: it lacks {', '.join(lacking)} (a known bad upload of "
            "b16_25m.pth had this shape)",
            hint="download the file again and check its sha256",
        )


def _check_temperature(mapped: Mapping[str, Tensor], source: str) -> None:
    temp = mapped.get("temp")
    if temp is None or temp.numel() != 1:
        return  # a missing or misshapen temp is named by the strict load
    value = float(temp.reshape(-1)[0])
    low, high = TEMP_RANGE
    if not low <= value <= high:
        raise CheckpointError(f"{source}: temp = {value:g} is outside [{low}, {high}], so this is no trained UMT model")


def _check_tied(mapped: Mapping[str, Tensor], source: str) -> None:
    for first, second in _TIED:
        a, b = mapped.get(first), mapped.get(second)
        if a is not None and b is not None and a.shape == b.shape and not torch.equal(a, b):
            raise CheckpointError(f"{source}: {first} and {second} differ, but the model ties them into one tensor")


# ------------------------------------------------------------------------------------------------------ classifier


def import_classifier(
    state_dict: Mapping[str, Any], *, source: str, num_frames: int | None = None, img_size: int | None = None
) -> ImportedClassifier:
    """An official fine-tuned classification file (§5.3) in `VideoClassifier`'s layout.

    The frame count and size come from the stored `pos_embed` (present only when N != 8 x (224 / p)^2), with
    `num_frames` or `img_size` to tell them apart when N alone is ambiguous; without `pos_embed` the file is the
    8-frame, 224-px geometry, unless `num_frames` / `img_size` ask to run it at another. The position rule is the
    official fine-tuning one (`pos_temporal = "interpolate"`), and a stored table must equal it.

    Raises:
        CheckpointError: Another kind of file, keys outside the layout, a `pos_embed` whose N fits no geometry (or not
            the requested one), or a stored table that differs from the regenerated one.
    """
    weights = unwrap_state_dict(state_dict)
    _require_kind(weights, "umt-classifier", source)
    weights = dict(weights)
    stored_table = weights.pop("pos_embed", None)
    mapped, ignored = remap_keys(weights, CLASSIFIER_TABLE, source=source)
    vision = _infer_vision(mapped, "", source=source)
    frames, size = _classifier_geometry(stored_table, vision, num_frames, img_size, source)
    vision = replace(vision, num_frames=frames, img_size=size, pos_temporal="interpolate")
    if stored_table is not None:
        _check_stored_table(stored_table, vision, source)
        ignored.append("pos_embed")
    classes = _shape(mapped, "head.weight", source)[0]
    config = ClassifierConfig(
        vision=vision, num_classes=classes, preprocess=Preprocess(size=size, num_frames=frames, resize="crop")
    )
    return ImportedClassifier(config=config, state_dict=mapped, ignored=ignored)


def _classifier_geometry(
    stored: Tensor | None, vision: VisionConfig, num_frames: int | None, img_size: int | None, source: str
) -> tuple[int, int]:
    """(frames, pixels per side) of a classification file; see `import_classifier`."""
    if stored is None:
        frames, size = num_frames or CHECKPOINT_FRAMES, img_size or CHECKPOINT_SIZE
        if _token_count(vision, frames, size) <= 0:
            raise UsageError(
                f"{source}: cannot run at {frames} frames and {size} px: the frames must divide by the tubelet "
                f"({vision.tubelet}) and the size by the patch ({vision.patch_size})"
            )
        return frames, size
    if stored.ndim != 3 or stored.shape[0] != 1 or stored.shape[2] != vision.dim:
        raise CheckpointError(f"{source}: pos_embed has shape {tuple(stored.shape)}, expected (1, N, {vision.dim})")
    tokens = stored.shape[1]
    for frames, size in _candidate_geometries(vision, num_frames, img_size):
        if _token_count(vision, frames, size) == tokens:
            return frames, size
    hints = (("num_frames", num_frames), ("img_size", img_size))
    asked = ", ".join(f"{name} {value}" for name, value in hints if value)
    which = f"geometry with {asked}" if asked else "official geometry"
    raise CheckpointError(
        f"{source}: pos_embed has {tokens} rows, which fits no {which} "
        f"(N = frames / tubelet x (size / {vision.patch_size})^2)",
        hint="pass the frame count and input size the file was fine-tuned at",
    )


def _candidate_geometries(vision: VisionConfig, num_frames: int | None, img_size: int | None) -> list[tuple[int, int]]:
    """(frames, size) pairs to try against a stored table's N: the one asked for, or the official combinations."""
    p = vision.patch_size
    sides = [p * side for side in range(1, 129)]  # every size up to 128 patches a side
    if num_frames and img_size:
        return [(num_frames, img_size)]
    if num_frames:
        return [(num_frames, size) for size in sides]
    if img_size:
        return [(vision.tubelet * t, img_size) for t in range(1, 257)]
    # Official files: 8 frames at any size (224, 384), or 16 frames at 224.
    return [(CHECKPOINT_FRAMES, size) for size in sides] + [(2 * CHECKPOINT_FRAMES, CHECKPOINT_SIZE)]


def _token_count(vision: VisionConfig, frames: int, size: int) -> int:
    if frames % vision.tubelet or size % vision.patch_size:
        return -1
    return frames // vision.tubelet * (size // vision.patch_size) ** 2


def _check_stored_table(stored: Tensor, vision: VisionConfig, source: str) -> None:
    """A stored table must be the regenerated one (upstream stores it, never trains it). Half-precision files store a
    rounded table, so the tolerance is that dtype's resolution there."""
    side = vision.img_size // vision.patch_size
    target = (vision.num_frames // vision.tubelet, side, side)
    expected = interpolated_table(vision.dim, checkpoint_grid(vision.patch_size), target=target)  # (1, N, D)
    expected = expected.to(stored.dtype).float()
    delta = float((stored.float() - expected).abs().max())
    tolerance = max(1e-5, torch.finfo(stored.dtype).eps) if stored.is_floating_point() else 1e-5
    if not delta <= tolerance:  # also catches NaN
        raise CheckpointError(
            f"{source}: the stored pos_embed differs from the regenerated {target[0]}x{side}x{side} table "
            f"(max |Δ| = {delta:.3g} > {tolerance:g}): not the official position rule, or a damaged file"
        )


# ------------------------------------------------------------------------------------------------ shape inference


def _infer_vision(mapped: Mapping[str, Tensor], prefix: str, *, source: str) -> VisionConfig:
    """D, patch size, tubelet, depth and heads of the ViT under `prefix` (the geometry fields keep their defaults)."""
    kernel = _shape(mapped, f"{prefix}patch_embed.proj.weight", source)  # (D, 3, tubelet, p, p)
    if len(kernel) != 5 or kernel[3] != kernel[4]:
        raise CheckpointError(f"{source}: {prefix}patch_embed.proj.weight has shape {kernel}, expected (D, 3, u, p, p)")
    dim, tubelet, patch = kernel[0], kernel[2], kernel[3]
    depth = _count_indexed(mapped, f"{prefix}blocks.", source)
    return VisionConfig(dim=dim, depth=depth, num_heads=_vision_heads(dim, depth), patch_size=patch, tubelet=tubelet)


def _vision_heads(dim: int, depth: int) -> int:
    """Heads are not in the shapes: a preset's when (D, depth) is one, else 64 channels a head."""
    for geometry in STUDENT_GEOMETRY.values():
        if (geometry["dim"], geometry["depth"]) == (dim, depth):
            return geometry["num_heads"]
    return _heads_of_width(dim)


def _heads_of_width(width: int) -> int:
    """64 channels a head (BERT and ViT convention), or one head when that does not divide the width."""
    heads = width // 64
    return heads if heads and width % heads == 0 else 1


def _infer_align_heads(mapped: Mapping[str, Tensor], prefix: str, *, source: str) -> dict[str, int]:
    """`align_layers` K and `teacher_dim` Ct from the `clip_decoder` heads (0 and 0 when there are none)."""
    if not any(key.startswith(prefix) for key in mapped):
        return {"align_layers": 0, "teacher_dim": 0}
    count = _count_indexed(mapped, prefix, source)
    return {"align_layers": count, "teacher_dim": _shape(mapped, f"{prefix}0.head.weight", source)[0]}


def _infer_text(mapped: Mapping[str, Tensor], *, source: str) -> TextConfig:
    """The fusion BERT's shape from `text_encoder.bert.*` (and whether the MLM head `text_encoder.cls.*` is there)."""
    bert = "text_encoder.bert."
    vocab, hidden = _shape(mapped, f"{bert}embeddings.word_embeddings.weight", source)
    layers = f"{bert}encoder.layer."
    num_layers = _count_indexed(mapped, layers, source)
    cross = sorted(_indices(mapped, layers, suffix=".crossattention."))
    return TextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=num_layers,
        num_heads=_heads_of_width(hidden),
        intermediate_size=_shape(mapped, f"{layers}0.intermediate.dense.weight", source)[0],
        fusion_layer=cross[0] if cross else num_layers,
        max_positions=_shape(mapped, f"{bert}embeddings.position_embeddings.weight", source)[0],
        type_vocab_size=_shape(mapped, f"{bert}embeddings.token_type_embeddings.weight", source)[0],
        mlm_head=any(key.startswith("text_encoder.cls.") for key in mapped),
    )


def _apply_overrides(text: TextConfig, overrides: Mapping[str, Any] | None) -> TextConfig:
    if not overrides:
        return text
    known = {f.name for f in fields(TextConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown text config field(s) {unknown}; known: {sorted(known)}")
    return replace(text, **overrides)


def _indices(mapped: Mapping[str, Tensor], prefix: str, suffix: str = ".") -> set[int]:
    """The integers i of keys `{prefix}{i}{suffix}...`."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix))
    return {int(match.group(1)) for key in mapped if (match := pattern.match(key))}


def _count_indexed(mapped: Mapping[str, Tensor], prefix: str, source: str) -> int:
    """Largest index under `prefix` plus one (gaps are reported as missing keys by the strict load)."""
    found = _indices(mapped, prefix)
    if not found:
        raise CheckpointError(f"{source}: no {prefix}{{i}}.* keys, so the depth cannot be inferred")
    return max(found) + 1


def _shape(mapped: Mapping[str, Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in mapped:
        raise CheckpointError(f"{source}: missing {key}, needed to infer the architecture")
    return tuple(mapped[key].shape)


def _require_kind(weights: Mapping[str, Tensor], kind: str, source: str) -> None:
    found = detect_kind(weights)
    if found == "umt-qa":
        _refuse_qa_and_bad_uploads(weights, source)
    if found != kind:
        raise CheckpointError(f"{source}: a {found} checkpoint, not a {kind} one")


# ---------------------------------------------------------------------------------------------------------- loading


def load_imported(
    model: nn.Module, imported: ImportedModel | ImportedClassifier, *, what: str, sha256: str | None = None
) -> LoadReport:
    """Load an imported file into the model built from its config, strictly.

    Missing, unexpected and misshapen keys are named as the file names them; then `convert.load_strict` loads and warns
    when every q/v bias is zero (a broken export).

    Args:
        model: `build_video_text(imported.config)` / `build_classifier(imported.config)` (or one of the same layout).
        imported: What `import_*` returned.
        what: What is being loaded, for messages ("stage-2 model from b16_25m.pth").
        sha256: The file's digest, passed on to the report.

    Raises:
        CheckpointError: Missing, unexpected or misshapen keys.
    """
    _check_against(model, imported.state_dict, imported.table, what)
    load_strict(model, imported.state_dict, what=what)
    return LoadReport(loaded=len(imported.state_dict), ignored=list(imported.ignored), sha256=sha256)


def _check_against(model: nn.Module, state_dict: Mapping[str, Tensor], table: KeyTable, what: str) -> None:
    own = model.state_dict()
    missing = [table.to_official(key) for key in own if key not in state_dict]
    unexpected = [table.to_official(key) for key in state_dict if key not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: {len(missing)} missing key(s) {_first(missing)}, {len(unexpected)} unexpected key(s) "
            f"{_first(unexpected)} (names as in the file)"
        )
    wrong = [
        f"{table.to_official(key)} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
        for key, value in own.items()
        if state_dict[key].shape != value.shape
    ]
    if wrong:
        raise CheckpointError(f"{what}: {len(wrong)} shape mismatch(es) (file != model): {_first(wrong)}")


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return f"[{shown}{', ...' if len(items) > _SHOWN else ''}]"
