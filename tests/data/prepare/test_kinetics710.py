"""`prepare_kinetics710` on a fabricated miniature Kinetics tree; every expected value is worked out by hand below."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from umt_cli.cli.app import app
from umt_cli.data.prepare.encode import write_h264
from umt_cli.data.prepare.kinetics710 import prepare_kinetics710
from umt_cli.data.prepare.kinetics_inputs import K400_MERGE, find_csvs, order_classes, read_label_map
from umt_cli.errors import DataError, UsageError
from umt_cli.recipe.prepare import Kinetics710Source, KineticsVersion

AMERICAN_K400 = "passing american football (not in game)"
AMERICAN = "passing American football (not in game)"
COLUMNS = ["label", "youtube_id", "time_start", "time_end", "split"]

# The tree. Ids are 11 characters; some hold `-` and `_`. Comments give each id's role.
K400_TRAIN = [  # annotations/train.csv: no split column (the name says train), an is_cc column, labels quoted
    ("abseiling", "k4only_a-01"),  # K400 only; listed twice (a repeated row)
    ("abseiling", "k4only_a-01"),
    ("dying hair", "dup_all__02"),  # in all three train sets; merges with "dyeing hair": no conflict
    ("zumba", "conflict_03"),  # K600 says abseiling: a conflict, K600 wins; the file is only under k400/
    (AMERICAN_K400, "leakval__04"),  # also in K600 val: a val leak
    ("zumba", "leaktest_05"),  # also in K700 test: a test leak
    ("abseiling", "missing__06"),  # no file anywhere
    ("zumba", "corrupt__07"),  # random bytes
    (AMERICAN_K400, "k4_american"),  # merged class name
    ("zumba", "dup46____11"),  # also in K600 train, which wins
]
K400_VAL = [("abseiling", "k4val____20"), ("dying hair", "valdup___21"), ("zumba", "k4valmiss22")]
K400_TEST = [("abseiling", "k4test___30")]
K600_TRAIN = [
    ("dyeing hair", "dup_all__02"),
    ("abseiling", "conflict_03"),
    ("tackling", "k6only-_-10"),
    ("zumba", "dup46____11"),
    ("abseiling", "leaktst6_12"),  # also in the K600 holdout test CSV: a test leak
]
K600_VAL = [(AMERICAN, "leakval__04"), ("tackling", "k6val____23")]
K600_TEST = ["leaktst6_12", "k6test___31"]  # kinetics600_holdout_test.csv: no label, no split column
K700_TRAIN = [
    ("dyeing hair", "dup_all__02"),
    ("making slime", "k7only_a-13"),
    ("tackling", "k7_tackl_14"),  # two files under k700/ (vol_00 CVDF name, vol_01 `{id}.mp4`)
    ("zumba", "missing7_15"),  # no file anywhere
]
K700_VAL = [("dyeing hair", "valdup___21"), ("making slime", "k7val-_-_24")]
K700_TEST = ["leaktest_05", "k7test___32"]  # a label column with empty values

VIDEOS = {  # relative to the tree root; K400 CVDF flat, K600 class folders, K700 OpenDataLab-style volumes
    "k400/train": ["k4only_a-01", "dup_all__02", "conflict_03", "leakval__04", "leaktest_05", "k4_american"],
    "k400/val": ["k4val____20", "valdup___21"],
    "k600/train/dyeing hair": ["dup_all__02"],
    "k600/train/tackling": ["k6only-_-10"],
    "k600/train/zumba": ["dup46____11"],
    "k600/train/abseiling": ["leaktst6_12"],
    f"k600/val/{AMERICAN}": ["leakval__04"],
    "k600/val/tackling": ["k6val____23"],
    "k700/videos/vol_00": ["dup_all__02", "k7only_a-13", "k7_tackl_14", "valdup___21", "k7val-_-_24"],
}
CORRUPT = "k400/train/corrupt__07_000001_000011.mp4"
SECOND_COPY = "k700/videos/vol_01/k7_tackl_14.mp4"

LABELS_K710 = ["abseiling", "dyeing hair", "making slime", AMERICAN, "tackling", "zumba"]
LABELS_K400 = ["abseiling", "dyeing hair", AMERICAN, "zumba"]
LABELS_K600 = ["abseiling", "dyeing hair", AMERICAN, "tackling", "zumba"]
LABELS_K700 = ["dyeing hair", "making slime", "tackling", "zumba"]  # K700 labels only these in the CSVs

# Train: 18 version ids -> 14 after dedup -> 11 without val+test ids (13 without val ids) -> 9 with files.
TRAIN_ROWS = [
    "k400/train/conflict_03_000001_000011.mp4,0",  # K600's label, K400's file
    "k400/train/corrupt__07_000001_000011.mp4,5",
    "k400/train/k4_american_000001_000011.mp4,3",
    "k400/train/k4only_a-01_000001_000011.mp4,0",
    "k600/train/tackling/k6only-_-10_000010_000020.mp4,4",
    "k600/train/zumba/dup46____11_000010_000020.mp4,5",
    "k700/videos/vol_00/dup_all__02_000001_000011.mp4,1",
    "k700/videos/vol_00/k7_tackl_14_000001_000011.mp4,4",
    "k700/videos/vol_00/k7only_a-13_000001_000011.mp4,2",
]
TEST_LEAK_ROWS = [  # kept in train when only val ids are excluded
    "k400/train/leaktest_05_000001_000011.mp4,5",
    "k600/train/abseiling/leaktst6_12_000010_000020.mp4,0",
]
VAL_ROWS = [  # 7 version ids -> 6 after dedup -> 5 with files
    "k400/val/k4val____20_000001_000011.mp4,0",
    f"k600/val/{AMERICAN}/leakval__04_000010_000020.mp4,3",
    "k600/val/tackling/k6val____23_000010_000020.mp4,4",
    "k700/videos/vol_00/k7val-_-_24_000001_000011.mp4,2",
    "k700/videos/vol_00/valdup___21_000001_000011.mp4,1",
]
K400_VAL_ROWS = ["k400/val/k4val____20_000001_000011.mp4,0", "k400/val/valdup___21_000001_000011.mp4,1"]
K600_VAL_ROWS = [
    f"k600/val/{AMERICAN}/leakval__04_000010_000020.mp4,2",
    "k600/val/tackling/k6val____23_000010_000020.mp4,3",
]
K700_VAL_ROWS = [
    "k700/videos/vol_00/k7val-_-_24_000001_000011.mp4,1",
    "k700/videos/vol_00/valdup___21_000001_000011.mp4,0",
]

TRAIN_STAGES = {
    "ids_before_dedup": 18,
    "after_dedup": 14,
    "after_exclusion": {"val+test": 11, "val": 13},
    "test_ids_kept": 0,
    "after_missing_files": 9,
}
TRAIN_DROPPED = {"duplicate": 4, "leak_test": 2, "leak_val": 1, "missing_file": 2}
VAL_STAGES = {"ids_before_dedup": 7, "after_dedup": 6, "after_train_removal": 6, "after_missing_files": 5}


def _write_csv(path: Path, columns: list[str], rows: list[list[str]], quoting: int = csv.QUOTE_MINIMAL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, quoting=quoting)
        writer.writerow(columns)
        writer.writerows(rows)


def _clip(path: Path) -> None:
    frames = np.full((6, 48, 64, 3), 100, np.uint8)
    frames[:, :, :8] = np.arange(6, dtype=np.uint8)[:, None, None, None] * 40
    write_h264(path, frames, fps=10, width=64, height=48)


def build_tree(root: Path) -> Path:
    """Write the videos and CSVs described above under `root`; returns root."""
    for folder, ids in VIDEOS.items():
        times = "000010_000020" if folder.startswith("k600") else "000001_000011"
        for youtube_id in ids:
            _clip(root / folder / f"{youtube_id}_{times}.mp4")
    _clip(root / SECOND_COPY)
    (root / CORRUPT).write_bytes(np.random.default_rng(0).bytes(3000))
    notes = root / "k400/annotations"
    k400_columns = ["label", "youtube_id", "time_start", "time_end", "is_cc"]
    for name, rows in (("train", K400_TRAIN), ("validate", K400_VAL), ("test", K400_TEST)):
        _write_csv(notes / f"{name}.csv", k400_columns, [[lb, i, "1", "11", "0"] for lb, i in rows], csv.QUOTE_ALL)
    csv600 = root / "csv600"
    _write_csv(csv600 / "train.csv", COLUMNS, [[lb, i, "10", "20", "train"] for lb, i in K600_TRAIN])
    _write_csv(csv600 / "validate.csv", COLUMNS, [[lb, i, "10", "20", "validate"] for lb, i in K600_VAL])
    _write_csv(csv600 / "kinetics600_holdout_test.csv", COLUMNS[1:4], [[i, "10", "20"] for i in K600_TEST])
    k700 = root / "k700"
    _write_csv(k700 / "train.csv", COLUMNS, [[lb, i, "1", "11", "train"] for lb, i in K700_TRAIN])
    _write_csv(k700 / "val.csv", COLUMNS, [[lb, i, "1", "11", "val"] for lb, i in K700_VAL])
    _write_csv(k700 / "test.csv", COLUMNS, [["", i, "1", "11", "test"] for i in K700_TEST])
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("kinetics"))


def _source(tree: Path, out: Path, **options) -> Kinetics710Source:
    return Kinetics710Source(
        k400=KineticsVersion(videos=tree / "k400"),
        k600=KineticsVersion(videos=tree / "k600", annotations=tree / "csv600"),
        k700=KineticsVersion(videos=tree / "k700"),
        out=out,
        workers=2,
        **options,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _outputs(out: Path) -> dict[str, bytes]:
    """Every output file except the re-encoded copies and hidden files."""
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and "videos" not in p.relative_to(out).parts
    }


def test_fixture_ids_are_youtube_length():
    ids = [i for rows in (K400_TRAIN, K400_VAL, K600_TRAIN, K600_VAL, K700_TRAIN, K700_VAL) for _, i in rows]
    assert all(len(i) == 11 for i in ids + K600_TEST + K700_TEST + [i for v in VIDEOS.values() for i in v])
    assert K400_MERGE["dying hair"] == "dyeing hair" and K400_MERGE[AMERICAN_K400] == AMERICAN
    assert len(K400_MERGE) == 15


def test_lists_labels_and_manifest_match_the_hand_derived_values(tree, tmp_path):
    out = tmp_path / "k710"
    summary = prepare_kinetics710(_source(tree, out))

    assert _lines(out / "labels_k710.txt") == LABELS_K710
    assert _lines(out / "labels_k400.txt") == LABELS_K400
    assert _lines(out / "labels_k600.txt") == LABELS_K600
    assert _lines(out / "labels_k700.txt") == LABELS_K700
    assert _lines(out / "k710_train.csv") == TRAIN_ROWS
    assert _lines(out / "k710_val.csv") == VAL_ROWS
    assert _lines(out / "k400_val.csv") == K400_VAL_ROWS
    assert _lines(out / "k600_val.csv") == K600_VAL_ROWS
    assert _lines(out / "k700_val.csv") == K700_VAL_ROWS
    assert _lines(out / "videos_root.txt") == [str(tree)]
    assert all((tree / row.rsplit(",", 1)[0]).is_file() for row in TRAIN_ROWS + VAL_ROWS)

    manifest = json.loads((out / "manifest.json").read_text())
    lists = manifest["lists"]
    assert lists["k710_train"] == {"rows": 9, "stages": TRAIN_STAGES, "dropped": TRAIN_DROPPED, "label_conflicts": 1}
    assert lists["k710_val"] == {
        "rows": 5,
        "stages": VAL_STAGES,
        "dropped": {"duplicate": 1, "missing_file": 1},
        "label_conflicts": 0,
    }
    assert lists["k400_val"] == {
        "rows": 2,
        "stages": {"ids": 3, "after_missing_files": 2},
        "dropped": {"missing_file": 1},
        "label_conflicts": 0,
    }
    assert lists["k700_val"]["stages"] == {"ids": 2, "after_missing_files": 2}
    assert manifest["classes"] == {"k710": 6, "k400": 4, "k600": 5, "k700": 4}
    assert manifest["label_order"] == {"source": "sorted class names"}
    assert manifest["videos_root"] == str(tree)
    assert manifest["umt_version"]
    k400 = manifest["inputs"]["k400"]
    assert [(Path(c["path"]).name, c["rows"]) for c in k400["csvs"]] == [
        ("test.csv", 1),
        ("train.csv", 10),
        ("validate.csv", 3),
    ]
    assert k400["csvs"][1]["rows_by_split"] == {"train": 10, "val": 0, "test": 0}
    assert len(k400["csvs"][0]["sha256"]) == 64
    assert k400["unique_ids"] == {"train": 9, "val": 3, "test": 1} and k400["repeated_rows"] == 1
    assert (k400["video_files"], k400["video_ids"], k400["duplicate_file_ids"]) == (9, 9, 0)
    assert [Path(c["path"]).name for c in manifest["inputs"]["k600"]["csvs"]] == [
        "kinetics600_holdout_test.csv",
        "train.csv",
        "validate.csv",
    ]
    assert manifest["inputs"]["k600"]["unique_ids"] == {"train": 5, "val": 2, "test": 2}
    k700 = manifest["inputs"]["k700"]
    assert (k700["video_files"], k700["video_ids"], k700["duplicate_file_ids"]) == (6, 5, 1)
    assert len(manifest["warnings"]) == 2  # both lists are far from the full data set's size
    assert manifest["side_files"] == [
        "dropped_duplicate.txt",
        "dropped_leak_test.txt",
        "dropped_leak_val.txt",
        "dropped_missing_file.txt",
        "duplicate_files.txt",
        "label_conflicts.txt",
    ]

    assert _lines(out / "dropped_duplicate.txt") == [
        "k710_train\tconflict_03\tk400 row (kept k600)",
        "k710_train\tdup46____11\tk400 row (kept k600)",
        "k710_train\tdup_all__02\tk400 row (kept k700)",
        "k710_train\tdup_all__02\tk600 row (kept k700)",
        "k710_val\tvaldup___21\tk400 row (kept k700)",
    ]
    assert _lines(out / "dropped_leak_val.txt") == ["k710_train\tleakval__04\tk600 val"]
    assert _lines(out / "dropped_leak_test.txt") == [
        "k710_train\tleaktest_05\tk700 test",
        "k710_train\tleaktst6_12\tk600 test",
    ]
    assert _lines(out / "dropped_missing_file.txt") == [
        "k400_val\tk4valmiss22\tno k400 file",
        "k710_train\tmissing7_15\tno k700 file",
        "k710_train\tmissing__06\tno k400 file",
        "k710_val\tk4valmiss22\tno k400 file",
    ]
    assert _lines(out / "label_conflicts.txt") == ["k710_train\tconflict_03\tk600=abseiling; k400=zumba"]
    assert _lines(out / "duplicate_files.txt") == [
        f"k700\tk7_tackl_14\t{tree}/k700/videos/vol_00/k7_tackl_14_000001_000011.mp4\t{tree}/{SECOND_COPY}"
    ]
    assert summary["k710_train"] == 9 and summary["k710_val"] == 5 and summary["classes"] == 6
    assert summary["dropped"] == {"duplicate": 5, "leak_test": 2, "leak_val": 1, "missing_file": 4}


def test_a_second_run_writes_identical_bytes(tree, tmp_path):
    out = tmp_path / "k710"
    prepare_kinetics710(_source(tree, out))
    first = _outputs(out)
    prepare_kinetics710(_source(tree, out))
    assert _outputs(out) == first
    assert set(first) == {
        "dropped_duplicate.txt",
        "dropped_leak_test.txt",
        "dropped_leak_val.txt",
        "dropped_missing_file.txt",
        "duplicate_files.txt",
        "k400_val.csv",
        "k600_val.csv",
        "k700_val.csv",
        "k710_train.csv",
        "k710_val.csv",
        "label_conflicts.txt",
        "labels_k400.txt",
        "labels_k600.txt",
        "labels_k700.txt",
        "labels_k710.txt",
        "manifest.json",
        "videos_root.txt",
    }


def test_exclude_val_keeps_exactly_the_test_only_leaks(tree, tmp_path):
    out = tmp_path / "k710"
    prepare_kinetics710(_source(tree, out, exclude="val"))
    assert _lines(out / "k710_train.csv") == sorted(TRAIN_ROWS + TEST_LEAK_ROWS)
    assert _lines(out / "k710_val.csv") == VAL_ROWS
    train = json.loads((out / "manifest.json").read_text())["lists"]["k710_train"]
    assert train["stages"]["after_exclusion"] == {"val+test": 11, "val": 13}
    assert train["stages"]["test_ids_kept"] == 2
    assert train["dropped"] == {"duplicate": 4, "leak_val": 1, "missing_file": 2}
    assert not (out / "dropped_leak_test.txt").exists()


def test_a_label_map_imposes_the_class_order(tree, tmp_path):
    order = ["zumba", "tackling", AMERICAN_K400, "making slime", "dying hair", "abseiling"]  # K400 spellings merge
    label_map = tmp_path / "label_map.txt"
    label_map.write_text("\n".join(order) + "\n")
    out = tmp_path / "k710"
    prepare_kinetics710(_source(tree, out, label_map=label_map))
    assert _lines(out / "labels_k710.txt") == LABELS_K710[::-1]
    flipped = [f"{row.rsplit(',', 1)[0]},{5 - int(row.rsplit(',', 1)[1])}" for row in TRAIN_ROWS]
    assert _lines(out / "k710_train.csv") == flipped
    assert _lines(out / "labels_k400.txt") == LABELS_K400[::-1]  # the 710 order restricted to K400's classes
    assert json.loads((out / "manifest.json").read_text())["label_order"]["path"] == str(label_map)


def test_a_label_map_that_is_no_bijection_names_the_unmatched_classes(tree, tmp_path):
    label_map = tmp_path / "label_map.txt"
    label_map.write_text("\n".join(["yoga", "tackling", AMERICAN, "making slime", "dyeing hair", "abseiling"]) + "\n")
    with pytest.raises(UsageError) as error:
        prepare_kinetics710(_source(tree, tmp_path / "k710", label_map=label_map))
    message = str(error.value)
    assert "not in the CSVs (1): 'yoga'" in message and "missing from the map (1): 'zumba'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("b\n\na\n", [("b", 0), ("a", 1)]),
        ("a 1\nb\t0\n", [("a", 1), ("b", 0)]),
        ('"dying hair",1\nb,0\n', [("dyeing hair", 1), ("b", 0)]),
        ('["b", "a"]', [("b", 0), ("a", 1)]),
        ('{"a": 1, "tying tie": 0}', [("a", 1), ("tying necktie", 0)]),
    ],
)
def test_label_map_formats(tmp_path, text, expected):
    path = tmp_path / "map.txt"
    path.write_text(text)
    assert read_label_map(path) == expected


def test_label_map_indices_must_be_a_permutation(tmp_path):
    path = tmp_path / "map.txt"
    path.write_text("a 0\nb 2\n")
    with pytest.raises(UsageError, match="indices are not exactly 0..1"):
        order_classes({"a", "b"}, path)


def test_verify_drops_the_corrupt_video_with_its_reason(tree, tmp_path):
    out = tmp_path / "k710"
    prepare_kinetics710(_source(tree, out, verify=True))
    assert _lines(out / "k710_train.csv") == [r for r in TRAIN_ROWS if "corrupt__07" not in r]
    train = json.loads((out / "manifest.json").read_text())["lists"]["k710_train"]
    assert train["stages"]["after_verify"] == 8
    assert train["dropped"]["verify_open_fail"] == 1
    assert _lines(out / "dropped_verify_open_fail.txt") == [f"k710_train\tcorrupt__07\t{tree / CORRUPT}"]
    assert (out / ".verify_cache.jsonl").is_file()

    prepare_kinetics710(_source(tree, out))  # without --verify the stale reason file must go
    assert not (out / "dropped_verify_open_fail.txt").exists()


def test_reencoding_resumes_after_an_interruption_without_redoing_finished_copies(tree, tmp_path):
    out = tmp_path / "k710"
    prepare_kinetics710(_source(tree, out, resize_short_side=32, keyframe_interval=4))
    first = _outputs(out)
    copies = Path(_lines(out / "videos_root.txt")[0])
    assert copies.parent == out / "videos" and copies.name.startswith("short32-gop4-crf23-fastdecode-")
    assert json.loads((copies / "encoding.json").read_text())["short_side"] == 32
    rows = [row.rsplit(",", 1)[0] for row in _lines(out / "k710_train.csv")]
    assert rows == [r.rsplit(",", 1)[0] for r in TRAIN_ROWS if "corrupt__07" not in r]  # the corrupt one fails
    assert json.loads(first["manifest.json"])["lists"]["k710_train"]["dropped"]["reencode_open_fail"] == 1
    assert all((copies / row).is_file() for row in rows)

    victim = copies / rows[0]
    victim.unlink()  # as if the run had been killed before this copy, and before the lists were written
    (out / "k710_val.csv").unlink()
    (out / "manifest.json").unlink()
    (copies / rows[1]).with_name(".tmp-999-half-written.mp4").write_bytes(b"partial")
    stamps = {p: p.stat().st_mtime_ns for p in copies.rglob("*.mp4")}
    prepare_kinetics710(_source(tree, out, resize_short_side=32, keyframe_interval=4))

    assert _outputs(out) == first
    assert victim.is_file()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished copies were not touched


def _height(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.height


def test_changing_any_encoding_setting_reencodes_and_an_unchanged_run_reuses_the_copies(tree, tmp_path):
    out = tmp_path / "k710"
    base = {"resize_short_side": 32, "keyframe_interval": 4, "crf": 23, "fast_decode": True}
    prepare_kinetics710(_source(tree, out, **base))
    first_root = Path(_lines(out / "videos_root.txt")[0])
    rows = [row.rsplit(",", 1)[0] for row in _lines(out / "k710_train.csv")]
    first = {row: (first_root / row).read_bytes() for row in rows}
    roots = [first_root]
    for key, value in [("resize_short_side", 24), ("keyframe_interval", 2), ("crf", 35), ("fast_decode", False)]:
        prepare_kinetics710(_source(tree, out, **{**base, key: value}))
        root = Path(_lines(out / "videos_root.txt")[0])
        assert root not in roots, key  # a new folder: the old copies are not passed off as new ones
        roots.append(root)
        assert all((root / row).read_bytes() != first[row] for row in rows), key
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["videos_root"] == str(root)
        assert manifest["copies"]["short_side"] == {**base, key: value}["resize_short_side"]
        unused = manifest["warnings"][-1]  # every earlier folder is named, none is deleted
        assert "also holds copies these lists do not use" in unused and all(r.name in unused for r in roots[:-1])
    assert {_height(roots[1] / row) for row in rows} == {24} and {_height(first_root / row) for row in rows} == {32}

    stamps = {p: p.stat().st_mtime_ns for p in first_root.rglob("*.mp4")}
    prepare_kinetics710(_source(tree, out, **base))  # back to the first settings: nothing to encode
    assert Path(_lines(out / "videos_root.txt")[0]) == first_root
    assert {p: p.stat().st_mtime_ns for p in first_root.rglob("*.mp4")} == stamps


def test_paths_that_break_the_list_format_are_refused(tmp_path):
    videos = tmp_path / "k400"
    _clip(videos / "train" / "abc,def_ghi_000001_000011.mp4")
    _write_csv(videos / "train.csv", COLUMNS, [["abseiling", "abc,def_ghi", "1", "11", "train"]])
    with pytest.raises(DataError, match="abc,def_ghi_000001_000011.mp4"):
        prepare_kinetics710(Kinetics710Source(k400=KineticsVersion(videos=videos), out=tmp_path / "out"))


def test_csv_discovery_accepts_one_file_and_refuses_an_empty_folder(tmp_path):
    (tmp_path / "videos").mkdir()
    one = tmp_path / "mine.csv"
    one.write_text("label,youtube_id,time_start,time_end,split\n")
    assert find_csvs("k400", KineticsVersion(videos=tmp_path / "videos", annotations=one)) == [one]
    with pytest.raises(UsageError, match="no CSV files"):
        find_csvs("k400", KineticsVersion(videos=tmp_path / "videos"))


def test_a_csv_without_a_split_is_refused_with_its_name(tmp_path):
    videos = tmp_path / "k400"
    _write_csv(videos / "kinetics400.csv", ["label", "youtube_id"], [["abseiling", "aaaaaaaaaaa"]])
    with pytest.raises(DataError, match=r"kinetics400.csv line 2: no split column"):
        prepare_kinetics710(Kinetics710Source(k400=KineticsVersion(videos=videos), out=tmp_path / "out"))


def test_cli_runs_and_rejects_a_bad_exclude_value(tree, tmp_path):
    runner = CliRunner()
    out = tmp_path / "k710"
    args = ["prepare-data", "kinetics710", "--k400", str(tree / "k400"), "--k600", str(tree / "k600")]
    args += ["--k600-csv", str(tree / "csv600"), "--k700", str(tree / "k700"), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _lines(out / "k710_train.csv") == TRAIN_ROWS
    result = runner.invoke(app, [*args, "--exclude", "test"])
    assert result.exit_code == 2, result.output


def test_a_single_version_lists_relative_to_its_own_folder(tree, tmp_path):
    out = tmp_path / "k400_only"
    summary = prepare_kinetics710(Kinetics710Source(k400=KineticsVersion(videos=tree / "k400"), out=out))
    assert _lines(out / "videos_root.txt") == [str(tree / "k400")]
    # K400 alone: conflict_03 keeps K400's zumba, the K600/K700 leaks stay, dup46____11 has no K400 file.
    assert _lines(out / "k710_train.csv") == [
        "train/conflict_03_000001_000011.mp4,3",
        "train/corrupt__07_000001_000011.mp4,3",
        "train/dup_all__02_000001_000011.mp4,1",
        "train/k4_american_000001_000011.mp4,2",
        "train/k4only_a-01_000001_000011.mp4,0",
        "train/leaktest_05_000001_000011.mp4,3",
        "train/leakval__04_000001_000011.mp4,2",
    ]
    assert summary["warnings"][0].startswith("k600, k700 not given")
    assert not os.path.exists(out / "k600_val.csv")
