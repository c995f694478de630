"""Stage 2: align the distilled video encoder with a BERT text encoder on video-text and image-text corpora.

Each step takes one batch of one corpus and media type: the teacher encodes it and its attention picks the visible
tokens (videos keep 20 %, images 50 %); captions are tokenised and, for MLM, corrupted; then the four losses — UTA
with the teacher, VTC over all processes, VTM with hard negatives, MLM — are weighted and summed
(`umt_cli.losses.pretrain`). See docs/official-behaviour.md (Stage 2 model, Stage 2 losses) for what this reproduces
and `umt_cli.training` for the loop around `step`.

Randomness: sampling, crops and flips come from the streams' datasets (seeded per stream, epoch and sample); masks
from generators seeded per sample; the MLM corruption and the VTM negatives from generators seeded by the batch's
stream, epoch, first sample and process, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from umt_cli import __version__
from umt_cli.data.streams import Stream, StreamBatch, StreamMixer, build_streams
from umt_cli.data.text import build_tokenizer, tokenize
from umt_cli.errors import CheckpointError, DataError
from umt_cli.losses.pretrain import PretrainInputs
from umt_cli.masking.build import TokenGrid, build_masker, build_token_grid, mask_generators
from umt_cli.masking.text import mlm_mask
from umt_cli.models.config import Preprocess, TextConfig, VideoTextConfig, VisionConfig
from umt_cli.models.convert import load_stage1_student
from umt_cli.models.heads import AlignHeads
from umt_cli.models.student import VideoViT
from umt_cli.models.teacher import Teacher, build_recipe_teacher
from umt_cli.models.text_loading import build_text_encoder
from umt_cli.models.video_text import VideoTextModel, VisionEncoder
from umt_cli.recipe import PretrainRecipe
from umt_cli.training.loop import StepOutput, WeightsExport, fit
from umt_cli.training.plan import plan_steps
from umt_cli.training.session import Run, Session, assemble, open_session
from umt_cli.utils.files import sha256_file
from umt_cli.utils.optim import build_adamw
from umt_cli.utils.seed import generator_for
from umt_cli.variants import STUDENT_PRESETS

__all__ = ["Components", "build_model", "setup", "step", "run", "model_config"]

MLM_KEY, NEGATIVES_KEY = 0x6D6C6D, 0x6E6567  # "mlm", "neg": keep these generators apart from the others


@dataclass(frozen=True)
class Components:
    """What `step` needs besides the batch; `training` is the engine's view of the run."""

    recipe: PretrainRecipe
    training: Run
    teacher: Teacher
    tokenizer: Any
    vocab_size: int  # the text encoder's V: MLM's random replacement ids are drawn from [0, V)
    maskers: dict[bool, Any]  # is_image -> the masker of `masking.image` / `masking.video`, ratio bound
    grid: TokenGrid  # a video's token grid (T frames); images use one frame of it


def build_vision_encoder(recipe: PretrainRecipe, teacher_dim: int) -> VisionEncoder:
    """The stage-1 encoder and its alignment heads (now un-normalised, LayerNorm eps 1e-5), from `init.student`."""
    s = recipe.student
    shape = STUDENT_PRESETS[s.preset]
    encoder = VideoViT(
        img_size=s.img_size,
        num_frames=s.num_frames,
        tubelet=s.tubelet,
        drop_path=s.drop_path,
        align_layers=s.align_layers,
        checkpoint_blocks=s.checkpoint_blocks,
        **shape,
    )
    heads = AlignHeads(
        num_tokens=encoder.num_tokens,
        dim=shape["dim"],
        out_dim=teacher_dim,
        num_layers=s.align_layers,
        eps=1e-5,
        l2=False,
    )
    vision = VisionEncoder(encoder=encoder, clip_decoder=heads)
    if recipe.init.student is not None:
        _load_stage1(vision, recipe.init.student, trust=recipe.init.trust)
    return vision


def _load_stage1(vision: VisionEncoder, path: Path, *, trust: bool) -> None:
    """Our `student.safetensors` or an official stage-1 file (`encoder.*`, `clip_decoder.*`), strictly."""
    stage1 = nn.ModuleDict({"encoder": vision.encoder, "clip_decoder": vision.clip_decoder})  # shares the modules
    try:
        load_stage1_student(stage1, path, trust=trust, how_to_trust="set init.trust = true")
    except CheckpointError as error:  # named by its recipe key, as a missing annotation file is
        raise CheckpointError(f"init.student: {error}", hint=error.hint) from None


