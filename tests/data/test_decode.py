import importlib.util

import av
import numpy as np
import pytest
import torch
from conftest import numbered_frames, read_frame_number

from umt_cli.data.datasets import ClipLoader
from umt_cli.data.decode import (
    DecodeFailure,
    available_backends,
    clamp_indices,
    open_video,
    read_image,
    resolve_backend,
    scaled_size,
)
from umt_cli.data.prepare.verify import probe_video
from umt_cli.data.sampling import FrameSampler
from umt_cli.data.truncation import find_truncation

BACKENDS = available_backends()


def test_auto_prefers_pyav_and_decord_stays_available():
    assert BACKENDS[0] == "pyav" and resolve_backend("auto") == "pyav"
    if importlib.util.find_spec("decord"):
        assert BACKENDS == ["pyav", "decord"] and resolve_backend("decord") == "decord"
    with pytest.raises(ValueError):
        resolve_backend("ffmpeg-cli")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gop", [None, 8])
def test_frames_come_back_in_the_requested_order(make_clip, backend, gop):
    path = make_clip(frames=60, gop=gop)
    reader = open_video(path, backend=backend)
    assert reader.num_frames == 60
    assert reader.fps == pytest.approx(25)
    indices = [50, 3, 3, 17, 59, 0, 33]
    frames = reader.get_batch(indices)
    assert frames.shape == (7, 48, 64, 3) and frames.dtype == np.uint8
    assert [read_frame_number(f) for f in frames] == indices
    reader.close()


def test_backends_decode_identical_pixels(make_clip):
    if "decord" not in BACKENDS:
        pytest.skip("decord not installed")
    path = make_clip(frames=40, gop=10)
    indices = [1, 9, 10, 11, 25, 39]
    a = open_video(path, backend="decord").get_batch(indices)
    b = open_video(path, backend="pyav").get_batch(indices)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(("gop", "preset"), [(8, "veryfast"), (None, "medium"), (16, "medium")])
def test_pyav_seeking_equals_sequential_decoding(make_clip, gop, preset):
    """Keyframe seeks and skipped non-reference frames must leave exactly the frames a full decode gives."""
    import av

    path = make_clip(frames=64, gop=gop, preset=preset)
    with av.open(str(path)) as container:
        everything = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    rng = np.random.default_rng(0)
    reader = open_video(path, backend="pyav")
    for _ in range(5):
        indices = sorted(rng.choice(64, size=8, replace=False).tolist())
        assert np.array_equal(reader.get_batch(indices), np.stack([everything[i] for i in indices]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_time_downscale(make_clip, backend):
    path = make_clip(frames=10, width=96, height=64)
    frames = open_video(path, backend=backend, short_side=32).get_batch([0, 9])
    assert frames.shape == (2, 32, 48, 3)
    assert read_frame_number(frames[1]) == 9


def test_scaled_size_keeps_aspect_and_even_sides():
    assert scaled_size(340, 256, 224) == (298, 224)
    assert scaled_size(256, 340, 224) == (224, 298)
    assert scaled_size(340, 256, None) == (340, 256)
    assert scaled_size(341, 255, 255) == (341, 255)  # already at size: untouched


def test_clamp_indices():
    assert clamp_indices([-3, 0, 5, 99], 10) == [0, 0, 5, 9]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_files_raise_decode_failure_with_a_reason(tmp_path, backend):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    cases = {"missing.mp4": "missing", "empty.mp4": "empty", "junk.mp4": "open_fail"}
    for name, reason in cases.items():
        with pytest.raises(DecodeFailure) as error:
            open_video(tmp_path / name, backend=backend)
        assert error.value.reason == reason, name


def _muxed_clip(path, container_format, options, frames=60):
    """A clip in another layout: `faststart` puts the mp4 index before the data (as many downloads do), fragmented
    mp4 interleaves index and data, Matroska declares its size up front."""
    with av.open(str(path), "w", format=container_format, options=options) as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "10"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in numbered_frames(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


LAYOUTS = {  # name -> (container format, muxer options, file name)
    "faststart": ("mp4", {"movflags": "faststart"}, "fs.mp4"),
    "fragmented": ("mp4", {"movflags": "frag_keyframe+empty_moov"}, "frag.mp4"),
    "matroska": ("matroska", {}, "clip.mkv"),
}


def _layout_clip(make_clip, tmp_path, layout):
    if layout == "index-last":  # what write_h264 (and a plain ffmpeg run) writes: the mp4 index after the data
        return make_clip("last.mp4", frames=60, gop=10)
    container_format, options, name = LAYOUTS[layout]
    return _muxed_clip(tmp_path / name, container_format, options)


@pytest.mark.parametrize("layout", ["index-last", *LAYOUTS])
def test_intact_files_of_every_layout_are_not_taken_for_truncated(make_clip, tmp_path, layout):
    path = _layout_clip(make_clip, tmp_path, layout)
    assert find_truncation(path) is None
    assert open_video(path, backend="pyav").num_frames == 60


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("layout", ["index-last", *LAYOUTS])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_a_truncated_file_counts_as_truncated_with_either_backend(make_clip, tmp_path, backend, layout, keep):
    """A download cut short: decord used to refuse it (open_fail) while PyAV trained on the frames that were left."""
    if backend == "decord":
        pytest.importorskip("decord")
    source = _layout_clip(make_clip, tmp_path, layout)
    data = source.read_bytes()
    cut = tmp_path / f"cut{source.suffix}"
    cut.write_bytes(data[: int(len(data) * keep)])
    loader = ClipLoader(FrameSampler("sparse", 8, train=True), backend=backend)
    with pytest.raises(DecodeFailure) as error:
        loader.video(cut, torch.Generator().manual_seed(0))
    assert error.value.reason == "truncated", error.value
    assert "the file has" in error.value.detail or "no moov box" in error.value.detail


def test_an_mp4_cut_between_its_data_and_its_index_is_truncated(make_clip, tmp_path):
    path = make_clip("last.mp4", frames=30)
    data = path.read_bytes()
    moov = data.rindex(b"moov") - 4  # the index box starts 4 bytes (its size) before its name
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:moov])  # every box is whole, but the index never arrived
    assert find_truncation(cut) == "it has no moov box (the index of its frames)"
    assert probe_video(cut) == "truncated"


def test_images_are_one_frame_videos(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "a.png")
    frames = read_image(tmp_path / "a.png", short_side=20)
    assert frames.shape == (1, 20, 30, 3) and frames.dtype == np.uint8
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DecodeFailure) as error:
        read_image(tmp_path / "bad.jpg")
    assert error.value.reason == "decode_fail"


def test_a_dropped_pyav_reader_frees_its_decoder_at_once(make_clip):
    """Left to the garbage collector, a reader's FFmpeg state could be freed inside a forked DataLoader worker, where
    its threads do not exist, and hang the worker (the parent had decoded before forking)."""
    import gc
    import weakref

    path = make_clip(frames=30, gop=10)
    gc.disable()
    try:
        reader = open_video(path, backend="pyav")
        reader.get_batch([3, 20])  # leaves a paused frame generator behind
        gone = weakref.ref(reader)
        del reader
        assert gone() is None  # freed by reference counting: no cycle through the generator
        closed = open_video(path, backend="pyav")
        closed.get_batch([3])
        closed.close()
        assert closed._frames is None and closed._container is None
    finally:
        gc.enable()
