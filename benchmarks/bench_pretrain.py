"""Stage-2 step time: umt vs a reference step written the way the official implementation computes it.

One optimizer step = teacher forward, attention masking, MLM corruption, the four losses (UTA, VTC, VTM, MLM),
backward and AdamW; UMT-B/16 encoder (768 x 12, K = 6 alignment heads), the CLIP-B/16 teacher (random weights), a
BERT-base-sized random text encoder (12 layers, 768, fusion from layer 9, V = 30522, L = 32). A video batch (4 x
224^2, mask ratio 0.8) and an image batch (1 frame, ratio 0.5) are timed separately; their sum is one step of each.

The reference follows `multi_modality/models/umt.py` and its modules: plain softmax attention in the student,
`nn.MultiheadAttention` in the teacher (full attention weights in the last block), `ln_post` and `proj` on every
teacher token, `x[~mask]` gathers after a patch embedding of every token, Hugging Face-style BERT layers with explicit
attention and extended masks, the MLM head on every position, `torch.multinomial` masking on the global RNG and a
default `torch.optim.AdamW`. umt's timed path is its real code: `ClipTeacher.encode/targets`, the attention masker,
`mlm_mask`, `pretrain_losses`, backward and `build_adamw`. Both carry the same weights (umt's, saved by the parent).

Each implementation runs in its own child process (so each one's peak resident memory can be read), alternating over
rounds; the parent prints median step times, the ratio and peak memory.

    python benchmarks/bench_pretrain.py --rounds 2       # CPU, fp32, batch 2 video + 2 image
    python benchmarks/bench_pretrain.py --device cuda    # GPU: umt in bf16 vs the reference in fp16 autocast + scaler
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from contextlib import nullcontext

import side_by_side
import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_distill import RefBlock, RefTeacher, sinusoid, sync

FRAMES, SIZE, PATCH, K, CT = 4, 224, 16, 6, 512
GRID = SIZE // PATCH  # 14
RATIOS = {"video": 0.8, "image": 0.5}
VOCAB, DTXT, TEXT_LAYERS, FUSION, TEXT_LEN, E = 30522, 768, 12, 9, 32, 512
PAD, CLS, SEP, MASK_ID = 0, 101, 102, 103
MLM_PROB = 0.5


# --- the reference, written the way the official code computes (our own code, for timing only) ----------------------


class RefVision(nn.Module):
    """The official stage-2 `PretrainVisionTransformer` with its key names (`encoder`, `clip_decoder`, `pool_norm`)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, drop_path: float = 0.1) -> None:
        super().__init__()
        n = FRAMES * GRID * GRID
        self.encoder = nn.Module()
        self.encoder.patch_embed = nn.Module()
        self.encoder.patch_embed.proj = nn.Conv3d(3, dim, (1, PATCH, PATCH), (1, PATCH, PATCH))
        rates = [x.item() for x in torch.linspace(0, drop_path, depth)]
        self.encoder.blocks = nn.ModuleList(RefBlock(dim, heads, rates[i]) for i in range(depth))
        self.encoder.norm = nn.LayerNorm(dim, eps=1e-6)
        self.clip_decoder = nn.ModuleList()
        for _ in range(K):
            head = nn.Module()
            head.head, head.norm = nn.Linear(dim, CT), nn.LayerNorm(CT)  # eps 1e-5 in stage 2
            self.clip_decoder.append(head)
        self.pool_norm = nn.LayerNorm(dim, eps=1e-6)
        self.pos_embed, self.img_pos_embed = sinusoid(n, dim), sinusoid(GRID * GRID, dim)
        self.taps = [depth - 1 - i for i in range(K)]

    def forward(self, video: torch.Tensor, masked: torch.Tensor):
        use_image = video.shape[2] == 1
        table = self.img_pos_embed if use_image else self.pos_embed
        x = self.encoder.patch_embed.proj(video).flatten(2).transpose(1, 2)  # every token
        x = x + table.type_as(x).to(x.device).clone().detach()
        b, _, c = x.shape
        x = x[~masked].reshape(b, -1, c)
        taps = []
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        x_vis = self.encoder.norm(x)
        taps = self.encoder.norm(torch.stack(taps))
        pos = table.repeat(b, 1, 1).type_as(x).to(x.device).clone().detach()[~masked].view(b, -1, c)
        full = taps + pos.unsqueeze(0).repeat(K, 1, 1, 1)
        aligned = torch.stack([head.norm(head.head(full[i])) for i, head in enumerate(self.clip_decoder)])
        return x_vis, self.pool_norm(x_vis.mean(1, keepdim=True)), aligned