def build_model(recipe: PretrainRecipe, device: torch.device) -> tuple[VideoTextModel, Teacher]:
    """The trainable video-text model (identical on every process) and the frozen teacher on `device`."""
    teacher = build_recipe_teacher(recipe).to(device)
    torch.manual_seed(recipe.run.seed)
    vision = build_vision_encoder(recipe, teacher.output_dim)
    t = recipe.text
    text = build_text_encoder(
        t.encoder, fusion_layer=t.fusion_layer, encoder_width=vision.encoder.norm.weight.shape[0], random=t.random
    )
    text.gradient_checkpointing = t.checkpointing
    return VideoTextModel(
        vision_encoder=vision, text_encoder=text, embed_dim=recipe.model.embed_dim, temp=recipe.model.temp
    ), teacher


def setup(recipe: PretrainRecipe, session: Session, overrides: list[str]) -> Components:
    """Streams, models, tokenizer, plan and optimizer of a stage-2 run; the run directory is written last."""
    acc = session.accelerator
    streams = build_streams(
        recipe,
        rank=acc.process_index,
        world_size=acc.num_processes,
        status_dir=session.decoding_status_dir(),
        pin_memory=recipe.data.pin_memory and acc.device.type == "cuda",
    )
    accum = recipe.optim.grad_accum  # an optimizer step takes `accum` batches
    batches = _batches_per_epoch(streams, accum)  # checked before the models are built
    mixer = StreamMixer(streams, seed=recipe.run.seed)
    with session.main_warns():
        model, teacher = build_model(recipe, acc.device)
        tokenizer = build_tokenizer(recipe.text.encoder, add_sep=recipe.text.add_sep)
    session.seed_process()
    samples = sum(s.steps_per_epoch * s.sampler.global_batch for s in streams)
    plan = plan_steps(
        batches // accum,  # the last batches of an epoch may be left over
        global_batch=samples * accum // batches,
        optim=recipe.optim,
        schedule=recipe.schedule,
    )
    o = recipe.optim
    optimizer = build_adamw(
        model, lr=plan.peak_lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps, zero_dim_decay=o.zero_dim_decay
    )
    training = assemble(
        session, model=model, optimizer=optimizer, sampler=mixer, loader=mixer, plan=plan, overrides=overrides
    )
    maskers = {False: build_masker(recipe.masking.video), True: build_masker(recipe.masking.image)}
    grid = build_token_grid(recipe.student)
    return Components(recipe, training, teacher, tokenizer, model.text_encoder.vocab_size, maskers, grid)


def _batches_per_epoch(streams: list[Stream], accum: int) -> int:
    """Batches of all streams in an epoch; `DataError` when they do not fill one optimizer step."""
    batches = sum(s.steps_per_epoch for s in streams)
    if batches == 0:
        sizes = ", ".join(
            f"{s.name} has {len(s.dataset)} samples for a batch of {s.sampler.global_batch}" for s in streams
        )
        raise DataError(f"no corpus fills one batch (data.corpora.NAME.batch_size x processes): {sizes}")
    if batches < accum:
        raise DataError(
            f"the corpora give {batches} batches per epoch, fewer than one step of optim.grad_accum = {accum}"
        )
    return batches


def step(c: Components, item: StreamBatch, epoch: int) -> StepOutput:
    """Teacher -> visible tokens -> captions (and their MLM corruption) -> the four weighted losses."""
    acc, batch, r = c.training.accelerator, item.batch, c.recipe
    video = batch.video.to(acc.device, non_blocking=True)  # (B, C, T, H, W); T = 1 for an image batch
    image = video.shape[2] == 1
    seed = item.stream.sampler.seed  # the stream's own seed: equal indices of two streams draw apart
    with torch.no_grad(), acc.autocast():
        encoded = c.teacher.encode(video)  # cls_attn (B, T, HW)
    cls_attn = encoded.cls_attn.float()  # (B, T, HW)
    grid = TokenGrid(1, c.grid.h, c.grid.w) if image else c.grid
    draw = c.maskers[image](grid, cls_attn=cls_attn, generators=mask_generators(seed, epoch, batch.index, acc.device))
    targets = None
    if r.loss.uta.weight:
        with torch.no_grad(), acc.autocast():
            targets = c.teacher.targets(encoded, draw.visible)  # (K, B, Nv, Ct)
    text = tokenize(c.tokenizer, batch.captions, max_len=r.text.max_len, add_sep=r.text.add_sep).to(acc.device)
    first = int(batch.index[0])
    inputs = PretrainInputs(
        video=video,
        visible=draw.visible,
        targets=targets,
        text=text,
        mlm=_corrupt(c, text.ids, seed, epoch, first),
        idx=_ids(c, item).to(acc.device),
    )
    negatives = generator_for(seed, epoch, first, acc.process_index, NEGATIVES_KEY, device=acc.device)
    weights = r.loss.weights()
    with acc.autocast():  # the model's forward computes the losses: data parallelism syncs their gradients
        losses = c.training.model(inputs, negatives=negatives, gather=r.loss.vtc.gather, weights=weights)
    return StepOutput(
        total=losses.total(weights), parts=losses.named(), counts={"mask_fallback_rows": draw.fallback_rows}
    )


