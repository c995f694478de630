"""Stage-1 step time: umt vs a reference step written the way the official implementation computes it.

One step = teacher forward, attention masking, student forward and backward, optimizer step; UMT-B/16 student
(8 x 224^2) with the CLIP-B/16 teacher, batch 1. The reference uses plain softmax attention in the student,
`nn.MultiheadAttention` in the teacher (full attention weights in the last block), `ln_post` and `proj` on every
teacher token, `torch.multinomial` masking and a default AdamW, all with the same weights as umt's models.

Each implementation runs in its own child process (so each one's peak resident memory can be read), alternating
over rounds; the parent prints median step times, the ratio, the achieved GFLOP/s (FLOPs counted analytically for
the reference's work) and the machine's measured fp32 matmul rate.

    python benchmarks/bench_distill.py                  # CPU, fp32, batch 1
    python benchmarks/bench_distill.py --device cuda    # GPU: umt in bf16 vs the reference in fp16 autocast + scaler
"""

from __future__ import annotations

import resource
import statistics
import time
from collections import OrderedDict

import side_by_side
import torch
import torch.nn as nn
import torch.nn.functional as F

FRAMES, SIZE, PATCH, K, RATIO = 8, 224, 16, 6, 0.8


# --- the reference, written the way the official code computes (our own code, for timing only) ----------------------


