"""Text-to-video scoring speed at the FETV protocol: `umt score`'s code path against a reference written the way the
FETV scripts (`llyx97/FETV-EVAL`, folder `UMT/`, `tasks/t2v_eval_utils.py` and `tasks/video_feature_extract_utils.py`)
compute the same numbers.

Two measurements, both over the same N generated H.264 videos (320x240, 48 frames, distinct moving content) and N
prompts (mixed lengths, some longer than the 31 tokens a prompt keeps), 12 frames a video (the middle frame of 12
equal segments), 224 x 224 bicubic without antialiasing, ImageNet statistics, prompts of `[CLS] X` padded to 32:
  1. UMTScore, pairs/s: prompt i with video i, the fusion layers' ITM logit of the match class.
     umt: `score_pairs(prompts=...)`: videos decoded in a DataLoader worker (`--workers`) while the model computes,
     `--batch-size` videos encoded at once, their prompts tokenised and encoded together, all pairs of a block
     fused in one call, `scaled_dot_product_attention` everywhere.
     reference: as FETV's `tasks/t2v_eval_utils.py`: its test loader (decord `VideoReader(path,
     num_threads=1).get_batch(indices)`, torchvision `Resize((224, 224), BICUBIC)` on the uint8 (T, C, H, W) frames,
     `/255`, `Normalize`; in as many workers as umt's) gives the vision encoder, with the official attention
     (explicit `softmax(q @ k^T * scale) @ v`, the N x N matrix materialised), batches of 16 videos (FETV's config;
     `--ref-batch`); the prompts are tokenised 256 at a time (`padding="max_length", truncation=True,
     max_length=32`) and run through a Hugging Face-style BERT (explicit scores + extended masks) in text mode; then
     one pair at a time (FETV's `topk_idx = torch.tensor([i])`), the fusion layers with that video's 12 x 196 tokens
     as cross-attention memory (all-ones mask) and `itm_head(fused[:, 0])[:, 1]`.
  2. UMT-FVD features, clips/s: `vision_proj(pool_norm(per-frame token mean)).mean(over frames)` per video.
     umt: `score_pairs(features=True)`; reference: `video_feature_extract_utils.py`'s, the same loader with batches
     of 32 (FETV's config).
  3. Both metrics of the generated videos, the FETV workflow: its two scripts encode every video twice (the
     reference's time is the sum of 1 and 2); `umt score align` computes both in one pass and caches the features
     `umt score fvd` then reads (umt: `score_pairs(prompts=..., features=True)`).
Both carry the same random weights (umt's, seeded, every bias and LayerNorm perturbed so that a mis-mapped one would
show, saved once by the parent and loaded by both); their UMTScores and features must agree to float tolerance
(max |difference| printed; the run fails if it is larger than `--tolerance` relative to the largest value).

Each implementation runs in its own child process (so each one's peak memory can be read), alternating over
`--rounds`; the parent prints the medians of the per-video times as pairs/s and clips/s and the ratio umt /
reference of each (goal >= 2x). On the CPU both compute in fp32; with `--device cuda`, umt uses the protocol's fp16
autocast and the reference `autocast(fp16)` around everything, as FETV's `torch.cuda.amp.autocast(enabled=fp16)`.
On a GPU, the CPU work of a video (decoding ~15 ms, the bicubic resize of 12 frames ~50 ms on one core here) may
bound both sides: `--workers` sets how many processes decode for each while the model computes (FETV's configs use
6); umt's workers hand over uint8 frames and the resize runs on the GPU, the reference's resize runs in its workers.
`--ref-batch 1` gives the reference one video at a time, the loop a first reading of FETV's scripts suggests (its
loader batches 16 or 32). On the CPU that loop is the faster reference: FETV's batches make the materialised
attention matrices gigabytes large (8 x 12 x 2,352^2 floats, 2.1 GB, for 8 videos), and memory-bound.

Presets (random weights; speed does not depend on their values):
  b16 (default): UMT-B/16 (768 x 12, 12 heads, patch 16, 224 px) and a BERT-base-sized fusion encoder (V = 30522,
      768 x 12, 12 heads, FFN 3072, fusion from layer 9), E = 512.
  l16: UMT-L/16 (1024 x 24, 16 heads) and a BERT-large-sized one (1024 x 24, 16 heads, FFN 4096, fusion from layer
      19), E = 768: the FETV checkpoint's shape.
  tiny: a 64-wide, 2-block ViT at 32 px and a 64-wide, 4-layer BERT, for a smoke test of seconds.

    python benchmarks/bench_score.py                                     # CPU, b16, 8 videos, 2 rounds
    python benchmarks/bench_score.py --preset tiny --videos 4 --rounds 1  # smoke test, seconds
    python benchmarks/bench_score.py --device cuda                       # GPU, 128 videos, fp16 autocast
    python benchmarks/bench_score.py --device cuda --preset l16 --batch-size 32 --workers 4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import bench_eval
import numpy as np
import side_by_side
import torch
import torch.nn as nn
from bench_distill import RefBlock, sinusoid, sync
from bench_pretrain import RefBertLayer
from bench_pretrain import RefText as PretrainRefText

FRAMES, MAX_LEN = 12, 32  # FETV: num_frames_test, max_txt_l
FETV_BATCHES = (16, 32)  # FETV's test loader batch sizes: UMTScore (configs/), features (configs_fvd/)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # FETV's statistics for a "vit" vision encoder
WIDTH, HEIGHT, VIDEO_FRAMES, FPS = 320, 240, 48, 24  # the generated videos

PRESETS = {
    "b16": {key: bench_eval.PRESETS["umt-b16"][key] for key in ("vision", "text", "embed_dim", "size")},
    "l16": {
        "vision": {"dim": 1024, "depth": 24, "num_heads": 16, "patch_size": 16},
        "text": {
            "vocab_size": 30522,
            "hidden_size": 1024,
            "num_layers": 24,
            "num_heads": 16,
            "intermediate_size": 4096,
            "fusion_layer": 19,
        },
        "embed_dim": 768,
        "size": 224,
    },
    "tiny": {
        "vision": {"dim": 64, "depth": 2, "num_heads": 2, "patch_size": 16},
        "text": {
            "vocab_size": 1000,
            "hidden_size": 64,
            "num_layers": 4,
            "num_heads": 2,
            "intermediate_size": 256,
            "fusion_layer": 2,
        },
        "embed_dim": 32,
        "size": 32,
    },
}
DEFAULTS = {"cpu": {"videos": 8, "batch_size": 4, "tolerance": 1e-3},
            "cuda": {"videos": 128, "batch_size": 16, "tolerance": 2e-2}}  # fmt: skip
"""Per device: videos, umt's videos per block, and the allowed relative difference (fp32 on the CPU; on CUDA both
sides compute in fp16 but in different orders: explicit vs fused attention, one pair vs a block)."""

# Prompt words: every one is in the generated tokenizer's vocabulary, so no prompt meets [UNK].
WORDS = (
    "a the and of in on with near under over through while slowly quickly bright dark red blue green yellow white "
    "black small large old young man woman child dog cat horse bird car boat train street river forest beach city "
    "kitchen park sky water snow rain sun moon walks runs jumps flies swims dances plays eats drinks looks turns "
    "waves smiles camera zoom pan close up view shot slow motion"
).split()
PROMPT_WORDS = (6, 40, 14, 22, 9, 52, 30, 17)  # 40 and 52 words: longer than the 31 WordPiece tokens a prompt keeps


# --- inputs ----------------------------------------------------------------------------------------------------------


def video_frames(index: int) -> Iterator[np.ndarray]:
    """Video `index`: a seeded pattern of 16 x 16 px colour blocks scrolling a few pixels a frame; (H, W, 3) uint8."""
    tile = np.random.default_rng(index).integers(0, 256, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(tile, 16, axis=0), 16, axis=1)  # (H, W, 3)
    for t in range(VIDEO_FRAMES):
        yield np.roll(image, (2 * t, 3 * t), axis=(0, 1))


def make_prompts(count: int, seed: int) -> list[str]:
    """Raw prompts as a user writes them (capitals, punctuation, a hyphen): the protocol cleans them."""
    rng = random.Random(seed)
    prompts = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(PROMPT_WORDS[i % len(PROMPT_WORDS)]))
        prompts.append(f"{words.capitalize()}, in slow-motion.")
    return prompts


def video_text_config(preset: dict):
    """umt's `VideoTextConfig` of a preset at the protocol's frame count."""
    from umt_cli.models.config import TextConfig, VideoTextConfig, VisionConfig

    vision = VisionConfig(**preset["vision"], img_size=preset["size"], num_frames=FRAMES)
    return VideoTextConfig(vision=vision, text=TextConfig(**preset["text"]), embed_dim=preset["embed_dim"])


def prepare(folder: Path, args: argparse.Namespace) -> dict:
    """Write what both children read: videos, prompts, a tokenizer, umt's weights and the settings."""
    from umt_cli.data.prepare.encode import write_h264
    from umt_cli.data.text import build_tokenizer, clean_caption, word_piece_counts, write_tiny_bert
    from umt_cli.models.config import build_video_text

    (folder / "videos").mkdir()
    for i in range(args.videos):
        write_h264(folder / "videos" / f"{i:05d}.mp4", video_frames(i), fps=FPS, width=WIDTH, height=HEIGHT)
    prompts = make_prompts(args.videos, args.seed)
    write_tiny_bert(folder / "tokenizer", words=WORDS)  # ids < len(WORDS) + 5: any vocab_size above that will do
    counts = word_piece_counts(build_tokenizer(folder / "tokenizer"), [clean_caption(p) for p in prompts])
    torch.manual_seed(args.seed)
    model = build_video_text(video_text_config(PRESETS[args.preset]))
    with torch.no_grad():  # biases and LayerNorms start at 0 / 1: perturbed, a swapped or missed one would show
        g = torch.Generator().manual_seed(args.seed)
        for p in model.parameters():
            if p.ndim <= 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    torch.save(model.state_dict(), folder / "weights.pt")
    keys = ("preset", "device", "batch_size", "workers", "threads", "ref_batch")
    settings = {key: getattr(args, key) for key in keys}
    settings |= {"prompts": prompts, "truncated": sum(c > MAX_LEN - 1 for c in counts)}
    (folder / "settings.json").write_text(json.dumps(settings))
    return settings


