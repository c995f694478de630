"""One pydantic model per recipe table. The attribute docstrings feed `umt recipe show --explain`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from umt_cli.recipe.base import FromToml, Section, Seed, TomlPath
from umt_cli.variants import MASKERS, STUDENT_PRESETS, TEACHERS

__all__ = [
    "DataSection",
    "DecodeSection",
    "SparseSampling",
    "DenseSampling",
    "IntervalSampling",
    "SegmentSampling",
    "Sampling",
    "MultiScaleCrop",
    "RandomResizedCrop",
    "Crop",
    "AugmentSection",
    "StudentSection",
    "MaskingSection",
    "TeacherSection",
    "LossOptions",
    "CosineLoss",
    "MseLoss",
    "SmoothL1Loss",
    "Loss",
    "OptimSection",
    "ScheduleSection",
    "CheckpointSection",
    "LogSection",
    "RunSection",
    "CorpusSection",
    "PretrainDataSection",
    "InitSection",
    "TextSection",
    "VideoTextSection",
    "PretrainMasking",
    "UtaWeight",
    "VtcSection",
    "VtmWeight",
    "MlmSection",
    "PretrainLoss",
    "FloorCosineSchedule",
    "FinetuneDataSection",
    "FinetuneAugment",
    "ClassifierSection",
    "FinetuneInit",
    "FinetuneEval",
]

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
Beta = Annotated[float, Field(ge=0, lt=1)]  # AdamW's own rule: 0 <= beta < 1


class DataSection(Section):
    """Where the training clips come from and how they are batched."""

    train_list: TomlPath
    """Training list: one `path,label` line per clip (`path label` also works); paths are relative to `root`."""
    root: TomlPath | None = None
    """Folder the list's paths are relative to; unset = the folder named in `videos_root.txt` beside the list (as
    `umt prepare-data kinetics710` writes it), else the list's own folder."""
    batch_size: PositiveInt = 64
    """Clips per process per step (global batch = batch_size x processes x grad accumulation)."""
    num_workers: int = Field(8, ge=0)
    """DataLoader worker processes per training process (each decodes with one thread)."""
    prefetch_factor: PositiveInt = 2
    """Batches each worker prepares ahead."""
    pin_memory: bool = True
    """Pin host memory for faster copies to the GPU (ignored on CPU)."""
    min_frames: PositiveInt = 1
    """Clips with fewer decodable frames are skipped (counted as `short_video`)."""


class DecodeSection(Section):
    """Video decoding, and what happens to videos that will not decode."""

    backend: Literal["auto", "decord", "pyav"] = "auto"
    """Video reader: `auto` uses PyAV (faster here, see README) and falls back to decord; or name one."""
    short_side: PositiveInt | None = None
    """Downscale while decoding so the shorter side has this many pixels; unset = full resolution (official)."""
    sample_timeout_s: float = Field(30.0, gt=0)
    """A clip that takes longer than this to decode is skipped and counted as `timeout`."""
    max_fail_ratio: float = Field(0.01, ge=0, le=1)
    """Stop with an error once more than this fraction of the clips drawn in an epoch fail to decode."""
    max_retries: PositiveInt = 10
    """Replacement clips tried in a row for one failed clip before giving up on the batch."""
    loader_timeout_s: float = Field(0.0, ge=0)
    """DataLoader watchdog: abort when a batch takes longer (catches decoders hung in native code); 0 = off."""
    cache_mb: int = Field(0, ge=0)
    """Keep whole decoded videos in memory, up to this many MiB per process, so each is decoded once instead of
    once per draw (same pixels); for data sets that fit, such as the quickstart's. With `data.num_workers` > 0
    every worker keeps its own copy for its lifetime. 0 = off."""


class SparseSampling(Section):
    """TSN sampling: one frame per equal segment; random offset in training, segment middle in evaluation."""

    kind: Literal["sparse"] = "sparse"
    short_video: Literal["faithful", "pad"] = "faithful"
    """Videos with fewer frames than needed: `faithful` repeats frame 0 (official), `pad` spreads the frames evenly."""


