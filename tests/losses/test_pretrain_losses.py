"""The four stage-2 losses of one batch: each against a reference written out here from its formula, skipped
losses are not computed, VTM and MLM see the visible tokens only, images work, and every trainable parameter gets a
gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import umt_cli.losses.pretrain as pretrain
from umt_cli.data.text import TextBatch
from umt_cli.losses.pretrain import LOSS_NAMES, PretrainInputs, PretrainLosses, pretrain_losses
from umt_cli.masking.text import mlm_mask
from umt_cli.models.heads import AlignHeads
from umt_cli.models.student import VideoViT
from umt_cli.models.text import TextEncoder
from umt_cli.models.video_text import VideoTextModel, VisionEncoder

FRAMES, SIDE, PATCH, DEPTH, K, D, CT = 4, 32, 16, 2, 2, 32, 16  # 2 x 2 tokens per frame
VOCAB, DTXT, LAYERS, FUSION, E = 30, 24, 3, 2, 8
PAD, CLS, MASK = 0, 2, 4
B, L, KEEP = 4, 6, 2  # clips, text length, visible tokens per frame
ALL = dict(uta=1.0, vtc=1.0, vtm=1.0, mlm=1.0)


def tiny_model(seed: int = 0) -> VideoTextModel:
    torch.manual_seed(seed)
    encoder = VideoViT(img_size=SIDE, patch_size=PATCH, num_frames=FRAMES, tubelet=1, dim=D, depth=DEPTH,
                       num_heads=2, align_layers=K)  # fmt: skip
    heads = AlignHeads(num_tokens=encoder.num_tokens, dim=D, out_dim=CT, num_layers=K, eps=1e-5, l2=False)
    text = TextEncoder(vocab_size=VOCAB, hidden_size=DTXT, num_layers=LAYERS, num_heads=2, intermediate_size=48,
                       fusion_layer=FUSION, encoder_width=D)  # fmt: skip
    model = VideoTextModel(vision_encoder=VisionEncoder(encoder=encoder, clip_decoder=heads), text_encoder=text,
                           embed_dim=E)  # fmt: skip
    with torch.no_grad():  # LayerNorms and biases away from 1/0, so that their gradients are not special
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def batch(frames: int = FRAMES, seed: int = 0, idx: tuple[int, ...] = (7, 8, 9, 8)) -> PretrainInputs:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, 3, frames, SIDE, SIDE, generator=g)
    hw = (SIDE // PATCH) ** 2
    order = torch.rand(B * frames, hw, generator=g).argsort(dim=1)[:, :KEEP]  # KEEP per frame
    visible = torch.zeros(B * frames, hw, dtype=torch.bool).scatter_(1, order, True).view(B, -1)
    targets = torch.randn(K, B, frames * KEEP, CT, generator=g)
    ids = torch.randint(5, VOCAB, (B, L), generator=g)
    ids[:, 0] = CLS
    for row, length in enumerate((6, 4, 3, 5)):
        ids[row, length:] = PAD
    text = TextBatch(ids, (ids != PAD).long())
    mlm = mlm_mask(ids, vocab_size=VOCAB, mask_id=MASK, pad_id=PAD, cls_id=CLS, prob=0.5, generator=g)
    return PretrainInputs(video, visible, targets, text, mlm, torch.tensor(idx))


def run(model, inputs, weights=ALL, seed: int = 5, **kwargs) -> PretrainLosses:
    return pretrain_losses(model, inputs, negatives=torch.Generator().manual_seed(seed), weights=weights, **kwargs)


# --- references, written from the formulas ---------------------------------------------------------------------------


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(logits.log_softmax(dim=1) * targets).sum(dim=1).mean()


def reference_losses(model: VideoTextModel, x: PretrainInputs, seed: int = 5) -> dict[str, torch.Tensor]:
    vision = model.vision_encoder(x.video, x.visible)
    text = model.text_encoder
    hidden = text.encode_text(x.text.ids, x.text.attention_mask)
    temp = model.temp.clamp(0.001, 0.5)
    # UTA: 2 - 2 cos, averaged over layers, clips and visible tokens
    uta = (2 - 2 * (unit(vision.aligned) * unit(x.targets)).sum(-1)).mean()
    # VTC: cosine / temp, soft targets spread over equal ids, both directions
    v, t = unit(model.vision_proj(vision.pooled)[:, 0]), unit(model.text_proj(hidden[:, 0]))
    sim = v @ t.T / temp
    same = (x.idx[:, None] == x.idx[None, :]).float()
    positives = same / same.sum(1, keepdim=True)
    vtc = (soft_cross_entropy(sim, positives) + soft_cross_entropy(sim.T, positives)) / 2
    # VTM: a negative video per text first, then a negative text per video, never of the same id
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w_t2v = F.softmax(sim.T.detach() + 1e-4, dim=1).masked_fill(same.bool(), 0)
        w_v2t = F.softmax(sim.detach() + 1e-4, dim=1).masked_fill(same.bool(), 0)
        neg_video = torch.multinomial(w_t2v, 1, generator=g)[:, 0]
        neg_text = torch.multinomial(w_v2t, 1, generator=g)[:, 0]
    tokens, mask = vision.tokens, x.text.attention_mask
    fused = text.fuse(
        torch.cat([hidden, hidden, hidden[neg_text]]),
        torch.cat([mask, mask, mask[neg_text]]),
        torch.cat([tokens, tokens[neg_video], tokens]),
    )
    logits = model.itm_head(fused[:, 0])
    labels = torch.tensor([1] * B + [0] * 2 * B)
    vtm = -logits.log_softmax(1)[torch.arange(3 * B), labels].mean()
    # MLM: full (B, L, V) logits, cross-entropy averaged over the selected positions
    mlm_logits = text.mlm_logits(text.fuse(text.encode_text(x.mlm.ids, mask), mask, tokens))
    selected = x.mlm.labels != -100
    mlm = -mlm_logits.log_softmax(-1)[selected].gather(1, x.mlm.labels[selected][:, None]).mean()
    return dict(uta=uta, vtc=vtc, vtm=vtm, mlm=mlm)


@pytest.mark.parametrize("frames", [FRAMES, 1], ids=["video", "image"])
def test_each_loss_matches_its_formula(frames):
    model, x = tiny_model(), batch(frames)
    losses = run(model, x)
    expected = reference_losses(model, x)
    for name in LOSS_NAMES:
        value = getattr(losses, name)
        assert value.shape == () and torch.isfinite(value), name
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert losses.computed == LOSS_NAMES
    torch.testing.assert_close(losses.total(ALL), sum(expected.values()), rtol=1e-5, atol=1e-6)


def test_temperature_is_clamped_in_place_first():
    model, x = tiny_model(), batch()
    with torch.no_grad():
        model.temp.fill_(0.9)
    losses = run(model, x)
    assert model.temp.item() == 0.5  # and the losses used the clamped value:
    torch.testing.assert_close(losses.vtc, reference_losses(model, x)["vtc"], rtol=1e-5, atol=1e-6)


def test_per_frame_pooling_averages_the_similarities_over_frames():
    model, x = tiny_model(), batch()
    vision = model.vision_encoder(x.video, x.visible, per_frame=True)
    assert vision.pooled.shape == (B, FRAMES, D)
    v = unit(model.vision_proj(vision.pooled))  # (B, T, E)
    t = unit(model.text_proj(model.text_encoder.encode_text(x.text.ids, x.text.attention_mask)[:, 0]))
    sim = torch.einsum("mld,nd->mln", v, t).mean(1) / model.temp
    same = (x.idx[:, None] == x.idx[None, :]).float()
    positives = same / same.sum(1, keepdim=True)
    expected = (soft_cross_entropy(sim, positives) + soft_cross_entropy(sim.T, positives)) / 2
    losses = run(model, x, weights=dict(uta=0.0, vtc=1.0, vtm=0.0, mlm=0.0), per_frame=True)
    torch.testing.assert_close(losses.vtc, expected, rtol=1e-5, atol=1e-6)


# --- skipped losses ---------------------------------------------------------------------------------------------------


class Spy:
    """Counts the calls of a function it replaces, then calls it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("off", LOSS_NAMES)