class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class RefDropPath(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, 4 * dim), act=nn.GELU(), fc2=nn.Linear(4 * dim, dim)))
        self.drop_path = RefDropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def sinusoid(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(d)
    table = pos / torch.pow(10000.0, (2 * (j // 2) / d).double())
    table[:, 0::2], table[:, 1::2] = table[:, 0::2].sin(), table[:, 1::2].cos()
    return table.float()[None]


class RefStudent(nn.Module):
    """Keys identical to the official stage-1 layout (`encoder.*`, `clip_decoder.*`)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, out_dim: int = 512, drop_path: float = 0.1):
        super().__init__()
        n = FRAMES * (SIZE // PATCH) ** 2
        self.encoder = nn.Module()
        self.encoder.patch_embed = nn.Module()
        self.encoder.patch_embed.proj = nn.Conv3d(3, dim, (1, PATCH, PATCH), (1, PATCH, PATCH))
        rates = [x.item() for x in torch.linspace(0, drop_path, depth)]
        self.encoder.blocks = nn.ModuleList(RefBlock(dim, heads, rates[i]) for i in range(depth))
        self.encoder.norm = nn.LayerNorm(dim, eps=1e-6)
        self.clip_decoder = nn.ModuleList()
        for _ in range(K):
            head = nn.Module()
            head.head, head.norm = nn.Linear(dim, out_dim), nn.LayerNorm(out_dim, eps=1e-6)
            self.clip_decoder.append(head)
        self.pos_embed, self.clip_pos_embed = sinusoid(n, dim), sinusoid(n, dim)
        self.taps = [depth - 1 - i for i in range(K)]

    def forward(self, video: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        x = self.encoder.patch_embed.proj(video).flatten(2).transpose(1, 2)
        x = x + self.pos_embed.type_as(x).to(x.device).clone().detach()
        b, _, c = x.shape
        x = x[~masked].reshape(b, -1, c)
        taps = []
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        self.encoder.norm(x)  # computed (and unused) upstream
        taps = self.encoder.norm(torch.stack(taps))
        pos = self.clip_pos_embed.repeat(b, 1, 1).type_as(x).to(x.device)[~masked].view(b, -1, c)
        pos = pos.unsqueeze(0).repeat(K, 1, 1, 1)
        full = taps + pos
        outs = []
        for i, head in enumerate(self.clip_decoder):
            y = head.norm(head.head(full[i]))
            outs.append(y / y.norm(dim=-1, keepdim=True))
        return torch.stack(outs)


class RefLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class RefResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn, self.ln_1, self.ln_2 = nn.MultiheadAttention(width, heads), RefLayerNorm(width), RefLayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 4 * width), c_proj=nn.Linear(4 * width, width)))

    def forward(self, x: torch.Tensor, need_weights: bool = False):
        h = self.ln_1(x)
        out, attn = self.attn(h, h, h, need_weights=need_weights)
        x = x + out
        y = self.mlp.c_fc(self.ln_2(x))
        x = x + self.mlp.c_proj(y * torch.sigmoid(1.702 * y))
        return x, attn


class RefTeacher(nn.Module):
    """The official clip.py computation with OpenAI key names (conv1 as a 1-frame Conv3d)."""

    def __init__(
        self, width: int = 768, layers: int = 12, heads: int = 12, out_dim: int = 512, normalize: bool = True
    ) -> None:
        super().__init__()
        self.normalize = normalize  # stage 1 l2-normalises the targets; stage 2 leaves that to the loss
        grid = SIZE // PATCH
        self.conv1 = nn.Conv3d(3, width, (1, PATCH, PATCH), (1, PATCH, PATCH), bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, width) * width**-0.5)
        self.ln_pre, self.ln_post = RefLayerNorm(width), RefLayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(RefResidualBlock(width, heads) for _ in range(layers))
        self.proj = nn.Parameter(torch.randn(width, out_dim) * width**-0.5)
        self.taps = [layers - 1 - i for i in range(K)]

    def forward(self, video: torch.Tensor):
        x = self.conv1(video)
        n, c, t, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(n * t, h * w, c)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, c, dtype=x.dtype, device=x.device)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)).permute(1, 0, 2)
        taps, attn = [], None
        for i, block in enumerate(self.transformer.resblocks):
            last = i == len(self.transformer.resblocks) - 1
            x, weights = block(x, need_weights=last)
            attn = weights if last else attn
            if i in self.taps:
                taps.append(x)
        x = self.ln_post(torch.stack(taps)[:, 1:])  # (K, HW, NT, C): every token
        x = x.view(K, h * w, n, t, c).permute(0, 2, 3, 1, 4).reshape(K, n, t * h * w, c) @ self.proj
        return (x / x.norm(dim=-1, keepdim=True) if self.normalize else x), attn[:, 0, 1:]


def reference_step(teacher, student, optimizer, video, scaler=None, autocast=None):
    with torch.no_grad(), autocast():
        targets, attn = teacher(video)
        bt, hw = attn.shape
        keep = hw - int(hw * RATIO)
        order = torch.multinomial(attn.float(), hw)
        masked = torch.ones((bt, hw), device=video.device)
        masked[torch.arange(bt, device=video.device).view(-1, 1).repeat(1, keep), order[:, :keep]] = 0
        masked = masked.view(video.shape[0], -1).bool()
        targets = targets[:, ~masked].reshape(K, video.shape[0], -1, targets.shape[-1])
    with autocast():
        out = student(video, masked)
        loss = (2 - 2 * (out * targets).sum(dim=-1)).mean()
    optimizer.zero_grad()
    if scaler is not None:  # the official NativeScalerWithGradNormCount: unscale, norm, step, update
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    grads = [p.grad.detach() for p in student.parameters() if p.grad is not None]
    torch.norm(torch.stack([torch.norm(g, 2.0) for g in grads]), 2.0)  # official get_grad_norm_, every step
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss


# --- umt's step: the stage's own code path ---------------------------------------------------------------------------


def umt_components(device: str, precision: str, batch: int):
    """The stage's models, optimizer, masker and the engine's run object, as `umt distill` builds them."""
    from accelerate import Accelerator

    from umt_cli.masking.build import TokenGrid, build_masker
    from umt_cli.recipe import DistillRecipe, load_recipe
    from umt_cli.recipe.catalog import resolve_recipe
    from umt_cli.stages import distill
    from umt_cli.training.plan import Plan
    from umt_cli.training.session import Run
    from umt_cli.utils.optim import build_adamw

    recipe = load_recipe(
        resolve_recipe("k710"),
        ["teacher.weights=random", f"run.precision={precision}", f"data.batch_size={batch}"],
        expect=DistillRecipe,
    )
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision={"fp32": "no"}.get(precision, precision))
    student, teacher = distill.build_models(recipe, accelerator.device)
    optimizer = build_adamw(student, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8)
    student, optimizer = accelerator.prepare(student, optimizer)
    plan = Plan(global_batch=batch, steps_per_epoch=1, total_steps=10, warmup_steps=0, peak_lr=1e-4, final_lr=1e-5)
    run = Run(recipe, None, accelerator, None, student, optimizer, None, None, plan, None)
    return distill.Components(recipe, run, teacher, build_masker(recipe.masking), TokenGrid(FRAMES, 14, 14))


def umt_step(c, video, index):
    """The engine's optimizer step around the stage's step: lr, teacher, masking, student, loss, backward, grad
    norm, AdamW."""
    from functools import partial

    from umt_cli.data.loaders import ClipBatch
    from umt_cli.stages import distill
    from umt_cli.training.loop import optimizer_step
    from umt_cli.training.state import TrainState

    batch = ClipBatch(video, torch.zeros(len(index)), index)
    return optimizer_step(c.training, partial(distill.step, c), iter([batch]), 0, TrainState()).loss


# --- measuring -------------------------------------------------------------------------------------------------------


def step_flops(batch: int) -> float:
    """Multiply-adds x 2 of the reference's step (teacher forward on every token, ln_post/proj on every token,
    student forward on the visible tokens, backward = 2x forward, patch embedding on every token)."""
    d, w, grid = 768, 768, (SIZE // PATCH) ** 2
    n_vis = FRAMES * (grid - int(grid * RATIO))
    tokens = grid + 1
    teacher = FRAMES * 12 * (2 * tokens * 12 * w * w + 4 * tokens * tokens * w) + FRAMES * grid * 3 * PATCH**2 * w * 2
    teacher += K * FRAMES * grid * w * 512 * 2
    student_fwd = 12 * (2 * n_vis * 12 * d * d + 4 * n_vis * n_vis * d) + K * n_vis * d * 512 * 2
    patch = FRAMES * grid * 3 * PATCH**2 * d * 2
    return batch * (teacher + 3 * student_fwd + 2 * patch)


def matmul_gflops(device: str) -> float:
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    times = []
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / statistics.median(times[1:]) / 1e9


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def child(variant: str, device: str, steps: int, batch: int, weights: str) -> dict:
    torch.manual_seed(0)
    video = torch.randn(batch, 3, FRAMES, SIZE, SIZE, device=device)
    index = torch.arange(batch)
    if variant == "reference":
        fn = reference_setup(weights, device)
    else:
        c = umt_components(device, "fp32" if device == "cpu" else "bf16", batch)
        fn = lambda video: umt_step(c, video, index)  # noqa: E731
    times = []
    for i in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        loss = fn(video)
        sync(device)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"times": times, "rss_mib": peak, "gpu_mib": gpu_peak, "loss": float(loss)}


def save_umt_weights(folder: str) -> None:
    """umt's initial weights (seeded, so the umt child rebuilds exactly these), for the reference to load."""
    from safetensors.torch import save_file

    c = umt_components("cpu", "fp32", 1)
    save_file(c.training.accelerator.unwrap_model(c.training.model).state_dict(), f"{folder}/student.safetensors")
    save_file({k: v.contiguous() for k, v in c.teacher.state_dict().items()}, f"{folder}/teacher.safetensors")


def reference_setup(folder: str, device: str):
    """Reference modules carrying umt's weights, so both compute the same function."""
    from contextlib import nullcontext

    from safetensors.torch import load_file

    student, teacher = RefStudent().to(device), RefTeacher().to(device)
    student.load_state_dict(load_file(f"{folder}/student.safetensors"))
    teacher.load_state_dict(load_file(f"{folder}/teacher.safetensors"))
    teacher.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95))
    if device == "cuda":  # the official mixed precision: fp16 autocast with a gradient scaler, teacher included
        scaler = torch.amp.GradScaler("cuda")
        return lambda video: reference_step(
            teacher, student, optimizer, video, scaler, lambda: torch.autocast("cuda", torch.float16)
        )
    return lambda video: reference_step(teacher, student, optimizer, video, None, nullcontext)


def report(results: dict, device: str, batch: int) -> None:
    median = {v: statistics.median(t for r in rs for t in r["times"]) for v, rs in results.items()}
    rss = {v: max(r["rss_mib"] for r in rs) for v, rs in results.items()}
    flops = step_flops(batch)
    rate = matmul_gflops(device)
    ratio = median["reference"] / median["umt"]
    print(
        f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, batch {batch}, "
        f"{FRAMES}x{SIZE}^2, UMT-B/16 + CLIP-B/16, K={K}, mask {RATIO}"
    )
    print(f"fp32 matmul (2048^3): {rate:.1f} GFLOP/s; reference step work: {flops / 1e9:.0f} GFLOP")
    for variant in ("reference", "umt"):
        achieved = flops / median[variant] / 1e9
        print(
            f"{variant:>9}: median step {median[variant]:.3f} s, {achieved:.1f} GFLOP/s "
            f"({achieved / rate:.0%} of matmul), peak RSS {rss[variant]:.0f} MiB"
        )
    print(f"speed-up umt vs reference: {ratio:.2f}x")
    side_by_side.gpu_memory_and_exit_code(results, device, ratio)


if __name__ == "__main__":
    side_by_side.main(
        __file__,
        __doc__,
        child=child,
        save_weights=save_umt_weights,
        report=report,
        batch_help="default: 1 on CPU, 16 on GPU",
        default_batch={"cpu": 1, "cuda": 16},
        default_steps=3,
    )