# --- the reference, written the way the FETV code computes (our own code, for timing only) -------------------------


class RefVision(nn.Module):
    """The official `PretrainVisionTransformer` at evaluation (no mask, no alignment heads, `keep_temporal=True`) with
    its key names; every LayerNorm eps 1e-6 (the official `norm_layer`); `RefBlock`'s plain softmax attention."""

    def __init__(self, dim: int, depth: int, num_heads: int, patch_size: int, size: int) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.patch_embed = nn.Module()
        self.encoder.patch_embed.proj = nn.Conv3d(3, dim, (1, patch_size, patch_size), (1, patch_size, patch_size))
        self.encoder.blocks = nn.ModuleList(RefBlock(dim, num_heads, 0.0) for _ in range(depth))
        self.encoder.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pool_norm = nn.LayerNorm(dim, eps=1e-6)
        self.pos_embed = sinusoid(FRAMES * (size // patch_size) ** 2, dim)  # (1, N, D), a plain tensor as upstream

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T, H, W) -> the final tokens (B, N, D), the fusion layers' memory, and `pool_norm` of each frame's
        token mean (B, T, D)."""
        frames = video.shape[2]
        x = self.encoder.patch_embed.proj(video).flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + self.pos_embed.type_as(x).to(x.device).clone().detach()
        for block in self.encoder.blocks:
            x = block(x)
        x = self.encoder.norm(x)  # (B, N, D)
        b, _, c = x.shape
        return x, self.pool_norm(x.view(b, frames, -1, c).mean(2))  # (B, N, D), (B, T, D)


class RefText(nn.Module):
    """xbert's `BertModel` in `text` and `fusion` modes, keys `bert.*`: `RefBertLayer` (Hugging Face-style explicit
    scores + extended masks), a cross-attention sub-layer from `fusion_layer` on. The sizes of `PRESETS`."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                 fusion_layer: int, vision_dim: int) -> None:  # fmt: skip
        super().__init__()
        assert intermediate_size == 4 * hidden_size, "RefBertLayer's feed-forward is 4x wide, as in BERT"
        self.fusion_layer, self.num_layers = fusion_layer, num_layers
        self.bert = nn.Module()
        emb = self.bert.embeddings = nn.Module()
        emb.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=0)
        emb.position_embeddings = nn.Embedding(512, hidden_size)
        emb.token_type_embeddings = nn.Embedding(2, hidden_size)
        emb.LayerNorm, emb.dropout = nn.LayerNorm(hidden_size, eps=1e-12), nn.Dropout(0.1)
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList(
            RefBertLayer(hidden_size, num_heads, j >= fusion_layer, vision_dim) for j in range(num_layers)
        )

    def text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`mode="text"`: (B, L) ids and mask -> (B, L, Dtxt)."""
        emb = self.bert.embeddings
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        x = emb.word_embeddings(ids) + emb.token_type_embeddings(torch.zeros_like(ids))
        x = emb.dropout(emb.LayerNorm(x + emb.position_embeddings(positions)))  # (B, L, Dtxt)
        bias = PretrainRefText.extended(mask, x.dtype)  # (B, 1, 1, L)
        for j in range(self.fusion_layer):
            x = self.bert.encoder.layer[j](x, bias)
        return x

    def fusion(self, x: torch.Tensor, mask: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """`mode="fusion"`: text states (B, L, Dtxt) attending to `vision` (B, N, D) -> (B, L, Dtxt)."""
        bias = PretrainRefText.extended(mask, x.dtype)  # (B, 1, 1, L)
        ones = torch.ones(vision.shape[:-1], dtype=torch.long, device=vision.device)  # the script's encoder_att
        vision_bias = (1.0 - ones[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # invert_attention_mask
        for j in range(self.fusion_layer, self.num_layers):
            x = self.bert.encoder.layer[j](x, bias, vision, vision_bias)
        return x


class RefModel(nn.Module):
    """The official `UMT` module's parts that scoring uses, with its key names (so umt's state dict loads as is)."""

    def __init__(self, preset: dict) -> None:
        super().__init__()
        v, t, e = preset["vision"], preset["text"], preset["embed_dim"]
        self.vision_encoder = RefVision(**v, size=preset["size"])
        self.text_encoder = RefText(**t, vision_dim=v["dim"])
        self.vision_proj, self.text_proj = nn.Linear(v["dim"], e), nn.Linear(t["hidden_size"], e)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.itm_head = nn.Linear(t["hidden_size"], 2)


def middle_indices(vlen: int, num_frames: int) -> list[int]:
    """The official `get_frame_indices(sample="middle")`: the middle frame of each of `num_frames` equal segments,
    padded with the last when the video is shorter."""
    intervals = np.linspace(start=0, stop=vlen, num=min(num_frames, vlen) + 1).astype(int)
    indices = [(start + end - 1) // 2 for start, end in zip(intervals[:-1], intervals[1:])]
    return indices + [indices[-1]] * (num_frames - len(indices))


def read_decord(path: Path) -> torch.Tensor:
    """The official `read_frames_decord` (torch bridge): uint8 (T, C, H, W)."""
    import decord

    decord.bridge.set_bridge("torch")  # as upstream's video_utils, here in the worker that reads
    reader = decord.VideoReader(str(path), num_threads=1)
    frames = reader.get_batch(middle_indices(len(reader), FRAMES))  # (T, H, W, C) uint8
    return frames.permute(0, 3, 1, 2)


def read_pyav(path: Path) -> torch.Tensor:
    """The official `read_frames_av` (without decord): every frame decoded, the sampled ones kept; (T, C, H, W)."""
    import av

    with av.open(str(path)) as container:
        frames = [torch.from_numpy(f.to_rgb().to_ndarray()) for f in container.decode(video=0)]
    return torch.stack([frames[i] for i in middle_indices(len(frames), FRAMES)]).permute(0, 3, 1, 2)


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 -> [0, 1] float (the FETV transform's `Lambda`; a named function so a loader worker can pickle it)."""
    return frames.float().div(255.0)


