"""Decodability probes in killable worker processes: results, timeouts, crashes, the cache."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from umt_cli.data.decode import FAILURE_REASONS
from umt_cli.data.prepare.verify import probe_video, probe_videos, run_isolated


# Probes substituted for `probe_video`: module level, so the spawned workers can import them by name.
def hangs_on_hang(path: Path) -> str | None:
    if "hang" in path.name:
        time.sleep(120)  # stands in for a native decoder loop that holds the GIL
    return None


def crashes_on_crash(path: Path) -> str | None:
    if "crash" in path.name:
        os._exit(3)  # stands in for a segfault inside the decoder
    return None


def always_fails(path: Path) -> str | None:
    return "decode_fail"


def raises(path: Path) -> str | None:
    raise ValueError(f"bug while probing {path.name}")


def _files(tmp_path: Path, *names: str) -> list[Path]:
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.write_bytes(b"x")
    return paths


def test_a_good_video_passes_and_a_corrupt_or_missing_one_gets_a_reason(make_clip, tmp_path):
    good = make_clip("good.mp4", frames=20)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    missing = tmp_path / "missing.mp4"
    assert probe_video(good) is None
    results = probe_videos([good, corrupt, missing], timeout_s=30, workers=2)
    assert list(results) == [good, corrupt, missing]
    assert results[good] is None
    assert results[corrupt] in FAILURE_REASONS
    assert results[missing] == "missing"


def test_a_hanging_probe_is_killed_reported_as_timeout_and_the_queue_goes_on(tmp_path):
    paths = _files(tmp_path, "a.mp4", "hang.mp4", "b.mp4", "c.mp4")
    start = time.monotonic()
    results = probe_videos(paths, timeout_s=1.0, workers=1, probe=hangs_on_hang)
    assert results == {paths[0]: None, paths[1]: "timeout", paths[2]: None, paths[3]: None}
    assert time.monotonic() - start < 30


def test_a_worker_that_dies_reports_decode_fail_and_is_replaced(tmp_path):
    paths = _files(tmp_path, "crash.mp4", "a.mp4", "crash2.mp4", "b.mp4")
    results = probe_videos(paths, timeout_s=30, workers=1, probe=crashes_on_crash)
    assert results == {paths[0]: "decode_fail", paths[1]: None, paths[2]: "decode_fail", paths[3]: None}


def test_the_cache_skips_unchanged_files_and_reprobes_changed_ones(tmp_path):
    cache = tmp_path / "cache.jsonl"
    paths = _files(tmp_path, "a.mp4", "b.mp4")
    assert probe_videos(paths, timeout_s=30, workers=1, probe=hangs_on_hang, cache=cache) == dict.fromkeys(paths)
    assert [json.loads(line)["reason"] for line in cache.read_text().splitlines()] == [None, None]
    with cache.open("a") as file:
        file.write('{"path": "torn')  # an interrupted append

    # Unchanged files come from the cache, so a probe that fails everything is never asked.
    assert probe_videos(paths, timeout_s=30, workers=1, probe=always_fails, cache=cache) == dict.fromkeys(paths)
    os.utime(paths[1], ns=(1, 1))
    assert probe_videos(paths, timeout_s=30, workers=1, probe=always_fails, cache=cache) == {
        paths[0]: None,
        paths[1]: "decode_fail",
    }


def test_a_cached_timeout_is_retried_with_a_longer_timeout(tmp_path):
    cache = tmp_path / "cache.jsonl"
    (path,) = _files(tmp_path, "hang.mp4")
    assert probe_videos([path], timeout_s=0.5, workers=1, probe=hangs_on_hang, cache=cache) == {path: "timeout"}
    assert probe_videos([path], timeout_s=0.5, workers=1, probe=always_fails, cache=cache) == {path: "timeout"}
    assert probe_videos([path], timeout_s=5, workers=1, probe=always_fails, cache=cache) == {path: "decode_fail"}


def test_a_bug_in_the_task_is_raised_not_counted(tmp_path):
    paths = _files(tmp_path, "a.mp4")
    with pytest.raises(RuntimeError, match="bug while probing a.mp4"):
        run_isolated(raises, paths, workers=1)


def test_no_items_starts_no_worker():
    assert run_isolated(raises, [], workers=4) == {}


ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from umt_cli.data.prepare.verify import run_isolated

def slow(marker):
    Path(marker).touch()
    time.sleep(1.0)  # the parent is killed meanwhile
    return None

if __name__ == "__main__":
    run_isolated(slow, [sys.argv[1]], workers=1)
"""


def test_a_worker_whose_parent_was_killed_exits_without_a_traceback(tmp_path):
    """Killing `prepare-data` mid-run must not make its orphaned workers print tracebacks."""
    import subprocess
    import sys

    script, marker = tmp_path / "run.py", tmp_path / "started"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(marker)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the worker never started"
    parent.kill()  # SIGKILL: no clean-up runs, the busy worker is orphaned
    # The orphan inherited the stderr pipe, so this reads until the orphan has exited too.
    _, stderr = parent.communicate(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_cached_results_of_another_backend_or_an_older_probe_are_not_reused(make_clip, tmp_path):
    data = make_clip("clip.mp4", frames=20).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    stat = cut.stat()
    entry = {"path": str(cut), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "reason": "open_fail"}
    cache = tmp_path / "cache.jsonl"
    untagged, other_backend = dict(entry), {**entry, "probe": "decord/2"}
    cache.write_text(json.dumps(untagged) + "\n" + json.dumps(other_backend) + "\n")  # an older umt's answers
    assert probe_videos([cut], timeout_s=30, workers=1, backend="pyav", cache=cache) == {cut: "truncated"}
    latest = json.loads(cache.read_text().splitlines()[-1])
    assert latest["reason"] == "truncated" and latest["probe"].startswith("pyav/")
