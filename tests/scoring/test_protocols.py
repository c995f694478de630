"""Text-to-video scoring protocols: each one's frames, pixels and prompt text against references built here with
numpy, PyAV and torchvision as the official scripts do (docs/official-behaviour.md, Text-to-video scores)."""

import random
import re
from dataclasses import asdict

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from umt_cli.data.decode import DecodeFailure, open_video
from umt_cli.data.text import build_tokenizer, tokenize, write_tiny_bert
from umt_cli.errors import UsageError
from umt_cli.models.config import Preprocess
from umt_cli.scoring.protocols import PROTOCOLS, clip_reader, prompt_text, resolve_protocol

NAMES = ("fetv", "chronomagic", "t2v-metrics")
LENGTHS = (1, 5, 11, 12, 13, 100, 1000)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def reference_indices(name: str, n: int) -> list[int]:
    """The official frame indices: FETV/ChronoMagic take the middle of 12 intervals, t2v_metrics 4 linspace frames;
    both pad a short video with its last index."""
    if name == "t2v-metrics":
        indices = np.linspace(0, n - 1, min(4, n), dtype=int).tolist()
        return indices + indices[-1:] * (4 - len(indices))
    edges = np.linspace(0, n, min(12, n) + 1).astype(int)
    indices = [int((edges[i] + edges[i + 1] - 1) // 2) for i in range(len(edges) - 1)]
    return indices + indices[-1:] * (12 - len(indices))


def test_protocols_are_the_documented_ones():
    assert tuple(PROTOCOLS) == NAMES
    assert [(p.frames, p.sampling, p.antialias, p.clean_text) for p in PROTOCOLS.values()] == [
        (12, "middle", False, True),
        (12, "middle", True, True),
        (4, "linspace", False, False),
    ]
    assert {(p.size, p.max_len) for p in PROTOCOLS.values()} == {(224, 32)}


@pytest.mark.parametrize("name", NAMES)
def test_frame_indices_match_the_official_numpy_sampling(name):
    reader = clip_reader(PROTOCOLS[name], Preprocess())
    for n in LENGTHS:
        assert reader.indices(n) == reference_indices(name, n), n


def reference_clip(path, name: str, size: int, antialias: bool) -> torch.Tensor:
    """Decode every frame with PyAV, pick the official indices, torchvision bicubic resize on uint8, normalise."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (N, H, W, 3)
    video = torch.from_numpy(frames[reference_indices(name, len(frames))]).permute(0, 3, 1, 2)  # (T, 3, H, W)
    video = TF.resize(video, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=antialias)
    video = (video.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return video.permute(1, 0, 2, 3)  # (3, T, S, S)


def test_clips_are_resized_as_each_protocol_says(make_clip):
    path = make_clip(width=96, height=64, frames=30)
    outputs = {}
    for name in NAMES:
        protocol, _ = resolve_protocol(name, {"size": 32})
        clip = clip_reader(protocol, Preprocess())(path)
        expected = reference_clip(path, name, 32, PROTOCOLS[name].antialias)
        assert clip.dtype == torch.float32 and clip.shape == expected.shape == (3, protocol.frames, 32, 32)
        # one grey level is 1 / (255 * std) > 0.017: any pixel off by one fails
        torch.testing.assert_close(clip, expected, rtol=0, atol=1e-5)
        outputs[name] = clip
    assert (outputs["fetv"] - outputs["chronomagic"]).abs().max() > 0.05  # the antialias flag changes pixels


# ------------------------------------------------------------------------------------------------ prompts

_DELETED = str.maketrans({**dict.fromkeys(",.'!?\"()*#:;~"), "-": " ", "/": " "})


def reference_clean(text: str) -> str:
    """The official `pre_text`: lowercase, delete punctuation, - and / to spaces, <person>, collapse, strip."""
    text = text.lower().translate(_DELETED).replace("<person>", "person")
    return re.sub(r"\s{2,}", " ", text).rstrip("\n").strip(" ")


PROMPTS = [
    ("A <PERSON> rides a well-known bike/scooter!!  Fast?\n", "a person rides a well known bike scooter fast"),
    ('He said: "It\'s (really) 3.5 * #1; ~ok~"', "he said its really 35 1 ok"),
    ("  Two\n\nlines \t and--dashes / slashes  ", "two lines and dashes slashes"),
    ("<person>'s CAT", "persons cat"),
]


@pytest.mark.parametrize(("raw", "clean"), PROMPTS)
def test_prompt_text_cleans_only_where_the_protocol_does(raw, clean):
    assert reference_clean(raw) == clean
    assert prompt_text(PROTOCOLS["fetv"], raw) == clean
    assert prompt_text(PROTOCOLS["chronomagic"], raw) == clean
    assert prompt_text(PROTOCOLS["t2v-metrics"], raw) == raw


VOCAB = ["a", "cat", "dog", "runs", "jumps", "over", "the", "fence", "##s"]
IDS = {word: 5 + i for i, word in enumerate(VOCAB)}  # after the 5 special tokens; [PAD] = 0, [CLS] = 2


def test_prompts_are_cut_to_32_tokens_with_cls_and_no_sep(tmp_path):
    tokenizer = build_tokenizer(write_tiny_bert(tmp_path / "bert", words=VOCAB))
    rng = random.Random(0)
    words = [rng.choice([*VOCAB[:-1], "fences"]) for _ in range(40)]
    pieces = [p for w in words for p in ([IDS["fence"], IDS["##s"]] if w == "fences" else [IDS[w]])]
    protocol = PROTOCOLS["fetv"]
    text = prompt_text(protocol, " ".join(w.upper() + "," for w in words))
    batch = tokenize(tokenizer, [text], max_len=protocol.max_len, add_sep=False)
    assert batch.ids.tolist() == [[tokenizer.cls_token_id, *pieces[:31]]]
    assert batch.attention_mask.tolist() == [[1] * 32]
    short = tokenize(tokenizer, [prompt_text(protocol, "A Cat.")], max_len=protocol.max_len, add_sep=False)
    assert short.ids.tolist() == [[2, IDS["a"], IDS["cat"]] + [0] * 29]
    assert short.attention_mask.tolist() == [[1, 1, 1] + [0] * 29]


# ------------------------------------------------------------------------------------------------ overrides


def test_an_override_changes_only_its_setting_and_is_recorded():
    protocol, record = resolve_protocol("fetv", {"frames": 8, "size": None})
    assert asdict(protocol) == {**asdict(PROTOCOLS["fetv"]), "frames": 8}
    assert record["frames"] == 8 and record["name"] == "fetv"
    assert record["overridden"] == {"frames": {"protocol": 12, "used": 8}}
    _, record = resolve_protocol("chronomagic", {"antialias": False, "precision": "fp32"})
    assert record["overridden"] == {
        "antialias": {"protocol": True, "used": False},
        "precision": {"protocol": "fp16", "used": "fp32"},
    }


def test_an_override_equal_to_the_protocol_is_not_listed():
    protocol, record = resolve_protocol("t2v-metrics", {"frames": 4, "sampling": "linspace", "size": 224})
    assert protocol == PROTOCOLS["t2v-metrics"]
    assert record["overridden"] == {}


def test_bad_protocols_and_settings_are_usage_errors():
    with pytest.raises(UsageError, match="fetv, chronomagic, t2v-metrics"):
        resolve_protocol("umtscore")
    with pytest.raises(UsageError, match="sampling"):
        resolve_protocol("fetv", {"sampling": "uniform"})
    with pytest.raises(UsageError, match="frames"):
        resolve_protocol("fetv", {"frames": 0})


# ------------------------------------------------------------------------------------------------ GIF input

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


def test_gif_frames_are_read_as_rgb_with_alpha_dropped(tmp_path):
    path = tmp_path / "generated.gif"
    frames = [Image.new("RGBA", (20, 12), (*colour, alpha)) for colour, alpha in zip(COLOURS, (255, 128, 200, 40))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    reader = open_video(path)
    try:
        assert reader.num_frames == 4 and reader.fps == pytest.approx(10.0)
        batch = reader.get_batch([0, 2, 2, 1])
    finally:
        reader.close()
    assert batch.dtype == np.uint8 and batch.shape == (4, 12, 20, 3)
    expected = np.array([COLOURS[i] for i in (0, 2, 2, 1)], np.uint8)[:, None, None]  # (4, 1, 1, 3)
    np.testing.assert_array_equal(batch, np.broadcast_to(expected, batch.shape))


def test_a_file_named_gif_that_is_not_one_is_a_decode_failure(tmp_path):
    path = tmp_path / "fake.gif"
    path.write_bytes(b"this is not a GIF image\n" * 8)
    with pytest.raises(DecodeFailure):
        open_video(path)