class RefClips(torch.utils.data.Dataset):
    """FETV's test dataset: each video read and transformed in `__getitem__`, so in the test loader's workers."""

    def __init__(self, videos: list[Path], read: Callable[[Path], torch.Tensor], transform: Callable) -> None:
        self.videos, self.read, self.transform = videos, read, transform

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.read(self.videos[index]))  # (T, C, S, S)


def reference_batches(ref_batch: int | None) -> tuple[int, int]:
    """The reference's videos a vision batch for (UMTScore, features): `--ref-batch`, else FETV's."""
    return (ref_batch, ref_batch) if ref_batch else FETV_BATCHES


def reference_setup(settings: dict, folder: Path, device: str):
    """(UMTScore of each pair, FVD feature of each video), computed as FETV's `tasks/t2v_eval_utils.py` and
    `tasks/video_feature_extract_utils.py` do: the test loader (`settings["workers"]` workers, as umt's; FETV's
    configs use 6) gives the vision encoder batches of `align_batch` videos for UMTScore and `feature_batch` for the
    features (FETV's configs: 16 and 32); prompts are encoded 256 at a time (`extract_text_feats`); the fusion layers
    then score one pair at a time (`topk_idx = torch.tensor([i])`)."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    from umt_cli.data.text import build_tokenizer

    preset = PRESETS[settings["preset"]]
    model = RefModel(preset)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.to(device).eval()
    torch.backends.cudnn.benchmark = True  # as tasks/t2v_eval.py sets it (the patch embedding's Conv3d)
    # The official `[CLS] X` tokenizer: called as the script calls it, it pads and truncates to `[CLS]` + 31 tokens.
    tokenizer = build_tokenizer(folder / "tokenizer")
    read = read_decord if importlib.util.find_spec("decord") else read_pyav
    # The FETV test transform; antialias=False is what torchvision 0.13 (FETV's) did on tensors.
    size = preset["size"]
    transform = transforms.Compose([
        transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC, antialias=False),
        transforms.Lambda(to_unit),
        transforms.Normalize(MEAN, STD),
    ])  # fmt: skip
    autocast = partial(torch.autocast, "cuda", dtype=torch.float16) if device == "cuda" else nullcontext
    align_batch, feature_batch = reference_batches(settings["ref_batch"])

    def batches(videos: list[Path], batch: int) -> Iterator[torch.Tensor]:
        """FETV's `create_loader` for testing: in order, pinned memory; (B, C, T, S, S) as `encode_vision` permutes."""
        loader = torch.utils.data.DataLoader(RefClips(videos, read, transform), batch_size=batch,
                                             num_workers=settings["workers"], pin_memory=device == "cuda")  # fmt: skip
        for clips in loader:  # (B, T, C, S, S)
            yield clips.to(device, non_blocking=True).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def umtscore(videos: list[Path], prompts: list[str]) -> list[float]:
        with autocast():  # `evaluation_wrapper` autocasts the whole evaluation
            hidden, masks = [], []
            for i in range(0, len(prompts), 256):  # extract_text_feats
                text = tokenizer(prompts[i : i + 256], padding="max_length", truncation=True, max_length=MAX_LEN,
                                 return_tensors="pt").to(device)  # fmt: skip
                hidden.append(model.text_encoder.text(text.input_ids, text.attention_mask))  # (b, L, Dtxt)
                masks.append(text.attention_mask)  # (b, L)
            text_states, text_masks = torch.cat(hidden), torch.cat(masks)  # (n, L, Dtxt), (n, L)
            tokens = torch.cat([model.vision_encoder(clips)[0] for clips in batches(videos, align_batch)])  # (n, N, D)
            scores = []
            for i in range(len(videos)):  # the fusion: pair i alone
                fused = model.text_encoder.fusion(text_states[i : i + 1], text_masks[i : i + 1], tokens[i : i + 1])
                scores.append(model.itm_head(fused[:, 0])[:, 1])  # (1,)
        return torch.cat(scores).float().tolist()

    @torch.no_grad()
    def features(videos: list[Path]) -> torch.Tensor:
        with autocast():
            pooled = [model.vision_encoder(clips)[1] for clips in batches(videos, feature_batch)]  # (b, T, D) each
            return model.vision_proj(torch.cat(pooled)).mean(1).float().cpu()  # (n, E)

    return umtscore, features


