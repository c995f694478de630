"""`umt eval classification`: action classification of a labelled video list, three ways (SPEC §4.4).

- `finetuned`: a fine-tuned classifier's logits; softmax per view, averaged over the views (official test: 4 clips x
  3 crops with `segments` sampling).
- `zero-shot`: a video-text model; each class is the mean of its prompt embeddings over the templates, a video's score
  is the frame-averaged cosine with it (`umt_cli.evaluation.classification`). One `middle` clip by default.
- `linear-probe`: a video-text model's frozen vision side gives one feature per view; a logistic-regression probe
  (full-batch AdamW from zero weights, `umt_cli.evaluation.probe`) is trained with every view of a train video as a
  sample, and a test video's views are scored by their averaged softmax. The feature is the mean over frames of the
  per-frame pooled tokens, `model.vision_encoder(video, per_frame=True).pooled.mean(1)` (B, D): the `pool_norm`
  output the zero-shot embeddings project from, so it is exactly what the text side was aligned with, before the
  projection narrows it to E. Features are cached on disk (`FeatureCache`), keyed by every setting that made them.

Every mode reads the views with the classification test transform (short side to the model's size, `crops` crops
along the long side), also for a video-text model whose retrieval test resizes to a square: this is the protocol of
the numbers classification papers report. A video that cannot be decoded is skipped, counted and named, never
replaced. The cache knows a list by its fingerprint (path, size, mtime), not the videos' contents: replace a video
file in place and delete the cache folder.

Work is sharded over the processes of an `accelerate launch` in the blocks of `umt_cli.evaluation.features.Shard`, so
the numbers do not depend on how many processes ran. The probe is small: every process trains it on the gathered
features, and the main process reports.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from umt_cli.data.datasets import ListEntry, list_root, parse_video_list
from umt_cli.data.decode import FAILURE_REASONS
from umt_cli.data.textfiles import read_text
from umt_cli.errors import CheckpointError, DataError, UsageError
from umt_cli.evaluation.classification import (
    DEFAULT_TEMPLATES,
    classification_metrics,
    multiview_probs,
    zero_shot_logits,
    zero_shot_weights,
)
from umt_cli.evaluation.features import Shard
from umt_cli.evaluation.probe import FeatureCache, feature_settings, probe_logits, train_linear_probe
from umt_cli.evaluation.run import DEVICES, PRECISIONS, choice, default_out
from umt_cli.evaluation.runtime import WorkSettings
from umt_cli.evaluation.views import EvalClipDataset, collate_views
from umt_cli.models.loading import LoadedModel, checkpoint_record
from umt_cli.utils.dist import gather_objects, gather_rows
from umt_cli.utils.files import atomic_path
from umt_cli.utils.progress import progress

__all__ = [
    "MODES",
    "FINETUNED_VIEWS",
    "PROBE_FEATURE",
    "LabelledList",
    "ClassificationProtocol",
    "ClassificationSettings",
    "ListRows",
    "read_class_names",
    "read_labelled_list",
    "check_labels",
    "resolve_mode",
    "view_layout",
    "views_dataset",
    "map_views",
    "probe_features",
    "evaluate_classification",
    "run_classification",
    "write_predictions",
]

MODES = ("auto", "zero-shot", "linear-probe", "finetuned")
FINETUNED_VIEWS = (4, 3)
"""Default clips x crops of a fine-tuned classifier: the official Kinetics test (SPEC §4.4)."""
PROBE_FEATURE = "vision_encoder.pooled_per_frame.mean_over_frames"
"""The probe feature's name, part of the cache key: another pooling must never reuse these files."""
PROBE_EPOCHS, PROBE_LR = 100, 1e-2
PROBE_SEED = 0
"""The probe's batch-order seed (full-batch AdamW by default, so it only matters with mini-batches)."""


@dataclass(frozen=True)
class LabelledList:
    """A `path,label` list, the folder its paths are relative to, and its entries."""

    path: Path
    root: Path
    entries: list[ListEntry]

    @property
    def labels(self) -> Tensor:
        """(N,) long, in list order."""
        return torch.tensor([e.label for e in self.entries], dtype=torch.long)


