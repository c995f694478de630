"""`umt quickstart`: the whole chain on the built-in synthetic set, on CPU, in a fresh run directory.

prepare-data -> distill (stage 1) -> pretrain (stage 2) -> eval retrieval -> eval classification (zero-shot) ->
finetune (the stage-2 video encoder as a direction-of-motion classifier) -> export, then a table of what each step
produced and whether the model learned: text-to-video R@1 on the held-out test split against chance, and
direction-of-motion captions (invisible in any single frame) against a frame-averaged baseline of the same model
(`umt_cli.evaluation.motion`).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from umt_cli.data.prepare.synthetic import FORMAT, prepare_synthetic
from umt_cli.recipe import DistillRecipe, FinetuneRecipe, PretrainRecipe, load_recipe
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.recipe.prepare import SyntheticSource

__all__ = ["SIZES", "QuickstartSize", "run_quickstart", "learning_verdict"]

STEPS = ("prepare-data", "distill", "pretrain", "eval retrieval", "eval classification", "finetune", "export")
LEARNING_FACTOR = 5.0
"""Text-to-video R@1 must reach this multiple of chance for the run to count as having learned."""


@dataclass(frozen=True)
class QuickstartSize:
    """How big the demo is: the synthetic set and the recipe overrides of each stage (after `DISTILL`/`PRETRAIN`)."""

    data: dict[str, int]
    distill: tuple[str, ...] = ()
    pretrain: tuple[str, ...] = ()
    finetune: tuple[str, ...] = ()


DISTILL = (
    # 32 px (2 x 2 patches a frame): the tiny ViT learns the direction of motion there within a few hundred steps;
    # at 64 px it needs far more than the demo's budget. Stage 1 runs at the resolution stage 2 starts from.
    "student.img_size=32",
    "teacher.input_size=32",
    "decode.cache_mb=1024",  # 512 videos of 96 x 80 x 32 frames: ~380 MB, each decoded once instead of ~20 times
)
"""The quickstart's stage-1 overrides (stage 2 takes them too)."""

PRETRAIN = (
    *DISTILL,
    "student.drop_path=0",
    "data.num_workers=1",  # crops and the teacher's pass overlap
    # Contrastive learning needs negatives: 64 a batch (the recipe's 8/16 suit the 4-step tests, not learning).
    "data.corpora.clips.batch_size=64",
    "data.corpora.stills.batch_size=256",  # 4 still batches an epoch beside 24 of clips: motion needs the steps
    # 16 tokens a clip here: the official 80 % mask would leave 3, too few to see where the shape goes; 1 % of 16
    # masks none.
    "masking.video.mask_ratio=0.01",
    "masking.image.mask_ratio=0.01",
    # VTC alone. With a random teacher (UTA) and random BERT, the other three losses held these tiny encoders at
    # colour-only alignment for the whole budget, even weighted 0.1 (docs/pitfalls.md, P39).
    "loss.uta.weight=0",
    "loss.vtm.weight=0",
    "loss.mlm.weight=0",
    "augment.crop.scale=[0.8,1.0]",  # the shape stays in view for its whole path
    "optim.lr=1e-3",
    "schedule.warmup_epochs=2",
)
"""The quickstart's stage-2 overrides: what makes a tiny model from random weights learn on CPU in minutes."""