# --- umt: `umt score`'s code path ------------------------------------------------------------------------------------


def umt_setup(settings: dict, folder: Path, device: str):
    """(UMTScore of each pair, FVD feature of each video) through `score_pairs`, as `umt score` calls it."""
    from umt_cli.data.text import build_tokenizer
    from umt_cli.models.config import build_video_text
    from umt_cli.scoring.pairs import score_pairs
    from umt_cli.scoring.protocols import clip_reader, prompt_text, resolve_protocol

    preset = PRESETS[settings["preset"]]
    config = video_text_config(preset)
    model = build_video_text(config)
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.to(device).eval()
    # FETV at the preset's frame side; the CPU computes in fp32 (what `umt score` records as an override there).
    overrides = {"size": preset["size"], "precision": None if device == "cuda" else "fp32"}
    protocol, _ = resolve_protocol("fetv", overrides)
    reader = clip_reader(protocol, config.preprocess)
    tokenizer = build_tokenizer(folder / "tokenizer")
    autocast = partial(torch.autocast, "cuda", dtype=torch.float16) if protocol.precision == "fp16" else nullcontext
    common = dict(batch_size=settings["batch_size"], device=device, autocast=autocast,
                  num_workers=settings["workers"])  # fmt: skip

    def umtscore(videos: list[Path], prompts: list[str]) -> list[float]:
        texts = [prompt_text(protocol, prompt) for prompt in prompts]
        out = score_pairs(model, videos, reader, prompts=texts, tokenizer=tokenizer, max_len=protocol.max_len, **common)
        return out.itm

    def features(videos: list[Path]) -> torch.Tensor:
        return score_pairs(model, videos, reader, features=True, **common).features  # (n, E)

    def both(videos: list[Path], prompts: list[str]) -> tuple[list[float], torch.Tensor]:
        """`umt score align`'s pass: UMTScores and the FVD features it caches for `umt score fvd`, one encoding."""
        texts = [prompt_text(protocol, prompt) for prompt in prompts]
        out = score_pairs(model, videos, reader, prompts=texts, tokenizer=tokenizer, max_len=protocol.max_len,
                          features=True, **common)  # fmt: skip
        return out.itm, out.features

    return umtscore, features, both