def test_a_loss_with_weight_zero_is_not_computed(monkeypatch, off):
    spies = {name: Spy(getattr(pretrain, name)) for name in ("uta_loss", "vtc_loss", "hard_negatives", "mlm_loss")}
    for name, spy in spies.items():
        monkeypatch.setattr(pretrain, name, spy)
    model, x = tiny_model(), batch()
    itm = Spy(model.itm_head.forward)
    monkeypatch.setattr(model.itm_head, "forward", itm)
    encode_text = Spy(model.text_encoder.encode_text)
    monkeypatch.setattr(model.text_encoder, "encode_text", encode_text)
    # the input only the skipped loss reads may be absent
    x = PretrainInputs(x.video, x.visible, None if off == "uta" else x.targets, x.text,
                       None if off == "mlm" else x.mlm, x.idx)  # fmt: skip
    losses = run(model, x, weights={**ALL, off: 0.0})

    calls = {"uta": spies["uta_loss"].calls, "vtc": spies["vtc_loss"].calls, "vtm": spies["hard_negatives"].calls,
             "mlm": spies["mlm_loss"].calls}  # fmt: skip
    assert calls == {name: int(name != off) for name in LOSS_NAMES}
    assert itm.calls == int(off != "vtm")
    assert encode_text.calls == (1 if off == "mlm" else 2)  # the caption pass, and the corrupted-caption pass
    assert getattr(losses, off).item() == 0.0 and off not in losses.computed
    assert set(losses.named()) == {f"loss/{name}" for name in LOSS_NAMES if name != off}
    expected = reference_losses(tiny_model(), batch())  # same weights and draws
    for name in losses.computed:
        torch.testing.assert_close(getattr(losses, name), expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_without_vtc_and_vtm_the_caption_pass_is_skipped(monkeypatch):
    model, x = tiny_model(), batch()
    encode_text = Spy(model.text_encoder.encode_text)
    monkeypatch.setattr(model.text_encoder, "encode_text", encode_text)
    losses = run(model, x, weights=dict(uta=1.0, vtc=0.0, vtm=0.0, mlm=1.0))
    assert encode_text.calls == 1 and losses.computed == ("uta", "mlm")  # only MLM's pass on the corrupted ids


def test_the_total_weighs_the_computed_losses_only():
    nan = torch.tensor(float("nan"))
    losses = PretrainLosses(torch.tensor(1.0), torch.tensor(2.0), nan, torch.tensor(4.0), ("uta", "vtc", "mlm"))
    total = losses.total(dict(uta=0.5, vtc=2.0, vtm=0.0, mlm=0.0))
    assert total.item() == 4.5  # vtm (not computed) and mlm (weight 0) add nothing, not even a NaN


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (dict(uta=1.0, vtc=1.0, vtm=1.0), "exactly"),
        ({**ALL, "itc": 1.0}, "exactly"),
        ({**ALL, "vtm": -1.0}, "negative"),
    ],
)
def test_weights_must_name_the_four_losses(weights, message):
    with pytest.raises(ValueError, match=message):
        run(tiny_model(), batch(), weights=weights)


