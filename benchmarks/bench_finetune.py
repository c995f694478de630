"""Fine-tuning step time: `umt finetune`'s code path against a reference step written the way the official code
(`single_modality/`: `datasets/kinetics_sparse.py`, `models/modeling_finetune.py`, `engines/engine_for_finetuning.py`,
`optim_factory.py`, `utils.py`) computes it, augmentation included.

One optimizer step, timed from the decoded frames on: `--batch` clips (uint8 (T, H, W, 3) arrays as the decoder
returns them; default 2 clips of 8 frames at 320 x 568, a full-resolution decode of a 16:9 video kept at short
side 320) each augmented into 2 views (official `num_sample = 2`), Mixup/CutMix of the views, the classifier
forward, soft-target cross-entropy, backward, the gradient norm and AdamW over layer-decay parameter groups.
  umt: `FinetuneTransform(repeats=2)` on each clip with the sample's generator (`ClipRandAugment` -> random-resized
      crop of the uint8 frames (bilinear, no antialias, as upstream) -> flip -> normalise the crop -> `ClipErasing`),
      `collate`, then the engine's `optimizer_step` around `finetune.step` (`ClipMixup`, `VideoClassifier` with
      `scaled_dot_product_attention`, `soft_cross_entropy`, one-pass gradient norm, fused `build_adamw(...,
      layer_decay=...)`).
  reference: per view, the official `_aug_frame`: frames to PIL one by one, the official video RandAugment
      (`rand-m7-n4-mstd0.5-inc1`; timm's op table, each chosen op drawing its probability and magnitude once per
      clip and applied to every frame, as upstream's `AugmentOp` does for a list), `ToTensor` per frame, normalising
      the full frames, `spatial_sampling` (random-resized crop of the float frames, bilinear `interpolate`,
      `np.random` flip), timm's `RandomErasing(0.25, "pixel")` on the (T, C, H, W) frames; `default_collate`; timm's
      `Mixup` (0.8 / 1.0, switch 0.5, smoothing 0.1) on the (B, C·T, H, W) view of the clips (upstream's copy cuts
      `[..., y0:y1, x0:x1]` of the 5-D batch: the same); the ViT with explicit softmax attention (`RefBlock`),
      `fc_norm` on the token mean and the head; timm's `SoftTargetCrossEntropy`; `loss.item()`; backward;
      `get_grad_norm_` (one norm per parameter, then their norm); a default (for-each / single-tensor, not fused)
      `torch.optim.AdamW` over the groups `get_parameter_groups` builds (a dict per layer id and decay / no decay,
      each with its `lr_scale`), the engine setting every group's lr each step.
Both carry the same weights (umt's, every bias and norm perturbed and the head drawn at full scale so that a
mis-mapped parameter would show, saved once by the parent) and augment the same frames. Augmentation and Mixup are
random, so losses are not compared; instead both children's classifiers run the same fixed clips (eval mode, fp32)
before timing, and their logits must agree (max |difference| printed; the run fails beyond `--tolerance`).

Each implementation runs in its own child process (so each one's peak memory can be read), alternating over
`--rounds`; the parent prints the median step time (over the timed steps of every round, after one warm-up step per
child), its split into augmentation (frames -> batch) and model step (Mixup to AdamW), the ratio reference / umt
(goal >= 1.1x) and both peak RSS (goal: umt's not above the reference's). On the CPU both compute in fp32; with
`--device cuda`, umt runs in bf16 autocast (its recipes' precision) and the reference in fp16 autocast with a
`GradScaler` (unscale, norm, step, update: the official `NativeScalerWithGradNormCount`); augmentation stays on the
CPU for both, as in the data loaders.

Presets (random weights; speed does not depend on their values):
  b16 (default): UMT-B/16 (768 x 12, 12 heads, patch 16), 8 frames at 224 px, 400 classes; drop path 0.1, layer
      decay 0.75 (`recipes/finetune/b16_k400_from_k710_f8.toml`).
  l16: UMT-L/16 (1024 x 24, 16 heads), drop path 0.2, layer decay 0.85 (`l16_k400_from_k710_f8.toml`).
  tiny: a 64-wide, 4-block ViT at 32 px, 4 frames of 64 x 112, 10 classes: a smoke test of seconds.

    python benchmarks/bench_finetune.py                                # CPU, b16, 2 clips x 2 views, 2 rounds
    python benchmarks/bench_finetune.py --preset tiny --rounds 1       # smoke test, seconds
    python benchmarks/bench_finetune.py --frame-size 256x340           # smaller decoded frames
    python benchmarks/bench_finetune.py --device cuda                  # GPU: 8 clips, umt bf16 vs fp16 + scaler
    python benchmarks/bench_finetune.py --device cuda --preset l16
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import side_by_side
import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_distill import RefBlock, sinusoid, sync

REPEATS = 2  # views per clip: the official num_sample
LR, WEIGHT_DECAY, BETAS, EPS = 1e-4, 0.05, (0.9, 0.999), 1e-8  # the lr's value does not change the work
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # the official _aug_frame's statistics
RAND_AUGMENT = "rand-m7-n4-mstd0.5-inc1"  # the official --aa
CHECK_CLIPS = 2  # clips of the logits check

PRESETS = {
    "b16": {"recipe": "finetune/b16_k400_from_k710_f8", "overrides": [], "dim": 768, "depth": 12, "heads": 12,
            "patch": 16, "frames": 8, "size": 224, "classes": 400, "drop_path": 0.1, "layer_decay": 0.75,
            "frame_size": (320, 568)},
    "l16": {"recipe": "finetune/l16_k400_from_k710_f8", "overrides": [], "dim": 1024, "depth": 24, "heads": 16,
            "patch": 16, "frames": 8, "size": 224, "classes": 400, "drop_path": 0.2, "layer_decay": 0.85,
            "frame_size": (320, 568)},
    "tiny": {"recipe": "finetune/b16_k400_from_k710_f8",
             "overrides": ["model.preset=umt-tiny", "model.img_size=32", "model.num_frames=4"], "dim": 64, "depth": 4,
             "heads": 4, "patch": 16, "frames": 4, "size": 32, "classes": 10, "drop_path": 0.1, "layer_decay": 0.75,
             "frame_size": (64, 112)},
}  # fmt: skip
"""The reference's geometry and the official hyper-parameters of each preset; `prepare` checks umt's recipe agrees."""

DEFAULTS = {"cpu": {"batch": 2, "tolerance": 1e-4}, "cuda": {"batch": 8, "tolerance": 1e-2}}
"""Per device: clips a step, and the largest difference of the logits relative to the largest logit (fp32 on both;
on CUDA the patch embedding's convolution may run in TF32 and attention takes other kernels)."""


# --- inputs ----------------------------------------------------------------------------------------------------------


def decoded_clips(settings: dict) -> tuple[np.ndarray, list[int]]:
    """The step's clips as the decoder returns them, uint8 (B, T, H, W, 3), and their labels (the same every step)."""
    p = PRESETS[settings["preset"]]
    rng = np.random.default_rng(settings["seed"])
    height, width = settings["frame_size"]
    frames = rng.integers(0, 256, (settings["batch"], p["frames"], height, width, 3), dtype=np.uint8)
    return frames, rng.integers(0, p["classes"], settings["batch"]).tolist()


def check_logits(model: nn.Module, settings: dict, device: str) -> list[list[float]]:
    """Logits of fixed clips in eval mode (no drop path), fp32, no autocast: the weights-and-architecture check."""
    p = PRESETS[settings["preset"]]
    g = torch.Generator().manual_seed(settings["seed"] + 1)
    video = torch.randn(CHECK_CLIPS, 3, p["frames"], p["size"], p["size"], generator=g).to(device)
    model.eval()
    with torch.no_grad():
        logits = model(video).float().cpu()
    model.train()
    return logits.tolist()


# --- the reference, written the way the official code computes (our own code, for timing only) ----------------------


class RefVideoRandAugment:
    """The official video RandAugment (`datasets/rand_augment.py`, built by `create_random_augment`): timm's policy and
    op table, but each chosen op draws its probability and magnitude once and is applied to every frame (a list of
    PIL images), as upstream's `AugmentOp.__call__` does for a list."""

    def __init__(self, size: int) -> None:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        # create_random_augment's hparams; the scripts' train_interpolation is bicubic
        hparams = {"translate_const": int(size * 0.45), "interpolation": Image.Resampling.BICUBIC}
        self.policy = rand_augment_transform(RAND_AUGMENT, hparams)

    def __call__(self, frames: list) -> list:
        p = self.policy
        ops = np.random.choice(p.ops, p.num_layers, replace=p.choice_weights is None, p=p.choice_weights)
        for op in ops:
            if op.prob < 1.0 and random.random() > op.prob:
                continue
            magnitude = op.magnitude
            if op.magnitude_std > 0:
                magnitude = random.gauss(magnitude, op.magnitude_std)
            magnitude = min(10.0, max(0.0, magnitude))  # upstream's _MAX_LEVEL
            level = op.level_fn(magnitude, op.hparams) if op.level_fn is not None else ()
            frames = [op.aug_fn(frame, *level, **op.kwargs) for frame in frames]
        return frames


def crop_params(height: int, width: int, scale=(0.08, 1.0), ratio=(0.75, 1.3333)) -> tuple[int, int, int, int]:
    """`video_transforms._get_param_spatial_crop` (Python's `random`): (top, left, h, w)."""
    for _ in range(10):
        target = random.uniform(*scale) * height * width
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def reference_view(buffer: np.ndarray, size: int) -> torch.Tensor:
    """The official `_aug_frame` of a Kinetics clip: uint8 (T, H, W, 3) -> float (C, T, size, size)."""
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms

    augment = RefVideoRandAugment(size)  # upstream builds it for every call
    frames = augment([transforms.ToPILImage()(frame) for frame in buffer])
    video = torch.stack([transforms.ToTensor()(img) for img in frames]).permute(0, 2, 3, 1)  # (T, H, W, C)
    video = ((video - torch.tensor(MEAN)) / torch.tensor(STD)).permute(3, 0, 1, 2)  # tensor_normalize: (C, T, H, W)
    top, left, h, w = crop_params(video.shape[2], video.shape[3])  # spatial_sampling -> random_resized_crop
    video = F.interpolate(video[:, :, top : top + h, left : left + w], size=(size, size), mode="bilinear",
                          align_corners=False)  # fmt: skip
    if np.random.uniform() < 0.5:  # horizontal_flip(0.5, ...)
        video = video.flip(-1)
    erase = RandomErasing(0.25, mode="pixel", max_count=1, num_splits=1, device="cpu")  # reprob, remode, recount
    return erase(video.permute(1, 0, 2, 3)).permute(1, 0, 2, 3)  # erased as a (T, C, H, W) batch


def reference_batch(clips: np.ndarray, labels: list[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official loader's step: `num_sample` views of every clip, then `multiple_samples_collate`."""
    from torch.utils.data import default_collate

    views, view_labels = [], []
    for clip, label in zip(clips, labels):
        for _ in range(REPEATS):
            views.append(reference_view(clip, size))
            view_labels.append(label)
    return default_collate(views), default_collate(view_labels)  # (B·R, C, T, S, S), (B·R,)


def official_table(dim: int, frames: int, grid: int) -> torch.Tensor:
    """`get_sinusoid_encoding_table(n, dim, cur_frame=frames)` for patch 16: the 8 x 14 x 14 sinusoid, resampled
    bicubically per frame to the grid and linearly in time to the frame count. Upstream wraps a resampled table in an
    `nn.Parameter` that it adds detached (never trained); a plain tensor computes the same."""
    table = sinusoid(8 * 14 * 14, dim)  # (1, 1568, D)
    if grid != 14:
        planes = table.reshape(-1, 14, 14, dim).permute(0, 3, 1, 2)  # (8, D, 14, 14)
        planes = F.interpolate(planes, size=(grid, grid), mode="bicubic", align_corners=False)
        table = planes.permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, 8·G·G, D)
    if frames != 8:
        series = table.reshape(-1, 8, grid, grid, dim).permute(0, 2, 3, 4, 1).reshape(-1, dim, 8)  # (G·G, D, 8)
        series = F.interpolate(series, size=frames, mode="linear")
        table = series.reshape(1, grid, grid, dim, frames).permute(0, 4, 1, 2, 3).flatten(1, 3)  # (1, T·G·G, D)
    return table


class RefClassifier(nn.Module):
    """The official `VisionTransformer` of `modeling_finetune.py` as the fine-tuning scripts build it (qkv bias,
    tubelet 1, mean pooling: `norm` is the identity, `fc_norm` on the token mean), with its key names."""

    def __init__(self, p: dict) -> None:
        super().__init__()
        dim, patch = p["dim"], p["patch"]
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(3, dim, (1, patch, patch), (1, patch, patch))
        self.pos_embed = official_table(dim, p["frames"], p["size"] // patch)  # a plain CPU tensor, as upstream's
        rates = [x.item() for x in torch.linspace(0, p["drop_path"], p["depth"])]
        self.blocks = nn.ModuleList(RefBlock(dim, p["heads"], rate) for rate in rates)
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, p["classes"])

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + self.pos_embed.expand(x.shape[0], -1, -1).type_as(x).to(x.device).clone().detach()
        for block in self.blocks:
            x = block(x)
        return self.head(self.fc_norm(x.mean(1)))


def layer_id(name: str, num_layers: int) -> int:
    """`optim_factory.get_num_layer_for_vit`."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers - 1


def official_param_groups(model: RefClassifier, layer_decay: float, depth: int) -> list[dict]:
    """`optim_factory.get_parameter_groups` with the `LayerDecayValueAssigner` of `run_class_finetuning.py`."""
    scales = [layer_decay ** (depth + 1 - i) for i in range(depth + 2)]
    skip = model.no_weight_decay()
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 1 or name.endswith(".bias") or name in skip:
            kind, decay = "no_decay", 0.0
        else:
            kind, decay = "decay", WEIGHT_DECAY
        layer = layer_id(name, len(scales))
        group = groups.setdefault(f"layer_{layer}_{kind}", {"weight_decay": decay, "params": [],
                                                             "lr_scale": scales[layer]})  # fmt: skip
        group["params"].append(param)
    return list(groups.values())


def official_grad_norm(model: nn.Module) -> torch.Tensor:
    """`utils.get_grad_norm_`: one norm per gradient, then the norm of those."""
    grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
    return torch.norm(torch.stack([torch.norm(g, 2.0) for g in grads]), 2.0)


def reference_step(model, optimizer, mixup, criterion, batch, device, scaler, autocast) -> float:
    """`train_one_epoch`'s body for one step (update_freq 1, no clipping)."""
    for group in optimizer.param_groups:  # the step-level schedules set every group's lr and decay
        group["lr"] = LR * group["lr_scale"]
        if group["weight_decay"] > 0:
            group["weight_decay"] = WEIGHT_DECAY
    video, labels = (t.to(device, non_blocking=True) for t in batch)
    b, c, t, h, w = video.shape
    mixed, targets = mixup(video.reshape(b, c * t, h, w), labels)
    with autocast():
        loss = criterion(model(mixed.view(b, c, t, h, w)), targets)
    value = loss.item()
    if not math.isfinite(value):
        sys.exit(f"reference: loss is {value}")
    if scaler is None:
        loss.backward()
        official_grad_norm(model)
        optimizer.step()
    else:  # NativeScalerWithGradNormCount: scale, backward, unscale, norm, step, update
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        official_grad_norm(model)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad()
    return value


def reference_setup(settings: dict, folder: Path, device: str):
    """(augment(step) -> batch, step(batch) -> loss, check logits), the reference carrying umt's weights."""
    from safetensors.torch import load_file
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    p = PRESETS[settings["preset"]]
    model = RefClassifier(p)
    model.load_state_dict(load_file(folder / "weights.safetensors"))
    model.to(device)
    logits = check_logits(model, settings, device)
    optimizer = torch.optim.AdamW(official_param_groups(model, p["layer_decay"], p["depth"]), lr=LR,
                                  weight_decay=0.0, betas=BETAS, eps=EPS)  # fmt: skip
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="batch", label_smoothing=0.1,
                  num_classes=p["classes"])  # fmt: skip
    scaler, autocast = None, nullcontext
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # as run_class_finetuning.py sets it
        scaler, autocast = torch.amp.GradScaler("cuda"), partial(torch.autocast, "cuda", dtype=torch.float16)
    clips, labels = decoded_clips(settings)
    step = partial(reference_step, model, optimizer, mixup, SoftTargetCrossEntropy(), device=device, scaler=scaler,
                   autocast=autocast)  # fmt: skip
    return lambda i: reference_batch(clips, labels, p["size"]), step, logits


# --- umt: `umt finetune`'s code path ---------------------------------------------------------------------------------


def umt_recipe(settings: dict):
    """The preset's shipped recipe at this batch and precision, from random weights."""
    from umt_cli.recipe import FinetuneRecipe, load_recipe
    from umt_cli.recipe.catalog import resolve_recipe

    p = PRESETS[settings["preset"]]
    precision = "bf16" if settings["device"] == "cuda" else "fp32"
    overrides = ["~init.checkpoint", "~init.label_map", f"data.batch_size={settings['batch']}",
                 f"run.precision={precision}", *p["overrides"]]  # fmt: skip
    return load_recipe(resolve_recipe(p["recipe"]), overrides, expect=FinetuneRecipe)


def umt_model(recipe, classes: int):
    """`finetune.build_model`'s classifier (seeded) and its config."""
    from umt_cli.stages import finetune

    config = finetune.classifier_config(recipe, classes)
    model, _ = finetune.build_model(recipe, config, [f"class {i}" for i in range(classes)])
    return model, config


def umt_setup(settings: dict, folder: Path, device: str):
    """(augment(step) -> ClipBatch, step(batch) -> loss, check logits) through the stage's own pieces."""
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from umt_cli.data.clip_augment import ClipMixup, FinetuneTransform
    from umt_cli.data.datasets import ClipSample
    from umt_cli.data.loaders import collate
    from umt_cli.data.transforms import NORMALIZATION
    from umt_cli.stages import finetune
    from umt_cli.training.loop import optimizer_step
    from umt_cli.training.plan import Plan
    from umt_cli.training.session import Run
    from umt_cli.training.state import TrainState
    from umt_cli.utils.optim import build_adamw
    from umt_cli.utils.seed import generator_for

    recipe = umt_recipe(settings)
    classes = PRESETS[settings["preset"]]["classes"]
    model, config = umt_model(recipe, classes)
    model.load_state_dict(load_file(folder / "weights.safetensors"))
    model.to(device)
    logits = check_logits(model, settings, device)  # before `prepare`, which wraps forward in autocast
    # As `finetune.setup` builds them: the optimizer, the Mixup and the training view of a clip.
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if device == "cuda" else "no")
    o, a, d = recipe.optim, recipe.augment, recipe.data
    optimizer = build_adamw(model, lr=LR, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps,
                            layer_decay=(recipe.model.layer_decay, config.vision.depth))  # fmt: skip
    model, optimizer = accelerator.prepare(model, optimizer)
    plan = Plan(global_batch=d.batch_size * d.repeats, steps_per_epoch=1000, total_steps=10000, warmup_steps=0,
                peak_lr=LR, final_lr=LR)  # fmt: skip
    run = Run(recipe, None, accelerator, None, model, optimizer, None, None, plan, None)
    mixup = ClipMixup(classes, mixup=a.mixup, cutmix=a.cutmix, switch_prob=a.switch_prob,
                      label_smoothing=a.label_smoothing)  # fmt: skip
    c = finetune.Components(recipe, run, [str(i) for i in range(classes)], mixup, config)
    mean, std = NORMALIZATION[a.normalize]
    transform = FinetuneTransform(recipe.model.img_size, randaugment=a.randaugment, scale=a.scale, ratio=a.ratio,
                                  flip=a.flip, erasing=a.erasing, mean=mean, std=std, repeats=d.repeats)  # fmt: skip
    clips, labels = decoded_clips(settings)

    def augment(i: int):
        """The data set's work for step i's samples (each with its own (seed, epoch, index) generator), collated."""
        indices = range(i * len(clips), (i + 1) * len(clips))  # new samples each step: new draws, new Mixup
        return collate([ClipSample(transform(clip, generator_for(recipe.run.seed, 0, index, 0)), label, index)
                        for clip, label, index in zip(clips, labels, indices)])  # fmt: skip

    def step(batch) -> float:
        return float(optimizer_step(run, partial(finetune.step, c), iter([batch]), 0, TrainState()).loss)

    return augment, step, logits


