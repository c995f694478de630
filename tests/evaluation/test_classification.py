import pytest
import torch

from umt_cli.data.text import build_tokenizer, tokenize, write_tiny_bert
from umt_cli.errors import DataError, UmtError, UsageError
from umt_cli.evaluation.classification import (
    class_prompts,
    classification_metrics,
    multiview_probs,
    true_class_ranks,
    zero_shot_logits,
    zero_shot_weights,
)
from umt_cli.models.config import TextConfig, VideoTextConfig, VisionConfig, build_video_text


def reference_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Brute force: sort each row's classes by (-score, class index) and find the true class in that order."""
    k = min(5, num_classes)
    ranks, predicted = [], []
    for row, label in zip(scores.tolist(), labels.tolist()):
        order = sorted(range(num_classes), key=lambda c: (-row[c], c))
        ranks.append(order.index(label))
        predicted.append(order[0])
    confusion = [[0] * num_classes for _ in range(num_classes)]
    for label, guess in zip(labels.tolist(), predicted):
        confusion[label][guess] += 1
    per_class = {}
    for c in range(num_classes):
        mine = [r for r, label in zip(ranks, labels.tolist()) if label == c]
        per_class[c] = (100 * sum(r == 0 for r in mine) / len(mine) if mine else None, len(mine))
    present = [a for a, _ in per_class.values() if a is not None]
    return {
        "top1": 100 * sum(r < 1 for r in ranks) / len(ranks),
        "top5": 100 * sum(r < k for r in ranks) / len(ranks),
        "per_class": per_class,
        "mean_class": sum(present) / len(present),
        "confusion": confusion,
    }


@pytest.mark.parametrize("num_classes", [3, 7, 12])
def test_metrics_match_a_brute_force_reference_with_ties(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    n = 300
    scores = torch.randint(0, 4, (n, num_classes), generator=g).float()  # few levels: many ties
    labels = torch.randint(0, num_classes - 1, (n,), generator=g)  # the last class gets no video
    names = [f"class {c}" for c in range(num_classes)]
    got = classification_metrics(scores, labels, names)
    want = reference_metrics(scores, labels, num_classes)
    assert got["num_videos"] == n and got["top5_k"] == min(5, num_classes)
    assert got["top1"] == pytest.approx(want["top1"]) and got["top5"] == pytest.approx(want["top5"])
    assert got["mean_class_accuracy"] == pytest.approx(want["mean_class"])
    for c, name in enumerate(names):
        accuracy, count = want["per_class"][c]
        assert got["per_class"][name]["count"] == count
        assert got["per_class"][name]["accuracy"] == (None if accuracy is None else pytest.approx(accuracy))
    assert got["confusion"] == want["confusion"]
    assert sum(map(sum, got["confusion"])) == n
    assert [sum(row) for row in got["confusion"]] == [got["per_class"][name]["count"] for name in names]


def test_ties_go_to_the_lower_class_index():
    scores = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    labels = torch.tensor([0, 1, 2, 2])
    assert true_class_ranks(scores, labels).tolist() == [0, 1, 1, 2]
    metrics = classification_metrics(scores, labels, ["a", "b", "c"])
    assert metrics["top1"] == pytest.approx(25.0)
    assert metrics["confusion"] == [[1, 0, 0], [1, 0, 0], [1, 1, 0]]


def test_top5_uses_fewer_classes_when_there_are_fewer():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    metrics = classification_metrics(scores, torch.tensor([0]), list("abcd"))
    assert (metrics["top1"], metrics["top5"], metrics["top5_k"]) == (0.0, 100.0, 4)


def test_bad_inputs_are_named_errors():
    scores = torch.zeros(2, 3)
    with pytest.raises(DataError, match="label outside"):
        classification_metrics(scores, torch.tensor([0, 3]), list("abc"))
    with pytest.raises(UsageError, match="class names"):
        classification_metrics(scores, torch.tensor([0, 1]), list("ab"))
    with pytest.raises(UsageError, match="class names"):
        classification_metrics(scores, torch.tensor([0, 1]), list("aab"))
    with pytest.raises(DataError, match="no videos"):
        classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), list("abc"))
    with pytest.raises(UmtError, match="non-finite"):
        classification_metrics(torch.tensor([[0.0, float("nan"), 1.0]]), torch.tensor([0]), list("abc"))