@pytest.mark.parametrize(("field", "message"), [("targets", "UTA"), ("visible", "UTA"), ("mlm", "MLM")])
def test_an_enabled_loss_without_its_input_fails_before_any_work(field, message):
    x = batch()
    x = PretrainInputs(**{**x.__dict__, field: None})
    with pytest.raises(ValueError, match=message):
        run(tiny_model(), x)


def test_a_ddp_wrapper_is_refused():
    class FakeDdp(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, module):  # no process group needed: only the type matters
            torch.nn.Module.__init__(self)
            self.module = module

    with pytest.raises(TypeError, match="DDP"):
        run(FakeDdp(tiny_model()), batch())


# --- what VTM and MLM see ---------------------------------------------------------------------------------------------


def test_vtm_fuses_3b_pairs_over_the_visible_tokens_only(monkeypatch):
    model, x = tiny_model(), batch()
    seen = []
    fuse = model.text_encoder.fuse

    def spy(hidden, mask, vision, vision_mask=None, vision_rows=None):
        seen.append((hidden.shape, vision.clone(), vision_mask, vision_rows))
        return fuse(hidden, mask, vision, vision_mask, vision_rows)

    monkeypatch.setattr(model.text_encoder, "fuse", spy)
    run(model, x, weights=dict(uta=0.0, vtc=0.0, vtm=1.0, mlm=0.0))
    (text_shape, vision, vision_mask, rows), = seen  # fmt: skip
    nv = FRAMES * KEEP
    # each of the B videos' tokens once; the 3B rows pick theirs (positives, negative videos, negative texts)
    assert text_shape == (3 * B, L, DTXT) and vision.shape == (B, nv, D) and vision_mask is None
    tokens = model.vision_encoder(x.video, x.visible).tokens
    assert torch.equal(vision, tokens)
    assert torch.equal(rows[:B], torch.arange(B)) and torch.equal(rows[2 * B :], torch.arange(B))