class DenseSampling(Section):
    """Consecutive frames `stride` apart from a random start."""

    kind: Literal["dense"] = "dense"
    stride: PositiveInt = 4
    """Frame step between sampled frames."""


class IntervalSampling(Section):
    """Stage-2 sampling: equal intervals (`linspace` edges); random frame inside each interval in training."""

    kind: Literal["interval"] = "interval"


class SegmentSampling(Section):
    """Official classification fine-tuning: frame i uniform in the i-th of T segments of `(n - 1) / T` frames
    (`umt_cli.data.sampling.segment_view_indices`)."""

    kind: Literal["segment"] = "segment"


Sampling = Annotated[SparseSampling | DenseSampling | IntervalSampling | SegmentSampling, Field(discriminator="kind")]


class MultiScaleCrop(Section):
    """The official stage-1 crop: a square-ish crop at one of several scales from 13 fixed offsets."""

    kind: Literal["multiscale_crop"] = "multiscale_crop"
    scales: Annotated[tuple[Fraction, ...], FromToml, Field(min_length=1)] = (1.0, 0.875, 0.75, 0.66)
    """Crop side lengths as fractions of the shorter frame side."""
    max_distort: int = Field(1, ge=0)
    """Width and height scale indices may differ by at most this much."""
    fixed_offsets: bool = True
    """Place crops at the 13 fixed points (corners, centre, edge midpoints, quarter points); else anywhere."""


class RandomResizedCrop(Section):
    """Inception-style crop: random area fraction and aspect ratio, then resize."""

    kind: Literal["random_resized_crop"] = "random_resized_crop"
    scale: Annotated[tuple[float, float], FromToml] = (0.5, 1.0)
    """Range of the crop's area as a fraction of the frame."""
    ratio: Annotated[tuple[float, float], FromToml] = (3 / 4, 4 / 3)
    """Range of the crop's aspect ratio (width / height)."""
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    """Resampling filter for the resize."""

    @model_validator(mode="after")
    def _check_ranges(self) -> RandomResizedCrop:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError("scale must be (low, high) with 0 < low <= high <= 1")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError("ratio must be (low, high) with 0 < low <= high")
        return self


Crop = Annotated[MultiScaleCrop | RandomResizedCrop, Field(discriminator="kind")]


class AugmentSection(Section):
    """Training augmentation; one crop and one flip decision apply to every frame of a clip."""

    crop: Crop = MultiScaleCrop()
    """Crop variant (`kind`: multiscale_crop or random_resized_crop)."""
    flip: bool = True
    """Horizontal flip with probability 0.5."""
    normalize: Literal["imagenet", "clip"] = "imagenet"
    """Pixel normalisation constants (the official student input is ImageNet-normalised)."""


class StudentSection(Section):
    """The video ViT student: a preset architecture and its input geometry."""

    preset: STUDENT_PRESETS.field() = "umt-b16"  # type: ignore[valid-type]
    """Architecture: umt-b16 (12 x 768), umt-l16 (24 x 1024), or umt-tiny (4 x 64, for tests and the quickstart);
    its patch size is 16 pixels."""
    num_frames: PositiveInt = 8
    """Frames sampled per clip."""
    tubelet: PositiveInt = 1
    """Frames folded into one token by the patch embedding."""
    img_size: PositiveInt = 224
    """Input side length in pixels."""
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    """Stochastic depth of the last block (linearly increasing from 0 over the blocks)."""
    align_layers: PositiveInt = 6
    """K: the last K blocks are aligned with the teacher's last K layers."""
    checkpoint_blocks: int = Field(0, ge=0)
    """Recompute the activations of this many leading blocks in the backward pass (saves memory, costs time)."""


