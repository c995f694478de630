"""Action classification scores: zero-shot from a video-text model, multi-view averaging of a classifier's softmax,
and top-k / per-class accuracy with a confusion matrix.

Zero-shot follows the retrieval similarity (docs/official-behaviour.md, Retrieval protocol): cosine similarity of
each frame's embedding with a class's text embedding, averaged over frames, temperature 1. A class's text embedding
is the CLIP convention: the mean of its l2-normalised prompt embeddings over templates, renormalised. Fine-tuned
classifiers are tested as upstream does: softmax per view, averaged over views, then top-1 / top-5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from umt_cli.data.text import clean_caption, tokenize
from umt_cli.errors import DataError, UmtError, UsageError
from umt_cli.evaluation.features import frame_similarity

__all__ = [
    "DEFAULT_TEMPLATES",
    "class_prompts",
    "zero_shot_weights",
    "zero_shot_logits",
    "multiview_probs",
    "true_class_ranks",
    "classification_metrics",
]

DEFAULT_TEMPLATES = ("a video of {}.", "{}")
"""Prompt templates for zero-shot classification; `{}` is replaced by the class name."""


def class_prompts(class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[str]:
    """Every template filled with every class name, class-major (`len(class_names) * len(templates)` prompts), cleaned
    as captions are (`clean_caption`); underscores in names (`playing_guitar`) become spaces.

    Raises:
        UsageError: No templates, or a template without `{}`.
    """
    if not templates:
        raise UsageError("zero-shot templates: the list is empty")
    for template in templates:
        if "{}" not in template:
            raise UsageError(f"zero-shot template {template!r}: needs `{{}}` where the class name goes")
    return [clean_caption(t.format(name.replace("_", " "))) for name in class_names for t in templates]


@torch.no_grad()
def zero_shot_weights(
    model: nn.Module,
    tokenizer: Any,
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    max_len: int,
    add_sep: bool,
    batch_size: int = 256,
) -> Tensor:
    """One l2-normalised text embedding per class: (classes, E).

    Args:
        model: A video-text model with `encode_text(ids, mask) -> (hidden, embed (B, E) l2-normalised)`.
        tokenizer: Its BERT tokenizer (`umt_cli.data.text.build_tokenizer`).
        class_names: The class names, in label order.
        templates: Prompt templates (`class_prompts`).
        max_len, add_sep: Caption length and `[SEP]` choice, as the model was trained (`Preprocess`).
        batch_size: Prompts per text forward.
    """
    prompts = class_prompts(class_names, templates)
    device = next(model.parameters()).device
    embeds = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenize(tokenizer, prompts[start : start + batch_size], max_len=max_len, add_sep=add_sep)
        embeds.append(model.encode_text(batch.ids.to(device), batch.attention_mask.to(device))[1].float())
    per_prompt = torch.cat(embeds).view(len(class_names), len(templates), -1)  # (classes, templates, E)
    return nn.functional.normalize(per_prompt.mean(1), dim=-1)  # (classes, E)


def zero_shot_logits(frames: Tensor, weights: Tensor) -> Tensor:
    """Cosine similarity of each frame with each class, averaged over frames (temperature 1).

    Args:
        frames: (B, T, E) l2-normalised per-frame video embeddings (`VideoTextModel.encode_video`).
        weights: (classes, E) l2-normalised class embeddings (`zero_shot_weights`).

    Returns:
        (B, classes) scores in [-1, 1].
    """
    return frame_similarity(frames.float(), weights.float())  # (B, classes): the retrieval ITC score


@torch.no_grad()
def multiview_probs(
    logits_fn: Callable[[Tensor], Tensor], videos: Tensor, *, views_per_call: int | None = None
) -> Tensor:
    """The official multi-view test: softmax of each view's logits, averaged over the views.

    Args:
        logits_fn: Any `video (N, C, T, S, S) -> logits (N, classes)`, e.g. a fine-tuned classifier.
        videos: (B, V, C, T, S, S) the views of B videos.
        views_per_call: Clips per `logits_fn` call (None = all B * V at once), to bound memory.

    Returns:
        (B, classes) float32 probabilities.
    """
    b, v = videos.shape[:2]
    clips = videos.flatten(0, 1)  # (B * V, C, T, S, S)
    step = views_per_call or len(clips)
    logits = torch.cat([logits_fn(clips[i : i + step]) for i in range(0, len(clips), step)])  # (B * V, classes)
    return logits.float().softmax(-1).view(b, v, -1).mean(1)  # (B, classes)


def true_class_ranks(scores: Tensor, labels: Tensor) -> Tensor:
    """0-based rank of each row's true class under a stable descending sort: classes scoring higher, plus classes
    scoring the same with a lower index, come first. A class is in the top k when its rank is < k.

    Args:
        scores: (N, classes); labels: (N,) long.

    Returns:
        (N,) long ranks.
    """
    true = scores.gather(1, labels[:, None])  # (N, 1)
    lower_index = torch.arange(scores.shape[1], device=scores.device)[None] < labels[:, None]  # (N, classes)
    return ((scores > true) | ((scores == true) & lower_index)).sum(1)  # (N,)


def classification_metrics(scores: Tensor, labels: Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy of per-video scores (probabilities or logits; only their order matters), in percent.

    Ties are broken towards the lower class index (`true_class_ranks`), also for the predicted class.

    Args:
        scores: (N, classes).
        labels: (N,) true classes.
        class_names: The names of the classes, in label order.

    Returns:
        `num_videos`; `top1`; `top5` with `top5_k` = min(5, classes), the k it used; `per_class`: name ->
        {`accuracy` (None for a class with no video), `count`}; `mean_class_accuracy` over the classes that have
        videos; `confusion`: classes x classes counts, rows = true class, columns = predicted.

    Raises:
        DataError: No videos, or a label outside the classes.
        UsageError: `class_names` does not name each class once.
        UmtError: Non-finite scores.
    """
    scores, labels = scores.detach().float().cpu(), labels.detach().long().cpu()
    _check_scores(scores, labels, class_names)
    num_classes = scores.shape[1]
    ranks = true_class_ranks(scores, labels)  # (N,)
    k = min(5, num_classes)
    predicted = scores.argmax(1)  # the first maximum: the same tie rule as the ranks
    confusion = torch.bincount(labels * num_classes + predicted, minlength=num_classes**2).view(num_classes, -1)
    per_class = _per_class(ranks == 0, labels, class_names)
    accuracies = [c["accuracy"] for c in per_class.values() if c["accuracy"] is not None]
    return {
        "num_videos": len(labels),
        "top1": 100.0 * (ranks < 1).double().mean().item(),
        "top5": 100.0 * (ranks < k).double().mean().item(),
        "top5_k": k,
        "mean_class_accuracy": sum(accuracies) / len(accuracies),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def _check_scores(scores: Tensor, labels: Tensor, class_names: Sequence[str]) -> None:
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(
            f"expected scores (N, classes) and labels (N,), got {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    if len(labels) == 0:
        raise DataError("no videos to score: every video of the list was skipped or the list is empty")
    if len(class_names) != scores.shape[1] or len(set(class_names)) != len(class_names):
        raise UsageError(
            f"class names: {len(class_names)} given ({len(set(class_names))} distinct) for a model "
            f"with {scores.shape[1]} classes"
        )
    outside = (labels < 0) | (labels >= scores.shape[1])
    if outside.any():
        raise DataError(
            f"{int(outside.sum())} video(s) have a label outside 0..{scores.shape[1] - 1} "
            f"(first: {int(labels[outside][0])}); the list and the model's classes do not match"
        )
    bad_rows = (~scores.isfinite()).any(1).nonzero().flatten()
    if len(bad_rows):
        raise UmtError(f"{len(bad_rows)} video(s) got non-finite scores (first: row {int(bad_rows[0])})")


def _per_class(correct: Tensor, labels: Tensor, class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """name -> {accuracy in percent (None without videos), count}, in label order."""
    counts = torch.bincount(labels, minlength=len(class_names))
    hits = torch.bincount(labels, weights=correct.float(), minlength=len(class_names))
    return {
        name: {"accuracy": 100.0 * hits[c].item() / counts[c].item() if counts[c] else None, "count": int(counts[c])}
        for c, name in enumerate(class_names)
    }