def _corrupt(c: Components, ids: torch.Tensor, seed: int, epoch: int, first: int) -> Any:
    """The MLM corruption of a batch's token ids, or None when the MLM weight is 0."""
    if not c.recipe.loss.mlm.weight:
        return None
    t = c.tokenizer
    generator = generator_for(seed, epoch, first, c.training.accelerator.process_index, MLM_KEY)
    return mlm_mask(  # drawn on the CPU generator, returned on the ids' device
        ids,
        vocab_size=c.vocab_size,
        mask_id=t.mask_token_id,
        pad_id=t.pad_token_id,
        cls_id=t.cls_token_id,
        prob=c.recipe.loss.mlm.prob,
        generator=generator,
    )


def _ids(c: Components, item: StreamBatch) -> torch.Tensor:
    """(B,) VTC ids: the media item, unique across corpora (`global`), or its index in its corpus (`official`)."""
    media = item.batch.media_index
    return media + item.stream.id_offset if c.recipe.loss.vtc.idx_mode == "global" else media


def run(
    recipe: PretrainRecipe, run_dir: Path, *, resume: str | None = None, overrides: list[str] | None = None
) -> dict[str, object]:
    """Train, checkpoint and export the model to `video_text.safetensors`; returns the run summary."""
    # A loss weighted 0 leaves its heads without gradients, which data parallelism must be told about.
    session = open_session(recipe, run_dir, resume=resume, unused_parameters=not all(recipe.loss.weights().values()))
    c = setup(recipe, session, overrides or [])
    export = WeightsExport("video_text.safetensors", _weights_metadata(recipe, c.teacher.output_dim))
    return fit(c.training, partial(step, c), export)


def _weights_metadata(recipe: PretrainRecipe, teacher_dim: int) -> dict[str, str]:
    """What `video_text.safetensors` says about itself (safetensors headers hold strings)."""
    s, t, x = recipe.student, recipe.teacher, recipe.text
    teacher_file = Path(t.weights)
    return {
        "format": "umt-stage2",
        "config": model_config(recipe, teacher_dim).to_json(),  # rebuilds the model (umt eval, umt export)
        "umt_version": __version__,
        "preset": s.preset,
        "num_frames": str(s.num_frames),
        "img_size": str(s.img_size),
        "align_layers": str(s.align_layers),
        "embed_dim": str(recipe.model.embed_dim),
        "text_encoder": x.encoder,
        "fusion_layer": str(x.fusion_layer),
        "max_len": str(x.max_len),
        "add_sep": str(x.add_sep).lower(),
        "normalize": recipe.augment.normalize,
        "teacher": t.arch,
        "teacher_weights": t.weights,
        "teacher_sha256": sha256_file(teacher_file) if teacher_file.is_file() else "",
    }


def model_config(recipe: PretrainRecipe, teacher_dim: int) -> VideoTextConfig:
    """The architecture and evaluation preprocessing of the model a stage-2 recipe trains (its alignment heads
    project to the teacher width `teacher_dim`)."""
    from transformers import BertConfig

    from umt_cli.data.transforms import NORMALIZATION
    from umt_cli.models.text_loading import resolve_bert_folder

    s, x = recipe.student, recipe.text
    bert = BertConfig.from_json_file(str(resolve_bert_folder(x.encoder) / "config.json"))
    shape = STUDENT_PRESETS[s.preset]
    mean, std = NORMALIZATION[recipe.augment.normalize]
    return VideoTextConfig(
        vision=VisionConfig(
            dim=shape["dim"],
            depth=shape["depth"],
            num_heads=shape["num_heads"],
            patch_size=shape["patch_size"],
            img_size=s.img_size,
            num_frames=s.num_frames,
            tubelet=s.tubelet,
            align_layers=s.align_layers,
            teacher_dim=teacher_dim,
        ),
        text=TextConfig(
            vocab_size=bert.vocab_size,
            hidden_size=bert.hidden_size,
            num_layers=bert.num_hidden_layers,
            num_heads=bert.num_attention_heads,
            intermediate_size=bert.intermediate_size,
            fusion_layer=x.fusion_layer,
            max_positions=bert.max_position_embeddings,
            type_vocab_size=bert.type_vocab_size,
            layer_norm_eps=bert.layer_norm_eps,
            pad_token_id=bert.pad_token_id or 0,
            mlm_head=True,
        ),
        embed_dim=recipe.model.embed_dim,
        preprocess=Preprocess(
            mean=tuple(mean),
            std=tuple(std),
            size=s.img_size,
            num_frames=s.num_frames,
            max_len=x.max_len,
            add_sep=x.add_sep,
        ),  # fmt: skip
    )
