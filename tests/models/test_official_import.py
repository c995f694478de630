"""Importing official stage-1, stage-2 and retrieval files (SPEC §5.2, §5.4, §5.5, §5.7, §5.8).

The files are written here from the SPEC's key lists for a tiny geometry (vision D 64, 2 blocks, K 2, Ct 32; text
width 32, 3 layers, fusion at 1, vocab 50; E 16), independently of the import tables. An imported model must give the
same outputs as a model built by hand and filled with `load_state_dict` of the same tensors under names mapped by hand.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from umt_cli.errors import CheckpointError, UsageError
from umt_cli.models.classifier import build_classifier
from umt_cli.models.config import build_video_text, build_vit
from umt_cli.models.convert import detect_kind
from umt_cli.models.heads import AlignHeads
from umt_cli.models.official import import_classifier, import_stage1, import_video_text, load_imported
from umt_cli.models.student import DistillStudent, VideoViT
from umt_cli.models.text import TextEncoder
from umt_cli.models.video_text import VideoTextModel, VisionEncoder

D, DEPTH, K, CT, P = 64, 2, 2, 32, 16
DTXT, LAYERS, FUSION, VOCAB, POSITIONS, E = 32, 3, 1, 50, 40, 16
FRAMES, SIZE = 2, 32  # the geometry the test runs at (not stored in any file)
BLOCK = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias", "attn.proj.weight",
         "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
         "mlp.fc2.bias")  # fmt: skip
TEXT_LAYER = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")  # fmt: skip
CROSS = ("crossattention.self.query", "crossattention.self.key", "crossattention.self.value",
         "crossattention.output.dense", "crossattention.output.LayerNorm")  # fmt: skip


class Filler:
    """Seeded random tensors: LayerNorm weights near 1, everything else small."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, name: str, *shape: int) -> torch.Tensor:
        values = 0.1 * torch.randn(shape, generator=self.generator)
        is_norm_weight = name.endswith("weight") and ("norm" in name.lower()) and len(shape) == 1
        return values + 1.0 if is_norm_weight else values


def vit_block_shapes(i: int, dim: int) -> dict[str, tuple[int, ...]]:
    shapes = {"qkv.weight": (3 * dim, dim), "proj.weight": (dim, dim), "fc1.weight": (4 * dim, dim),
              "fc1.bias": (4 * dim,), "fc2.weight": (dim, 4 * dim)}  # fmt: skip
    return {f"blocks.{i}.{name}": shapes.get(name.split(".", 1)[-1], (dim,)) for name in BLOCK}