FINETUNE = (
    "model.img_size=32",  # the resolution the stage-2 encoder was aligned at
    # 8 frames, not stage 2's 4: the sign of the motion (left or right, not just horizontal) needs the finer steps
    # (in a plain training loop from the same stage-2 encoder, 800 steps: test top-1 ~85 % at 8 frames, ~52 % at 4).
    "model.num_frames=8",
    # A fresh head at upstream's 0.001 leaves Adam moving the tiny encoder on noise for hundreds of steps (P40).
    "model.head_init_scale=1.0",
    # Stage 2 left the sign of the motion barely learned: every layer must change, at full rate and without drop path.
    "model.layer_decay=1.0",
    "model.drop_path=0",
    "decode.cache_mb=2048",  # 2,048 videos of 80 x 80 x 32 frames: ~1.3 GB, each decoded once, not once an epoch
    # The direction is the label: no RandAugment (its PIL ops cost ~15x the tiny model's step on CPU), no
    # Mixup/CutMix or erasing (they hide the moving shape in most views).
    'augment.randaugment=""',
    "augment.mixup=0",
    "augment.cutmix=0",
    "augment.erasing=0",
    # Whole square frames, as the test sees them (its short-side resize of a square frame is the whole frame, and so
    # is each of its crops). A crop that differs from the test's geometry cost 10-25 points (docs/pitfalls.md, P41).
    "augment.scale=[1.0,1.0]",
    "augment.ratio=[1.0,1.0]",
    "data.batch_size=16",
    "data.repeats=1",  # 16 different videos a step: with 2,048 of them, more videos beat more views of each
    "optim.lr=5e-4",
    "schedule.epochs=12",  # 1,536 steps: test top-1 95.8 % (small size: seeds 0, 1; default: seed 0)
)
"""The quickstart's fine-tuning overrides (after the `quickstart/finetune` recipe)."""

FINETUNE_DATA = {"train": 2048, "val": 48, "test": 48, "width": 80, "height": 80}
"""The fine-tuning step's own labelled set (`data/synthetic-finetune/`), as a lab fine-tunes on a labelled set apart
from its pre-training corpus. Square frames, so the test's crops see every frame whole (80 x 80: 64 x 64 gave
91.7 % from the same encoder). 2,048 training videos: on 512 the classifier overfits at 79 % test top-1 (the sign
of the motion is learned from too few paths). 48 validation and 48 test videos: each of the 4 colours x 3 shapes
x 4 directions once, so the best epoch is chosen on as many videos as it is tested on."""

SIZES = {
    "default": QuickstartSize(data={"train": 512, "val": 16, "test": 48}, pretrain=("schedule.epochs=30",)),
    "small": QuickstartSize(
        data={"train": 512, "val": 8, "test": 48}, distill=("schedule.epochs=1",), pretrain=("schedule.epochs=30",)
    ),  # fmt: skip
}
"""`default`: the demo; `small`: the same chain in CI (one distillation epoch, a smaller validation split). Both
test on 48 videos: each of the 4 colours x 3 shapes x 4 directions once. Fewer training videos or stage-2 epochs
left some seeds at colour-only alignment (256 videos, or 20 epochs: R@1 4-5x chance, direction at chance)."""


def _synthetic(data: Path, options: dict[str, int], console: Console) -> Path:
    """Generate a synthetic data set once; reuse it when its manifest says it was made with the same options."""
    source = SyntheticSource(out=data, **options)
    made = _made_with(data / "manifest.json")
    if made.get("format") == FORMAT and made.get("options") == source.model_dump(mode="json"):
        console.print(f"reusing synthetic data in {data}", style="dim", markup=False)
        return data
    console.print(f"generating the synthetic data set in {data} ...", markup=False)
    prepare_synthetic(source)
    return data


def _made_with(manifest: Path) -> dict[str, Any]:
    """What a set's manifest records, or {} when it is missing, unreadable or not a JSON object (the set is remade)."""
    try:
        made = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return made if isinstance(made, dict) else {}


def _options(command: Callable[..., Any], **given: Any) -> dict[str, Any]:
    """A command's parameters with their CLI defaults, updated with `given` (the `run_*` functions take them all)."""
    defaults = {name: p.default for name, p in inspect.signature(command).parameters.items()}
    unknown = set(given) - set(defaults)
    if unknown:
        raise TypeError(f"{command.__name__} has no option(s) {sorted(unknown)}")
    return {**defaults, **given}


def _first_loss(run_dir: Path) -> float | None:
    """The first logged loss of a run (metrics.jsonl)."""
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            return record["loss"]
    return None


