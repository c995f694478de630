"""The stage-2 video-text model: the official key layout, strict loading of official files, images as 1-frame clips,
pooling and the clamped temperature."""

from __future__ import annotations

import pytest
import torch

from umt_cli.errors import CheckpointError
from umt_cli.models.heads import AlignHeads
from umt_cli.models.student import VideoViT
from umt_cli.models.text import TextEncoder
from umt_cli.models.video_text import VideoTextModel, VisionEncoder, load_official_stage2

DEPTH, K, D, CT = 3, 2, 32, 16  # vision blocks, aligned layers, vision width, teacher width
TEXT_LAYERS, FUSION, DTXT, E = 3, 2, 24, 8


def vision_encoder(num_frames: int = 4) -> VisionEncoder:
    encoder = VideoViT(img_size=32, patch_size=16, num_frames=num_frames, tubelet=1, dim=D, depth=DEPTH, num_heads=2,
                       align_layers=K)  # fmt: skip
    heads = AlignHeads(num_tokens=encoder.num_tokens, dim=D, out_dim=CT, num_layers=K, eps=1e-5, l2=False)
    return VisionEncoder(encoder=encoder, clip_decoder=heads)


def tiny_model(seed: int = 0) -> VideoTextModel:
    torch.manual_seed(seed)
    text = TextEncoder(vocab_size=30, hidden_size=DTXT, num_layers=TEXT_LAYERS, num_heads=2, intermediate_size=48,
                       fusion_layer=FUSION, encoder_width=D)  # fmt: skip
    return VideoTextModel(vision_encoder=vision_encoder(), text_encoder=text, embed_dim=E).eval()


def official_stage2_keys() -> set[str]:
    """The stage-2 layout written out from the official description (docs/official-behaviour.md, Stage 2 files),
    for this model's sizes; the teacher's keys are not part of the trainable model."""
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias", "attn.proj.weight",
             "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
             "mlp.fc2.bias"]  # fmt: skip
    keys = {"vision_encoder.encoder.patch_embed.proj.weight", "vision_encoder.encoder.patch_embed.proj.bias"}
    keys |= {f"vision_encoder.encoder.blocks.{i}.{name}" for i in range(DEPTH) for name in block}
    keys |= {"vision_encoder.encoder.norm.weight", "vision_encoder.encoder.norm.bias"}
    keys |= {
        f"vision_encoder.clip_decoder.{k}.{m}.{p}"
        for k in range(K)
        for m in ("head", "norm")
        for p in ("weight", "bias")
    }
    keys |= {"vision_encoder.pool_norm.weight", "vision_encoder.pool_norm.bias"}
    bert = "text_encoder.bert."
    keys |= {
        f"{bert}embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    }
    keys |= {f"{bert}embeddings.LayerNorm.{p}" for p in ("weight", "bias")}
    layer = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"]  # fmt: skip
    cross = ["crossattention.self.query", "crossattention.self.key", "crossattention.self.value",
             "crossattention.output.dense", "crossattention.output.LayerNorm"]  # fmt: skip
    for j in range(TEXT_LAYERS):
        for name in layer + (cross if j >= FUSION else []):
            keys |= {f"{bert}encoder.layer.{j}.{name}.{p}" for p in ("weight", "bias")}
    cls = "text_encoder.cls.predictions."
    keys |= {f"{cls}bias", f"{cls}decoder.weight", f"{cls}decoder.bias"}
    keys |= {f"{cls}transform.{n}.{p}" for n in ("dense", "LayerNorm") for p in ("weight", "bias")}
    keys |= {f"{n}.{p}" for n in ("vision_proj", "text_proj", "itm_head") for p in ("weight", "bias")} | {"temp"}
    return keys


def test_state_dict_is_the_official_stage2_layout():
    state = tiny_model().state_dict()
    assert set(state) == official_stage2_keys()
    assert state["text_encoder.bert.encoder.layer.2.crossattention.self.key.weight"].shape == (DTXT, D)
    assert state["vision_proj.weight"].shape == (E, D) and state["text_proj.weight"].shape == (E, DTXT)
    assert state["itm_head.weight"].shape == (2, DTXT) and state["temp"].shape == ()


def official_file(model: VideoTextModel) -> dict[str, torch.Tensor]:
    """What an official stage-2 checkpoint holds: the model, the teacher under `clip_teacher.`, and the text
    encoder's `position_ids` buffer of older transformers."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["clip_teacher.proj"] = torch.randn(4, CT)
    state["clip_teacher.ln_post.weight"] = torch.ones(4)
    state["text_encoder.bert.embeddings.position_ids"] = torch.arange(512).view(1, -1)
    return state


def test_an_official_stage2_file_loads_strictly_and_hands_back_the_teacher():
    source, target = tiny_model(seed=1), tiny_model(seed=2)
    teacher = load_official_stage2(target, official_file(source), source="b16_5m.pth")
    assert set(teacher) == {"proj", "ln_post.weight"}
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert (
        target.text_encoder.bert.embeddings.word_embeddings.weight is target.text_encoder.cls.predictions.decoder.weight
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s.pop("vision_encoder.pool_norm.bias"), "vision_encoder.pool_norm.bias"),
        (lambda s: s.update({"itm_head.extra": torch.zeros(1)}), "itm_head.extra"),
        (lambda s: s.update({"text_decoder.bert.x": torch.zeros(1)}), "text_decoder.bert.x"),
    ],
    ids=["missing", "unexpected", "outside the layout"],
)
def test_a_missing_or_extra_key_fails_naming_it(change, named):
    state = official_file(tiny_model())
    change(state)
    with pytest.raises(CheckpointError, match="b16_5m.pth") as error:
        load_official_stage2(tiny_model(), state, source="b16_5m.pth")
    assert named in str(error.value)


def test_an_image_is_a_one_frame_clip_on_the_first_rows_of_the_position_table():
    video_model = vision_encoder(num_frames=4).eval()
    image_model = vision_encoder(num_frames=1).eval()  # the official image table: HW rows
    image_model.load_state_dict(video_model.state_dict())
    image = torch.randn(2, 3, 1, 32, 32)
    visible = torch.tensor([[True, False, True, True], [False, True, True, True]])
    with torch.no_grad():
        a, b = video_model(image, visible), image_model(image, visible)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.aligned, b.aligned) and torch.equal(a.pooled, b.pooled)
    assert a.tokens.shape == (2, 3, D) and a.aligned.shape == (K, 2, 3, CT) and a.pooled.shape == (2, 1, D)


def test_pooling_over_all_tokens_or_per_frame():
    model = vision_encoder().eval()
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        pooled, per_frame = model(video), model(video, per_frame=True)
    norm = model.pool_norm
    torch.testing.assert_close(pooled.pooled, norm(pooled.tokens.mean(1, keepdim=True)), rtol=0, atol=0)
    expected = norm(per_frame.tokens.view(2, 4, 4, D).mean(2))  # (B, T, D): the 4 tokens of each frame
    torch.testing.assert_close(per_frame.pooled, expected, rtol=0, atol=0)
    assert pooled.aligned is None  # no mask: no alignment targets to match (as upstream)


def test_the_temperature_is_clamped_in_place():
    model = tiny_model()
    with torch.no_grad():
        model.temp.fill_(5.0)
    model.clamp_temperature()
    assert model.temp.item() == 0.5
    with torch.no_grad():
        model.temp.fill_(1e-6)
    model.clamp_temperature()
    assert model.temp.item() == pytest.approx(0.001)
