import numpy as np
import pytest
from conftest import read_frame_number

from umt_cli.data.decode import (
    DecodeFailure,
    available_backends,
    clamp_indices,
    open_video,
    read_image,
    resolve_backend,
    scaled_size,
)

BACKENDS = available_backends()


def test_auto_prefers_decord_when_installed():
    assert resolve_backend("auto") == BACKENDS[0]
    assert "pyav" in BACKENDS
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


def _faststart_clip(path, frames=60):
    """An mp4 with its index before the data (as many downloaded files are), so a truncated copy still opens."""
    import av
    from conftest import numbered_frames

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "10"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in numbered_frames(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["index-last", "faststart"])
def test_truncated_files_fail_cleanly(make_clip, tmp_path, backend, layout):
    path = make_clip(frames=60, gop=10) if layout == "index-last" else _faststart_clip(tmp_path / "fs.mp4")
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DecodeFailure) as error:
        open_video(cut, backend=backend).get_batch([0, 30, 59])
    assert error.value.reason in ("open_fail", "decode_fail")


def test_images_are_one_frame_videos(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "a.png")
    frames = read_image(tmp_path / "a.png", short_side=20)
    assert frames.shape == (1, 20, 30, 3) and frames.dtype == np.uint8
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DecodeFailure) as error:
        read_image(tmp_path / "bad.jpg")
    assert error.value.reason == "decode_fail"
