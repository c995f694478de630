"""The frozen CLIP teacher: parity with the official clip.py computation, CLS attention, loading and input handling."""

from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from umt_cli.data.transforms import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, NORMALIZATION, renormalize
from umt_cli.errors import CheckpointError
from umt_cli.models.clip import ClipTeacher, TeacherOutput
from umt_cli.models.teacher import Teacher
from umt_cli.models.teacher import build_teacher as build_from_section
from umt_cli.recipe.sections import TeacherSection
from umt_cli.variants import TEACHERS

K = 2


def build_teacher(arch: str, *, weights: str, return_layers: int, seed: int = 0, student_norm: str = "imagenet",
                  **teacher: object) -> ClipTeacher:  # fmt: skip
    """The registry's builder, driven by a `[teacher]` table as a recipe would."""
    section = TeacherSection(arch=arch, weights=weights, **teacher)
    built = build_from_section(section, return_layers=return_layers, student_stats=NORMALIZATION[student_norm],
                               seed=seed)  # fmt: skip
    assert isinstance(built, Teacher)  # it implements the protocol a stage relies on
    return built


def imagenet_to_clip(video: torch.Tensor) -> torch.Tensor:
    return renormalize(video, NORMALIZATION["imagenet"], NORMALIZATION["clip"])


class RefLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.type(torch.float32)).type(x.dtype)


class RefQuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class RefBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = RefLayerNorm(width)
        mlp = [("c_fc", nn.Linear(width, 4 * width)), ("gelu", RefQuickGELU()), ("c_proj", nn.Linear(4 * width, width))]
        self.mlp = nn.Sequential(OrderedDict(mlp))
        self.ln_2 = RefLayerNorm(width)


class RefTeacher(nn.Module):
    """The official `single_modality/models/clip.py` VisionTransformer, written out (LND, nn.MultiheadAttention)."""

    def __init__(self, size: int, patch: int, width: int, layers: int, heads: int, out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, width, (1, patch, patch), (1, patch, patch), bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((size // patch) ** 2 + 1, width))
        self.ln_pre = RefLayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(RefBlock(width, heads) for _ in range(layers))
        self.ln_post = RefLayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, out))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        n, c, t, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(n * t, h * w, c)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)).permute(1, 0, 2)
        blocks = self.transformer.resblocks
        return_index = [len(blocks) - i - 1 for i in range(K)]
        z, attn = [], None
        for idx, blk in enumerate(blocks):
            y = blk.ln_1(x)
            if idx == len(blocks) - 1:
                out, attn = blk.attn(y, y, y, need_weights=True)  # head-averaged by default
            else:
                out = blk.attn(y, y, y, need_weights=False)[0]
            x = x + out
            x = x + blk.mlp(blk.ln_2(x))
            if idx in return_index:
                z.append(x)
        x = torch.stack(z)
        x = self.ln_post(x[:, 1:, :, :])
        x = x.view(K, h * w, n, t, c).permute(0, 2, 3, 1, 4).reshape(K, n, t * h * w, c) @ self.proj
        return x / x.norm(dim=-1, keepdim=True), attn  # attn: (n t, L, L)


def perturbed_teacher(arch: str = "clip-tiny", seed: int = 0, **kwargs: object) -> ClipTeacher:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = build_teacher(arch, weights="random", return_layers=K, seed=seed, **kwargs)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():  # non-trivial biases and norms, and peaked attention
        for name, param in teacher.named_parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=g))
            if "in_proj_weight" in name:
                param.mul_(3.0)
    return teacher


def reference_for(teacher: ClipTeacher) -> RefTeacher:
    width, out = teacher.proj.shape
    heads = teacher.transformer.resblocks[0].attn.heads
    ref = RefTeacher(teacher.input_size, teacher.patch_size, width, len(teacher.transformer.resblocks), heads, out)
    ref.load_state_dict(teacher.state_dict(), strict=True)
    return ref.eval()