# --- measuring -------------------------------------------------------------------------------------------------------


def timed(device: str, work: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of `work()`, with the device's queue drained on both sides."""
    sync(device)
    start = time.perf_counter()
    result = work()
    sync(device)
    return time.perf_counter() - start, result


def child(variant: str, folder: Path) -> dict:
    """One round of one variant: a warm-up, then UMTScore over every pair and FVD features of every video."""
    from umt_cli.data.text import clean_caption

    settings = json.loads((folder / "settings.json").read_text())
    device = settings["device"]
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    videos = sorted((folder / "videos").iterdir())
    prompts = settings["prompts"]
    both = None
    if variant == "reference":  # FETV cleans prompts when it builds its dataset (`pre_text`), before any timing
        umtscore, features = reference_setup(settings, folder, device)
        warm = reference_batches(settings["ref_batch"])[0]
        prompts = [clean_caption(p) for p in prompts]
    else:  # umt cleans them inside its timed call (`prompt_text`)
        umtscore, features, both = umt_setup(settings, folder, device)
        warm = settings["batch_size"]
    # Warm-up (thread pools, allocator, kernels for the timed shapes): a full batch or block, whose first run at that
    # size is otherwise slower (new matmul shapes).
    warm = min(warm, len(videos))
    umtscore(videos[:warm], prompts[:warm])
    features(videos[:warm])
    itm_s, itm = timed(device, lambda: umtscore(videos, prompts))
    fvd_s, feats = timed(device, lambda: features(videos))
    # Both metrics of the generated videos: FETV runs two scripts (two encodings); `umt score align` one pass.
    both_s = itm_s + fvd_s
    if both is not None:
        both_s, (both_itm, both_feats) = timed(device, lambda: both(videos, prompts))
        same = torch.allclose(torch.tensor(both_itm), torch.tensor(itm), rtol=1e-4, atol=1e-4)
        assert same and torch.allclose(both_feats, feats, rtol=1e-4, atol=1e-4), "one pass must give two's numbers"
    return {
        "itm_s": itm_s,
        "fvd_s": fvd_s,
        "both_s": both_s,
        "itm": itm,
        "features": feats.tolist(),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # MiB on Linux
        "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,  # the largest worker
        "gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def run_rounds(folder: Path, rounds: int) -> dict[str, list[dict]]:
    """Every round runs the reference, then umt, each in a fresh process."""

    def line(result: dict) -> str:
        return f"UMTScore {result['itm_s']:.2f} s, FVD features {result['fvd_s']:.2f} s, both {result['both_s']:.2f} s"

    return side_by_side.run_children(__file__, str(folder), rounds, line)


def differences(results: dict[str, list[dict]]) -> dict[str, tuple[float, float]]:
    """(max |umt - reference|, that relative to the largest |reference| value) of the scores and of the features,
    over every round."""
    out = {}
    for key in ("itm", "features"):
        worst, scale = 0.0, 0.0
        for ref, ours in zip(results["reference"], results["umt"]):
            a, b = torch.tensor(ref[key]), torch.tensor(ours[key])
            worst = max(worst, float((a - b).abs().max()))
            scale = max(scale, float(a.abs().max()))
        out[key] = (worst, worst / max(scale, 1e-12))
    return out


def report(results: dict[str, list[dict]], settings: dict, args: argparse.Namespace) -> None:
    from umt_cli.data.decode import resolve_backend

    preset = PRESETS[args.preset]
    v, t, n = preset["vision"], preset["text"], args.videos
    tokens = FRAMES * (preset["size"] // v["patch_size"]) ** 2
    precision = "fp16 autocast" if args.device == "cuda" else "fp32"
    decoder = "decord" if importlib.util.find_spec("decord") else "PyAV"
    batches = (min(b, n) for b in reference_batches(args.ref_batch))  # fewer videos, smaller batches
    ref_batches = "/".join(dict.fromkeys(str(b) for b in batches))
    print(
        f"torch {torch.__version__}, {args.device} {precision}, threads {args.threads or torch.get_num_threads()}; "
        f"preset {args.preset}: vision {v['dim']} x {v['depth']} ({v['num_heads']} heads) at {preset['size']} px, "
        f"{FRAMES} frames = {tokens} tokens; text {t['hidden_size']} x {t['num_layers']} (fusion from layer "
        f"{t['fusion_layer']}), E {preset['embed_dim']}"
    )
    print(
        f"{n} videos ({WIDTH}x{HEIGHT}, {VIDEO_FRAMES} frames, H.264), {n} prompts ({settings['truncated']} longer "
        f"than {MAX_LEN - 1} tokens); umt: {args.batch_size} videos a block, {args.workers} worker(s), "
        f"{resolve_backend('auto')}; reference: {decoder}, vision batches of {ref_batches} "
        f"videos (UMTScore/features), the same worker(s), the fusion one pair at a time; median of {args.rounds} "
        f"round(s)"
    )
    seconds = {variant: {key: statistics.median(r[key] / n for r in rs) for key in ("itm_s", "fvd_s", "both_s")}
               for variant, rs in results.items()}  # fmt: skip
    for variant in ("reference", "umt"):
        s = seconds[variant]
        rss = max(r["rss_mib"] for r in results[variant])
        workers = max(r["worker_rss_mib"] for r in results[variant])
        # A forked worker's RSS counts the pages it shares with the main process (the model's among them).
        extra = (
            f" (decode worker {workers:.0f} MiB, shared pages included)" if variant == "umt" and args.workers else ""
        )
        print(
            f"{variant:>9}: UMTScore {1 / s['itm_s']:.3g} pairs/s ({s['itm_s'] * 1e3:.0f} ms/pair), FVD features "
            f"{1 / s['fvd_s']:.3g} clips/s ({s['fvd_s'] * 1e3:.0f} ms/clip); peak RSS {rss:.0f} MiB{extra}"
        )
    diff = differences(results)
    failed = [key for key, (_, rel) in diff.items() if not rel <= args.tolerance]
    print(
        f"umt vs reference: UMTScore max |diff| {diff['itm'][0]:.2e} (relative {diff['itm'][1]:.2e}), FVD features "
        f"max |diff| {diff['features'][0]:.2e} (relative {diff['features'][1]:.2e}); tolerance {args.tolerance:g}: "
        f"{'FAILED' if failed else 'ok'}"
    )
    ratios = {key: seconds["reference"][key] / seconds["umt"][key] for key in ("itm_s", "fvd_s", "both_s")}
    print(f"speed-up umt vs reference: UMTScore {ratios['itm_s']:.2f}x, FVD features {ratios['fvd_s']:.2f}x "
          f"(goal >= 2x)")  # fmt: skip
    print(f"both metrics of the generated videos (FETV: two scripts, two encodings; umt: `score align`, whose pass "
          f"caches the features `score fvd` reads): reference {seconds['reference']['both_s'] * 1e3:.0f} ms/video, "
          f"umt {seconds['umt']['both_s'] * 1e3:.0f} ms/video: {ratios['both_s']:.2f}x")  # fmt: skip
    if failed:
        sys.exit(f"FAILED: umt's {' and '.join(failed)} differ from the reference's beyond {args.tolerance:g}")
    side_by_side.gpu_memory_and_exit_code(results, args.device, min(ratios.values()))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default="b16", choices=sorted(PRESETS))
    parser.add_argument("--videos", type=int, default=None, help="videos (and pairs); default: 8 on CPU, 128 on GPU")
    parser.add_argument("--batch-size", type=int, default=None, help="umt's videos a block; default: 4 CPU, 16 GPU")
    parser.add_argument("--workers", type=int, default=1, help="umt's decode workers (0: decode in the main process)")
    parser.add_argument("--ref-batch", type=int, default=None,
                        help="the reference's videos a vision batch; default: FETV's 16 (UMTScore) and 32 (features); "
                             "1: one video at a time")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; default: torch's choice")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest relative difference; default: 1e-3 CPU (fp32), 2e-2 GPU (fp16)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    side_by_side.device_defaults(parser, args, DEFAULTS)
    ref_batch = 1 if args.ref_batch is None else args.ref_batch  # 0 is refused, not taken for "unset"
    if min(args.videos, args.batch_size, args.rounds, ref_batch) < 1 or args.workers < 0:
        parser.error("--videos, --batch-size, --ref-batch and --rounds must be >= 1, --workers >= 0")
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.data))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        settings = prepare(folder, args)
        print(f"inputs and weights written in {time.perf_counter() - started:.1f} s", flush=True)
        results = run_rounds(folder, args.rounds)
    report(results, settings, args)


if __name__ == "__main__":
    main()
