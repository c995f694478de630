"""Action-recognition fine-tuning of the UMT video encoder (official `single_modality/run_class_finetuning.py`).

Each step: a batch of clips, each decoded once and augmented into `data.repeats` views (RandAugment, random-resized
crop, flip, random erasing; `umt_cli.data.clip_augment.FinetuneTransform`), mixed by Mixup/CutMix into soft targets
with label smoothing, classified, soft-target cross-entropy. Layer-wise learning-rate decay, AdamW and the cosine
schedule come from the engine (`umt_cli.training`). After every epoch the held-out `data.val_list` is classified
(one view) and the best epoch's weights are kept as `best.safetensors`; after training the `data.test_list` gets the
official multi-view test (`eval.clips` x `eval.crops`, softmax averaged) with them.

Randomness: frames, augmentation and replacements come from generators seeded by (seed, epoch, sample index), the
Mixup draws from (seed, epoch, the batch's first sample index), so a run's numbers do not depend on how many workers
or processes share the data; drop path uses the global torch RNG, seeded per process and checkpointed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from umt_cli import __version__
from umt_cli.data.clip_augment import ClipMixup, FinetuneTransform, generator_seed
from umt_cli.data.datasets import VideoListDataset, list_root, recipe_clip_loader, require_file
from umt_cli.data.loaders import ClipBatch
from umt_cli.data.transforms import NORMALIZATION
from umt_cli.errors import CheckpointError, DataError
from umt_cli.models.classifier import VideoClassifier, build_classifier
from umt_cli.models.config import ClassifierConfig, Preprocess, VisionConfig
from umt_cli.models.finetune_init import InitReport, init_classifier
from umt_cli.recipe import FinetuneRecipe
from umt_cli.training.loop import StepOutput, WeightsExport, fit
from umt_cli.training.plan import plan_steps
from umt_cli.training.session import Run, Session, assemble, open_session
from umt_cli.utils.checkpoint import save_weights
from umt_cli.utils.files import write_json
from umt_cli.utils.optim import build_adamw
from umt_cli.utils.seed import generator_for
from umt_cli.variants import STUDENT_PRESETS

__all__ = ["Components", "setup", "step", "run", "classifier_config", "soft_cross_entropy"]

MIXUP_KEY = 7  # keeps the Mixup generator apart from the samples' own (seed, epoch, index) generators
WEIGHTS = "classifier.safetensors"
BEST = "best.safetensors"


@dataclass(frozen=True)
class Components:
    """What `step` and the validation need besides the batch."""

    recipe: FinetuneRecipe
    training: Run
    classes: list[str]
    mixup: ClipMixup | None  # None when both Mixup and CutMix are off
    config: ClassifierConfig


def classifier_config(recipe: FinetuneRecipe, num_classes: int) -> ClassifierConfig:
    """The classifier of `[model]` for `num_classes`, with the evaluation preprocessing of the official test."""
    m = recipe.model
    mean, std = NORMALIZATION[recipe.augment.normalize]
    vision = VisionConfig(**STUDENT_PRESETS[m.preset], img_size=m.img_size, num_frames=m.num_frames,
                          tubelet=m.tubelet, pos_temporal=m.pos_temporal)  # fmt: skip
    preprocess = Preprocess(mean=mean, std=std, size=m.img_size, num_frames=m.num_frames, resize="crop")
    return ClassifierConfig(vision=vision, num_classes=num_classes, preprocess=preprocess)


def build_dataset(recipe: FinetuneRecipe, *, status_dir: Path | None) -> VideoListDataset:
    """The training clips, each giving `data.repeats` augmented views."""
    d, decode, a, m = recipe.data, recipe.decode, recipe.augment, recipe.model
    require_file("data.train_list", d.train_list)
    mean, std = NORMALIZATION[a.normalize]
    loader = recipe_clip_loader(recipe, num_frames=m.num_frames, status_dir=status_dir)
    transform = FinetuneTransform(
        m.img_size, randaugment=a.randaugment, scale=a.scale, ratio=a.ratio, flip=a.flip, erasing=a.erasing,
        mean=mean, std=std, repeats=d.repeats,
    )  # fmt: skip
    return VideoListDataset(d.train_list, list_root(d.train_list, d.root), loader=loader, transform=transform,
                            seed=recipe.run.seed, max_retries=decode.max_retries)  # fmt: skip


def build_model(
    recipe: FinetuneRecipe, config: ClassifierConfig, classes: list[str]
) -> tuple[VideoClassifier, InitReport | None]:
    """The classifier (identical initial weights on every process), from `init.checkpoint` when given."""
    from umt_cli.evaluation.classify import read_class_names

    torch.manual_seed(recipe.run.seed)
    m = recipe.model
    model = build_classifier(config, drop_path=m.drop_path, checkpoint_blocks=m.checkpoint_blocks,
                             head_init_scale=m.head_init_scale).train()  # fmt: skip
    init = recipe.init
    if init.checkpoint is None:
        return model, None
    label_maps = None
    if init.label_map is not None:
        require_file("init.label_map", init.label_map)
        label_maps = (read_class_names(init.label_map), classes)
    try:
        report = init_classifier(model, init.checkpoint, trust=init.trust, how_to_trust="set init.trust = true",
                                 label_maps=label_maps)  # fmt: skip
    except CheckpointError as error:  # named by its recipe key
        raise CheckpointError(f"init.checkpoint: {error}", hint=error.hint) from None
    return model, report


def setup(recipe: FinetuneRecipe, session: Session, overrides: list[str]) -> Components:
    """Data, model, plan and optimizer of a fine-tuning run; the run directory is written only once all are built."""
    from umt_cli.evaluation.classify import LabelledList, check_labels, read_class_names

    d, acc = recipe.data, session.accelerator
    for key, path in (("data.classes", d.classes), ("data.val_list", d.val_list), ("data.test_list", d.test_list)):
        if path is not None:  # before any training: a typo must not surface after hours
            require_file(key, path)
    classes = read_class_names(d.classes)
    dataset = build_dataset(recipe, status_dir=session.decoding_status_dir())
    check_labels(LabelledList(d.train_list, dataset.root, dataset.entries), classes, d.classes)
    config = classifier_config(recipe, len(classes))
    with session.main_warns():
        model, report = build_model(recipe, config, classes)
    session.seed_process()  # drop path differs per process
    sampler, loader = session.train_loader(dataset)
    clips = d.batch_size * acc.num_processes * recipe.optim.grad_accum  # clips per optimizer step
    if len(dataset) < clips:
        raise DataError(f"{len(dataset)} training clips do not fill one step of {clips} "
                        "(data.batch_size x processes x optim.grad_accum)")  # fmt: skip
    # Official: the learning rate scales with the views of a step (clips x repeats) / 256.
    plan = plan_steps(len(dataset) // clips, global_batch=clips * d.repeats, optim=recipe.optim,
                      schedule=recipe.schedule)  # fmt: skip
    o, depth = recipe.optim, config.vision.depth
    optimizer = build_adamw(model, lr=plan.peak_lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                            layer_decay=(recipe.model.layer_decay, depth))  # fmt: skip
    training = assemble(session, model=model, optimizer=optimizer, sampler=sampler, loader=loader, plan=plan,
                        overrides=overrides)  # fmt: skip
    if training.main and report is not None:
        write_json(training.run_dir / "init.json", vars(report) | {"ignored": len(report.ignored),
                                                                   "ignored_examples": report.ignored[:5]})  # fmt: skip
    a = recipe.augment
    mixup = None
    if a.mixup > 0 or a.cutmix > 0:
        mixup = ClipMixup(len(classes), mixup=a.mixup, cutmix=a.cutmix, switch_prob=a.switch_prob,
                          label_smoothing=a.label_smoothing)  # fmt: skip
    return Components(recipe, training, classes, mixup, config)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of −Σ targets · log_softmax(logits) (timm's `SoftTargetCrossEntropy`)."""
    return torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()