class _Steps:
    """Prints `step i/6 · name` before each step and keeps how long each took."""

    def __init__(self, console: Console) -> None:
        self.console, self.index, self.seconds = console, 0, {}
        self.last = time.perf_counter()

    def next(self, name: str, what: str) -> None:
        now = time.perf_counter()
        if self.index:
            self.seconds[STEPS[self.index - 1]] = round(now - self.last, 1)
        self.index, self.last = self.index + 1, now
        self.console.rule(f"step {self.index}/{len(STEPS)} · {name}: {what}", style="cyan")

    def done(self) -> None:
        self.seconds[STEPS[self.index - 1]] = round(time.perf_counter() - self.last, 1)


def run_quickstart(out: Path, *, size: str = "default", seed: int = 0) -> dict[str, Any]:
    """Run the chain; returns the summary (also written to `<run>/quickstart.json`)."""
    from umt_cli.cli import evaluate, export
    from umt_cli.evaluation.classify import run_classification
    from umt_cli.evaluation.motion import direction_check
    from umt_cli.evaluation.run import run_retrieval
    from umt_cli.export.run import run_export
    from umt_cli.models.loading import load_model
    from umt_cli.stages import distill, pretrain
    from umt_cli.utils.files import write_json

    console, chosen = Console(), SIZES[size]
    steps = _Steps(console)
    run_root = out / "runs" / time.strftime("%Y%m%d-%H%M%S")
    steps.next("prepare-data", "the synthetic sets (coloured shapes moving in four directions)")
    data = _synthetic(out / "data" / f"synthetic-{size}", chosen.data, console)
    labelled = _synthetic(out / "data" / "synthetic-finetune", FINETUNE_DATA, console)

    steps.next("distill", "stage 1, the tiny student from a tiny untrained teacher")
    stage1 = [f"data.train_list={data / 'train.csv'}", f"run.seed={seed}", *DISTILL, *chosen.distill]
    recipe = load_recipe(resolve_recipe("quickstart/distill"), stage1, expect=DistillRecipe)
    first = distill.run(recipe, run_root / "distill", overrides=stage1)

    steps.next("pretrain", "stage 2, video-text alignment with a tiny random BERT")
    stage2 = [
        f"data.corpora.clips.annotations={data / 'train.json'}",
        f"data.corpora.clips.root={data}",
        f"data.corpora.stills.annotations={data / 'train_images.json'}",
        f"data.corpora.stills.root={data}",
        f"text.encoder={data / 'bert'}",
        f"init.student={first['weights']}",
        f"run.seed={seed}",
        *PRETRAIN,
        *chosen.pretrain,
    ]
    recipe2 = load_recipe(resolve_recipe("quickstart/pretrain"), stage2, expect=PretrainRecipe)
    second = pretrain.run(recipe2, run_root / "pretrain", overrides=stage2)
    model_dir = run_root / "pretrain"

    steps.next("eval retrieval", "text<->video on the held-out test split")
    retrieval = run_retrieval(**_options(evaluate.retrieval, ckpt=model_dir, data=data / "test.json",
                                         out=run_root / "eval" / "retrieval", device="cpu"))  # fmt: skip
    motion = direction_check(load_model(model_dir), data / "test.json", data)

    steps.next("eval classification", "zero-shot direction of motion from the class names")
    classification = run_classification(**_options(
        evaluate.classification, ckpt=model_dir, data=data / "test.csv", classes=data / "classes.txt",
        out=run_root / "eval" / "classification", device="cpu"))  # fmt: skip

    steps.next("finetune", "the stage-2 video encoder fine-tuned to classify the direction of motion")
    tuned = _finetune(labelled, model_dir, run_root / "finetune", seed, chosen)

    steps.next("export", "a self-describing model folder")
    exported = run_export(**_options(export.export, ckpt=model_dir, out=run_root / "export"))
    steps.done()
    summary = _summary(data, run_root, first, second, retrieval, classification, motion, tuned, exported,
                       steps.seconds)  # fmt: skip
    write_json(run_root / "quickstart.json", summary)
    return summary


