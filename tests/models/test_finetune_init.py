"""A classifier to fine-tune starts from any checkpoint holding a UMT video ViT, strictly: the backbone's tensors
arrive unchanged under the classifier's names, the head is fresh (or loaded, or remapped by class name), and a wrong
file fails naming the key."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from umt_cli.errors import CheckpointError
from umt_cli.models.classifier import HEAD_INIT_SCALE, build_classifier
from umt_cli.models.config import ClassifierConfig, VisionConfig
from umt_cli.models.finetune_init import init_classifier

VISION = VisionConfig(dim=64, depth=2, num_heads=1, img_size=32, num_frames=2)


def classifier(classes: int = 3, seed: int = 1):
    torch.manual_seed(seed)
    return build_classifier(ClassifierConfig(vision=VISION, num_classes=classes))


def backbone(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ViT in the classifier's names (patch_embed.*, blocks.*), q/v biases non-zero."""
    generator = torch.Generator().manual_seed(seed)
    names = {k: v for k, v in classifier().state_dict().items() if not k.startswith(("fc_norm.", "head."))}
    return {key: torch.randn(value.shape, generator=generator) for key, value in names.items()}


def extras(prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}norm.weight": torch.ones(64), f"{prefix}norm.bias": torch.zeros(64)}


LAYOUTS = {
    "our student.safetensors": lambda w: {
        **{f"encoder.{k}": v for k, v in w.items()},
        **extras("encoder."),
        "clip_decoder.0.head.weight": torch.zeros(8, 64),
    },  # fmt: skip
    "official stage 2": lambda w: {
        "model": {
            **{f"vision_encoder.encoder.{k}": v for k, v in w.items()},
            **extras("vision_encoder.encoder."),
            "text_encoder.bert.embeddings.word_embeddings.weight": torch.zeros(9, 4),
            "clip_teacher.conv1.weight": torch.zeros(2, 3, 1, 16, 16),
            "vision_proj.weight": torch.zeros(4, 64),
        }
    },  # fmt: skip
    "official retrieval": lambda w: {
        **{f"vision_encoder.encoder.{k}": v for k, v in w.items()},
        "text_encoder.embeddings.word_embeddings.weight": torch.zeros(9, 4),
    },  # fmt: skip
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_backbone_arrives_unchanged_and_the_head_is_fresh(tmp_path, layout):
    weights = backbone()
    state = LAYOUTS[layout](weights)
    path = tmp_path / "init.safetensors" if layout.endswith("safetensors") else tmp_path / "init.pth"
    save_file(state, str(path)) if path.suffix == ".safetensors" else torch.save(state, path)
    model = classifier()
    report = init_classifier(model, path)
    loaded = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(loaded[key], value), key
    assert report.head == "fresh" and report.loaded == len(weights)
    assert len(report.ignored) == len(state.get("model", state)) - len(weights)
    assert torch.equal(loaded["fc_norm.weight"], torch.ones(64)) and torch.equal(loaded["head.bias"], torch.zeros(3))
    std = loaded["head.weight"].std().item()  # trunc_normal(0.02) x 0.001 over 192 values
    assert 0.7 * 0.02 * HEAD_INIT_SCALE < std < 1.3 * 0.02 * HEAD_INIT_SCALE


def test_the_fresh_head_scale_is_a_setting(tmp_path):
    """`head_init_scale` (upstream `--init_scale`) scales the same trunc-normal draw; the backbone load keeps it."""
    path = tmp_path / "init.safetensors"
    save_file(LAYOUTS["our student.safetensors"](backbone()), str(path))
    heads = {}
    for scale in (HEAD_INIT_SCALE, 1.0):
        torch.manual_seed(3)
        model = build_classifier(ClassifierConfig(vision=VISION, num_classes=3), head_init_scale=scale)
        init_classifier(model, path)
        heads[scale] = model.state_dict()["head.weight"]
    torch.testing.assert_close(heads[1.0] * HEAD_INIT_SCALE, heads[HEAD_INIT_SCALE], rtol=1e-6, atol=0)
    assert 0.7 * 0.02 < heads[1.0].std().item() < 1.3 * 0.02


def test_a_classifier_head_is_loaded_or_remapped_by_name(tmp_path):
    weights = backbone()
    generator = torch.Generator().manual_seed(5)
    source = {**weights, "fc_norm.weight": torch.rand(64, generator=generator), "fc_norm.bias": torch.rand(64),
              "head.weight": torch.randn(4, 64, generator=generator), "head.bias": torch.randn(4)}  # fmt: skip
    path = tmp_path / "k710.pth"
    torch.save({"module": source}, path)
    model = classifier(classes=4)
    assert init_classifier(model, path).head == "loaded"
    assert torch.equal(model.head.weight, source["head.weight"])
    model = classifier(classes=2)
    names = ["archery", "yoga", "zumba", "juggling"]
    report = init_classifier(model, path, label_maps=(names, ["juggling", "archery"]))
    assert report.head == "remapped by class name"
    assert torch.equal(model.head.weight, source["head.weight"][[3, 0]])
    assert torch.equal(model.fc_norm.weight, source["fc_norm.weight"])
    with pytest.raises(CheckpointError, match="its head has 4 classes, the model 2: give the checkpoint's label map"):
        init_classifier(classifier(classes=2), path)
    with pytest.raises(CheckpointError, match="not in the checkpoint's label map: 'surfing'"):
        init_classifier(classifier(classes=2), path, label_maps=(names, ["yoga", "surfing"]))


def test_a_missing_or_misshapen_key_and_a_wrong_kind_are_named(tmp_path):
    weights = backbone()
    del weights["blocks.1.mlp.fc2.bias"]
    torch.save({f"encoder.{k}": v for k, v in weights.items()} | {"clip_decoder.0.head.weight": torch.zeros(8, 64)},
               tmp_path / "cut.pth")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        init_classifier(classifier(), tmp_path / "cut.pth")
    wide = {f"encoder.{k}": torch.zeros(*(2 * s for s in v.shape)) for k, v in backbone().items()}
    torch.save(wide | {"clip_decoder.0.head.weight": torch.zeros(8, 128)}, tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="patch_embed.proj.weight"):
        init_classifier(classifier(), tmp_path / "wide.pth")
    torch.save({"conv1.weight": torch.zeros(8, 3, 16, 16), "transformer.resblocks.0.ln_1.weight": torch.ones(8)},
               tmp_path / "clip.pth")  # fmt: skip
    with pytest.raises(CheckpointError, match="a clip-visual checkpoint; fine-tuning starts from a UMT stage-1"):
        init_classifier(classifier(), tmp_path / "clip.pth")
    with pytest.raises(CheckpointError, match="a folder without weights"):
        init_classifier(classifier(), tmp_path)
