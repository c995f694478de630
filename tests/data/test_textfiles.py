"""User-supplied text files: every way one can be unreadable ends in one line naming the file and the line."""

import pytest

from umt_cli.data.datasets import list_root, load_annotations, parse_video_list
from umt_cli.data.prepare.kinetics_inputs import read_label_map, read_version
from umt_cli.data.prepare.video_text import read_raw_annotations
from umt_cli.data.textfiles import csv_rows, json_records, read_text
from umt_cli.errors import DataError, UsageError
from umt_cli.recipe.prepare import KineticsVersion

LATIN1_CSV = "label,youtube_id,split\nabseiling,aaaaaaaaaaa,train\ncaf\xe9 ,bbbbbbbbbbb,train\n".encode("latin-1")


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_bad_byte_is_located_by_line_and_column(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfok\nd\xc3\xa9j\xc3\xa0 \xff x\n")  # BOM, then two accented (2-byte) characters
    with pytest.raises(DataError) as error:
        read_text(path)
    assert _one_line(error).startswith(f"{path} line 2: not UTF-8 text (byte 0xff at column 6)")


def test_a_bom_is_dropped_and_a_folder_or_a_missing_file_is_a_usage_error(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfa,b\n")
    assert read_text(tmp_path / "bom.txt") == "a,b\n"
    with pytest.raises(UsageError, match="is a folder, not the video list file"):
        read_text(tmp_path, what="video list")
    with pytest.raises(UsageError, match="label map file not found"):
        read_text(tmp_path / "nope.txt", what="label map")


def test_csv_rows_name_the_line_where_a_runaway_field_starts(tmp_path):
    text = 'a,b\n\n"c,d\n' + "x" * 200_000 + "\n"  # an unclosed quote swallows the rest of the file
    assert list(csv_rows(tmp_path / "x.csv", "a,b\n\nc,d\n")) == [(1, ["a", "b"]), (3, ["c", "d"])]
    with pytest.raises(DataError) as error:
        list(csv_rows(tmp_path / "x.csv", text))
    assert _one_line(error).startswith(f"{tmp_path / 'x.csv'} line 3: not a readable CSV row: field larger")


def test_json_lines_errors_name_the_line_of_the_file(tmp_path):
    path = tmp_path / "a.jsonl"
    with pytest.raises(DataError) as error:
        json_records(path, '{"a": 1}\n\n{"a": 2,}\n')
    assert _one_line(error).startswith(f"{path} line 3: not valid JSON or JSON lines (")
    with pytest.raises(DataError, match=r"line 2: not valid JSON"):
        json_records(path, '[\n  {"a": 1]')
    assert json_records(path, '{"a": "x\u2028y"}\n') == [{"a": "x\u2028y"}]  # U+2028 inside a string is no line end


def test_a_latin1_kinetics_csv_names_its_line(tmp_path):
    videos = tmp_path / "k400"
    (videos / "annotations").mkdir(parents=True)
    (videos / "annotations" / "train.csv").write_bytes(LATIN1_CSV)
    with pytest.raises(DataError) as error:
        read_version("k400", KineticsVersion(videos=videos))
    assert _one_line(error).startswith(f"{videos}/annotations/train.csv line 3: not UTF-8 text (byte 0xe9 at column 4)")


def test_an_oversized_kinetics_csv_field_names_its_line(tmp_path):
    videos = tmp_path / "k400"
    videos.mkdir()
    rows = "label,youtube_id,split\nabseiling,aaaaaaaaaaa,train\n" + "x" * 200_000 + ",bbbbbbbbbbb,train\n"
    (videos / "train.csv").write_text(rows)
    with pytest.raises(DataError) as error:
        read_version("k400", KineticsVersion(videos=videos))
    assert _one_line(error).startswith(f"{videos}/train.csv line 3: not a readable CSV row")


def test_a_folder_named_like_a_csv_is_a_usage_error(tmp_path):
    videos = tmp_path / "k400"
    (videos / "annotations" / "train.csv").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"train.csv: is a folder, not the Kinetics CSV file"):
        read_version("k400", KineticsVersion(videos=videos))


def test_a_label_map_that_is_not_utf8_or_a_folder(tmp_path):
    path = tmp_path / "map.txt"
    path.write_bytes("abseiling\nzumba\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as error:
        read_label_map(path)
    assert _one_line(error).startswith(f"{path} line 3: not UTF-8 text (byte 0xe9 at column 4)")
    with pytest.raises(UsageError, match="is a folder, not the label map file"):
        read_label_map(tmp_path)
    path.write_text('[\n"a",\n"b"\n')
    with pytest.raises(UsageError, match=r"map.txt line 4: not valid JSON"):
        read_label_map(path)


def test_a_video_list_that_is_not_utf8_or_a_folder(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("a.mp4,0\n\xe9t\xe9.mp4,1\n".encode("latin-1"))
    with pytest.raises(DataError) as error:
        parse_video_list(path)
    assert _one_line(error).startswith(f"{path} line 2: not UTF-8 text (byte 0xe9 at column 1)")
    with pytest.raises(UsageError, match="is a folder, not the video list file"):
        parse_video_list(tmp_path)
    path.write_text("a.mp4,0\nb.mp4\n")
    with pytest.raises(DataError, match=r"train.csv line 2: expected `path,label`"):
        parse_video_list(path)


@pytest.mark.parametrize("reader", [load_annotations, read_raw_annotations])
def test_annotations_that_are_not_utf8_broken_json_lines_or_a_folder(tmp_path, reader):
    path = tmp_path / "ann.jsonl"
    path.write_bytes('{"video": "a.mp4", "caption": "x"}\n{"video": "\xe9.mp4", "caption": "y"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as error:
        reader(path)
    assert _one_line(error).startswith(f"{path} line 2: not UTF-8 text (byte 0xe9 at column 12)")
    path.write_text('{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4" "caption": "y"}\n')
    with pytest.raises(DataError) as error:
        reader(path)
    assert _one_line(error).startswith(f"{path} line 2: not valid JSON or JSON lines (Expecting ',' delimiter")
    with pytest.raises(UsageError, match="is a folder, not the annotations file"):
        reader(tmp_path)


def test_a_videos_root_file_that_is_not_utf8_or_empty(tmp_path):
    recorded = tmp_path / "videos_root.txt"
    recorded.write_bytes(b"/data/vid\xe9os\n")
    with pytest.raises(DataError) as error:
        list_root(tmp_path / "train.csv", None)
    assert _one_line(error).startswith(f"{recorded} line 1: not UTF-8 text (byte 0xe9 at column 10)")
    recorded.write_text("\n")
    with pytest.raises(DataError, match="expected one line naming the folder"):
        list_root(tmp_path / "train.csv", None)