def stage1_shapes(prefix: str, *, dim: int = D, depth: int = DEPTH, heads: int = K) -> dict[str, tuple[int, ...]]:
    """§5.2 under `prefix` (`encoder.` / `vision_encoder.encoder.`), plus `clip_decoder.{k}` when `heads`."""
    shapes = {f"{prefix}patch_embed.proj.weight": (dim, 3, 1, P, P), f"{prefix}patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        shapes |= {prefix + key: shape for key, shape in vit_block_shapes(i, dim).items()}
    shapes |= {f"{prefix}norm.weight": (dim,), f"{prefix}norm.bias": (dim,)}
    decoder = prefix.removesuffix("encoder.") + "clip_decoder."  # encoder. -> clip_decoder., vision_encoder.clip_...
    for k in range(heads):
        shapes |= {f"{decoder}{k}.head.weight": (CT, dim), f"{decoder}{k}.head.bias": (CT,)}
        shapes |= {f"{decoder}{k}.norm.weight": (CT,), f"{decoder}{k}.norm.bias": (CT,)}
    return shapes


def text_shapes(bert: str) -> dict[str, tuple[int, ...]]:
    """§5.4's `text_encoder.bert.*` (bert = `text_encoder.bert.`) or §5.5's (bert = `text_encoder.`)."""
    shapes = {
        f"{bert}embeddings.word_embeddings.weight": (VOCAB, DTXT),
        f"{bert}embeddings.position_embeddings.weight": (POSITIONS, DTXT),
        f"{bert}embeddings.token_type_embeddings.weight": (2, DTXT),
        f"{bert}embeddings.LayerNorm.weight": (DTXT,),
        f"{bert}embeddings.LayerNorm.bias": (DTXT,),
    }
    for j in range(LAYERS):
        for name in TEXT_LAYER + (CROSS if j >= FUSION else ()):
            rows, cols = DTXT, DTXT
            if name == "intermediate.dense":
                rows = 4 * DTXT
            if name == "output.dense":
                cols = 4 * DTXT
            if name in ("crossattention.self.key", "crossattention.self.value"):
                cols = D
            layer = f"{bert}encoder.layer.{j}.{name}"
            shapes[f"{layer}.bias"] = (rows,)
            shapes[f"{layer}.weight"] = (rows,) if name.endswith("LayerNorm") else (rows, cols)
    return shapes


def heads_shapes() -> dict[str, tuple[int, ...]]:
    return {"vision_proj.weight": (E, D), "vision_proj.bias": (E,), "text_proj.weight": (E, DTXT),
            "text_proj.bias": (E,), "temp": (), "itm_head.weight": (2, DTXT), "itm_head.bias": (2,)}  # fmt: skip


def fill(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    filler = Filler(seed)
    state = {name: filler(name, *shape) for name, shape in shapes.items()}
    if "temp" in state:
        state["temp"] = torch.tensor(0.05)
    return state


def official_stage2(seed: int = 0) -> dict[str, torch.Tensor]:
    """§5.4: vision side, teacher (a few keys), BERT with the MLM head (decoder tied), heads, position_ids."""
    shapes = stage1_shapes("vision_encoder.encoder.")
    shapes |= {"vision_encoder.pool_norm.weight": (D,), "vision_encoder.pool_norm.bias": (D,)}
    shapes |= text_shapes("text_encoder.bert.")
    cls = "text_encoder.cls.predictions."
    shapes |= {f"{cls}bias": (VOCAB,), f"{cls}transform.dense.weight": (DTXT, DTXT),
               f"{cls}transform.dense.bias": (DTXT,), f"{cls}transform.LayerNorm.weight": (DTXT,),
               f"{cls}transform.LayerNorm.bias": (DTXT,)}  # fmt: skip
    shapes |= heads_shapes()
    shapes |= {"clip_teacher.conv1.weight": (8, 3, 1, P, P), "clip_teacher.class_embedding": (8,),
               "clip_teacher.proj": (8, CT), "clip_teacher.positional_embedding": (5, 8),
               "clip_teacher.transformer.resblocks.0.attn.in_proj_weight": (24, 8)}  # fmt: skip
    state = fill(shapes, seed)
    state[f"{cls}decoder.weight"] = state["text_encoder.bert.embeddings.word_embeddings.weight"]  # tied upstream
    state[f"{cls}decoder.bias"] = state[f"{cls}bias"]
    state["text_encoder.bert.embeddings.position_ids"] = torch.arange(POSITIONS)[None]
    return state


def official_retrieval(seed: int = 0) -> dict[str, torch.Tensor]:
    """§5.5: no clip_decoder, no teacher, BERT without `bert.` and without `cls.`."""
    shapes = stage1_shapes("vision_encoder.encoder.", heads=0)
    shapes |= {"vision_encoder.pool_norm.weight": (D,), "vision_encoder.pool_norm.bias": (D,)}
    shapes |= text_shapes("text_encoder.") | heads_shapes()
    state = fill(shapes, seed)
    state["text_encoder.embeddings.position_ids"] = torch.arange(POSITIONS)[None]
    return state


def by_hand_stage2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("clip_teacher.") and not k.endswith("position_ids")}


def by_hand_retrieval(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key.startswith("text_encoder."):
            key = "text_encoder.bert." + key.removeprefix("text_encoder.")
        renamed[key] = value
    return renamed


def reference_model(*, heads: int, text_heads: int, align: int, mlm: bool) -> VideoTextModel:
    encoder = VideoViT(img_size=SIZE, patch_size=P, num_frames=FRAMES, tubelet=1, dim=D, depth=DEPTH, num_heads=heads,
                       align_layers=align)  # fmt: skip
    decoder = AlignHeads(num_tokens=encoder.num_tokens, dim=D, out_dim=CT if align else 0, num_layers=align, eps=1e-5,
                         l2=False)  # fmt: skip
    text = TextEncoder(vocab_size=VOCAB, hidden_size=DTXT, num_layers=LAYERS, num_heads=text_heads,
                       intermediate_size=4 * DTXT, fusion_layer=FUSION, encoder_width=D, max_positions=POSITIONS,
                       mlm_head=mlm)  # fmt: skip
    vision = VisionEncoder(encoder=encoder, clip_decoder=decoder)
    return VideoTextModel(vision_encoder=vision, text_encoder=text, embed_dim=E).eval()


def imported_model(imported) -> VideoTextModel:
    """The imported config at the test's frame count and size (geometry is not in the file)."""
    config = imported.config
    config = replace(config, vision=replace(config.vision, img_size=SIZE, num_frames=FRAMES))
    return build_video_text(config)


def outputs(model: VideoTextModel) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    video = torch.randn(2, 3, FRAMES, SIZE, SIZE, generator=generator)
    ids = torch.randint(1, VOCAB, (2, 6), generator=generator)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with torch.no_grad():
        tokens, frames = model.encode_video(video)
        hidden, cls = model.encode_text(ids, mask)
        result = {"tokens": tokens, "frames": frames, "hidden": hidden, "cls": cls,
                  "itm": model.match_logits(hidden, mask, tokens)}  # fmt: skip
        visible = torch.ones(2, tokens.shape[1], dtype=torch.bool)
        aligned = model.vision_encoder(video, visible).aligned
        if aligned is not None:
            result["aligned"] = aligned
        if model.text_encoder.has_mlm_head:
            result["mlm"] = model.text_encoder.mlm_logits(model.text_encoder.fuse(hidden, mask, tokens))
    return result


def assert_same_outputs(model: VideoTextModel, reference: VideoTextModel) -> None:
    got, expected = outputs(model), outputs(reference)
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-6, msg=name)


def wrap(state: dict[str, torch.Tensor], how: str) -> dict:
    return {
        "raw": state,
        "model": {"model": state, "epoch": 9},
        "module": {"module": state},
        "module-prefix": {f"module.{key}": value for key, value in state.items()},
    }[how]


@pytest.mark.parametrize("how", ["raw", "model", "module", "module-prefix"])
def test_stage2_imports_strictly_and_matches_a_hand_loaded_model(how):
    state = official_stage2()
    assert detect_kind(state) == "umt-stage2"
    imported = import_video_text(wrap(state, how), kind="umt-stage2", source="b16_25m.pth")
    config, vision = imported.config, imported.config.vision
    assert (vision.dim, vision.depth, vision.patch_size, vision.num_heads) == (D, DEPTH, P, 1)  # 64 channels a head
    assert (vision.align_layers, vision.teacher_dim, config.embed_dim) == (K, CT, E)
    text = config.text
    assert (text.vocab_size, text.hidden_size, text.num_layers, text.fusion_layer) == (VOCAB, DTXT, LAYERS, FUSION)
    assert (text.intermediate_size, text.max_positions, text.type_vocab_size) == (4 * DTXT, POSITIONS, 2)
    assert text.num_heads == 1 and text.mlm_head
    model = imported_model(imported)
    report = load_imported(model, imported, what="stage-2 model", sha256="f00")
    assert report.loaded == len(model.state_dict()) and report.sha256 == "f00"
    assert sorted(report.ignored) == sorted(k for k in state if k.startswith("clip_teacher.") or "position_ids" in k)

    reference = reference_model(heads=1, text_heads=1, align=K, mlm=True)
    reference.load_state_dict(by_hand_stage2(state), strict=True)
    assert_same_outputs(model, reference)


@pytest.mark.parametrize("how", ["raw", "model", "module-prefix"])
def test_retrieval_imports_strictly_and_matches_a_hand_loaded_model(how):
    state = official_retrieval(seed=3)
    assert detect_kind(state) == "umt-retrieval"
    imported = import_video_text(wrap(state, how), kind="umt-retrieval", source="ret_msrvtt_b16_25m.pth")
    assert (imported.config.vision.align_layers, imported.config.vision.teacher_dim) == (0, 0)
    assert not imported.config.text.mlm_head
    assert imported.ignored == ["text_encoder.embeddings.position_ids"]
    model = imported_model(imported)
    load_imported(model, imported, what="retrieval model")

    reference = reference_model(heads=1, text_heads=1, align=0, mlm=False)
    reference.load_state_dict(by_hand_retrieval(state), strict=True)
    assert_same_outputs(model, reference)


def test_text_overrides_set_what_shapes_cannot_tell():
    state = official_retrieval(seed=4)
    imported = import_video_text(state, kind="umt-retrieval", source="ret.pth", text_overrides={"num_heads": 4})
    assert imported.config.text.num_heads == 4
    model = imported_model(imported)
    load_imported(model, imported, what="retrieval model")
    reference = reference_model(heads=1, text_heads=4, align=0, mlm=False)
    reference.load_state_dict(by_hand_retrieval(state), strict=True)
    assert_same_outputs(model, reference)
    with pytest.raises(UsageError, match="num_head"):
        import_video_text(state, kind="umt-retrieval", source="ret.pth", text_overrides={"num_head": 4})


def test_stage1_import_infers_the_preset_and_loads_strictly():
    state = fill(stage1_shapes("encoder.", depth=4), seed=5)
    assert len(state) == 4 + 13 * 4 + 4 * K  # SPEC §5.2 (184 for B/16)
    vision, mapped = import_stage1({"model": state}, source="tiny_ptk710.pth")
    assert (vision.dim, vision.depth, vision.num_heads) == (64, 4, 4)  # (64, 4) is umt-tiny: 4 heads
    assert (vision.align_layers, vision.teacher_dim, vision.num_frames, vision.img_size) == (K, CT, 8, 224)
    encoder = build_vit(replace(vision, img_size=SIZE, num_frames=FRAMES))
    student = DistillStudent(encoder=encoder, clip_decoder=AlignHeads(num_tokens=encoder.num_tokens, dim=D,
                                                                       out_dim=CT, num_layers=K))  # fmt: skip
    student.load_state_dict(mapped, strict=True)
    torch.testing.assert_close(student.encoder.blocks[3].attn.v_bias, state["encoder.blocks.3.attn.v_bias"])


# ---------------------------------------------------------------------------------------------------------- failures


def load(state: dict[str, torch.Tensor], kind: str = "umt-stage2") -> None:
    imported = import_video_text(state, kind=kind, source="file.pth")
    load_imported(imported_model(imported), imported, what="model from file.pth")


def test_a_missing_key_is_named():
    state = official_stage2()
    del state["vision_encoder.encoder.blocks.1.attn.q_bias"]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \[vision_encoder\.encoder\.blocks\.1\.attn\.q_bias"):
        load(state)


def test_a_missing_key_is_named_as_in_the_file():
    state = official_retrieval()
    del state["text_encoder.embeddings.LayerNorm.bias"]
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \[text_encoder\.embeddings\.LayerNorm\.bias\]"):
        load(state, "umt-retrieval")


def test_an_unexpected_key_is_named():
    state = official_stage2()
    state["vision_encoder.encoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\) \[vision_encoder\.encoder\.extra\.weight\]"):
        load(state)
    state = official_stage2()
    state["optimizer_step"] = torch.zeros(())
    with pytest.raises(CheckpointError, match=r"outside the official stage-2 layout: \[optimizer_step\]"):
        load(state)


def test_a_shape_mismatch_is_named():
    state = official_stage2()
    key = "text_encoder.bert.encoder.layer.0.attention.output.dense.weight"
    state[key] = torch.zeros(DTXT, DTXT - 1)
    with pytest.raises(CheckpointError, match=rf"{key} \(32, 31\) != \(32, 32\)"):
        load(state)


def test_a_classifier_missing_key_is_named():
    state = fill(stage1_shapes("", heads=0), seed=1)  # §5.3 is §5.2 without `encoder.`, `norm.`, `clip_decoder.`
    del state["norm.weight"], state["norm.bias"]
    state |= {"fc_norm.weight": torch.ones(D), "fc_norm.bias": torch.zeros(D), "head.weight": torch.zeros(3, D),
              "head.bias": torch.zeros(3)}  # fmt: skip
    del state["blocks.1.mlp.fc2.bias"]
    imported = import_classifier(state, source="cls.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \[blocks\.1\.mlp\.fc2\.bias\]"):
        load_imported(build_classifier(imported.config), imported, what="classifier")


def test_a_qa_checkpoint_is_refused():
    state = official_stage2()
    state["text_decoder.bert.encoder.layer.0.attention.self.query.weight"] = torch.zeros(DTXT, DTXT)
    with pytest.raises(CheckpointError, match="QA checkpoint.*not supported"):
        load(state)
    with pytest.raises(CheckpointError, match="QA checkpoint"):
        import_classifier(state, source="qa.pth")


def test_the_bad_stage2_upload_is_refused_naming_what_is_missing():
    """#26: `b16_25m.pth` once held a QA model: `text_decoder.*`, and no vision_proj, text_proj, itm_head, teacher."""
    state = {k: v for k, v in official_stage2().items() if not k.startswith(("vision_proj", "text_proj", "itm_head",
                                                                            "clip_teacher"))}  # fmt: skip
    with pytest.raises(CheckpointError, match="lacks vision_proj, text_proj, itm_head"):
        load(state)
    state["text_decoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(VOCAB, DTXT)
    with pytest.raises(CheckpointError, match="QA checkpoint.*lacks vision_proj, text_proj, itm_head"):
        load(state)


@pytest.mark.parametrize("temp", [0.9, 0.0002, float("nan")])
def test_a_temperature_out_of_range_is_refused(temp):
    state = official_stage2()
    state["temp"] = torch.tensor(temp)
    with pytest.raises(CheckpointError, match=f"temp = {temp:g} is outside"):
        load(state)


def test_untied_mlm_decoder_is_refused():
    state = official_stage2()
    state["text_encoder.cls.predictions.decoder.weight"] = state["text_encoder.cls.predictions.decoder.weight"] + 1
    with pytest.raises(CheckpointError, match="decoder.weight and .*word_embeddings.weight differ"):
        load(state)


def test_another_kind_is_refused():
    with pytest.raises(CheckpointError, match="a umt-retrieval checkpoint, not a umt-stage2 one"):
        load(official_retrieval(), "umt-stage2")
    with pytest.raises(CheckpointError, match="a umt-stage2 checkpoint, not a umt-classifier one"):
        import_classifier(official_stage2(), source="b16_25m.pth")
    with pytest.raises(CheckpointError, match="not a umt-stage1 one"):
        import_stage1(official_stage2(), source="b16_25m.pth")


def test_all_zero_qv_biases_warn():
    state = official_stage2()
    for key in state:
        if key.endswith(("q_bias", "v_bias")):
            state[key] = torch.zeros_like(state[key])
    with pytest.warns(UserWarning, match="q_bias/v_bias tensors are zero"):
        load(state)
