"""Decodability probes for `prepare-data --verify`: each video is opened and decoded in a separate process.

A native decoder can hang while holding the GIL (dmlc/decord#373), which no in-process timeout interrupts, and it
can crash the process outright. So every probe runs in a spawned worker process that the parent kills when the probe
outlives its timeout ("timeout") or that dies under it ("decode_fail"); a fresh worker then takes over the queue.
`run_isolated` is that pool, shared with re-encoding. Spawned, not forked, workers never inherit a reader (decord
deadlocks on readers that cross a fork, dmlc/decord#294).

Results are cached as JSON lines keyed by (path, size, mtime) and by what probed them (the backend and
`PROBE_FORMAT`), appended as they arrive, so a re-run, or a run after an interruption, probes only new or changed
files, and a result of another backend or an older probe is never reused.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TypeVar

from umt_cli.data.decode import DecodeFailure, default_workers, open_video, resolve_backend
from umt_cli.utils.progress import progress

__all__ = ["probe_video", "probe_videos", "run_isolated"]

Item = TypeVar("Item", bound=Hashable)

CRASH_REASON = "decode_fail"
"""What a worker that dies mid-task (a native crash in the decoder) reports."""
PROBE_FORMAT = 2
"""Bump when `probe_video` can give another answer for the same file (2: the "truncated" reason), so that cached
answers of the older probe are not reused."""


def probe_video(path: Path, backend: str = "auto") -> str | None:
    """Open a video and decode its first, middle and last frames.

    Args:
        path: The video file.
        backend: Reader backend, as in `open_video`.

    Returns:
        None when the frames decode, else a reason from `decode.FAILURE_REASONS`.
    """
    try:
        reader = open_video(path, backend=backend)
        try:
            last = reader.num_frames - 1
            reader.get_batch([0, last // 2, last])
        finally:
            reader.close()
    except DecodeFailure as failure:
        return failure.reason
    except Exception:  # a damaged file can make any layer of a decoder raise; all of them mean "cannot decode"
        return "decode_fail"
    return None


def probe_videos(
    paths: Sequence[Path],
    *,
    timeout_s: float,
    workers: int,
    backend: str = "auto",
    cache: Path | None = None,
    probe: Callable[[Path], str | None] | None = None,
) -> dict[Path, str | None]:
    """Probe many videos in parallel worker processes, each probe bounded by `timeout_s`.

    Args:
        paths: The videos to probe.
        timeout_s: Seconds one probe may take (counted from when it is handed to a worker) before its worker is
            killed and the video reported as "timeout".
        workers: Worker processes; 0 = one per core.
        backend: Reader backend for the default probe.
        cache: A JSON-lines file of earlier results; unchanged files (same size and mtime) are not probed again
            by the same probe (for the default probe: the same backend and `PROBE_FORMAT`).
        probe: The per-file probe, `probe(path) -> reason | None`; a module-level function (or a `partial` of one)
            because it is pickled into the workers. Default: `probe_video` with `backend`.

    Returns:
        Every path (in input order) mapped to None (decodes) or a failure reason.
    """
    # A caller-supplied probe keys its own cache entries; the default one is keyed by backend and probe format.
    tag = None if probe is not None else f"{resolve_backend(backend)}/{PROBE_FORMAT}"
    probe = probe or partial(probe_video, backend=backend)
    known = _load_cache(cache, timeout_s, tag) if cache is not None else {}
    results: dict[Path, str | None] = {}
    todo: list[Path] = []
    for path in dict.fromkeys(paths):
        stamp = _stamp(path)
        if stamp is None:
            results[path] = "missing"  # nothing to decode, so no worker is needed to say so
        elif (str(path), *stamp) in known:
            results[path] = known[(str(path), *stamp)]
        else:
            todo.append(path)
    with progress("verify videos", len(results) + len(todo)) as bar:
        if results:
            bar.advance(len(results))
        with _CacheWriter(cache, timeout_s, tag) as writer:

            def record(path: Path, reason: str | None) -> None:
                writer.append(path, reason)
                bar.advance()

            results.update(run_isolated(probe, todo, workers=workers, timeout_s=timeout_s, on_result=record))
    return {path: results[path] for path in paths}


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None when it does not exist."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _load_cache(cache: Path, timeout_s: float, tag: str | None) -> dict[tuple[str, int, int], str | None]:
    """Earlier results of the probe `tag` by (path, size, mtime); the last line for a key wins, a torn last line is
    ignored."""
    known: dict[tuple[str, int, int], str | None] = {}
    if not cache.is_file():
        return known
    # A damaged byte must not stop the run: its line fails to parse below and that file is simply probed again.
    for line in cache.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
            key = (entry["path"], int(entry["size"]), int(entry["mtime_ns"]))
        except (ValueError, KeyError, TypeError):
            continue  # an interrupted append leaves a partial line
        if tag is not None and entry.get("probe") != tag:
            continue  # another backend or an older probe (or a cache written before entries were tagged)
        if entry["reason"] == "timeout" and entry.get("timeout_s", 0) < timeout_s:
            continue  # a longer timeout may let this one finish, so it deserves another try
        known[key] = entry["reason"]
    return known


class _CacheWriter:
    """Appends one JSON line per finished probe and flushes it, so an interrupted run keeps what it learnt."""

    def __init__(self, cache: Path | None, timeout_s: float, tag: str | None) -> None:
        self.cache, self.timeout_s, self.tag, self.file = cache, timeout_s, tag, None

    def __enter__(self) -> _CacheWriter:
        if self.cache is not None:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.cache.open("a", encoding="utf-8")
        return self

    def append(self, path: Path, reason: str | None) -> None:
        stamp = _stamp(path)
        if self.file is None or stamp is None:
            return
        entry: dict[str, Any] = {"path": str(path), "size": stamp[0], "mtime_ns": stamp[1], "reason": reason}
        if reason == "timeout":
            entry["timeout_s"] = self.timeout_s
        if self.tag is not None:
            entry["probe"] = self.tag
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


def run_isolated(
    func: Callable[[Item], str | None],
    items: Sequence[Item],
    *,
    workers: int,
    timeout_s: float | None = None,
    on_result: Callable[[Item, str | None], None] | None = None,
) -> dict[Item, str | None]:
    """Run `func(item)` for every item in spawned worker processes that can be killed one by one.

    Args:
        func: Returns None on success or a failure reason; pickled into the workers, so module-level.
        items: Picklable, hashable work items.
        workers: Worker processes; 0 = one per core.
        timeout_s: Seconds one item may take; its worker is then killed, the item reported as "timeout", and a
            fresh worker takes its place. None = no limit.
        on_result: Called in this process as each result arrives (for progress and incremental caches).

    Returns:
        Every item mapped to its result. A worker that dies mid-item reports `CRASH_REASON`.

    Raises:
        RuntimeError: `func` raised; the message carries the item and the worker's traceback.
    """
    pending = deque(dict.fromkeys(items))
    results: dict[Item, str | None] = {}
    slots: list[_Worker | None] = [None] * min(workers or default_workers(), len(pending))
    try:
        while pending or any(w is not None and w.busy for w in slots):
            _hand_out(slots, pending, func, timeout_s)
            for item, result in _collect(slots):
                results[item] = result
                if on_result is not None:
                    on_result(item, result)
    finally:
        for worker in slots:
            if worker is not None:
                worker.stop()
    return results


def _hand_out(slots: list[_Worker | None], pending: deque, func: Callable, timeout_s: float | None) -> None:
    """Give every idle worker its next item, starting workers (again) where a slot is empty."""
    for i, worker in enumerate(slots):
        if not pending:
            return
        if worker is None:
            worker = slots[i] = _Worker(func, timeout_s)
        if not worker.busy:
            worker.submit(pending.popleft())


def _collect(slots: list[_Worker | None]) -> list[tuple[Any, str | None]]:
    """Wait for the next finished, crashed or overdue items; empties the slots of workers that had to go."""
    busy = [w for w in slots if w is not None and w.busy]
    deadlines = [w.deadline for w in busy if w.deadline is not None]
    wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
    ready = set(wait([w.conn for w in busy], timeout=wait_s))
    finished = []
    for i, worker in enumerate(slots):
        if worker is None or not worker.busy:
            continue
        if worker.conn in ready:
            answer = worker.receive()
            if answer is None:
                continue
            item, result, alive = answer
        elif worker.deadline is not None and time.monotonic() >= worker.deadline:
            item, result, alive = worker.item, "timeout", False
        else:
            continue
        finished.append((item, result))
        if not alive:
            worker.stop()
            slots[i] = None
    return finished


class _Worker:
    """One spawned process running `_serve(func)`, fed one item at a time over a pipe."""

    def __init__(self, func: Callable, timeout_s: float | None) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, func), daemon=True)
        self.process.start()
        child.close()  # only the child holds its end now, so its death reads as EOF here
        self.timeout_s, self.started = timeout_s, False
        self.item: Any = None
        self.busy, self.deadline = False, None

    def submit(self, item: Any) -> None:
        self.conn.send(item)
        self.item, self.busy = item, True
        self._start_clock()

    def _start_clock(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else None

    def receive(self) -> tuple[Any, str | None, bool] | None:
        """(item, result, worker still usable) once the worker answered or died; None for its start-up signal."""
        try:
            ok, value = self.conn.recv()
        except (EOFError, OSError):
            if not self.started:  # an environment problem (imports, spawn), not a property of the item
                self.process.join()
                raise RuntimeError(
                    f"a worker process died while starting (exit code {self.process.exitcode})"
                ) from None
            self.busy = False
            return self.item, CRASH_REASON, False
        if ok is None:
            self.started = True
            self._start_clock()  # the timeout is for the task, not for starting an interpreter
            return None
        self.busy = False
        if not ok:
            raise RuntimeError(f"{self.item}: {value}")
        return self.item, value, True

    def stop(self) -> None:
        """End the process: politely when idle, by SIGKILL when it is stuck in a task."""
        if self.process.is_alive() and not self.busy:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


_PARENT_GONE = (BrokenPipeError, ConnectionResetError, EOFError)
"""What the pipe raises in a worker whose parent has died (killed, or interrupted before it could stop us)."""


def _serve(conn: Connection, func: Callable) -> None:
    """Worker loop: a start-up signal, then (True, result) for each item, or (False, traceback) when `func` raised.

    Returns quietly once the parent is gone: an orphan has nobody to report to, and a traceback from each orphan
    would bury the parent's own message (the parent re-runs unfinished items, so nothing is lost).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    try:
        conn.send((None, None))  # started: the parent's clock for the first item begins now
        while (item := conn.recv()) is not None:
            conn.send(_answer(func, item))
    except _PARENT_GONE:
        return


def _answer(func: Callable, item: object) -> tuple[bool, object]:
    """(True, func(item)), or (False, its traceback): a bug in `func` is reported to the parent, not counted."""
    try:
        return True, func(item)
    except Exception:
        return False, traceback.format_exc(limit=5)