def _finetune(data: Path, stage2: Path, run_dir: Path, seed: int, size: QuickstartSize) -> dict[str, Any]:
    """Fine-tune the stage-2 video encoder on the labelled set `data`; its summary holds the multi-view test top-1."""
    from umt_cli.stages import finetune

    overrides = [*(f"data.{split}_list={data / f'{split}.csv'}" for split in ("train", "val", "test")),
                 f"data.classes={data / 'classes.txt'}", f"init.checkpoint={stage2 / 'video_text.safetensors'}",
                 f"run.seed={seed}", *FINETUNE, *size.finetune]  # fmt: skip
    recipe = load_recipe(resolve_recipe("quickstart/finetune"), overrides, expect=FinetuneRecipe)
    return finetune.run(recipe, run_dir, overrides=overrides)


def _summary(
    data: Path,
    run_root: Path,
    first: dict[str, Any],
    second: dict[str, Any],
    retrieval: dict[str, Any],
    classification: dict[str, Any],
    motion: dict[str, Any],
    tuned: dict[str, Any],
    exported: dict[str, Any],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """What each step produced, with chance beside every score."""

    def triple(values: dict[str, float]) -> str:
        return "/".join(f"{values[key]:.1f}" for key in ("R@1", "R@5", "R@10"))

    def recalls(direction: str) -> str:
        m = retrieval["metrics"]
        chance = triple(retrieval["chance"][direction])
        return f"re-ranked {triple(m['rerank'][direction])}; ITC {triple(m['itc'][direction])} (chance {chance})"

    verdict = learning_verdict(retrieval, motion)
    return {
        "run": str(run_root),
        "data": f"{data} ({retrieval['counts']['videos']} test videos, {retrieval['counts']['texts']} captions)",
        "distill loss": f"{_first_loss(run_root / 'distill'):.3f} -> {first['final_loss']:.3f} "
        f"({first['steps']} steps)",
        "pretrain loss": f"{_first_loss(run_root / 'pretrain'):.3f} -> {second['final_loss']:.3f} "
        f"({second['steps']} steps)",
        "text->video R@1/5/10": recalls("t2v"),
        "video->text R@1/5/10": recalls("v2t"),
        "direction of motion": f"video {motion['video']:.1f}% vs frame-averaged {motion['frame_averaged']:.1f}% "
        f"(chance {motion['chance']:.0f}%, {motion['videos']} videos)",
        "zero-shot classification": f"top-1 {classification['metrics']['top1']:.1f}% "
        f"(chance {100 / len(classification['metrics']['per_class']):.0f}%)",
        "fine-tuned classification": f"test top-1 {tuned['test']['top1']:.1f}% "
        f"({_views(run_root / 'finetune')}; chance {100 / len(classification['metrics']['per_class']):.0f}%; "
        f"{tuned['steps']} steps)",
        "export": exported["out"],
        "learned": verdict["line"],
        "verdict": {"recall": verdict["recall"], "motion": verdict["motion"], "direction": motion},
        "seconds": seconds,
    }


def _views(run_dir: Path) -> str:
    """`4 clips x 3 crops`: the views each test video was scored with."""
    protocol = json.loads((run_dir / "test.json").read_text(encoding="utf-8"))["protocol"]
    return f"{protocol['num_clips']} clips x {protocol['num_crops']} crops"


def learning_verdict(retrieval: dict[str, Any], motion: dict[str, Any]) -> dict[str, Any]:
    """The two learning criteria: T2V R@1 (the better of the two rankings) >= 5x chance, and direction captions
    told apart better by the video model than by its frame-averaged baseline."""
    chance = retrieval["chance"]["t2v"]["R@1"]
    best = max(retrieval["metrics"][ranking]["t2v"]["R@1"] for ranking in ("itc", "rerank"))
    recall_ok = best >= LEARNING_FACTOR * chance
    motion_ok = motion["video"] > motion["frame_averaged"]
    line = (f"{'yes' if recall_ok and motion_ok else 'no'}: text->video R@1 {best:.1f} = "
            f"{best / chance:.1f}x chance (needs {LEARNING_FACTOR:.0f}x); direction {motion['video']:.1f}% vs "
            f"frame-averaged {motion['frame_averaged']:.1f}%")  # fmt: skip
    return {"recall": recall_ok, "motion": motion_ok, "line": line}