def test_vtm_and_mlm_share_one_fusion_pass_with_the_numbers_of_separate_ones():
    model, x = tiny_model().eval(), batch()  # eval: no dropout, so the two passes compute the same function
    encoder, tokens = model.text_encoder, model.vision_encoder(x.video, x.visible).tokens  # (B, Nv, D)
    hidden = encoder.encode_text(x.text.ids, x.text.attention_mask)  # (B, L, Dtxt)
    rows = torch.tensor([1, 0, 1, 3, 2, 2, 0, 3])  # (2B,) any videos per row, some repeated
    shared = encoder.fuse(hidden.repeat(2, 1, 1), x.text.attention_mask.repeat(2, 1), tokens, vision_rows=rows)
    repeated = encoder.fuse(hidden.repeat(2, 1, 1), x.text.attention_mask.repeat(2, 1), tokens[rows])
    torch.testing.assert_close(shared, repeated, rtol=0, atol=1e-6)


def test_hidden_patches_do_not_change_any_loss():
    model, x = tiny_model(), batch()
    before = run(model, x)
    video = x.video.clone()
    hidden = ~x.visible.view(B, FRAMES, SIDE // PATCH, SIDE // PATCH)  # (B, T, H, W) tokens
    pixels = hidden.repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)  # (B, T, SIDE, SIDE)
    video[pixels.unsqueeze(1).expand_as(video)] = 100.0
    after = run(model, PretrainInputs(video, x.visible, x.targets, x.text, x.mlm, x.idx))
    for name in LOSS_NAMES:
        assert torch.equal(getattr(before, name), getattr(after, name)), name


def test_hard_negatives_come_from_the_given_generator():
    model, x = tiny_model(), batch()
    a, b = run(model, x, seed=1), run(model, x, seed=1)
    assert torch.equal(a.vtm, b.vtm)
    values = {run(model, x, seed=s).vtm.item() for s in range(8)}
    assert len(values) > 1  # other draws, other negatives


# --- gradients -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [FRAMES, 1], ids=["video", "image"])
def test_every_trainable_parameter_gets_a_gradient(frames):
    model, x = tiny_model(), batch(frames)
    model.train()  # dropout and drop path on: the training path
    run(model, x).total(ALL).backward()
    names = dict(model.named_parameters())
    missing = [name for name, p in names.items() if p.grad is None]
    assert missing == []
    # key biases shift every attention logit of a query equally, so their gradient is zero up to rounding
    zero = [n for n, p in names.items() if p.grad.abs().max() == 0 and not n.endswith("key.bias")]
    assert zero == []
    for group in ("vision_encoder.encoder.blocks.", "vision_encoder.clip_decoder.", "vision_encoder.pool_norm.",
                  "text_encoder.bert.encoder.layer.2.crossattention.", "text_encoder.cls.predictions.",
                  "vision_proj.", "text_proj.", "itm_head.", "temp"):  # fmt: skip
        assert any(name.startswith(group) for name in names), group
    assert model.temp.grad.abs() > 0


def test_each_loss_reaches_its_own_parameters():
    """UTA trains the heads, VTC the temperature and projections, VTM the ITM head, MLM the prediction head; the
    cross-attention is trained by VTM and MLM only."""
    reached = {}
    for name in LOSS_NAMES:
        model = tiny_model()
        getattr(run(model, batch()), name).backward()
        reached[name] = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().max() > 0}
    assert any(n.startswith("vision_encoder.clip_decoder.") for n in reached["uta"])
    assert {"temp", "vision_proj.weight", "text_proj.weight"} <= reached["vtc"]
    assert "itm_head.weight" in reached["vtm"] and "itm_head.weight" not in reached["mlm"]
    assert "text_encoder.cls.predictions.transform.dense.weight" in reached["mlm"]
    cross = "text_encoder.bert.encoder.layer.2.crossattention.self.value.weight"
    assert cross in reached["vtm"] and cross in reached["mlm"] and cross not in reached["vtc"]
    assert not any("clip_decoder" in n for n in reached["vtc"] | reached["vtm"] | reached["mlm"])


def test_runs_under_bf16_autocast_with_float32_losses():
    model, x = tiny_model(), batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = run(model, x)
    expected = reference_losses(model, x)
    for name in LOSS_NAMES:
        value = getattr(losses, name)
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, expected[name], rtol=0.1, atol=0.1, msg=name)
