"""The retrieval test set (SPEC §4.1 step 6): which texts are compared with which videos, and what is correct.

Every expectation is written out by hand from the entries, not derived from the code under test.
"""

from __future__ import annotations

import json

import pytest
import torch

from umt_cli.data.datasets import MediaEntry
from umt_cli.errors import DataError, UsageError
from umt_cli.evaluation.gallery import build_gallery
from umt_cli.evaluation.retrieval import read_gallery


def video(path: str, *captions: str) -> MediaEntry:
    return MediaEntry(path, False, captions)


ENTRIES = [
    video("a.mp4", "a dog runs", "a dog is running"),
    video("b.mp4", "a cat sleeps"),
    video("c.mp4", "a dog runs", "rain falls", "it rains"),
]


def truth_from_pairs(pairs: list[tuple[int, int]], texts: int, videos: int) -> torch.Tensor:
    truth = torch.zeros(texts, videos, dtype=torch.bool)
    for t, v in pairs:
        truth[t, v] = True
    return truth


def test_standard_mode_makes_each_caption_a_text_with_its_own_video():
    gallery = build_gallery(ENTRIES, mode="standard", merge_identical=False, source="ann.json")
    assert gallery.videos == ("a.mp4", "b.mp4", "c.mp4")
    assert gallery.texts == ("a dog runs", "a dog is running", "a cat sleeps", "a dog runs", "rain falls", "it rains")
    assert gallery.text_videos == ((0,), (0,), (1,), (2,), (2,), (2,))  # the repeated caption stays two texts
    expected = truth_from_pairs([(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 2)], 6, 3)
    assert torch.equal(gallery.t2v_truth(), expected)


def test_paragraph_mode_joins_a_videos_captions_into_one_text():
    gallery = build_gallery(ENTRIES, mode="paragraph", merge_identical=False, source="ann.json")
    assert gallery.texts == ("a dog runs a dog is running", "a cat sleeps", "a dog runs rain falls it rains")
    assert gallery.text_videos == ((0,), (1,), (2,))
    assert torch.equal(gallery.t2v_truth(), torch.eye(3, dtype=torch.bool))


def test_merge_identical_makes_a_shared_caption_one_text_with_every_video_correct():
    entries = [*ENTRIES, video("d.mp4", "a cat sleeps", "a cat sleeps")]  # the same label twice on one video
    gallery = build_gallery(entries, mode="standard", merge_identical=True, source="ann.json")
    assert gallery.texts == ("a dog runs", "a dog is running", "a cat sleeps", "rain falls", "it rains")
    assert gallery.text_videos == ((0, 2), (0,), (1, 3), (2,), (2,))
    expected = truth_from_pairs([(0, 0), (0, 2), (1, 0), (2, 1), (2, 3), (3, 2), (4, 2)], 5, 4)
    assert torch.equal(gallery.t2v_truth(), expected)
    assert gallery.t2v_truth().T.any(1).all()  # every video keeps a correct text (V2T needs one per row)


def test_merge_identical_in_paragraph_mode_merges_identical_paragraphs():
    entries = [video("a.mp4", "x", "y"), video("b.mp4", "x", "y"), video("c.mp4", "y", "x")]
    gallery = build_gallery(entries, mode="paragraph", merge_identical=True, source="ann.json")
    assert gallery.texts == ("x y", "y x")
    assert gallery.text_videos == ((0, 1), (2,))


def test_dropping_a_video_drops_the_texts_left_without_a_correct_video_and_renumbers():
    gallery = build_gallery(ENTRIES, mode="standard", merge_identical=True, source="ann.json")
    smaller, dropped = gallery.without_videos([0])
    assert smaller.videos == ("b.mp4", "c.mp4")
    # "a dog runs" keeps c.mp4 (now index 1); "a dog is running" had only a.mp4 and goes
    assert smaller.texts == ("a dog runs", "a cat sleeps", "rain falls", "it rains")
    assert smaller.text_videos == ((1,), (0,), (1,), (1,))
    assert dropped == 1


def test_dropping_every_video_leaves_nothing():
    gallery = build_gallery(ENTRIES, mode="standard", merge_identical=False, source="ann.json")
    smaller, dropped = gallery.without_videos([0, 1, 2])
    assert smaller.videos == () and smaller.texts == () and dropped == 6


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "ann.json: no entries to evaluate"),
        ([video("a.mp4", "x"), MediaEntry("b.png", True, ("y",))], "ann.json: entry 1 is an image (b.png)"),
        ([video("a.mp4", "x"), video("a.mp4", "y")], "ann.json: entry 1 repeats the video a.mp4 (entry 0)"),
        ([video("a.mp4", "x", "")], "ann.json: entry 0 (a.mp4): caption 1 is empty"),
    ],
    ids=["no entries", "image", "repeated video", "empty caption"],
)
def test_bad_entries_are_named(entries, message):
    with pytest.raises(DataError) as caught:
        build_gallery(entries, mode="standard", merge_identical=False, source="ann.json")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"video": "a.mp4", "caption": "x"},\n {"video": "b.mp4" "caption": "y"}]', "ann.json line 2"),
        ('[{"video": "a.mp4", "caption": "x"}, {"video": "b.mp4", "caption": []}]', "entry 1 needs `caption`"),
        ('[{"video": "a.mp4", "caption": ["x", 3]}]', "entry 0 needs `caption`"),
        ('[{"video": "a.mp4", "caption": "x"}, {"caption": "y"}]', "entry 1 needs exactly one of `video`"),
        ("[1, 2]", "entry 0 needs exactly one of `video`"),
        ('{"video": "a.mp4", "caption": "x"}\n{"image": "b.png", "caption": "y"}\n', "entry 1 is an image"),
        ('[{"video": "a.mp4", "caption": "?!"}]', "caption 0 is empty"),
        ("", "no entries to evaluate"),
    ],
    ids=[
        "not JSON",
        "empty caption list",
        "caption not a string",
        "no video",
        "not objects",
        "image",
        "caption empty after cleaning",
        "empty file",
    ],
)
def test_bad_annotation_files_name_the_file_and_the_entry(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        read_gallery(path, mode="standard", merge_identical=False)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_missing_annotation_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="gone.json"):
        read_gallery(tmp_path / "gone.json", mode="standard", merge_identical=False)


def test_read_gallery_cleans_captions_and_reads_json_lines(tmp_path):
    path = tmp_path / "ann.jsonl"
    lines = [{"video": "a.mp4", "caption": "A Dog, running!"}, {"video": "b.mp4", "caption": ["Two", "Cats."]}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    gallery = read_gallery(path, mode="standard", merge_identical=False)
    assert gallery.texts == ("a dog running", "two", "cats")
    assert gallery.text_videos == ((0,), (1,), (1,))