class TeacherSection(Section):
    """The frozen CLIP image teacher."""

    arch: TEACHERS.field() = "clip-b16"  # type: ignore[valid-type]
    """Teacher architecture: the CLIP visual towers clip-b16 (UMT-B), clip-l14 (UMT-L), clip-tiny / clip-tiny14
    (tests)."""
    weights: str
    """A local CLIP weights file (official UMT teacher file, OpenAI or open_clip state dict), `open_clip:NAME:TAG`
    (downloads where the network allows), or `random` (an untrained teacher: tests and the quickstart only)."""
    input_size: PositiveInt | None = None
    """Resolution the teacher runs at (the clip is resized bicubically); unset = the preset's (224, L/14: 196)."""
    input_norm: Literal["imagenet", "clip"] = "imagenet"
    """Pixel statistics the teacher is fed: ImageNet's (official: the student's own input) or CLIP's. The teacher
    converts from `augment.normalize` to these, so any pairing normalises exactly once."""
    trust: bool = False
    """Allow loading a pickled (non weights-only) teacher file, which can run code: only for files you trust."""


class LossOptions(Section):
    """What every UTA loss table has: the kind, its weight, and the distance's own options (the other keys)."""

    kind: str
    """The distance, a name in `umt_cli.variants.UTA_LOSSES`."""
    weight: float = Field(1.0, gt=0)
    """Multiplier of the loss (official `clip_loss_ratio`)."""

    def options(self) -> dict[str, object]:
        """Keyword options of the distance registered as `kind` (every key but `kind` and `weight`)."""
        return self.model_dump(exclude={"kind", "weight"})


class CosineLoss(LossOptions):
    """UTA loss `2 - 2 cos(student, teacher)` averaged over layers, clips and visible tokens (official `l2`)."""

    kind: Literal["cosine"] = "cosine"


class MseLoss(LossOptions):
    """UTA loss: element-wise mean squared error."""

    kind: Literal["mse"] = "mse"


class SmoothL1Loss(LossOptions):
    """UTA loss: element-wise smooth L1."""

    kind: Literal["smooth_l1"] = "smooth_l1"
    beta: float = Field(1.0, gt=0)
    """Transition point between the quadratic and linear parts."""


Loss = Annotated[CosineLoss | MseLoss | SmoothL1Loss, Field(discriminator="kind")]


class OptimSection(Section):
    """AdamW without weight decay on norms, biases and other 1-D parameters."""

    lr: float = Field(1.5e-4, gt=0)
    """Peak learning rate per 256 clips (scaled by global batch / 256 when `scale_lr`)."""
    min_lr: float = Field(1e-5, ge=0)
    """Final learning rate of the cosine schedule, per 256 clips likewise (at most `lr`)."""
    scale_lr: bool = True
    """Multiply `lr` and `min_lr` by global batch / 256, as the official recipes do."""
    betas: Annotated[tuple[Beta, Beta], FromToml] = (0.9, 0.95)
    """AdamW betas (each in [0, 1))."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon."""
    weight_decay: float = Field(0.05, ge=0)
    """Decoupled weight decay (constant)."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the gradient norm to this value; unset = no clipping (official)."""
    grad_accum: PositiveInt = 1
    """Micro-batches accumulated per optimizer step."""
    zero_dim_decay: bool = False
    """Also decay 0-D parameters (stage 2's temperature), as upstream's no-decay rule (1-D and biases only) lets
    happen; off = no decay on them (docs/pitfalls.md, P15)."""


class ScheduleSection(Section):
    """Training length and the per-iteration learning-rate schedule (linear warm-up from 0, then cosine)."""

    lr_shape: ClassVar[str] = "cosine"  # how `umt_cli.training.plan` turns it into learning rates

    epochs: PositiveInt = 201
    """Passes over the training list (the official "200 epochs" run 201, a VideoMAE workaround)."""
    warmup_epochs: float = Field(40, ge=0)
    """Epochs of linear warm-up from 0 to the peak learning rate (at most `epochs`)."""
    max_steps: PositiveInt | None = None
    """Stop after this many optimizer steps (the schedule is fitted to them); unset = epochs x steps per epoch."""


class CheckpointSection(Section):
    """When checkpoints are written."""

    every_steps: PositiveInt | None = None
    """Save every this many optimizer steps; unset = at the end of every epoch."""
    keep_last: PositiveInt = 3
    """Checkpoints kept (older ones are deleted once a newer one is complete)."""