@dataclass(frozen=True)
class ClassificationProtocol:
    """Everything that decides the numbers; printed above every result and stored with it.

    Attributes:
        mode: `zero-shot`, `linear-probe` or `finetuned` (never `auto`: resolved first).
        split: The list's name (e.g. `test`).
        num_frames, size: Frames per clip and pixels per side.
        sampling: `middle` (one clip) or `segments` (the official multi-clip test).
        num_clips, num_crops: Views per video = clips x crops; their softmax is averaged.
        templates: Zero-shot prompt templates (None in the other modes).
        probe_epochs, probe_lr: The linear probe's full-batch AdamW passes and learning rate (None elsewhere).
    """

    mode: str
    split: str
    num_frames: int
    size: int
    sampling: str
    num_clips: int
    num_crops: int
    templates: tuple[str, ...] | None = None
    probe_epochs: int | None = None
    probe_lr: float | None = None

    @property
    def views(self) -> int:
        return self.num_clips * self.num_crops


@dataclass(frozen=True)
class ClassificationSettings(WorkSettings):
    """How the work runs (no effect on the numbers): the batch size here, the rest in `WorkSettings`."""

    batch_size: int = 8


@dataclass(frozen=True)
class ListRows:
    """One output per video of a list, assembled on every process.

    Attributes:
        values: (N, ...) float32; rows of skipped videos are zeros.
        kept: (N,) bool, False for a video that could not be decoded.
        skipped: (index, path, reason) of each skipped video, in list order.
    """

    values: Tensor
    kept: Tensor
    skipped: list[tuple[int, str, str]]


# ------------------------------------------------------------------------------------------------ inputs and checks


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line, line i naming label i (trailing blank lines ignored).

    Raises:
        UsageError: The file is missing or a folder.
        DataError: Unreadable, empty, a blank line among the names (it would shift every later label), or a name
            given twice.
    """
    path = Path(path)
    lines = read_text(path, what="class names").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise DataError(f"{path}: no class names (expected one per line, line i = label i)")
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path} line {number}: blank line among the class names (line i names label i)")
        if name in seen:
            raise DataError(f"{path} line {number}: class {name!r} is also on line {seen[name]}")
        seen[name] = number
    return names


def read_labelled_list(option: str, path: str | Path, root: str | Path | None) -> LabelledList:
    """Parse a `path,label` list and find the folder its paths are relative to (`list_root`).

    Raises:
        UsageError: The list or the root folder does not exist (named with `option` / `--root`).
        DataError: A malformed line (named by `parse_video_list`).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{option}: {path} {'is a folder, not a list file' if path.is_dir() else 'not found'}")
    folder = list_root(path, root)
    if not folder.is_dir():
        where = "--root" if root is not None else f"{path.parent / 'videos_root.txt'}"
        raise UsageError(f"{where}: {folder} is not a folder (the videos of {path} are relative to it)")
    return LabelledList(path, folder, parse_video_list(path))


def check_labels(videos: LabelledList, class_names: Sequence[str], classes_file: str | Path) -> None:
    """Every label of the list must name a class.

    Raises:
        DataError: The first label outside `0..classes - 1`, with its video, the list and the class file.
    """
    for entry in videos.entries:
        if not 0 <= entry.label < len(class_names):
            raise DataError(
                f"{videos.path}: label {entry.label} (video {entry.path}) is outside the {len(class_names)} classes "
                f"of {classes_file} (labels 0..{len(class_names) - 1})"
            )


def resolve_mode(requested: str, loaded: LoadedModel) -> str:
    """`auto` -> `finetuned` for a classifier, `zero-shot` for a video-text model; other modes are checked against
    the model family.

    Raises:
        CheckpointError: The mode needs the other family.
    """
    family = loaded.config.kind
    if requested == "auto":
        return "finetuned" if family == "classifier" else "zero-shot"
    if requested == "finetuned" and family != "classifier":
        raise CheckpointError(
            f"{loaded.source}: --mode finetuned needs a fine-tuned classifier, but this is a {family} model "
            f"({loaded.kind})",
            hint="use --mode zero-shot or --mode linear-probe with a video-text model",
        )
    if requested != "finetuned" and family != "video-text":
        raise CheckpointError(
            f"{loaded.source}: --mode {requested} needs a video-text model, but this is a {family} model "
            f"({loaded.kind})",
            hint="use --mode finetuned (or --mode auto) with a fine-tuned classifier",
        )
    return requested