def test_features_and_cls_attention_match_the_official_computation() -> None:
    teacher = perturbed_teacher()
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = teacher(video)
        ref_features, ref_attn = reference_for(teacher)(video)
    assert isinstance(out, TeacherOutput)
    assert out.features.shape == (K, 2, 64, 32) and out.cls_attn.shape == (2, 4, 16)
    torch.testing.assert_close(out.features, ref_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cls_attn.flatten(0, 1), ref_attn[:, 0, 1:], rtol=0, atol=1e-5)
    # No renormalisation: each row sums to 1 minus the CLS -> CLS mass.
    torch.testing.assert_close(out.cls_attn.sum(-1).flatten(), 1 - ref_attn[:, 0, 0], rtol=0, atol=1e-5)
    assert ref_attn[:, 0, 0].max() > 1e-2  # the check above is not vacuous


def test_projecting_gathered_hidden_equals_gathering_features() -> None:
    teacher = perturbed_teacher(seed=3)
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(2))
    visible = torch.zeros(2, 64, dtype=torch.bool)
    visible[0, ::4], visible[1, 1::4] = True, True
    with torch.no_grad():
        hidden = teacher.encode(video, defer_last=False)
        full = teacher(video)
    assert hidden.layers.shape == (K, 2, 64, 64)
    gathered = hidden.layers[:, visible].reshape(K, 2, 16, 64)
    expected = full.features[:, visible].reshape(K, 2, 16, 32)
    torch.testing.assert_close(teacher.project(gathered), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hidden.cls_attn, full.cls_attn)


def official_interpolation(pos: torch.Tensor, new: int) -> torch.Tensor:
    """Official clip.py `load_state_dict` positional-embedding resize."""
    size = int((pos.shape[-2] - 1) ** 0.5)
    tokens = pos[1:].reshape(-1, size, size, pos.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat((pos[:1], tokens.permute(0, 2, 3, 1).flatten(0, 2)), dim=0)


def stored_tiny14(seed: int) -> dict[str, torch.Tensor]:
    """A 'stored' clip-tiny14 file: a 70-px (5x5 grid) tower with a 2-D conv1, as the extracted OpenAI files are."""
    source = ClipTeacher(input_size=70, return_layers=K, **_shape("clip-tiny14"))
    source.init_weights(torch.Generator().manual_seed(seed))
    state = {key: value.clone() for key, value in source.state_dict().items()}
    state["conv1.weight"] = state["conv1.weight"][:, :, 0]
    return state


def _shape(arch: str) -> dict[str, int]:
    spec = TEACHERS[arch]
    return {"patch_size": spec.patch_size, "layers": spec.layers, **spec.shape}


def test_l_style_resize_and_positional_interpolation(tmp_path: Path) -> None:
    stored = stored_tiny14(seed=5)
    torch.save(stored, tmp_path / "vit_tiny14.pth")
    teacher = build_teacher("clip-tiny14", weights=str(tmp_path / "vit_tiny14.pth"), return_layers=K)
    assert teacher.input_size == 56 and teacher.positional_embedding.shape == (17, 64)
    ref = RefTeacher(56, 14, 64, 4, 4, 32)
    ref_state = dict(stored, **{"conv1.weight": stored["conv1.weight"].unsqueeze(2)})
    ref_state["positional_embedding"] = official_interpolation(stored["positional_embedding"], 4)
    ref.load_state_dict(ref_state, strict=True)
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(6))  # a 64-px student clip
    resized = F.interpolate(video.view(2, 12, 64, 64), size=(56, 56), mode="bicubic", align_corners=False)
    with torch.no_grad():
        out = teacher(video)
        ref_features, ref_attn = ref.eval()(resized.view(2, 3, 4, 56, 56))
    assert out.features.shape == (K, 2, 64, 32)  # 4x4 teacher grid = the student's 4x4 grid
    torch.testing.assert_close(out.features, ref_features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cls_attn.flatten(0, 1), ref_attn[:, 0, 1:], rtol=0, atol=1e-5)