class LogSection(Section):
    """Metrics and console output."""

    every: PositiveInt = 10
    """Log metrics every this many optimizer steps."""
    tensorboard: bool = True
    """Also write TensorBoard event files (needs the `tensorboard` package)."""


class MaskingSection(Section):
    """Which tokens the student sees: the masker registered as `kind` (`umt_cli.variants.MASKERS`)."""

    kind: MASKERS.field() = "attention"  # type: ignore[valid-type]
    """Masker: attention (tokens drawn in proportion to the teacher's CLS attention, official), tube (one random set
    of positions kept in every frame) or random (a uniform subset of the clip's tokens)."""
    mask_ratio: float = Field(0.8, gt=0.0, lt=1.0)
    """Fraction of tokens hidden from the student; attention and tube keep HW - int(HW * mask_ratio) per frame,
    random keeps N - int(N * mask_ratio) per clip."""


class RunSection(Section):
    """Run-wide settings."""

    seed: Seed = 0
    """Seed for every generator of the run (sampling, augmentation, masking, initialisation)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast precision of teacher and student (fp16 adds a gradient scaler and needs a GPU)."""


class CorpusSection(Section):
    """One video-text corpus: an annotation file checked by `umt prepare-data video-text`."""

    annotations: TomlPath
    """The annotation file (`umt prepare-data video-text` output): `{video|image, caption}` entries."""
    root: TomlPath
    """Folder the media paths are relative to."""
    batch_size: PositiveInt = 128
    """Samples per process in each batch drawn from this corpus (videos and images form separate batches)."""


class PretrainDataSection(Section):
    """Stage-2 corpora, drawn as whole batches of one corpus and media type in a seeded order."""

    corpora: Annotated[dict[str, CorpusSection], Field(min_length=1)]
    """The corpora by name, each a `[data.corpora.NAME]` table."""
    num_workers: int = Field(8, ge=0)
    """DataLoader worker processes per corpus and media type, per training process."""
    prefetch_factor: PositiveInt = 2
    """Batches each worker prepares ahead."""
    pin_memory: bool = True
    """Pin host memory for faster copies to the GPU (ignored on CPU)."""
    min_frames: PositiveInt = 1
    """Videos with fewer decodable frames are skipped (counted as `short_video`)."""


class InitSection(Section):
    """Where the stage starts from."""

    student: TomlPath | None = None
    """The stage-1 weights the vision encoder starts from: our `student.safetensors`, or an official stage-1 file;
    unset = random initialisation (tests only)."""
    trust: bool = False
    """Allow a pickled (non weights-only) official file, which can run code: only for files you trust."""


class TextSection(Section):
    """The BERT text encoder and its tokeniser."""

    encoder: str
    """A local Hugging Face BERT folder (config.json, vocab.txt, weights) or a hub id where the network allows,
    e.g. bert-base-uncased (UMT-B) or bert-large-uncased (UMT-L)."""
    random: bool = False
    """Initialise the encoder randomly from the folder's config.json (tests and the quickstart only)."""
    fusion_layer: PositiveInt = 9
    """First layer with cross-attention to the vision tokens (9 of 12 for BERT-base, 19 of 24 for BERT-large)."""
    max_len: PositiveInt = 32
    """Tokens per caption, `[CLS]` included (longer captions are truncated)."""
    add_sep: bool = False
    """End captions with `[SEP]` (the stock BERT form); off = `[CLS] X` as the official tokeniser does."""
    checkpointing: bool = False
    """Recompute the text layers' activations in the backward pass (saves memory, costs time; the official stage-2
    recipes turn it on)."""


class VideoTextSection(Section):
    """The joint embedding."""

    embed_dim: PositiveInt = 512
    """E, the width of the video and text projections (512 for UMT-B, 768 for UMT-L)."""
    temp: float = Field(0.07, ge=0.001, le=0.5)
    """Initial contrastive temperature (clamped to [0.001, 0.5] during training)."""