def view_layout(mode: str, clips: int | None, crops: int | None) -> tuple[str, int, int]:
    """(sampling, clips, crops): the official 4 x 3 `segments` test for a fine-tuned classifier, one `middle` clip
    and one crop otherwise; more than one clip always uses `segments` (`middle` has one)."""
    default_clips, default_crops = FINETUNED_VIEWS if mode == "finetuned" else (1, 1)
    clips = default_clips if clips is None else clips
    crops = default_crops if crops is None else crops
    sampling = "segments" if mode == "finetuned" or clips > 1 else "middle"
    return sampling, clips, crops


def views_dataset(
    videos: LabelledList, protocol: ClassificationProtocol, loaded: LoadedModel, backend: str
) -> EvalClipDataset:
    """The test views of a list at the protocol's geometry, normalised with the model's pixel statistics."""
    pre = loaded.config.preprocess
    return EvalClipDataset(
        videos.entries, videos.root, num_frames=protocol.num_frames, size=protocol.size, mean=pre.mean, std=pre.std,
        sampling=protocol.sampling, num_clips=protocol.num_clips, num_crops=protocol.num_crops, backend=backend,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- sharded passes


@torch.no_grad()
def map_views(
    fn: Callable[[Tensor], Tensor],
    dataset: EvalClipDataset,
    settings: ClassificationSettings,
    *,
    item_shape: tuple[int, ...],
    what: str,
) -> ListRows:
    """Apply `fn` to every video's views, this process's blocks only, assembled on every process.

    Args:
        fn: `video (B, V, C, T, S, S)` on the device -> (B, *item_shape).
        dataset: The views of a list.
        item_shape: One video's output shape (a process that decoded nothing still contributes a tensor).
        what: The progress bar's label.
    """
    device = torch.device(settings.device)
    blocks = Shard(settings.rank, settings.world).blocks(len(dataset), settings.batch_size)
    mine = [i for block in blocks for i in block]
    # Batches of the concatenated blocks are the blocks themselves: only the list's last block can be short.
    loader = DataLoader(Subset(dataset, mine), batch_size=settings.batch_size, shuffle=False,
                        num_workers=settings.num_workers, collate_fn=collate_views)  # fmt: skip
    rows: list[Tensor] = []
    parts: list[Tensor] = []
    skipped: list[tuple[int, str, str]] = []
    with progress(what, len(mine), enabled=settings.show_progress and settings.main) as bar:
        for batch in loader:
            skipped += [(f.index, f.path, f.reason) for f in batch.failures]
            if batch.video is not None:
                with settings.autocast():
                    parts.append(fn(batch.video.to(device)).float().cpu())  # (b, *item_shape)
                rows.append(batch.indices)
            bar.advance(len(batch.indices) + len(batch.failures))
    local = torch.cat(parts) if parts else torch.zeros((0, *item_shape))
    index = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    total = len(dataset)
    values = gather_rows(local.to(device), index.to(device), total).cpu()
    kept = gather_rows(torch.ones(len(index), dtype=torch.long, device=device), index.to(device), total).cpu()
    everyone = sorted(s for part in gather_objects(skipped) for s in part)
    return ListRows(values, kept.bool(), everyone)


def _require_some(rows: ListRows, videos: LabelledList) -> None:
    if not rows.kept.any():
        first = rows.skipped[0] if rows.skipped else (0, "", "no videos")
        raise DataError(
            f"{videos.path}: none of its {len(videos.entries)} videos could be decoded (first: {first[1]}: {first[2]})"
        )


def _classifier_fn(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """Views -> the softmax averaged over views of the classifier's logits (B, classes)."""
    return lambda video: multiview_probs(model, video)


def _zero_shot_fn(model: torch.nn.Module, weights: Tensor) -> Callable[[Tensor], Tensor]:
    """Views -> the softmax averaged over views of the frame-averaged cosines with each class (B, classes)."""
    return lambda video: multiview_probs(lambda clips: zero_shot_logits(model.encode_video(clips)[1], weights), video)


def _probe_feature_fn(model: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """Views (B, V, C, T, S, S) -> (B, V, D) frozen features (see the module docstring for the choice)."""

    def features(video: Tensor) -> Tensor:
        clips = video.flatten(0, 1)  # (B * V, C, T, S, S)
        pooled = model.vision_encoder(clips, per_frame=True).pooled  # (B * V, T, D)
        return pooled.mean(1).view(*video.shape[:2], -1)  # (B, V, D)

    return features


# ---------------------------------------------------------------------------------------------- linear probe


def probe_features(
    loaded: LoadedModel,
    videos: LabelledList,
    protocol: ClassificationProtocol,
    settings: ClassificationSettings,
    cache: FeatureCache,
) -> tuple[ListRows, dict[str, Any]]:
    """The probe features (N, V, D) of a list, from the cache when every process finds them there.

    Returns:
        The rows, and `{path, hit}` of the cache file.
    """
    key = _probe_cache_settings(loaded, videos, protocol)
    cached = cache.load(key)
    if cached is not None and not {"features", "kept", "reasons"} <= set(cached):
        cached = None  # written for these settings by something else: recompute, as for any unusable file
    # One decision for all processes: a process that missed would otherwise wait alone in the collectives.
    hit = all(gather_objects(cached is not None))
    if hit:
        rows = _rows_from_cache(cached, videos)  # type: ignore[arg-type]
    else:
        width = loaded.model.vision_encoder.pool_norm.normalized_shape[0]
        dataset = views_dataset(videos, protocol, loaded, settings.backend)
        rows = map_views(_probe_feature_fn(loaded.model), dataset, settings, item_shape=(protocol.views, width),
                         what=f"features {videos.path.name}")  # fmt: skip
        if settings.main:
            cache.save(key, _rows_to_cache(rows))
    if settings.main:
        how = "read from the cache" if hit else "computed and cached"
        print(f"features of {videos.path}: {how} ({cache.path(key)})", file=sys.stderr)
    return rows, {"path": str(cache.path(key)), "hit": hit}


def _probe_cache_settings(loaded: LoadedModel, videos: LabelledList, protocol: ClassificationProtocol) -> dict:
    pre = loaded.config.preprocess
    return feature_settings(
        model=loaded.sha256 or loaded.source, data_list=videos.path, num_frames=protocol.num_frames,
        size=protocol.size, sampling=protocol.sampling, num_clips=protocol.num_clips, num_crops=protocol.num_crops,
        mean=pre.mean, std=pre.std, root=str(videos.root.resolve()), feature=PROBE_FEATURE,
    )  # fmt: skip


def _rows_to_cache(rows: ListRows) -> dict[str, Tensor]:
    """Tensors only: a skipped video's reason is stored as its index in `FAILURE_REASONS` (-1 = decoded)."""
    reasons = torch.full((len(rows.kept),), -1, dtype=torch.long)
    for index, _, reason in rows.skipped:
        reasons[index] = FAILURE_REASONS.index(reason)
    return {"features": rows.values, "kept": rows.kept, "reasons": reasons}


def _rows_from_cache(tensors: dict[str, Tensor], videos: LabelledList) -> ListRows:
    reasons = tensors["reasons"]
    skipped = [
        (i, str(videos.root / videos.entries[i].path), FAILURE_REASONS[int(reasons[i])])
        for i in (reasons >= 0).nonzero().flatten().tolist()
    ]
    return ListRows(tensors["features"], tensors["kept"].bool(), skipped)


def _probe_scores(
    loaded: LoadedModel,
    train: LabelledList,
    test: LabelledList,
    protocol: ClassificationProtocol,
    settings: ClassificationSettings,
    cache: FeatureCache,
    num_classes: int,
) -> tuple[ListRows, dict[str, Any]]:
    """Train the probe on the train list's features (each view a sample) and score the test list's views."""
    train_rows, train_cache = probe_features(loaded, train, protocol, settings, cache)
    _require_some(train_rows, train)
    test_rows, test_cache = probe_features(loaded, test, protocol, settings, cache)
    kept = train_rows.kept
    x = train_rows.values[kept].flatten(0, 1)  # (n * V, D): every view of a train video is a sample
    y = train.labels[kept].repeat_interleave(protocol.views)  # (n * V,)
    device = torch.device(settings.device)
    with progress("linear probe", protocol.probe_epochs, enabled=settings.show_progress and settings.main) as bar:
        probe = train_linear_probe(x.to(device), y.to(device), num_classes=num_classes, epochs=protocol.probe_epochs,
                                   lr=protocol.probe_lr, seed=PROBE_SEED, progress=bar)  # fmt: skip
    scores = multiview_probs(lambda feats: probe_logits(probe, feats), test_rows.values.to(device)).cpu()
    info = {
        "train_list": str(train.path),
        "train_videos": len(train.entries),
        "skipped_train_videos": len(train_rows.skipped),
        "skipped_train": [{"video": path, "reason": reason} for _, path, reason in train_rows.skipped],
        "cache": {"train": train_cache, "test": test_cache},
    }
    return ListRows(scores, test_rows.kept, test_rows.skipped), info


# ---------------------------------------------------------------------------------------------- the evaluation


def evaluate_classification(
    loaded: LoadedModel,
    class_names: Sequence[str],
    test: LabelledList,
    protocol: ClassificationProtocol,
    settings: ClassificationSettings,
    *,
    train: LabelledList | None = None,
    cache: FeatureCache | None = None,
) -> tuple[dict[str, Any], ListRows]:
    """Run the protocol.

    Returns:
        The JSON-ready result (protocol, counts, skipped videos, metrics, chance, time), and the per-video scores
        (N, classes) the metrics were computed from (probabilities averaged over views; zeros where skipped).

    Raises:
        UsageError: A linear probe without `train` / `cache`, or a classifier whose head is not `class_names` wide.
        DataError: No test (or train) video could be decoded.
    """
    started = time.perf_counter()
    device = torch.device(settings.device)
    loaded.model.to(device).eval()
    probe_info = None
    if protocol.mode == "linear-probe":
        if train is None or cache is None:
            raise UsageError("--mode linear-probe needs --train-list LIST.csv")
        rows, probe_info = _probe_scores(loaded, train, test, protocol, settings, cache, len(class_names))
    else:
        fn = _scoring_fn(loaded, class_names, protocol, settings)
        dataset = views_dataset(test, protocol, loaded, settings.backend)
        rows = map_views(fn, dataset, settings, item_shape=(len(class_names),), what="classifying")
    _require_some(rows, test)
    metrics = classification_metrics(rows.values[rows.kept], test.labels[rows.kept], class_names)
    k = metrics["top5_k"]
    result = {
        "task": "classification",
        "checkpoint": checkpoint_record(loaded),
        "data": str(test.path),
        "root": str(test.root),
        "protocol": {
            **asdict(protocol),
            "views": protocol.views,
            "videos": len(test.entries),
            "classes": len(class_names),
        },  # fmt: skip
        "counts": {
            "videos": len(test.entries),
            "evaluated": metrics["num_videos"],
            "skipped_videos": len(rows.skipped),
        },
        "skipped": [{"video": path, "reason": reason} for _, path, reason in rows.skipped],
        "metrics": metrics,
        "chance": {
            "top1": 100.0 / len(class_names),
            "top5": 100.0 * k / len(class_names),
            "mean_class_accuracy": 100.0 / len(class_names),
        },  # fmt: skip
        "processes": settings.world,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if probe_info is not None:
        result["probe"] = probe_info
    return result, rows


def _scoring_fn(
    loaded: LoadedModel, class_names: Sequence[str], protocol: ClassificationProtocol, settings: ClassificationSettings
) -> Callable[[Tensor], Tensor]:
    model = loaded.model
    if protocol.mode == "finetuned":
        if model.head.out_features != len(class_names):
            raise UsageError(
                f"--classes: {len(class_names)} class names, but the classifier {loaded.source} has "
                f"{model.head.out_features} outputs"
            )
        return _classifier_fn(model)
    from umt_cli.data.text import build_tokenizer

    pre = loaded.config.preprocess
    tokenizer = build_tokenizer(loaded.tokenizer, add_sep=pre.add_sep)
    with settings.autocast():
        weights = zero_shot_weights(model, tokenizer, class_names, protocol.templates or DEFAULT_TEMPLATES,
                                    max_len=pre.max_len, add_sep=pre.add_sep)  # fmt: skip
    return _zero_shot_fn(model, weights)


# ---------------------------------------------------------------------------------------------- the command


def _at_least(option: str, value: int | float | None, low: float, *, strict: bool = False) -> None:
    if value is not None and (value <= low if strict else value < low):
        raise UsageError(f"{option} {value}: must be {'greater than' if strict else 'at least'} {low:g}")


def _check_options(o: dict[str, Any]) -> None:
    """Checks that need no file: each names its option."""
    choice("--mode", o["mode"], MODES)
    _at_least("--clips", o["clips"], 1)
    _at_least("--crops", o["crops"], 1)
    _at_least("--probe-epochs", o["probe_epochs"], 1)
    _at_least("--probe-lr", o["probe_lr"], 0, strict=True)
    if o["mode"] == "linear-probe" and o["train_list"] is None:
        raise UsageError("--mode linear-probe needs --train-list LIST.csv: the labelled videos the probe learns from")
    if o["train_list"] is not None and o["mode"] != "linear-probe":
        raise UsageError(f"--train-list: only --mode linear-probe trains on a list (the mode is {o['mode']})")


def run_classification(**options: Any) -> dict[str, Any]:
    """`umt eval classification` (options as the command's parameters); returns the result.

    Prints the protocol line and the table and writes `results.json`, `report.md`, `confusion.png` (up to 50
    classes) and `predictions.csv` into `--out` on the main process.
    """
    from umt_cli.evaluation.confusion import confusion_png
    from umt_cli.evaluation.report import classification_markdown, print_classification, write_report
    from umt_cli.evaluation.runtime import end_runtime, eval_runtime
    from umt_cli.models.loading import load_model

    o = options
    _check_options(o)
    runtime = eval_runtime(choice("--device", o["device"], DEVICES),
                           choice("--precision", o["precision"], PRECISIONS))  # fmt: skip
    test = read_labelled_list("--data", o["data"], o["root"])
    class_names = read_class_names(o["classes"])
    check_labels(test, class_names, o["classes"])
    train = read_labelled_list("--train-list", o["train_list"], o["root"]) if o["train_list"] else None
    if train is not None:
        check_labels(train, class_names, o["classes"])
    loaded = load_model(o["ckpt"], expect="any", trust=o["trust_checkpoint"], text_encoder=o["text_encoder"],
                        num_frames=o["frames"])  # fmt: skip
    mode = resolve_mode(o["mode"], loaded)
    sampling, clips, crops = view_layout(mode, o["clips"], o["crops"])
    split = o["split"] or test.path.stem
    protocol = ClassificationProtocol(
        mode=mode, split=split, num_frames=loaded.config.vision.num_frames, size=loaded.config.preprocess.size,
        sampling=sampling, num_clips=clips, num_crops=crops,
        templates=tuple(o["templates"] or DEFAULT_TEMPLATES) if mode == "zero-shot" else None,
        probe_epochs=(o["probe_epochs"] or PROBE_EPOCHS) if mode == "linear-probe" else None,
        probe_lr=(o["probe_lr"] or PROBE_LR) if mode == "linear-probe" else None,
    )  # fmt: skip
    settings = ClassificationSettings(
        batch_size=o["batch_size"], num_workers=o["workers"], rank=runtime.rank, world=runtime.world,
        device=runtime.device, autocast=runtime.autocast,
    )  # fmt: skip
    out = Path(o["out"]) if o["out"] is not None else default_out("classification", Path(o["ckpt"]), split)
    cache = FeatureCache(Path(o["cache"]) if o["cache"] is not None else out / "features")
    result, scores = evaluate_classification(loaded, class_names, test, protocol, settings, train=train, cache=cache)
    if runtime.main:
        out.mkdir(parents=True, exist_ok=True)
        png = confusion_png(result["metrics"]["confusion"], class_names, out / "confusion.png")
        result["confusion_png"] = str(png) if png is not None else None
        result["predictions_csv"] = str(write_predictions(out / "predictions.csv", test, scores))
        files = write_report(out, result, classification_markdown(result))
        print_classification(result)
        picture = f"  confusion: {png}" if png is not None else ""
        print(f"results: {files['results']}  report: {files['report']}{picture}")
    end_runtime()
    return result


def write_predictions(path: Path, videos: LabelledList, scores: ListRows, top: int = 5) -> Path:
    """`video,label,predicted,score,top5` for each scored video in list order, atomically: `score` is the predicted
    class's probability (averaged over views), `top5` the best classes (space-separated, best first, ties to the lower
    index as the metrics break them)."""
    ranked = torch.sort(scores.values, dim=1, descending=True, stable=True)
    order = ranked.indices[:, :top]  # (N, k)
    lines = [f"video,label,predicted,score,top{order.shape[1]}"]
    for i in scores.kept.nonzero().flatten().tolist():
        entry, best = videos.entries[i], order[i].tolist()
        score = float(ranked.values[i, 0])
        lines.append(f"{_csv_field(entry.path)},{entry.label},{best[0]},{score:.6g},{' '.join(map(str, best))}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