class RefSelfAttention(nn.Module):
    """Hugging Face `BertSelfAttention`: explicit scores, + extended mask, softmax, dropout, context."""

    def __init__(self, dim: int, heads: int, kv_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(kv_dim, dim), nn.Linear(kv_dim, dim)
        self.dropout = nn.Dropout(0.1)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        source = x if memory is None else memory
        q, k, v = self.split(self.query(x)), self.split(self.key(source)), self.split(self.value(source))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
        probs = self.dropout(nn.Softmax(dim=-1)(scores))
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return context.view(*context.shape[:-2], -1)


class RefDenseNorm(nn.Module):
    """`BertSelfOutput` / `BertOutput`: dense, dropout, LayerNorm of the residual sum."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.dense, self.LayerNorm, self.dropout = nn.Linear(in_dim, dim), nn.LayerNorm(dim, eps=1e-12), nn.Dropout(0.1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + x)


class RefAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int) -> None:
        super().__init__()
        self.self, self.output = RefSelfAttention(dim, heads, kv_dim), RefDenseNorm(dim, dim)

    def forward(self, x, mask, memory=None):
        return self.output(self.self(x, mask, memory), x)


class RefBertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, cross: bool, vision_dim: int) -> None:
        super().__init__()
        self.attention = RefAttentionBlock(dim, heads, dim)
        if cross:
            self.crossattention = RefAttentionBlock(dim, heads, vision_dim)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(dim, 4 * dim)
        self.output = RefDenseNorm(4 * dim, dim)

    def forward(self, x, mask, vision=None, vision_mask=None):
        x = self.attention(x, mask)
        if hasattr(self, "crossattention"):
            x = self.crossattention(x, vision_mask, vision)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class RefText(nn.Module):
    """`BertForMaskedLM` with xbert's text / fusion modes; keys `bert.*` and `cls.predictions.*`."""

    def __init__(self, vision_dim: int = 768) -> None:
        super().__init__()
        self.bert = nn.Module()
        emb = self.bert.embeddings = nn.Module()
        emb.word_embeddings = nn.Embedding(VOCAB, DTXT, padding_idx=PAD)
        emb.position_embeddings, emb.token_type_embeddings = nn.Embedding(512, DTXT), nn.Embedding(2, DTXT)
        emb.LayerNorm, emb.dropout = nn.LayerNorm(DTXT, eps=1e-12), nn.Dropout(0.1)
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList(
            RefBertLayer(DTXT, 12, j >= FUSION, vision_dim) for j in range(TEXT_LAYERS)
        )
        self.cls = nn.Module()
        pred = self.cls.predictions = nn.Module()
        pred.transform = nn.Module()
        pred.transform.dense, pred.transform.LayerNorm = nn.Linear(DTXT, DTXT), nn.LayerNorm(DTXT, eps=1e-12)
        pred.decoder = nn.Linear(DTXT, VOCAB)
        pred.bias = pred.decoder.bias
        pred.decoder.weight = emb.word_embeddings.weight

    @staticmethod
    def extended(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - mask[:, None, None, :].to(dtype)) * -10000.0  # get_extended_attention_mask

    def text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emb = self.bert.embeddings
        positions = torch.arange(ids.shape[1], device=ids.device)[None]
        x = emb.word_embeddings(ids) + emb.token_type_embeddings(torch.zeros_like(ids))
        x = emb.dropout(emb.LayerNorm(x + emb.position_embeddings(positions)))
        bias = self.extended(mask, x.dtype)
        for j in range(FUSION):
            x = self.bert.encoder.layer[j](x, bias)
        return x

    def fusion(self, x: torch.Tensor, mask: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        bias = self.extended(mask, x.dtype)
        ones = torch.ones(vision.shape[:-1], device=vision.device)
        vision_bias = (1.0 - ones[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # invert_attention_mask
        for j in range(FUSION, TEXT_LAYERS):
            x = self.bert.encoder.layer[j](x, bias, vision, vision_bias)
        return x

    def mlm_logits(self, x: torch.Tensor) -> torch.Tensor:
        t = self.cls.predictions.transform
        return self.cls.predictions.decoder(t.LayerNorm(F.gelu(t.dense(x))))


class RefModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vision_encoder, self.text_encoder = RefVision(), RefText()
        self.vision_proj, self.text_proj = nn.Linear(768, E), nn.Linear(DTXT, E)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.itm_head = nn.Linear(DTXT, 2)


def get_sim(vision_proj, text_proj, temp):
    vision_proj, text_proj = F.normalize(vision_proj, dim=-1), F.normalize(text_proj, dim=-1)
    sim = torch.einsum("mld,nd->mln", vision_proj, text_proj).mean(1) / temp
    return sim, sim.T


def reference_losses(teacher, model, video, ids, mask, idx):
    """`UMT.forward` of the official code, all four losses, as one function."""
    with torch.no_grad():
        model.temp.clamp_(0.001, 0.5)
        clip_output, attn = teacher(video)
        bt, n = attn.shape
        n_vis = n - int(n * (RATIOS["image"] if video.shape[2] == 1 else RATIOS["video"]))
        importance = torch.multinomial(attn.float(), n)
        masked = torch.ones((bt, n), device=video.device)
        masked[torch.arange(bt, device=video.device).view(-1, 1).repeat(1, n_vis), importance[:, :n_vis]] = 0
        masked = masked.view(video.shape[0], -1).bool()
        clip_output = clip_output[:, ~masked].reshape(K, video.shape[0], -1, clip_output.shape[-1])
    vision_embeds, pooled, student = model.vision_encoder(video, masked)
    text_embeds = model.text_encoder.text(ids, mask)
    vision_proj, text_proj = model.vision_proj(pooled), model.text_proj(text_embeds[:, 0])
    # UTA (l2 norm, l2 loss)
    s, t = student / student.norm(dim=-1, keepdim=True), clip_output / clip_output.norm(dim=-1, keepdim=True)
    uta = (2 - 2 * (s * t).sum(dim=-1)).mean()
    # VTC (a single process: the gather is the identity)
    sim_v2t, sim_t2v = get_sim(vision_proj, text_proj, model.temp)
    with torch.no_grad():
        same = torch.eq(idx.view(-1, 1), idx.view(1, -1)).to(sim_v2t.dtype)
        targets = same / same.sum(1, keepdim=True)
    vtc = (
        -torch.sum(F.log_softmax(sim_v2t, dim=1) * targets, dim=1).mean()
        - torch.sum(F.log_softmax(sim_t2v, dim=1) * targets, dim=1).mean()
    ) / 2
    # VTM
    with torch.no_grad():
        sim_v2t, sim_t2v = get_sim(vision_proj, text_proj, model.temp)
        w_v2t, w_t2v = F.softmax(sim_v2t + 1e-4, dim=1), F.softmax(sim_t2v + 1e-4, dim=1)
        w_v2t.masked_fill_(same.bool(), 0)
        w_t2v.masked_fill_(same.bool(), 0)
        w_v2t = torch.nan_to_num_(w_v2t, nan=1e-2, posinf=1e-2, neginf=1e-2)
        w_t2v = torch.nan_to_num_(w_t2v, nan=1e-2, posinf=1e-2, neginf=1e-2)
    neg_video = torch.multinomial(w_t2v, 1).squeeze(1)
    neg_text = torch.multinomial(w_v2t, 1).squeeze(1)
    vision_all = torch.cat([vision_embeds, vision_embeds[neg_video], vision_embeds], dim=0)
    text_all = torch.cat([text_embeds, text_embeds, text_embeds[neg_text]], dim=0)
    mask_all = torch.cat([mask, mask, mask[neg_text]], dim=0)
    logits = model.itm_head(model.text_encoder.fusion(text_all, mask_all, vision_all)[:, 0])
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    labels[: video.shape[0]] = 1
    vtm = F.cross_entropy(logits, labels)
    # MLM: corruption on the CPU global RNG (as upstream), the head on every position
    mlm_ids, mlm_labels = ids.clone().cpu(), ids.clone().cpu()
    selected = torch.bernoulli(torch.full(mlm_ids.shape, MLM_PROB)).bool()
    selected[mlm_ids == PAD] = False
    selected[mlm_ids == CLS] = False
    mlm_labels[~selected] = -100
    replaced = torch.bernoulli(torch.full(mlm_ids.shape, 0.8)).bool() & selected
    mlm_ids[replaced] = MASK_ID
    randomised = torch.bernoulli(torch.full(mlm_ids.shape, 0.5)).bool() & selected & ~replaced
    mlm_ids[randomised] = torch.randint(VOCAB, mlm_ids.shape, dtype=torch.long)[randomised]
    mlm_ids, mlm_labels = mlm_ids.to(ids.device), mlm_labels.to(ids.device)
    hidden = model.text_encoder.fusion(model.text_encoder.text(mlm_ids, mask), mask, vision_embeds)
    scores = model.text_encoder.mlm_logits(hidden)
    mlm = F.cross_entropy(scores.view(-1, VOCAB), mlm_labels.view(-1))
    return uta + vtc + vtm + mlm


def reference_setup(weights: str, device: str):
    state = torch.load(f"{weights}/model.pt", weights_only=True)
    model, teacher = RefModel(), RefTeacher(normalize=False)  # official stage 2: un-normalised targets
    model.load_state_dict(state)
    teacher.load_state_dict(torch.load(f"{weights}/teacher.pt", weights_only=True))
    model.to(device).train()
    teacher.to(device).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.02, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    autocast = (lambda: torch.autocast("cuda", torch.float16)) if device == "cuda" else nullcontext

    def step(video, text, idx):
        with autocast():
            loss = reference_losses(teacher, model, video, text[0], text[1], idx)
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss

    return step


# --- umt's step: its real code ---------------------------------------------------------------------------------------


def umt_modules():
    """umt's stage-2 model and teacher at the benchmark's sizes (seeded, random weights)."""
    from umt_cli.models.clip import ClipTeacher
    from umt_cli.models.heads import AlignHeads
    from umt_cli.models.student import VideoViT
    from umt_cli.models.text import TextEncoder
    from umt_cli.models.video_text import VideoTextModel, VisionEncoder

    torch.manual_seed(0)
    encoder = VideoViT(
        img_size=SIZE,
        patch_size=PATCH,
        num_frames=FRAMES,
        tubelet=1,
        dim=768,
        depth=12,
        num_heads=12,
        drop_path=0.1,
        align_layers=K,
    )
    heads = AlignHeads(num_tokens=encoder.num_tokens, dim=768, out_dim=CT, num_layers=K, eps=1e-5, l2=False)
    text = TextEncoder(
        vocab_size=VOCAB,
        hidden_size=DTXT,
        num_layers=TEXT_LAYERS,
        num_heads=12,
        intermediate_size=4 * DTXT,
        fusion_layer=FUSION,
        encoder_width=768,
    )
    model = VideoTextModel(
        vision_encoder=VisionEncoder(encoder=encoder, clip_decoder=heads), text_encoder=text, embed_dim=E
    )
    teacher = ClipTeacher(
        input_size=SIZE, patch_size=PATCH, width=768, layers=12, heads=12, output_dim=CT, return_layers=K
    )
    teacher.init_weights(generator=torch.Generator().manual_seed(1))
    return model, teacher


def umt_setup(weights: str, device: str):
    from umt_cli.data.text import TextBatch
    from umt_cli.losses.pretrain import PretrainInputs, pretrain_losses
    from umt_cli.masking.build import TokenGrid, attention_masker, mask_generators
    from umt_cli.masking.text import mlm_mask
    from umt_cli.utils.optim import build_adamw

    model, teacher = umt_modules()
    model.load_state_dict(torch.load(f"{weights}/model.pt", weights_only=True))
    teacher.load_state_dict(torch.load(f"{weights}/teacher.pt", weights_only=True))
    model.to(device).train()
    teacher.to(device)
    optimizer = build_adamw(model, lr=1e-4, weight_decay=0.02, betas=(0.9, 0.999), eps=1e-8)
    autocast = (lambda: torch.autocast("cuda", torch.bfloat16)) if device == "cuda" else nullcontext
    weights_of = dict(uta=1.0, vtc=1.0, vtm=1.0, mlm=1.0)
    negatives = torch.Generator(device).manual_seed(0)
    mlm_generator = torch.Generator(device).manual_seed(1)
    epoch = [0]

    def step(video, text, idx):
        epoch[0] += 1
        kind = "image" if video.shape[2] == 1 else "video"
        grid = TokenGrid(video.shape[2], GRID, GRID)
        with autocast():
            with torch.no_grad():
                encoded = teacher.encode(video)  # cls_attn (B, T, HW)
                cls_attn = encoded.cls_attn.float()
                generators = mask_generators(0, epoch[0], idx.cpu(), cls_attn.device)
                visible = attention_masker(grid, RATIOS[kind], cls_attn=cls_attn, generators=generators).visible
                targets = teacher.targets(encoded, visible)  # (K, B, Nv, Ct)
            batch = TextBatch(*text)
            mlm = mlm_mask(
                batch.ids,
                vocab_size=VOCAB,
                mask_id=MASK_ID,
                pad_id=PAD,
                cls_id=CLS,
                prob=MLM_PROB,
                generator=mlm_generator,
            )
            inputs = PretrainInputs(video, visible, targets, batch, mlm, idx)
            losses = pretrain_losses(model, inputs, negatives=negatives, weights=weights_of)
            loss = losses.total(weights_of)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


# --- measuring -------------------------------------------------------------------------------------------------------


def inputs(kind: str, batch: int, device: str):
    g = torch.Generator().manual_seed(0 if kind == "video" else 1)
    frames = FRAMES if kind == "video" else 1
    video = torch.randn(batch, 3, frames, SIZE, SIZE, generator=g).to(device)
    ids = torch.randint(1000, VOCAB, (batch, TEXT_LEN), generator=g)
    ids[:, 0] = CLS
    lengths = torch.randint(6, TEXT_LEN + 1, (batch,), generator=g)
    ids[torch.arange(TEXT_LEN)[None, :] >= lengths[:, None]] = PAD
    mask = (ids != PAD).long()
    idx = torch.arange(batch) + (0 if kind == "video" else batch)
    return video, (ids.to(device), mask.to(device)), idx.to(device)


def child(variant: str, device: str, steps: int, batch: int, weights: str) -> dict:
    torch.manual_seed(0)
    step = reference_setup(weights, device) if variant == "reference" else umt_setup(weights, device)
    data = {kind: inputs(kind, batch, device) for kind in ("video", "image")}
    times = {"video": [], "image": []}
    losses = []
    for i in range(steps + 1):
        for kind in ("video", "image"):
            sync(device)
            start = time.perf_counter()
            loss = step(*data[kind])
            sync(device)
            if i:  # the first step of each kind warms up allocators and kernels
                times[kind].append(time.perf_counter() - start)
            losses.append(float(loss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"times": times, "rss_mib": peak, "gpu_mib": gpu_peak, "losses": losses[:2]}


def save_weights(folder: str) -> None:
    """umt's initial weights, which both children load (so both compute the same function)."""
    model, teacher = umt_modules()
    torch.save(model.state_dict(), f"{folder}/model.pt")
    torch.save(teacher.state_dict(), f"{folder}/teacher.pt")


def report(results: dict, device: str, batch: int) -> None:
    median = {
        v: {kind: statistics.median(t for r in rs for t in r["times"][kind]) for kind in ("video", "image")}
        for v, rs in results.items()
    }
    rss = {v: max(r["rss_mib"] for r in rs) for v, rs in results.items()}
    print(
        f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, batch {batch} video "
        f"({FRAMES}x{SIZE}^2, mask {RATIOS['video']}) + {batch} image (mask {RATIOS['image']}); UMT-B/16 K={K} + "
        f"CLIP-B/16 + BERT-base (fusion {FUSION}), L={TEXT_LEN}"
    )
    for variant in ("reference", "umt"):
        m = median[variant]
        print(
            f"{variant:>9}: video {m['video']:.3f} s, image {m['image']:.3f} s, sum {m['video'] + m['image']:.3f} s; "
            f"peak RSS {rss[variant]:.0f} MiB; first losses {results[variant][0]['losses']}"
        )
    ratios = {kind: median["reference"][kind] / median["umt"][kind] for kind in ("video", "image")}
    total = sum(median["reference"].values()) / sum(median["umt"].values())
    print(f"speed-up umt vs reference: video {ratios['video']:.2f}x, image {ratios['image']:.2f}x, sum {total:.2f}x")
    side_by_side.gpu_memory_and_exit_code(results, device, total)


if __name__ == "__main__":
    side_by_side.main(
        __file__,
        __doc__,
        child=child,
        save_weights=save_weights,
        report=report,
        batch_help="per media type; default: 2 on CPU, 32 on GPU",
        default_batch={"cpu": 2, "cuda": 32},
        default_steps=2,
    )
