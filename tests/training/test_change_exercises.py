"""The architecture's change exercises, done for real: a new masker and a new teacher each plug into `umt distill`
through their registry alone, without touching `umt_cli/`.

Each variant is written here, registered with `monkeypatch.setitem` (undone after the test), and run through the
real CLI on the tiny synthetic recipe for two steps. Spies prove the stage used the new variant, not a built-in one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import read_metrics
from einops import rearrange
from safetensors.torch import load_file
from torch import Tensor, nn
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.data.transforms import NORMALIZATION, Normalization, renormalize
from umt_cli.errors import CheckpointError
from umt_cli.masking.build import MaskDraw, TokenGrid
from umt_cli.masking.gather import gather_visible
from umt_cli.models.clip import ClipTeacher
from umt_cli.models.student import DistillStudent
from umt_cli.models.teacher import Teacher
from umt_cli.variants import MASKERS, TEACHERS, TeacherSpec


def distill(run_dir: Path, overrides: list[str]):
    return CliRunner().invoke(app, ["distill", "quickstart/distill", *overrides, "--run-dir", str(run_dir)])


# --- a new masker: one function of the `Masker` signature, plus one registry entry --------------------------------


def block_masker(
    grid: TokenGrid, mask_ratio: float, *, cls_attn: Tensor, generators: Sequence[torch.Generator]
) -> MaskDraw:
    """Per frame, one seeded random run of `HW - int(HW * mask_ratio)` consecutive raster positions (whole rows when
    it starts at a row boundary); the attention is ignored. Every frame keeps the same count, so the CLIP teacher's
    deferred last block takes its fast path."""
    keep = grid.hw - int(grid.hw * mask_ratio)
    visible = torch.zeros(len(generators), grid.t, grid.hw, dtype=torch.bool)
    for sample, generator in enumerate(generators):  # sample b's mask depends on its own generator only
        starts = torch.randint(grid.hw - keep + 1, (grid.t,), generator=generator, device=generator.device)
        for frame, start in enumerate(starts.tolist()):
            visible[sample, frame, start : start + keep] = True
    return MaskDraw(visible.flatten(1).to(cls_attn.device))  # (B, T*HW)


def runs_of_consecutive_positions(visible: Tensor, grid: TokenGrid) -> bool:
    """Whether every frame of a (B, N) mask keeps exactly one run of consecutive positions (the block pattern)."""
    for frame in visible.view(-1, grid.hw):
        kept = frame.nonzero().flatten()
        if len(kept) == 0 or not torch.equal(kept, torch.arange(int(kept[0]), int(kept[0]) + len(kept))):
            return False
    return True


def test_a_new_masker_kind_is_one_registry_entry_plus_one_function(tmp_path, tiny_overrides, monkeypatch):
    overrides = [*tiny_overrides, "masking.kind=block", "schedule.max_steps=2"]

    # Unregistered, the name is refused by the recipe check (exit 2), naming the key.
    refused = distill(tmp_path / "refused", overrides)
    assert refused.exit_code == 2, refused.output
    assert "masking.kind" in refused.output and "'block'" in refused.output

    drawn: list[Tensor] = []

    def spy_masker(grid: TokenGrid, mask_ratio: float, **kwargs: Any) -> MaskDraw:
        draw = block_masker(grid, mask_ratio, **kwargs)
        drawn.append(draw.visible)
        return draw

    # What the student ran on: the stage must hand it the masker's draw, not one of its own.
    seen: list[Tensor] = []
    student_forward = DistillStudent.forward

    def spy_student(self: DistillStudent, video: Tensor, visible: Tensor | None = None) -> Tensor:
        seen.append(visible)
        return student_forward(self, video, visible)

    monkeypatch.setattr(DistillStudent, "forward", spy_student)
    monkeypatch.setitem(MASKERS, "block", spy_masker)  # the whole change: one entry
    run_dir = tmp_path / "run"
    result = distill(run_dir, overrides)
    assert result.exit_code == 0, result.output
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["mask_fallback_rows"] == 0 for m in metrics)

    assert len(drawn) == 2  # one draw per step (batch 2, no accumulation)
    grid = TokenGrid(4, 4, 4)  # quickstart student: 4 frames, 64 px / patch 16
    assert len(seen) == 2 and all(torch.equal(a, b) for a, b in zip(seen, drawn, strict=True))
    for visible in seen:
        assert visible.shape == (2, grid.t * grid.hw)
        assert (visible.view(2, grid.t, grid.hw).sum(-1) == 4).all()  # 16 - int(16 * 0.8) per frame
        assert runs_of_consecutive_positions(visible, grid)  # the block pattern, which attention masks do not show


# --- a second teacher: a class of the `Teacher` shape and a builder of the registry signature -----------------------


@dataclass(frozen=True)
class ToyPass:
    """What `ToyTeacher.encode` returns: the stage reads `cls_attn`; `targets` finishes from `layers`."""

    layers: Tensor  # (K, B, N, Ct) before normalisation
    cls_attn: Tensor  # (B, T, HW), rows sum to 1


class ToyTeacher(nn.Module):
    """A frozen teacher with nothing of CLIP: a per-frame patch embedding, then `depth` linear layers whose last K
    outputs are the targets, and a softmax of a learned query against the patch embeddings as "CLS" attention.

    It expects CLIP pixel statistics whatever `teacher.input_norm` says (its own choice, as a real tower's would
    be), so the quickstart's ImageNet-normalised student exercises the conversion.
    """

    input_stats = NORMALIZATION["clip"]

    def __init__(
        self, *, input_size: int, patch_size: int, width: int, output_dim: int, depth: int, return_layers: int,
        source_stats: Normalization,
    ) -> None:  # fmt: skip
        super().__init__()
        self.input_size, self.return_layers, self.source_stats = input_size, return_layers, source_stats
        self.embed = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.query = nn.Parameter(torch.zeros(width))
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.proj = nn.Linear(width, output_dim, bias=False)
        self.calls = {"encode": 0, "targets": 0}
        self.requires_grad_(False)
        self.eval()

    @property
    def output_dim(self) -> int:
        return self.proj.out_features

    def train(self, mode: bool = True) -> ToyTeacher:
        return super().train(False)  # frozen: stays in eval whatever the caller asks

    def encode(self, video: Tensor) -> ToyPass:
        """(B, 3, T, H, W) in `source_stats` -> K layers (K, B, T*HW, Ct) and cls_attn (B, T, HW)."""
        self.calls["encode"] += 1
        b, _, t, h, w = video.shape
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        if (h, w) != (self.input_size, self.input_size):
            frames = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear")
        frames = renormalize(frames.unsqueeze(2), self.source_stats, self.input_stats).squeeze(2)
        x = rearrange(self.embed(frames), "n c h w -> n (h w) c")  # (BT, HW, D)
        attn = (x @ self.query / x.shape[-1] ** 0.5).softmax(dim=-1)  # (BT, HW)
        taps = []
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
            taps.append(self.proj(x))
        layers = rearrange(torch.stack(taps[-self.return_layers :]), "k (b t) n c -> k b (t n) c", b=b)
        return ToyPass(layers=layers, cls_attn=rearrange(attn, "(b t) n -> b t n", b=b))

    def targets(self, encoded: ToyPass, visible: Tensor) -> Tensor:
        """(K, B, Nv, Ct) unit vectors at the visible tokens."""
        self.calls["targets"] += 1
        return F.normalize(gather_visible(encoded.layers, visible), dim=-1)


BUILT: list[ToyTeacher] = []  # what the builder made, so a test run through the CLI can inspect it


@pytest.fixture(autouse=True)
def _forget_built_teachers():
    BUILT.clear()
    yield
    BUILT.clear()


def build_toy_teacher(
    section: Any, spec: TeacherSpec, *, return_layers: int, student_stats: Normalization, seed: int = 0
) -> ToyTeacher:
    """The registry signature: the recipe's `[teacher]` table, the spec, K, the student's statistics, a seed."""
    if section.weights != "random":
        raise CheckpointError(f"the toy teacher has no weights file ({section.weights})")
    teacher = ToyTeacher(
        input_size=section.input_size or spec.input_size,
        patch_size=spec.patch_size,
        depth=spec.layers,
        return_layers=return_layers,
        source_stats=student_stats,
        **spec.shape,
    )
    generator = torch.Generator().manual_seed(seed)  # `weights = "random"`: seeded, and the global RNG is left alone
    for param in teacher.parameters():
        nn.init.normal_(param, std=param.shape[-1] ** -0.5, generator=generator)
    BUILT.append(teacher)
    return teacher


TOY = TeacherSpec(build_toy_teacher, patch_size=16, layers=3, input_size=64, shape={"width": 24, "output_dim": 20})


def test_the_toy_teacher_converts_from_the_students_statistics():
    pixels = torch.rand(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))

    def normalized(stats: Normalization) -> Tensor:
        mean, std = (torch.tensor(v).view(1, 3, 1, 1, 1) for v in stats)
        return (pixels - mean) / std

    section = type("Section", (), {"weights": "random", "input_size": None})()
    passes = [
        build_toy_teacher(section, TOY, return_layers=2, student_stats=NORMALIZATION[name], seed=1).encode(
            normalized(NORMALIZATION[name])
        )
        for name in ("imagenet", "clip")
    ]
    # The same pixels, given in either statistics, reach the tower identically.
    torch.testing.assert_close(passes[0].layers, passes[1].layers, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(normalized(NORMALIZATION["imagenet"]), normalized(NORMALIZATION["clip"]))


def test_a_second_teacher_plugs_in_through_the_protocol(tmp_path, tiny_overrides, monkeypatch):
    monkeypatch.setitem(TEACHERS, "toy", TOY)  # the whole change: one entry
    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides, "teacher.arch=toy", "teacher.weights=random", "schedule.max_steps=2"]
    result = distill(run_dir, overrides)
    assert result.exit_code == 0, result.output

    assert len(BUILT) == 1
    teacher = BUILT[0]
    assert isinstance(teacher, Teacher) and not isinstance(teacher, ClipTeacher)
    assert teacher.source_stats == NORMALIZATION["imagenet"]  # the quickstart student's, given by the stage
    assert teacher.calls == {"encode": 2, "targets": 2}  # one of each per step
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())

    losses = [m["loss"] for m in read_metrics(run_dir)]
    assert len(losses) == 2 and all(0 < loss < 4 for loss in losses)  # finite; 2 - 2 cos lies in [0, 4]
    weights = load_file(run_dir / "student.safetensors")
    assert weights["clip_decoder.0.head.weight"].shape[0] == 20  # the heads project to the toy's output_dim
    assert not any(k.startswith(("teacher", "embed", "proj")) for k in weights)


def test_an_unknown_teacher_arch_is_refused_naming_the_key(tmp_path, tiny_overrides):
    result = distill(tmp_path / "run", [*tiny_overrides, "teacher.arch=toy", "schedule.max_steps=2"])
    assert result.exit_code == 2, result.output
    assert "teacher.arch" in result.output and "'toy'" in result.output