# --- measuring -------------------------------------------------------------------------------------------------------


def child(variant: str, folder: Path) -> dict:
    """One round of one variant: set up, the logits check, a warm-up step, then `steps` timed steps."""
    settings = json.loads((folder / "settings.json").read_text())
    device = settings["device"]
    random.seed(settings["seed"])  # the reference draws its augmentation from the global generators
    np.random.seed(settings["seed"])
    torch.manual_seed(settings["seed"])
    setup = reference_setup if variant == "reference" else umt_setup
    augment, step, logits = setup(settings, folder, device)
    times: dict[str, list[float]] = {"augment": [], "model": [], "step": []}
    losses = []
    for i in range(settings["steps"] + 1):
        start = time.perf_counter()
        batch = augment(i)
        middle = time.perf_counter()
        losses.append(step(batch))  # returns a Python float: the device has finished the step
        sync(device)
        end = time.perf_counter()
        if i:  # the first step warms up allocators, thread pools and kernels
            times["augment"].append(middle - start)
            times["model"].append(end - middle)
            times["step"].append(end - start)
    return {
        "times": times,
        "losses": losses,
        "logits": logits,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # MiB on Linux
        "gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def prepare(folder: Path, args: argparse.Namespace) -> dict:
    """Check umt's recipe against the preset, write umt's initial weights (perturbed) and the settings."""
    from safetensors.torch import save_file

    p = PRESETS[args.preset]
    settings = {"preset": args.preset, "device": args.device, "batch": args.batch, "steps": args.steps,
                "frame_size": list(args.frame_size), "seed": args.seed}  # fmt: skip
    recipe = umt_recipe(settings)
    m, a = recipe.model, recipe.augment
    found = {"frames": m.num_frames, "size": m.img_size, "drop_path": m.drop_path, "layer_decay": m.layer_decay,
             "repeats": recipe.data.repeats, "randaugment": a.randaugment, "erasing": a.erasing, "mixup": a.mixup,
             "cutmix": a.cutmix, "label_smoothing": a.label_smoothing,
             "weight_decay": recipe.optim.weight_decay}  # fmt: skip
    wanted = {key: p[key] for key in ("frames", "size", "drop_path", "layer_decay")}
    wanted |= {"repeats": REPEATS, "randaugment": RAND_AUGMENT, "erasing": 0.25, "mixup": 0.8, "cutmix": 1.0,
               "label_smoothing": 0.1, "weight_decay": WEIGHT_DECAY}  # fmt: skip
    if found != wanted:  # both sides must do the same work
        sys.exit(f"{PRESETS[args.preset]['recipe']} differs from the reference: {found} vs {wanted}")
    model, _ = umt_model(recipe, p["classes"])
    with torch.no_grad():  # biases and norms start at 0 / 1, the head near 0: perturbed, a mis-mapped one would show
        g = torch.Generator().manual_seed(args.seed)
        for param in model.parameters():
            if param.ndim <= 1:
                param.add_(torch.randn(param.shape, generator=g) * 0.02)
        model.head.weight.normal_(0.0, 0.02, generator=g)  # the fresh head is scaled by 1e-3: logits too small to check
    save_file(model.state_dict(), folder / "weights.safetensors")
    (folder / "settings.json").write_text(json.dumps(settings))
    return settings


def run_rounds(folder: Path, rounds: int) -> dict[str, list[dict]]:
    """Every round runs the reference, then umt, each in a fresh process."""

    def line(result: dict) -> str:
        t = result["times"]
        return (f"steps {', '.join(f'{s:.2f}' for s in t['step'])} s "
                f"(augmentation {', '.join(f'{s:.2f}' for s in t['augment'])} s)")  # fmt: skip

    return side_by_side.run_children(__file__, str(folder), rounds, line)


def logits_difference(results: dict[str, list[dict]]) -> tuple[float, float]:
    """(max |umt - reference| of the check logits over every round, that relative to the largest |logit|)."""
    worst, scale = 0.0, 0.0
    for ref, ours in zip(results["reference"], results["umt"]):
        a, b = torch.tensor(ref["logits"]), torch.tensor(ours["logits"])
        worst = max(worst, float((a - b).abs().max()))
        scale = max(scale, float(a.abs().max()))
    return worst, worst / max(scale, 1e-12)


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    p = PRESETS[args.preset]
    tokens = p["frames"] * (p["size"] // p["patch"]) ** 2
    precision = {"cpu": "fp32", "cuda": "umt bf16 autocast, reference fp16 autocast + GradScaler"}[args.device]
    print(
        f"torch {torch.__version__}, {args.device} ({precision}), threads {torch.get_num_threads()}; preset "
        f"{args.preset}: {p['dim']} x {p['depth']} ({p['heads']} heads), {p['frames']} x {p['size']}^2 = {tokens} "
        f"tokens, {p['classes']} classes; {args.batch} clips x {REPEATS} views of {args.frame_size[0]} x "
        f"{args.frame_size[1]} decoded frames a step; medians of {args.steps} step(s) x {args.rounds} round(s)"
    )
    worst, relative = logits_difference(results)
    failed = not relative <= args.tolerance
    print(f"logits check (same weights, same fixed clips, eval, fp32): max |diff| {worst:.2e} (relative "
          f"{relative:.2e}); tolerance {args.tolerance:g}: {'FAILED' if failed else 'ok'}")  # fmt: skip
    parts = ("step", "augment", "model")
    median = {v: {key: statistics.median(t for r in rs for t in r["times"][key]) for key in parts}
              for v, rs in results.items()}  # fmt: skip
    rss = {v: max(r["rss_mib"] for r in rs) for v, rs in results.items()}
    for variant in ("reference", "umt"):
        m = median[variant]
        print(f"{variant:>9}: step {m['step']:.3f} s (augmentation {m['augment']:.3f} s, model step "
              f"{m['model']:.3f} s); peak RSS {rss[variant]:.0f} MiB")  # fmt: skip
    ratio = {key: median["reference"][key] / median["umt"][key] for key in parts}
    print(f"speed-up umt vs reference: {ratio['step']:.2f}x (goal >= 1.1x); augmentation {ratio['augment']:.2f}x, "
          f"model step {ratio['model']:.2f}x")  # fmt: skip
    verdict = "ok" if rss["umt"] <= rss["reference"] else "above the reference's"
    print(f"peak RSS umt / reference: {rss['umt']:.0f} / {rss['reference']:.0f} MiB (goal: umt's not above): {verdict}")
    if failed:
        sys.exit(f"FAILED: the logits differ by {relative:.2e} relative, beyond {args.tolerance:g}")
    side_by_side.gpu_memory_and_exit_code(results, args.device, ratio["step"])


def frame_size(text: str) -> tuple[int, int]:
    """`HxW` -> (H, W)."""
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default="b16", choices=sorted(PRESETS))
    parser.add_argument("--batch", type=int, default=None, help="clips a step (2 views each); default: 2 CPU, 8 GPU")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round (after a warm-up step)")
    parser.add_argument("--frame-size", type=frame_size, default=None,
                        help="decoded frames HxW; default: 320x568 (b16, l16), 64x112 (tiny)")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest relative logits difference; default: 1e-4 CPU, 1e-2 GPU")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    side_by_side.device_defaults(parser, args, DEFAULTS)
    args.frame_size = args.frame_size or PRESETS[args.preset]["frame_size"]
    if min(args.batch, args.rounds, args.steps) < 1:
        parser.error("--batch, --rounds and --steps must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.data))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        prepare(folder, args)
        print(f"weights and settings written in {time.perf_counter() - started:.1f} s", flush=True)
        results = run_rounds(folder, args.rounds)
    report(results, args)


if __name__ == "__main__":
    main()