def smoothed_targets(labels: Tensor, classes: int, smoothing: float) -> Tensor:
    """One-hot targets with label smoothing: 1 − s + s / C on the label, s / C elsewhere."""
    off = smoothing / classes
    return torch.full((len(labels), classes), off, device=labels.device).scatter_(
        1, labels[:, None], 1 - smoothing + off
    )


def step(c: Components, batch: ClipBatch, epoch: int) -> StepOutput:
    """Views of the batch -> Mixup/CutMix -> classifier -> soft-target cross-entropy."""
    acc = c.training.accelerator
    video, labels = batch.video, batch.label
    if video.ndim == 6:  # (B, R, C, T, H, W): R views of each clip, side by side
        repeats = video.shape[1]
        video, labels = video.flatten(0, 1), labels.repeat_interleave(repeats)
    video, labels = video.to(acc.device, non_blocking=True), labels.to(acc.device)
    if c.mixup is not None:
        seed = generator_seed(generator_for(c.recipe.run.seed, epoch, int(batch.index[0]), MIXUP_KEY))
        video, targets = c.mixup(video, labels, seed)
    else:
        targets = smoothed_targets(labels, len(c.classes), c.recipe.augment.label_smoothing)
    with acc.autocast():
        logits = c.training.model(video)  # (B·R, classes)
    loss = soft_cross_entropy(logits.float(), targets.float())
    return StepOutput(total=loss, parts={"loss/ce": loss.detach()})