def test_clip_input_norm_converts_imagenet_statistics() -> None:
    imagenet = perturbed_teacher(seed=7)
    clip = ClipTeacher(input_size=64, return_layers=K, input_stats=NORMALIZATION["clip"], **_shape("clip-tiny"))
    clip.load_state_dict(imagenet.state_dict())
    pixels = torch.rand(1, 3, 4, 64, 64, generator=torch.Generator().manual_seed(8))

    def channel(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values).view(1, 3, 1, 1, 1)

    video = (pixels - channel(IMAGENET_MEAN)) / channel(IMAGENET_STD)  # what the student gets
    expected = (pixels - channel(CLIP_MEAN)) / channel(CLIP_STD)  # what CLIP was trained on
    torch.testing.assert_close(imagenet_to_clip(video), expected, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(clip(video).features, imagenet(imagenet_to_clip(video)).features, rtol=0, atol=0)
        assert not torch.allclose(clip(video).features, imagenet(video).features, atol=1e-3)


@pytest.mark.parametrize(
    ("student", "teacher", "converts"),
    [("imagenet", "imagenet", False), ("clip", "clip", False), ("imagenet", "clip", True), ("clip", "imagenet", True)],
)
def test_the_teacher_converts_from_the_student_statistics_exactly_once(student, teacher, converts) -> None:
    pixels = torch.rand(1, 3, 4, 64, 64, generator=torch.Generator().manual_seed(8))
    mean, std = NORMALIZATION[student]
    video = (pixels - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tower = build_teacher("clip-tiny", weights="random", return_layers=K, seed=1, student_norm=student,
                              input_norm=teacher)  # fmt: skip
    seen = tower._prepare_input(video)
    mean, std = NORMALIZATION[teacher]
    expected = (pixels - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(seen, expected, rtol=1e-5, atol=1e-5)  # the tower sees its own statistics
    assert (seen is video) is not converts  # equal statistics: the clip itself, untouched


def test_teacher_is_frozen_and_stays_in_eval_mode() -> None:
    teacher = perturbed_teacher()
    assert teacher.train() is teacher
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    video = torch.randn(1, 3, 4, 64, 64)
    assert not teacher(video).features.requires_grad  # no graph even without no_grad


def test_random_weights_warn_and_are_seeded() -> None:
    with pytest.warns(UserWarning, match="untrained"):
        a = build_teacher("clip-tiny", weights="random", return_layers=K, seed=3)
    with pytest.warns(UserWarning, match="untrained"):
        b = build_teacher("clip-tiny", weights="random", return_layers=K, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_full_clip_state_dict_loads_visual_and_reports_text_keys(tmp_path: Path) -> None:
    source = perturbed_teacher(seed=9)
    full = {f"visual.{k}": v for k, v in source.state_dict().items()}
    full["visual.conv1.weight"] = full["visual.conv1.weight"][:, :, 0]  # OpenAI layout: 2-D conv
    text = {"token_embedding.weight": torch.zeros(10, 8), "positional_embedding": torch.zeros(7, 8)}
    text |= {"transformer.resblocks.0.ln_1.weight": torch.ones(8), "logit_scale": torch.tensor(4.6)}
    torch.save(full | text, tmp_path / "ViT-tiny.pt")
    with pytest.warns(UserWarning, match="ignored 4 other key"):
        teacher = build_teacher("clip-tiny", weights=str(tmp_path / "ViT-tiny.pt"), return_layers=K)
    for key, value in source.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value), key


def test_wrong_keys_raise_checkpoint_error() -> None:
    teacher = perturbed_teacher()
    state = dict(teacher.state_dict())
    state.pop("ln_post.bias")
    state["transformer.resblocks.9.ln_1.weight"] = torch.ones(64)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \[ln_post\.bias\].*1 unexpected"):
        teacher.load_clip_state_dict(state)


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown teacher.arch 'clip-h14'; valid: clip-b16, clip-l14, clip-tiny, clip-tiny14"
    ):
        build_teacher("clip-h14", weights="random", return_layers=1)


def register_tiny_open_clip(tmp_path: Path, *, quick_gelu: bool) -> str:
    import open_clip

    name = f"umt-test-tiny-{'quickgelu' if quick_gelu else 'gelu'}"
    config = {
        "embed_dim": 32,
        "quick_gelu": quick_gelu,
        "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    return name


def test_open_clip_weights_map_onto_the_teacher(tmp_path: Path) -> None:
    import open_clip

    name = register_tiny_open_clip(tmp_path, quick_gelu=True)
    torch.manual_seed(10)
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():
        for param in model.visual.parameters():
            param.add_(0.1 * torch.randn_like(param))
    torch.save(model.state_dict(), tmp_path / "tiny_open_clip.pt")
    # The same code path as "open_clip:ViT-B-16-quickgelu:openai", with a local file instead of a hub tag.
    teacher = build_teacher("clip-tiny", weights=f"open_clip:{name}:{tmp_path / 'tiny_open_clip.pt'}", return_layers=K)
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(11))
    visual = model.visual.eval()
    visual.output_tokens = True
    with torch.no_grad():
        _, tokens = visual(video.transpose(1, 2).flatten(0, 1))  # (B T, HW, Dt) after ln_post
        projected = tokens @ visual.proj
        expected = (projected / projected.norm(dim=-1, keepdim=True)).reshape(2, 64, 32)
        torch.testing.assert_close(teacher(video).features[-1], expected, rtol=1e-5, atol=1e-5)


def test_open_clip_gelu_models_and_bad_sources_are_refused(tmp_path: Path) -> None:
    import open_clip

    name = register_tiny_open_clip(tmp_path, quick_gelu=False)
    torch.save(open_clip.create_model(name, pretrained=None).state_dict(), tmp_path / "gelu.pt")
    with pytest.raises(CheckpointError, match="QuickGELU"):
        build_teacher("clip-tiny", weights=f"open_clip:{name}:{tmp_path / 'gelu.pt'}", return_layers=K)
    with pytest.raises(CheckpointError, match="absent.pt"):
        build_teacher("clip-tiny", weights=f"open_clip:{name}:{tmp_path / 'absent.pt'}", return_layers=K)
    with pytest.raises(CheckpointError, match="open_clip:<model-name>"):
        build_teacher("clip-tiny", weights="open_clip:ViT-B-16", return_layers=K)


@pytest.mark.parametrize("kind", ["per_frame", "tube", "random", "all"])
@pytest.mark.parametrize("return_layers", [1, 3])
def test_deferred_last_block_gives_the_same_targets(kind, return_layers):
    """Finishing the last block on the visible tokens only equals running it on every token, then gathering."""
    from umt_cli.masking.functional import attention_visible, random_visible, tube_visible
    from umt_cli.masking.gather import gather_visible

    teacher = build_teacher("clip-tiny", weights="random", return_layers=return_layers, seed=3)
    video = torch.randn(2, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    full = teacher.encode(video, defer_last=False)
    deferred = teacher.encode(video)  # a stage's path: the last block waits for the mask
    torch.testing.assert_close(deferred.cls_attn, full.cls_attn, rtol=0, atol=1e-6)
    assert deferred.layers.shape[0] == return_layers - 1 and deferred.pending is not None
    g = torch.Generator().manual_seed(1)
    visible = {
        "per_frame": lambda: attention_visible(full.cls_attn, 0.75, generators=g),
        "tube": lambda: tube_visible(2, 4, 16, 0.5, generators=g),
        "random": lambda: random_visible(2, 4, 16, 0.7, generators=g),
        "all": lambda: torch.ones(2, 64, dtype=torch.bool),
    }[kind]()
    expected = teacher.project(gather_visible(full.layers, visible))
    torch.testing.assert_close(teacher.targets(deferred, visible), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(teacher.targets(full, visible), expected, rtol=0, atol=0)
