"""Re-encoding: short side, keyframe interval, frame count and rate kept; parallel runs skip finished copies."""

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest

from umt_cli.data.decode import DecodeFailure
from umt_cli.data.prepare.reencode import CopySettings, copies_folder, reencode_many, reencode_video


def _describe(path: Path) -> tuple[int, int, list[int], int, float]:
    """(width, height, keyframe positions, frame count, frame rate) from the packets, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keyframes = [p.is_keyframe for p in container.demux(stream) if p.size]
        ctx = stream.codec_context
        return (
            ctx.width,
            ctx.height,
            [i for i, k in enumerate(keyframes) if k],
            len(keyframes),
            float(stream.average_rate),
        )


def test_short_side_keyframes_frame_count_and_rate(make_clip, tmp_path):
    src = make_clip("src.mp4", frames=30, width=64, height=48)
    dst = tmp_path / "out" / "dst.mp4"
    reencode_video(src, dst, short_side=32, keyframe_interval=5, crf=23)
    width, height, keyframes, frames, fps = _describe(dst)
    assert (width, height) == (44, 32)  # 64 * 32 / 48 = 42.7 -> 43 -> even 44
    assert keyframes == [0, 5, 10, 15, 20, 25]
    assert frames == 30 and fps == 25.0


def test_a_portrait_video_scales_its_width(make_clip, tmp_path):
    src = make_clip("tall.mp4", frames=20, width=48, height=64)
    dst = tmp_path / "tall_small.mp4"
    reencode_video(src, dst, short_side=24, keyframe_interval=8, crf=30)
    assert _describe(dst)[:2] == (24, 32)


def test_an_unreadable_source_raises_a_decode_failure_and_writes_nothing(tmp_path):
    src = tmp_path / "bad.mp4"
    src.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(DecodeFailure) as failure:
        reencode_video(src, tmp_path / "copy.mp4", short_side=32, keyframe_interval=4, crf=23)
    assert failure.value.reason == "open_fail"
    assert not (tmp_path / "copy.mp4").exists()


def test_reencode_many_reports_failures_and_skips_existing_copies(make_clip, tmp_path):
    good, other = make_clip("good.mp4", frames=20), make_clip("other.mp4", frames=20)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    done = tmp_path / "copies" / "other.mp4"
    done.parent.mkdir()
    done.write_bytes(b"finished earlier")  # copies appear atomically, so an existing one is complete
    pairs = [(good, tmp_path / "copies" / "good.mp4"), (other, done), (bad, tmp_path / "copies" / "bad.mp4")]
    results = reencode_many(pairs, short_side=32, keyframe_interval=4, crf=23, workers=2)
    assert results[good] is None and results[other] is None
    assert results[bad] in ("open_fail", "decode_fail")
    assert _describe(tmp_path / "copies" / "good.mp4")[1] == 32
    assert done.read_bytes() == b"finished earlier"
    assert not (tmp_path / "copies" / "bad.mp4").exists()


@pytest.mark.parametrize("fast_decode", [True, False])
def test_fast_decode_copies_have_no_b_frames(make_clip, tmp_path, fast_decode):
    import av

    src = make_clip(frames=30, preset="medium")
    dst = tmp_path / "copy.mp4"
    reencode_video(src, dst, short_side=32, keyframe_interval=10, crf=23, fast_decode=fast_decode)
    with av.open(str(dst)) as container:
        kinds = {av.video.frame.PictureType(frame.pict_type).name for frame in container.decode(video=0)}
    assert ("B" in kinds) is not fast_decode


def test_every_setting_that_changes_the_bytes_changes_the_copies_folder(tmp_path):
    base = CopySettings(short_side=32, keyframe_interval=4, crf=23, fast_decode=True)
    changed = [
        CopySettings(24, 4, 23, True),
        CopySettings(32, 8, 23, True),
        CopySettings(32, 4, 30, True),
        CopySettings(32, 4, 23, False),
    ]
    names = {s.folder_name() for s in [base, *changed]}
    assert len(names) == 5
    assert base.folder_name() == CopySettings(32, 4, 23, True).folder_name()  # a pure function of the settings
    assert base.folder_name().startswith("short32-gop4-crf23-fastdecode-")

    folder = copies_folder(tmp_path / "videos", base)
    assert folder == tmp_path / "videos" / base.folder_name()
    record = json.loads((folder / "encoding.json").read_text())
    assert record["short_side"] == 32 and record["codec"] == "libx264"
    assert record["encoder_options"]["g"] == "4" and record["encoder_options"]["tune"] == "fastdecode"


def test_the_copy_is_written_with_the_recorded_encoder_options(make_clip, tmp_path):
    """The folder key must describe the real encoder options: libx264 writes its options into the stream."""
    settings = CopySettings(short_side=32, keyframe_interval=5, crf=31, fast_decode=False)
    dst = tmp_path / "copy.mp4"
    reencode_video(make_clip(frames=10), dst, **dataclasses.asdict(settings))
    written = dst.read_bytes()
    options = settings.record()["encoder_options"]
    assert f"crf={options['crf']}.0".encode() in written and f"keyint={options['g']} ".encode() in written


def test_a_truncated_source_fails_instead_of_becoming_a_shorter_complete_copy(make_clip, tmp_path):
    data = make_clip("src.mp4", frames=30).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeFailure) as failure:
        reencode_video(cut, tmp_path / "copy.mp4", short_side=32, keyframe_interval=4, crf=23)
    assert failure.value.reason == "truncated"
    assert not (tmp_path / "copy.mp4").exists()