class Validator:
    """After each epoch: top-1 on `data.val_list` (one view), recorded in `validation.jsonl`; the best epoch's
    weights saved as `best.safetensors`. An epoch already recorded is skipped (a resumed run repeats no work)."""

    def __init__(self, c: Components) -> None:
        self.c = c
        self.records = c.training.run_dir / "validation.jsonl"

    def __call__(self, epoch: int) -> dict[str, float] | None:
        if self.c.recipe.data.val_list is None or epoch in self._recorded():
            return None
        result = evaluate(self.c, self.c.recipe.data.val_list, split="val", clips=1, crops=1)
        top1, training = result["metrics"]["top1"], self.c.training
        if training.main:
            best = max((r["top1"] for r in self._recorded().values()), default=float("-inf"))
            if top1 > best:
                state = training.accelerator.unwrap_model(training.model).state_dict()
                save_weights(training.run_dir / BEST, state, _metadata(self.c, {"epoch": str(epoch)}))
            with self.records.open("a", encoding="utf-8") as file:
                file.write(json.dumps({"epoch": epoch, "top1": top1, "top5": result["metrics"]["top5"]}) + "\n")
        training.accelerator.wait_for_everyone()
        return {"val/top1": top1, "val/top5": result["metrics"]["top5"]}

    def _recorded(self) -> dict[int, dict]:
        if not self.records.is_file():
            return {}
        lines = self.records.read_text(encoding="utf-8").splitlines()
        return {record["epoch"]: record for record in map(json.loads, lines)}


def evaluate(c: Components, list_file: Path, *, split: str, clips: int, crops: int) -> dict[str, Any]:
    """Classify a `path,label` list with the model being trained (sharded over the processes)."""
    from umt_cli.evaluation.classify import (
        ClassificationProtocol,
        ClassificationSettings,
        evaluate_classification,
        read_labelled_list,
    )
    from umt_cli.models.loading import LoadedModel

    training = c.training
    model = training.accelerator.unwrap_model(training.model).eval()
    loaded = LoadedModel(model, c.config, None, str(training.run_dir), "umt-finetune", None)
    videos = read_labelled_list(f"data.{split}_list", list_file, c.recipe.data.root)
    protocol = ClassificationProtocol(mode="finetuned", split=split, num_frames=c.config.vision.num_frames,
                                      size=c.config.vision.img_size, sampling="segments", num_clips=clips,
                                      num_crops=crops)  # fmt: skip
    acc = training.accelerator
    settings = ClassificationSettings(batch_size=c.recipe.eval.batch_size, num_workers=c.recipe.data.num_workers,
                                      backend=c.recipe.decode.backend, rank=acc.process_index,
                                      world=acc.num_processes, device=str(acc.device), autocast=acc.autocast,
                                      show_progress=False)  # fmt: skip
    result, _ = evaluate_classification(loaded, c.classes, videos, protocol, settings)
    return result


def run(
    recipe: FinetuneRecipe, run_dir: Path, *, resume: str | None = None, overrides: list[str] | None = None
) -> dict[str, object]:
    """Fine-tune, validate every epoch, keep the best weights, export `classifier.safetensors` (the last epoch) and
    test the best (or last) weights on `data.test_list`; returns the run summary (also `summary.json`)."""
    c = setup(recipe, open_session(recipe, run_dir, resume=resume), overrides or [])
    final_test = partial(_final_test, c) if recipe.data.test_list is not None else None
    return fit(c.training, partial(step, c), WeightsExport(WEIGHTS, _metadata(c, {})), on_epoch_end=Validator(c),
               on_end=final_test)  # fmt: skip


def _final_test(c: Components) -> dict[str, Any]:
    """The official multi-view test of the best epoch's weights (the last epoch's without validation): `{"test":
    ...}` for the summary. The model ends with those weights (the last epoch's are already exported)."""
    from safetensors.torch import load_file

    best = c.training.run_dir / BEST
    if best.is_file():
        c.training.accelerator.unwrap_model(c.training.model).load_state_dict(load_file(best))
    result = evaluate(c, c.recipe.data.test_list, split="test", clips=c.recipe.eval.clips, crops=c.recipe.eval.crops)
    if c.training.main:
        write_json(c.training.run_dir / "test.json", result)
    metrics = {key: result["metrics"][key] for key in ("top1", "top5")}
    return {"test": {"weights": BEST if best.is_file() else WEIGHTS, **metrics}}


def _metadata(c: Components, extra: dict[str, str]) -> dict[str, str]:
    """What the weights files say about themselves (safetensors headers hold strings)."""
    return {"format": "umt-classifier", "umt_version": __version__, "config": json.dumps(c.config.to_dict()),
            "classes": json.dumps(c.classes), **extra}  # fmt: skip
