"""The model card (`README.md`) of an exported bundle: what the model is, how to feed it, how to load it, where its
weights come from. Plain f-strings: the card is short and its layout fixed, so a templating library buys nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from umt_cli.models.config import ClassifierConfig, VideoTextConfig

__all__ = ["model_card"]

CITATION = """@inproceedings{li2023unmasked,
  title     = {Unmasked Teacher: Towards Training-Efficient Video Foundation Models},
  author    = {Li, Kunchang and Wang, Yali and Li, Yizhuo and Wang, Yi and He, Yinan and Wang, Limin and Qiao, Yu},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023},
  note      = {arXiv:2303.16058}
}"""


def model_card(
    config: VideoTextConfig | ClassifierConfig,
    *,
    name: str,
    source: str,
    source_sha256: str | None,
    weights_sha256: str,
    files: Sequence[str],
    umt_version: str,
    notes: Mapping[str, Any] | None = None,
) -> str:
    """The Markdown model card of a bundle.

    Args:
        config: The exported model's architecture and preprocessing.
        name: The bundle folder's name (the card's title).
        source: The checkpoint the weights were exported from.
        source_sha256: Its sha256, or None when unknown.
        weights_sha256: The sha256 of the bundle's `model.safetensors`.
        files: The bundle's files, relative to its folder.
        umt_version: The `umt` version that wrote the bundle.
        notes: Extra facts to list (recipe, run directory ...); values are shown with `str`.

    Returns:
        The card's text, ending with a newline.
    """
    video_text = isinstance(config, VideoTextConfig)
    sections = [
        f"# {name}\n\n{_summary(config)}",
        "## Architecture\n\n" + _table(_architecture_rows(config)),
        "## Preprocessing\n\n" + _table(_preprocess_rows(config)) + "\n\n" + _preprocess_text(config),
        "## How to load\n\n" + _how_to_load(video_text),
        "## Source\n\n" + _source_text(source, source_sha256, weights_sha256, umt_version, notes or {}),
        "## Files\n\n" + "\n".join(f"- `{file}`" for file in files),
        "## License\n\nThis bundle inherits the license of the source weights; check it before any use or release.",
        f"## Citation\n\n```bibtex\n{CITATION}\n```",
    ]
    return "\n\n".join(sections) + "\n"


def _summary(config: VideoTextConfig | ClassifierConfig) -> str:
    if isinstance(config, VideoTextConfig):
        return (
            "An Unmasked Teacher (UMT; Li et al., ICCV 2023) **video-text** model exported by `umt`: a video ViT and "
            "a fusion BERT that embed clips and captions into one space (retrieval) and score fused pairs "
            "(video-text matching)."
        )
    return (
        "An Unmasked Teacher (UMT; Li et al., ICCV 2023) **video classifier** exported by `umt`: a video ViT whose "
        f"mean token, after `fc_norm`, feeds a linear head over {config.num_classes} classes."
    )


def _architecture_rows(config: VideoTextConfig | ClassifierConfig) -> list[tuple[str, Any]]:
    v = config.vision
    rows: list[tuple[str, Any]] = [
        ("vision width D / depth / heads", f"{v.dim} / {v.depth} / {v.num_heads}"),
        ("patch size / tubelet", f"{v.patch_size} / {v.tubelet}"),
        ("input side / frames", f"{v.img_size} / {v.num_frames}"),
        ("alignment heads K (width)", f"{v.align_layers} ({v.teacher_dim})"),
        ("position table over time", v.pos_temporal),
    ]
    if isinstance(config, VideoTextConfig):
        t = config.text
        rows += [
            ("text width / layers / heads", f"{t.hidden_size} / {t.num_layers} / {t.num_heads}"),
            ("text feed-forward width", t.intermediate_size),
            ("first fusion (cross-attention) layer", t.fusion_layer),
            ("vocabulary / positions", f"{t.vocab_size} / {t.max_positions}"),
            ("joint embedding width E", config.embed_dim),
        ]
    else:
        rows.append(("classes", config.num_classes))
    return rows


def _preprocess_rows(config: VideoTextConfig | ClassifierConfig) -> list[tuple[str, Any]]:
    p = config.preprocess
    rows: list[tuple[str, Any]] = [
        ("pixel mean", ", ".join(f"{x:g}" for x in p.mean)),
        ("pixel std", ", ".join(f"{x:g}" for x in p.std)),
        ("crop side", p.size),
        ("frames", p.num_frames),
        ("frame sampling", p.sampling),
    ]
    if isinstance(config, VideoTextConfig):
        rows += [
            ("caption tokens (max_len)", p.max_len),
            ("single-caption form", "[CLS] X [SEP]" if p.add_sep else "[CLS] X (official, no [SEP])"),
        ]
    return rows


def _preprocess_text(config: VideoTextConfig | ClassifierConfig) -> str:
    p = config.preprocess
    if p.resize == "square":
        resize = f"Frames are resized to {p.size} x {p.size} (bicubic, aspect not kept: the official retrieval test)"
    else:
        resize = f"Frames are resized so the short side is {p.size} px and centre-cropped to {p.size} x {p.size}"
    text = (
        f"{resize}, scaled to [0, 1] and normalised with the mean and std above; the video tensor is "
        "`(B, 3, T, H, W)` float32."
    )
    if isinstance(config, VideoTextConfig):
        text += (
            f" Captions are cleaned as the official code does (lowercase, punctuation removed), tokenised with the "
            f"bundled `tokenizer/` and padded to {p.max_len} tokens"
            + (" ending in `[SEP]`." if p.add_sep else " as `[CLS] X` with no trailing `[SEP]`, as the official code.")
        )
    return text


def _how_to_load(video_text: bool) -> str:
    task = "retrieval" if video_text else "classification"
    python = (
        "model, config, tokenizer_dir = load_bundle(path)\n"
        "tokens, frames = model.encode_video(video)  # (B, N, D), (B, T, E)"
        if video_text
        else "model, config, _ = load_bundle(path)\nlogits = model(video)  # (B, classes)"
    )
    return (
        f"Command line (DIR is this folder):\n\n```bash\numt eval {task} --ckpt DIR ...\n```\n\n"
        f"Python:\n\n```python\nfrom umt_cli.export.bundle import load_bundle\n\n{python}\n```"
    )


def _source_text(
    source: str, source_sha256: str | None, weights_sha256: str, umt_version: str, notes: Mapping[str, Any]
) -> str:
    lines = [
        f"- source checkpoint: `{source}`",
        f"- source sha256: `{source_sha256 or 'unknown'}`",
        f"- `model.safetensors` sha256: `{weights_sha256}`",
        f"- written by umt {umt_version}",
    ]
    lines += [f"- {key}: `{value}`" for key, value in notes.items()]
    return "\n".join(lines)


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])