class PretrainMasking(Section):
    """Masks per media type: the student sees only the visible tokens; VTM and MLM fuse with them too."""

    video: MaskingSection = MaskingSection(kind="attention", mask_ratio=0.8)
    """Video clips (official: attention, 0.8)."""
    image: MaskingSection = MaskingSection(kind="attention", mask_ratio=0.5)
    """Images, as 1-frame clips (official: attention, 0.5)."""


LossWeight = Annotated[float, Field(ge=0)]


class UtaWeight(Section):
    """Unmasked token alignment with the teacher (both sides l2-normalised)."""

    weight: LossWeight = 1.0
    """Multiplier of the loss; 0 skips it (and the teacher)."""


class VtcSection(Section):
    """Video-text contrastive loss."""

    weight: LossWeight = 1.0
    """Multiplier of the loss; 0 skips it."""
    gather: Literal["full", "local_grad"] = "full"
    """`full`: N processes compute the gradient one process with the whole batch would; `local_grad`: upstream's
    local-slice gradient, whose effective weight shrinks as processes are added (docs/pitfalls.md, P24)."""
    idx_mode: Literal["global", "official"] = "global"
    """Which captions count as positives of each other: `global` = the same media item of the same corpus;
    `official` = the same index within its corpus, as upstream (colliding across corpora; docs/pitfalls.md, P14)."""


class VtmWeight(Section):
    """Video-text matching with one hard negative per row."""

    weight: LossWeight = 1.0
    """Multiplier of the loss; 0 skips it."""


class MlmSection(Section):
    """Masked language modelling conditioned on the visible vision tokens."""

    weight: LossWeight = 1.0
    """Multiplier of the loss; 0 skips it."""
    prob: Fraction = 0.5
    """Probability that a caption token (not [CLS] or padding) is chosen for prediction; of those 80 % become
    [MASK], 10 % a random token, 10 % stay."""


class PretrainLoss(Section):
    """The four stage-2 losses; the total is their weighted sum."""

    uta: UtaWeight = UtaWeight()
    """Alignment with the teacher on the visible tokens."""
    vtc: VtcSection = VtcSection()
    """Contrastive."""
    vtm: VtmWeight = VtmWeight()
    """Matching."""
    mlm: MlmSection = MlmSection()
    """Masked language modelling."""

    def weights(self) -> dict[str, float]:
        """Each loss's weight by name (`uta`, `vtc`, `vtm`, `mlm`), as `umt_cli.losses.pretrain` takes them."""
        return {"uta": self.uta.weight, "vtc": self.vtc.weight, "vtm": self.vtm.weight, "mlm": self.mlm.weight}


class FloorCosineSchedule(Section):
    """Stage-2 schedule (official): linear warm-up from 0, then cosine to 0, the learning rate never below
    `optim.min_lr` (upstream: a multiplier floor of 0.01, i.e. min_lr = lr / 100)."""

    lr_shape: ClassVar[str] = "cosine_floor"  # how `umt_cli.training.plan` turns it into learning rates

    epochs: PositiveInt = 10
    """Passes over all corpora (an epoch is the sum of every corpus's batches)."""
    warmup_epochs: float = Field(1, ge=0)
    """Epochs of linear warm-up: lr x step / warm-up steps (at least `optim.min_lr`)."""
    max_steps: PositiveInt | None = None
    """Stop after this many optimizer steps (the schedule is fitted to them); unset = epochs x steps per epoch."""


# --- `umt finetune` (classification fine-tuning, official `single_modality/run_class_finetuning.py`) ----------------


class FinetuneDataSection(DataSection):
    """Labelled clips: `path,label` lists (labels 0-based) and the class names."""

    classes: TomlPath
    """Class names, one a line: line i names label i (also what a head is remapped by)."""
    val_list: TomlPath | None = None
    """Held-out list validated after every epoch (one view); the best epoch's weights are kept."""
    test_list: TomlPath | None = None
    """List of the final multi-view test (`eval.clips` x `eval.crops`) after training."""
    repeats: PositiveInt = 2
    """Repeated augmentation: views made from each decoded clip (official `num_sample` 2)."""
    batch_size: PositiveInt = 8
    """Clips per process and micro-batch (each gives `repeats` views)."""


