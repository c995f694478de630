"""The export bundle: a bit-exact round trip, the files it holds, and every refusal as a one-line error."""

from __future__ import annotations

import errno
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from umt_cli.data.text import build_tokenizer, tokenize, write_tiny_bert
from umt_cli.errors import CheckpointError, UsageError
from umt_cli.export import bundle as bundle_module
from umt_cli.export.bundle import is_bundle, load_bundle, read_bundle, write_bundle
from umt_cli.models.classifier import build_classifier
from umt_cli.models.config import (
    ClassifierConfig,
    Preprocess,
    TextConfig,
    VideoTextConfig,
    VisionConfig,
    build_video_text,
)

WORDS = ["a", "dog", "runs", "on", "the", "grass", "cat", "sleeps", "##s"]
CAPTIONS = ["a dog runs on the grass", "the cats sleeps", "a zebra"]  # "zebra" is unknown: [UNK]
SHA = "ab" * 32


def tiny_config(vocab_size: int, *, embed_dim: int = 16) -> VideoTextConfig:
    return VideoTextConfig(
        vision=VisionConfig(dim=64, depth=2, num_heads=4, patch_size=16, img_size=32, num_frames=2),
        text=TextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_layers=3,
            num_heads=2,
            intermediate_size=64,
            fusion_layer=1,
            mlm_head=True,
        ),
        embed_dim=embed_dim,
        preprocess=Preprocess(size=32, num_frames=2, max_len=8),
    )


