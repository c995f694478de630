"""The stage-2 fusion BERT: parity with `transformers` BERT and with an explicit fusion layer, the official key
layout, the Hugging Face key map and the source checks."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel

from umt_cli.data.text import write_tiny_bert
from umt_cli.errors import CheckpointError, UsageError
from umt_cli.models.text import TEXT_MASK_VALUE, TextEncoder
from umt_cli.models.text_loading import build_text_encoder, load_bert_weights

DIM, HEADS, DEPTH, FUSION, VISION, VOCAB, LENGTH = 32, 4, 4, 2, 24, 40, 9
TOL = dict(rtol=0, atol=2e-6)  # float32 rounding


def hf_config(layers: int = DEPTH) -> BertConfig:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        intermediate_size=2 * DIM,
        max_position_embeddings=16,
    )
    config._attn_implementation = "eager"  # the official explicit softmax
    return config


def hf_mlm(seed: int = 0, cls: type = BertForMaskedLM) -> torch.nn.Module:
    """A Hugging Face BERT whose every weight is random (biases and norms included), in eval mode."""
    torch.manual_seed(seed)
    model = cls(hf_config())
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def ours(fusion_layer: int = FUSION, **kwargs: object) -> TextEncoder:
    return TextEncoder.from_bert_config(hf_config(), fusion_layer=fusion_layer, encoder_width=VISION, **kwargs)


def text_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (3, LENGTH), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate((LENGTH, 5, 1)):  # a full row, a padded one, only [CLS]
        ids[row, length:], mask[row, length:] = 0, 0
    ids[:, 0] = 2
    return ids, mask


def loaded(hf: torch.nn.Module, fusion_layer: int = FUSION) -> TextEncoder:
    encoder = ours(fusion_layer)
    load_bert_weights(encoder, hf.state_dict(), source="hf")
    with torch.no_grad():  # non-trivial cross-attention too
        for name, param in encoder.named_parameters():
            if ".crossattention." in name:
                param.add_(0.1 * torch.randn_like(param))
    return encoder.eval()


def test_state_dict_has_the_official_keys_and_shapes():
    sd = ours().state_dict()
    assert not [key for key in sd if "pooler" in key or "position_ids" in key]
    for j in range(DEPTH):
        cross = {key.split(".crossattention.")[1] for key in sd if key.startswith(f"bert.encoder.layer.{j}.cross")}
        assert bool(cross) == (j >= FUSION)
    prefix = f"bert.encoder.layer.{FUSION}.crossattention."
    assert sd[prefix + "self.query.weight"].shape == (DIM, DIM)
    assert sd[prefix + "self.key.weight"].shape == sd[prefix + "self.value.weight"].shape == (DIM, VISION)
    assert sd[prefix + "output.dense.weight"].shape == (DIM, DIM) and prefix + "output.LayerNorm.bias" in sd
    hf_keys = set(BertForMaskedLM(hf_config()).state_dict())
    assert set(sd) - hf_keys == {key for key in sd if ".crossattention." in key}
    assert hf_keys - set(sd) == set()


def test_decoder_is_tied_to_the_word_embeddings_and_its_bias_is_the_prediction_bias():
    encoder = ours()
    load_bert_weights(encoder, hf_mlm().state_dict(), source="hf")
    predictions = encoder.cls.predictions
    assert predictions.decoder.weight is encoder.bert.embeddings.word_embeddings.weight
    assert predictions.decoder.bias is predictions.bias
    sd = encoder.state_dict()
    assert sd["cls.predictions.decoder.weight"].data_ptr() == sd["bert.embeddings.word_embeddings.weight"].data_ptr()


def test_text_layers_equal_transformers_bert_model():
    hf = hf_mlm()
    ids, mask = text_inputs()
    with torch.no_grad():
        want = hf.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[FUSION]
        got = loaded(hf).encode_text(ids, mask)
        bare = BertModel(hf_config(FUSION), add_pooling_layer=False).eval()  # only the text layers
        bare.load_state_dict({key: value for key, value in hf.bert.state_dict().items() if key in bare.state_dict()})
        want_bare = bare(input_ids=ids, attention_mask=mask).last_hidden_state
    print(f"text layers vs transformers: max |diff| {(got - want).abs().max():.2e}")
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(got, want_bare, **TOL)


def test_mlm_head_equals_transformers_bert_for_masked_lm():
    hf = hf_mlm()
    ids, mask = text_inputs()
    encoder = loaded(hf, fusion_layer=DEPTH)  # no fusion layers: the whole text stack is plain BERT
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).logits
        got = encoder.mlm_logits(encoder.encode_text(ids, mask))  # (B, L, V)
    print(f"MLM logits vs transformers: max |diff| {(got - want).abs().max():.2e}")
    assert got.shape == (3, LENGTH, VOCAB)
    torch.testing.assert_close(got, want, **TOL)


def reference_attention(x, memory, bias, p, prefix):
    """The official BertSelfAttention + BertSelfOutput written out: softmax(QKᵀ/√d + bias)·V."""

    def heads(t):
        return t.view(t.shape[0], t.shape[1], HEADS, -1).permute(0, 2, 1, 3)

    q = heads(F.linear(x, p[prefix + "self.query.weight"], p[prefix + "self.query.bias"]))
    k = heads(F.linear(memory, p[prefix + "self.key.weight"], p[prefix + "self.key.bias"]))
    v = heads(F.linear(memory, p[prefix + "self.value.weight"], p[prefix + "self.value.bias"]))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(x.shape)
    out = F.linear(context, p[prefix + "output.dense.weight"], p[prefix + "output.dense.bias"])
    return F.layer_norm(
        out + x, (DIM,), p[prefix + "output.LayerNorm.weight"], p[prefix + "output.LayerNorm.bias"], 1e-12
    )


def reference_fusion(hidden, mask, vision, vision_mask, p):
    bias = (1.0 - mask.float())[:, None, None, :] * -10000.0
    vision_bias = None if vision_mask is None else (1.0 - vision_mask.float())[:, None, None, :] * -3.4028e38
    for j in range(FUSION, DEPTH):
        layer = f"bert.encoder.layer.{j}."
        x = reference_attention(hidden, hidden, bias, p, layer + "attention.")
        x = reference_attention(x, vision, vision_bias, p, layer + "crossattention.")
        inner = F.gelu(F.linear(x, p[layer + "intermediate.dense.weight"], p[layer + "intermediate.dense.bias"]))
        out = F.linear(inner, p[layer + "output.dense.weight"], p[layer + "output.dense.bias"])
        hidden = F.layer_norm(
            out + x, (DIM,), p[layer + "output.LayerNorm.weight"], p[layer + "output.LayerNorm.bias"], 1e-12
        )
    return hidden


def test_fuse_equals_an_explicit_fusion_layer():
    encoder = loaded(hf_mlm())
    ids, mask = text_inputs()
    vision = torch.randn(3, 7, VISION, generator=torch.Generator().manual_seed(3))
    vision_mask = torch.ones(3, 7, dtype=torch.long)
    vision_mask[1, 4:] = 0
    with torch.no_grad():
        hidden = encoder.encode_text(ids, mask)
        p = encoder.state_dict()
        got = encoder.fuse(hidden, mask, vision)
        want = reference_fusion(hidden, mask, vision, None, p)
        print(f"fusion vs explicit reference: max |diff| {(got - want).abs().max():.2e}")
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(encoder.fuse(hidden, mask, vision, torch.ones(3, 7)), got, rtol=0, atol=0)
        partial = encoder.fuse(hidden, mask, vision, vision_mask)
        torch.testing.assert_close(partial, reference_fusion(hidden, mask, vision, vision_mask, p), **TOL)
        assert not torch.allclose(partial[1], got[1])
        # A masked vision token does not matter.
        changed = vision.clone()
        changed[1, 4:] += 5.0
        torch.testing.assert_close(encoder.fuse(hidden, mask, changed, vision_mask), partial, rtol=0, atol=0)


def test_sdpa_attention_equals_the_explicit_softmax_to_float32_rounding():
    attention = ours().bert.encoder.layer[FUSION].crossattention.self.eval()
    generator = torch.Generator().manual_seed(0)
    x, memory = torch.randn(4, LENGTH, DIM, generator=generator), torch.randn(4, 160, VISION, generator=generator)
    mask = torch.ones(4, 160)
    mask[0, 80:] = 0
    bias = (1.0 - mask)[:, None, None, :] * TEXT_MASK_VALUE
    with torch.no_grad():
        got = attention(x, memory, bias)
        q, k, v = (
            lin(t).view(4, -1, HEADS, DIM // HEADS).transpose(1, 2)
            for lin, t in ((attention.query, x), (attention.key, memory), (attention.value, memory))
        )
        want = ((q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS) + bias).softmax(-1) @ v).transpose(1, 2).flatten(2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_dropout_is_active_only_while_training_and_checkpointing_keeps_the_gradients():
    encoder = loaded(hf_mlm())
    ids, mask = text_inputs()
    vision = torch.randn(3, 5, VISION)
    with torch.no_grad():
        assert torch.equal(encoder.encode_text(ids, mask), encoder.encode_text(ids, mask))
        encoder.train()
        assert not torch.equal(encoder.encode_text(ids, mask), encoder.encode_text(ids, mask))

    def grads(checkpointing: bool) -> list[torch.Tensor]:
        encoder.gradient_checkpointing = checkpointing
        encoder.zero_grad()
        torch.manual_seed(7)
        logits = encoder.mlm_logits(encoder.fuse(encoder.encode_text(ids, mask), mask, vision))
        logits.square().mean().backward()
        return [p.grad.clone() for p in encoder.parameters()]

    for plain, recomputed in zip(grads(False), grads(True)):
        torch.testing.assert_close(recomputed, plain, rtol=0, atol=1e-6)


def test_new_weights_follow_the_official_init():
    torch.manual_seed(0)
    encoder = TextEncoder(
        vocab_size=VOCAB,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        intermediate_size=128,
        fusion_layer=1,
        encoder_width=96,
    )
    sd = encoder.state_dict()
    cross = [key for key in sd if ".crossattention." in key and key.endswith("weight") and "LayerNorm" not in key]
    weights = torch.cat([sd[key].flatten() for key in cross])  # the new query/key/value/dense weights
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    for key, value in sd.items():
        if "LayerNorm.weight" in key:
            assert torch.equal(value, torch.ones_like(value)), key
        elif key.endswith("bias"):
            assert not value.any(), key


def test_fusion_layer_range():
    with pytest.raises(ValueError, match="fusion_layer"):
        ours(fusion_layer=DEPTH + 1)
    text_only = ours(fusion_layer=DEPTH).eval()
    hidden = torch.randn(2, 3, DIM)
    assert torch.equal(text_only.fuse(hidden, torch.ones(2, 3), torch.randn(2, 4, VISION)), hidden)
    with pytest.raises(ValueError, match="vision width"):
        ours().fuse(hidden, torch.ones(2, 3), torch.randn(2, 4, VISION + 1))


# ---------------------------------------------------------------------------------------------- Hugging Face key map


def pretraining_state_dict() -> dict[str, torch.Tensor]:
    """A BertForPreTraining file as old transformers wrote it: pooler, NSP head and the position_ids buffer."""
    sd = dict(hf_mlm(cls=BertForPreTraining).state_dict())
    sd["bert.embeddings.position_ids"] = torch.arange(16)[None]
    return sd


def test_a_pretraining_file_loads_strictly_and_drops_what_umt_does_not_use():
    sd = pretraining_state_dict()
    encoder = ours()
    report = load_bert_weights(encoder, sd, source="bert.bin")
    assert set(report.dropped) == {
        "bert.embeddings.position_ids",
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "cls.seq_relationship.weight",
        "cls.seq_relationship.bias",
    }
    assert set(report.initialised) == {k for k in encoder.state_dict() if ".crossattention." in k}
    mine = encoder.state_dict()
    for key in sd.keys() - set(report.dropped):
        assert torch.equal(mine[key], sd[key]), key


def test_missing_or_extra_keys_fail_naming_them_and_the_file():
    sd = pretraining_state_dict()
    del sd["bert.encoder.layer.1.output.dense.bias"]
    with pytest.raises(CheckpointError, match=r"bert\.bin.*1 missing key.*layer\.1\.output\.dense\.bias"):
        load_bert_weights(ours(), sd, source="bert.bin")
    sd = pretraining_state_dict()
    sd["bert.encoder.layer.9.output.dense.bias"] = torch.zeros(DIM)
    with pytest.raises(CheckpointError, match=r"1 unexpected key.*layer\.9\.output\.dense\.bias"):
        load_bert_weights(ours(), sd, source="bert.bin")


def test_cross_attention_loads_when_present_and_may_not_be_partial():
    source = loaded(hf_mlm())
    target = ours()
    report = load_bert_weights(target, source.state_dict(), source="ours")
    assert report.initialised == () and report.dropped == ()
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    partial = dict(source.state_dict())
    del partial[f"bert.encoder.layer.{FUSION}.crossattention.self.key.weight"]
    with pytest.raises(CheckpointError, match=r"crossattention\.self\.key\.weight"):
        load_bert_weights(ours(), partial, source="ours")


def test_saved_pretrained_files_without_decoder_keys_and_old_gamma_beta_names_load(tmp_path: Path):
    hf = hf_mlm()
    hf.save_pretrained(tmp_path / "bert")  # leaves the tied decoder keys out
    encoder = build_text_encoder(tmp_path / "bert", fusion_layer=FUSION, encoder_width=VISION)
    assert torch.equal(encoder.cls.predictions.decoder.weight, hf.bert.embeddings.word_embeddings.weight)
    assert torch.equal(encoder.cls.predictions.decoder.bias, hf.cls.predictions.bias)
    old = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in hf.state_dict().items()
    }
    again = ours()
    load_bert_weights(again, old, source="old.bin")
    for key in ("bert.embeddings.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"):
        assert torch.equal(again.state_dict()[key], encoder.state_dict()[key])


def test_an_untied_decoder_is_refused():
    sd = dict(hf_mlm().state_dict())
    sd["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] + 1.0
    with pytest.raises(CheckpointError, match="decoder.weight differs"):
        load_bert_weights(ours(), sd, source="bad.bin")


def test_a_bert_model_file_has_bare_keys_and_no_mlm_head(tmp_path: Path):
    torch.manual_seed(0)
    bare = BertModel(hf_config())  # embeddings.*, encoder.*, pooler.*
    sd = bare.state_dict()
    headless = ours(mlm_head=False)
    report = load_bert_weights(headless, sd, source="model.bin")
    assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(report.dropped)
    assert torch.equal(headless.bert.embeddings.word_embeddings.weight, sd["embeddings.word_embeddings.weight"])
    with pytest.raises(RuntimeError, match="MLM head"):
        headless.mlm_logits(torch.zeros(1, 2, DIM))
    with pytest.raises(CheckpointError, match=r"missing key.*cls\.predictions"):
        load_bert_weights(ours(), sd, source="model.bin")
    # An MLM file into a headless encoder: the head is dropped on purpose.
    report = load_bert_weights(ours(mlm_head=False), hf_mlm().state_dict(), source="mlm.bin")
    assert "cls.predictions.transform.dense.weight" in report.dropped


# ----------------------------------------------------------------------------------------------------- sources


def test_a_tiny_folder_builds_a_random_encoder_only_when_asked(tmp_path: Path):
    folder = write_tiny_bert(tmp_path / "tiny", words=["a", "dog"], hidden=16, layers=3, heads=2, intermediate=32)
    with pytest.warns(UserWarning, match="random text encoder.*tests and the quickstart only"):
        encoder = build_text_encoder(folder, fusion_layer=1, encoder_width=8, random=True)
    assert (encoder.hidden_size, encoder.num_layers, encoder.vocab_size) == (16, 3, 7)
    with pytest.raises(UsageError, match="no model.safetensors or pytorch_model.bin"):
        build_text_encoder(folder, fusion_layer=1, encoder_width=8)


def test_a_pytorch_bin_folder_loads_with_weights_only(tmp_path: Path):
    folder = tmp_path / "bin"
    folder.mkdir()
    hf_config().to_json_file(str(folder / "config.json"))
    sd = pretraining_state_dict()
    torch.save(sd, folder / "pytorch_model.bin")
    encoder = build_text_encoder(folder, fusion_layer=FUSION, encoder_width=VISION)
    assert torch.equal(encoder.bert.embeddings.word_embeddings.weight, sd["bert.embeddings.word_embeddings.weight"])
    save_file({"x": torch.zeros(1)}, folder / "model.safetensors")  # preferred over the .bin, and wrong
    with pytest.raises(CheckpointError, match="model.safetensors"):
        build_text_encoder(folder, fusion_layer=FUSION, encoder_width=VISION)


@pytest.mark.parametrize("source", ["{tmp}/no-such-folder", "no-such-org/no-such-bert"])
def test_a_missing_source_is_one_clear_line_offline(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # the client reads it once, at import
    source = source.format(tmp=tmp_path)
    start = time.monotonic()
    with pytest.raises(UsageError) as caught:
        build_text_encoder(source, fusion_layer=FUSION, encoder_width=VISION)
    message = str(caught.value)
    assert time.monotonic() - start < 10
    assert caught.value.exit_code == 2 and "\n" not in message
    assert message.startswith(source) and "local BERT folder" in message and "hub id" in message