def test_multiview_average_equals_a_loop_over_views():
    g = torch.Generator().manual_seed(0)
    videos = torch.randn(3, 4, 3, 2, 8, 8, generator=g)  # (B, V, C, T, S, S)
    weight = torch.randn(5, 3 * 2 * 8 * 8, generator=g)
    calls = []

    def logits_fn(video):
        calls.append(len(video))
        return video.flatten(1) @ weight.T  # (N, 5)

    want = torch.stack(
        [sum(torch.softmax(logits_fn(videos[b, v : v + 1])[0], -1) for v in range(4)) / 4 for b in range(3)]
    )
    calls.clear()
    assert torch.allclose(multiview_probs(logits_fn, videos), want, atol=1e-6)
    assert calls == [12]
    calls.clear()
    assert torch.allclose(multiview_probs(logits_fn, videos, views_per_call=5), want, atol=1e-6)
    assert calls == [5, 5, 2]


def test_prompts_fill_every_template_and_are_cleaned():
    prompts = class_prompts(["Moving_Left", "up"], ["a video of {}.", "{}!"])
    assert prompts == ["a video of moving left", "moving left", "a video of up", "up"]
    with pytest.raises(UsageError, match="needs"):
        class_prompts(["x"], ["no placeholder"])


WORDS = ["a", "video", "of", "moving", "left", "right", "up", "down", "clip"]
CLASSES = ["moving left", "moving right", "moving up", "moving down"]
TEMPLATES = ["a video of {}.", "{}", "a clip of {}"]


@pytest.fixture
def tiny_video_text(tmp_path):
    tokenizer = build_tokenizer(write_tiny_bert(tmp_path / "bert", words=WORDS))
    config = VideoTextConfig(
        vision=VisionConfig(dim=64, depth=2, num_heads=4, patch_size=16, img_size=32, num_frames=2),
        text=TextConfig(
            vocab_size=len(tokenizer), hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64, fusion_layer=1
        ),  # fmt: skip
        embed_dim=16,
    )
    torch.manual_seed(0)
    return build_video_text(config), tokenizer


def test_zero_shot_logits_match_a_hand_computation(tiny_video_text):
    model, tokenizer = tiny_video_text
    weights = zero_shot_weights(model, tokenizer, CLASSES, TEMPLATES, max_len=8, add_sep=False, batch_size=5)
    assert weights.shape == (4, 16)

    # Each prompt alone, with its own template text written out by hand.
    hand_weights = []
    for name in CLASSES:
        texts = [f"a video of {name}", name, f"a clip of {name}"]
        embeds = []
        for text in texts:
            batch = tokenize(tokenizer, [text], max_len=8, add_sep=False)
            embeds.append(model.encode_text(batch.ids, batch.attention_mask)[1][0])
        mean = sum(embeds) / len(embeds)
        hand_weights.append(mean / mean.norm())
    hand_weights = torch.stack(hand_weights)
    assert torch.allclose(weights, hand_weights, atol=1e-5)
    assert torch.allclose(weights.norm(dim=-1), torch.ones(4), atol=1e-5)

    video = torch.randn(3, 3, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        frames = model.encode_video(video)[1]  # (B, T, E)
    logits = zero_shot_logits(frames, weights)
    for b in range(3):
        for c in range(4):
            cosines = [torch.dot(frames[b, t], hand_weights[c]).item() for t in range(2)]
            assert logits[b, c].item() == pytest.approx(sum(cosines) / 2, abs=1e-5)


def test_zero_shot_weights_with_one_template_are_the_text_embeddings(tiny_video_text):
    model, tokenizer = tiny_video_text
    weights = zero_shot_weights(model, tokenizer, CLASSES, ["{}"], max_len=6, add_sep=True)
    batch = tokenize(tokenizer, CLASSES, max_len=6, add_sep=True)
    with torch.no_grad():
        embeds = model.encode_text(batch.ids, batch.attention_mask)[1]
    assert torch.allclose(weights, embeds, atol=1e-6)