def random_model(config: VideoTextConfig, seed: int) -> torch.nn.Module:
    """A tiny model whose every parameter is random (q/v biases and LayerNorms start as constants)."""
    torch.manual_seed(seed)
    model = build_video_text(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[torch.nn.Module, VideoTextConfig, Path]:
    bert = write_tiny_bert(tmp_path / "bert", words=WORDS)
    vocab_size = len((bert / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = tiny_config(vocab_size)
    return random_model(config, seed=0), config, bert


def export(tiny, out: Path, **options) -> Path:
    model, config, bert = tiny
    defaults = dict(model=model, config=config, tokenizer_dir=bert, source="runs/x/model.safetensors")
    return write_bundle(out, **{**defaults, "source_sha256": SHA, **options})


def header_of(path: Path) -> tuple[dict[str, str], list[str]]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata()), list(handle.keys())


# ------------------------------------------------------------------------------------------------------- round trip
def test_round_trip_is_bit_exact(tiny, tmp_path: Path) -> None:
    model, config, bert = tiny
    out = export(tiny, tmp_path / "bundle")
    loaded, loaded_config, tokenizer_dir = load_bundle(out)
    assert not loaded.training
    assert loaded_config == replace(config, text=replace(config.text, mlm_head=False))

    # The copied tokenizer gives the same ids as the original folder's.
    batch = tokenize(build_tokenizer(bert), CAPTIONS, max_len=8, add_sep=False)
    copied = tokenize(build_tokenizer(tokenizer_dir), CAPTIONS, max_len=8, add_sep=False)
    assert torch.equal(batch.ids, copied.ids) and torch.equal(batch.attention_mask, copied.attention_mask)
    assert (batch.ids > 4).sum() >= 6  # real words, not only special tokens

    video = torch.randn(2, 3, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens, frames = model.encode_video(video)
        tokens2, frames2 = loaded.encode_video(video)
        hidden, embed = model.encode_text(batch.ids, batch.attention_mask)
        hidden2, embed2 = loaded.encode_text(batch.ids, batch.attention_mask)
        rows = torch.tensor([0, 1, 0])
        logits = model.match_logits(hidden, batch.attention_mask, tokens, rows)
        logits2 = loaded.match_logits(hidden2, batch.attention_mask, tokens2, rows)
    for ours, theirs in [(tokens, tokens2), (frames, frames2), (hidden, hidden2), (embed, embed2), (logits, logits2)]:
        assert torch.equal(ours, theirs)


def test_bundle_files_and_header(tiny, tmp_path: Path) -> None:
    model, config, bert = tiny
    out = export(tiny, tmp_path / "bundle", notes={"recipe": "recipes/export/b16_bundle.toml"})
    assert is_bundle(out) and not is_bundle(bert) and not is_bundle(tmp_path / "nothing")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    tokenizer_files = ["tokenizer/tokenizer_config.json", "tokenizer/vocab.txt"]  # no weights, no BERT config
    assert files == ["README.md", "config.json", "model.safetensors", *tokenizer_files]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []

    header, keys = header_of(out / "model.safetensors")
    assert any(key.startswith("text_encoder.cls.") for key in model.state_dict())  # the head existed...
    assert not any(key.startswith("text_encoder.cls.") for key in keys)  # ...and is not exported
    weights = model.state_dict()
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        for key in keys:
            assert torch.equal(handle.get_tensor(key), weights[key]), key
    assert header["format"] == "umt-export" and header["kind"] == "video-text"
    assert header["source"] == "runs/x/model.safetensors" and header["source_sha256"] == SHA
    assert header["umt_version"]

    written = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert written["text"]["mlm_head"] is False
    assert written["source"] == {"checkpoint": "runs/x/model.safetensors", "sha256": SHA}
    assert written["notes"] == {"recipe": "recipes/export/b16_bundle.toml"}
    model_part = {k: v for k, v in written.items() if k not in ("umt_version", "source", "notes")}
    assert json.loads(header["config"]) == model_part

    bundle = read_bundle(out)
    assert bundle.metadata["notes"] == {"recipe": "recipes/export/b16_bundle.toml"}
    assert bundle.metadata["source_sha256"] == SHA


def test_model_card(tiny, tmp_path: Path) -> None:
    out = export(tiny, tmp_path / "my-umt")
    card = (out / "README.md").read_text(encoding="utf-8")
    weights_sha = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    assert card.startswith("# my-umt\n")
    for fact in [SHA, weights_sha, "2303.16058", "umt eval retrieval --ckpt", "load_bundle", "tokenizer/vocab.txt"]:
        assert fact in card, fact
    assert "| vision width D / depth / heads | 64 / 2 / 4 |" in card
    assert "| caption tokens (max_len) | 8 |" in card
    assert "no [SEP]" in card and "inherits the license" in card


# -------------------------------------------------------------------------------------------------------- refusals
def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_refuses_a_non_empty_folder_without_overwrite(tiny, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(UsageError) as error:
        export(tiny, out)
    assert str(out) in one_line(error)
    with pytest.raises(UsageError, match="not a umt bundle"):  # overwrite deletes bundles only
        export(tiny, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    export(tiny, out)  # an empty folder is fine


def test_overwrite_replaces_a_bundle(tiny, tmp_path: Path) -> None:
    out = export(tiny, tmp_path / "bundle")
    model, config, bert = tiny
    other = random_model(config, seed=5)
    with pytest.raises(UsageError):
        export(tiny, out, model=other)
    export(tiny, out, model=other, overwrite=True)
    loaded, _, _ = load_bundle(out)
    name = "vision_proj.weight"
    assert torch.equal(loaded.state_dict()[name], other.state_dict()[name])
    assert not torch.equal(loaded.state_dict()[name], model.state_dict()[name])


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_write_leaves_nothing_behind(tiny, tmp_path: Path, monkeypatch, overwrite: bool) -> None:
    out = tmp_path / "bundle"
    before = None
    if overwrite:
        before = (export(tiny, out) / "model.safetensors").read_bytes()

    def disk_full(folder: Path, *args, **kwargs) -> None:
        (folder / "README.md").write_text("half", encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "README.md"))

    monkeypatch.setattr(bundle_module, "_write_card", disk_full)
    _, config, _ = tiny
    with pytest.raises(OSError):
        export(tiny, out, model=random_model(config, seed=3), overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["bert", "bundle"] if overwrite else ["bert"])
    if overwrite:
        assert (out / "model.safetensors").read_bytes() == before  # the old bundle is untouched


def test_refuses_weights_that_do_not_fit_the_config(tiny, tmp_path: Path) -> None:
    model, config, bert = tiny
    with pytest.raises(CheckpointError) as error:
        export(tiny, tmp_path / "bundle", config=replace(config, embed_dim=8))
    assert "vision_proj.weight" in one_line(error)
    assert not (tmp_path / "bundle").exists()


def test_refuses_missing_or_oversized_tokenizer(tiny, tmp_path: Path) -> None:
    model, config, bert = tiny
    with pytest.raises(UsageError, match="tokenizer"):
        export(tiny, tmp_path / "a", tokenizer_dir=None)
    with pytest.raises(UsageError, match="vocab.txt"):
        export(tiny, tmp_path / "b", tokenizer_dir=tmp_path)
    big = write_tiny_bert(tmp_path / "big", words=[*WORDS, "extra"])  # one word more than the model's vocabulary
    with pytest.raises(UsageError, match="vocab_size"):
        export(tiny, tmp_path / "c", tokenizer_dir=big)
    assert not any((tmp_path / name).exists() for name in "abc")


def test_read_refuses_an_edited_config(tiny, tmp_path: Path) -> None:
    out = export(tiny, tmp_path / "bundle")
    path = out / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["preprocess"]["max_len"] = 16  # still a valid config, but not the one the weights were exported with
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError) as error:
        read_bundle(out)
    message = one_line(error)
    assert str(path) in message and str(out / "model.safetensors") in message and "preprocess.max_len" in message


@pytest.mark.parametrize("where", ["vision", "top"])
def test_read_refuses_unknown_config_keys(tiny, tmp_path: Path, where: str) -> None:
    out = export(tiny, tmp_path / "bundle")
    path = out / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    (data["vision"] if where == "vision" else data)["surprise"] = 1
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CheckpointError) as error:
        load_bundle(out)
    assert str(path) in one_line(error) and "surprise" in str(error.value)


def test_read_refuses_unparseable_config(tiny, tmp_path: Path) -> None:
    out = export(tiny, tmp_path / "bundle")
    (out / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError) as error:
        read_bundle(out)
    assert str(out / "config.json") in one_line(error)
    (out / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: missing"):
        read_bundle(out)


def test_read_refuses_a_truncated_weights_file(tiny, tmp_path: Path) -> None:
    out = export(tiny, tmp_path / "bundle")
    path = out / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_bundle(out)
    assert str(path) in one_line(error)
    path.unlink()
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        read_bundle(out)


def test_read_refuses_a_missing_tokenizer(tiny, tmp_path: Path) -> None:
    out = export(tiny, tmp_path / "bundle")
    (out / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(CheckpointError) as error:
        read_bundle(out)
    assert str(out / "tokenizer") in one_line(error)


def test_read_refuses_weights_that_are_not_an_export(tiny, tmp_path: Path) -> None:
    from umt_cli.utils.checkpoint import save_weights

    model, _, _ = tiny
    out = export(tiny, tmp_path / "bundle")
    header, _ = header_of(out / "model.safetensors")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.cls.")}
    save_weights(out / "model.safetensors", state, {**header, "format": "umt-stage2"})
    with pytest.raises(CheckpointError, match="not a umt export"):
        read_bundle(out)


# ------------------------------------------------------------------------------------------------------ classifier
def tiny_classifier(seed: int) -> tuple[torch.nn.Module, ClassifierConfig]:
    config = ClassifierConfig(
        vision=VisionConfig(
            dim=64, depth=2, num_heads=4, patch_size=16, img_size=32, num_frames=2, pos_temporal="interpolate"
        ),
        num_classes=5,
        preprocess=Preprocess(size=32, num_frames=2),
    )
    torch.manual_seed(seed)
    model = build_classifier(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval(), config


def test_classifier_round_trip(tmp_path: Path) -> None:
    model, config = tiny_classifier(seed=2)
    options = dict(model=model, config=config, source="k400.pth", source_sha256=None)
    with pytest.raises(UsageError, match="no tokenizer"):
        write_bundle(tmp_path / "refused", tokenizer_dir=tmp_path, **options)
    out = write_bundle(tmp_path / "bundle", tokenizer_dir=None, **options)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    header, _ = header_of(out / "model.safetensors")
    assert header["kind"] == "classifier" and header["source_sha256"] == ""
    assert "umt eval classification --ckpt" in (out / "README.md").read_text(encoding="utf-8")

    loaded, loaded_config, tokenizer_dir = load_bundle(out)
    assert loaded_config == config and tokenizer_dir is None
    video = torch.randn(3, 3, 2, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded(video), model(video))