OFFICIAL_RANDAUGMENT = "rand-m7-n4-mstd0.5-inc1"
"""The official fine-tuning RandAugment policy (timm's string)."""


class FinetuneAugment(Section):
    """Fine-tuning augmentation (official: RandAugment, random-resized crop, flip, random erasing, Mixup/CutMix)."""

    randaugment: str = OFFICIAL_RANDAUGMENT
    """timm RandAugment policy, one draw for all frames of a clip; "" for none."""
    scale: Annotated[tuple[Fraction, Fraction], FromToml] = (0.08, 1.0)
    """Random-resized crop: range of the crop's area fraction."""
    ratio: Annotated[tuple[float, float], FromToml] = (3 / 4, 4 / 3)
    """Random-resized crop: range of the aspect ratio."""
    flip: bool = True
    """Random horizontal flip (off for Something-Something, whose labels name directions)."""
    erasing: float = Field(0.25, ge=0, le=1)
    """Random-erasing probability (`pixel` mode, one box a frame)."""
    mixup: float = Field(0.8, ge=0)
    """Mixup Beta parameter (0: off)."""
    cutmix: float = Field(1.0, ge=0)
    """CutMix Beta parameter (0: off)."""
    switch_prob: float = Field(0.5, ge=0, le=1)
    """Chance of CutMix instead of Mixup when both are on."""
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    """Label smoothing of the (soft) targets."""
    normalize: Literal["imagenet", "clip"] = "imagenet"
    """Pixel statistics."""

    @field_validator("randaugment")
    @classmethod
    def _timm_policy(cls, policy: str) -> str:
        if policy and policy != OFFICIAL_RANDAUGMENT:  # the official one needs no check, and recipes stay torch-free
            from umt_cli.data.clip_augment import check_randaugment  # timm and torch

            check_randaugment(policy)
        return policy


class ClassifierSection(Section):
    """The video ViT classifier (`fc_norm` on the mean of all tokens, then a linear head)."""

    preset: STUDENT_PRESETS.field() = "umt-b16"  # type: ignore[valid-type]
    """Architecture (umt-b16, umt-l16, or a tiny test preset)."""
    num_frames: PositiveInt = 16
    """Frames per clip."""
    tubelet: PositiveInt = 1
    """Frames per token."""
    img_size: PositiveInt = 224
    """Input side in pixels."""
    drop_path: float = Field(0.1, ge=0.0, lt=1.0)
    """Stochastic depth of the last block (official 0.1 B, 0.2 L)."""
    layer_decay: float = Field(0.75, gt=0, le=1)
    """Layer-wise learning-rate decay (official 0.75 B, 0.85 L): layer i learns at decay^(depth + 1 - i)."""
    head_init_scale: float = Field(0.001, gt=0)
    """Factor on a fresh head's trunc-normal(0.02) weights (official `--init_scale` 0.001)."""
    pos_temporal: Literal["interpolate", "extend"] = "interpolate"
    """Position table for this geometry: the official interpolation of the 8-frame, 224-px table, or the sinusoid
    regenerated for N tokens."""
    checkpoint_blocks: int = Field(0, ge=0)
    """Blocks recomputed in the backward pass (memory for compute)."""


class FinetuneInit(Section):
    """Where the classifier starts from."""

    checkpoint: TomlPath | None = None
    """A stage-1, stage-2, retrieval or fine-tuned classification checkpoint (file or run/export folder); null:
    random weights (tests only)."""
    label_map: TomlPath | None = None
    """The checkpoint's class names (one a line), to carry a fine-tuned head to `data.classes` by name."""
    trust: bool = False
    """Allow legacy .pth files that need full unpickling (only for files you trust)."""


class FinetuneEval(Section):
    """Validation and the final test."""

    clips: PositiveInt = 4
    """Clips per test video (official 4; 2 for SSv2)."""
    crops: PositiveInt = 3
    """Crops per clip (official 3)."""
    batch_size: PositiveInt = 4
    """Videos per evaluation batch."""
