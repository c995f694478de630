"""What `umt evaluate` does after parsing: check the options, load the model, run, report (main process).

Cheap checks come first (options, the annotation file, the output folder), so a typo fails in a second rather than
after a multi-gigabyte checkpoint has loaded or an hour of features has been computed.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from umt_cli.errors import UsageError, first_line

__all__ = ["run_retrieval", "default_out"]

MODES = ("standard", "paragraph")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
"""Official video-text files: they record no input size (the position table is a sinusoid regenerated for any) and
no text head count."""
RERANK_BLOCK = 256
"""Queries per ITM re-ranking block when the command gives none (`RetrievalSettings.rerank_block`)."""


def choice(option: str, value: str, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`, else a `UsageError` naming the option."""
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")
    return value


def default_out(task: str, ckpt: Path, split: str) -> Path:
    """`eval/<checkpoint name>/<task>-<split>`."""
    name = ckpt.name if ckpt.is_dir() else ckpt.stem
    return Path("eval") / name / f"{task}-{split}"


def _annotation_paths(data: Any, root: Any) -> tuple[Path, Path]:
    """`--data` must be a file; `--root` (default: its folder) a folder."""
    data = Path(data)
    if not data.is_file():
        raise UsageError(f"--data: {data} {'is a folder, not an annotation file' if data.is_dir() else 'not found'}")
    root = Path(root) if root is not None else data.parent
    if not root.is_dir():
        raise UsageError(f"--root: {root} is not a folder")
    return data, root


def _check_text_encoder(text_encoder: str | None) -> None:
    """A `--text-encoder` the tokenizer cannot be built from fails before the model loads."""
    from umt_cli.data.text import build_tokenizer

    if text_encoder is None:
        return
    try:
        build_tokenizer(text_encoder)
    except UsageError as error:
        raise UsageError(f"--text-encoder: {first_line(error)}") from None


def _first_missing(out: Path) -> Path | None:
    """The topmost folder of `out` that does not exist yet (None if `out` exists): what a failed run removes."""
    return next((folder for folder in reversed([out, *out.parents]) if not folder.exists()), None)


def _writable_folder(out: Path) -> None:
    """Create `out` and prove a file can be written there, before any work (an `OSError` names the path)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
        pass


def _remove_empty(out: Path, created: Path | None) -> None:
    """Remove the folders up to `created` if nothing was written into them (a failed run leaves no empty folder)."""
    if created is None:
        return
    for folder in [out, *out.parents]:
        try:
            folder.rmdir()  # only empty folders go
        except OSError:
            return
        if folder == created:
            return


def _check_size(size: int, loaded: Any) -> None:
    vision = loaded.config.vision
    if size % vision.patch_size:
        raise UsageError(f"--size {size}: must be a multiple of the patch size {vision.patch_size}")
    if size != vision.img_size:
        raise UsageError(f"--size {size}: this model runs at {vision.img_size} px (its weights record the size)")


def run_retrieval(**options: Any) -> dict[str, Any]:
    """`umt eval retrieval` (options as the command's parameters); returns the result."""
    from umt_cli.evaluation.report import print_retrieval, retrieval_markdown, write_report
    from umt_cli.evaluation.retrieval import read_gallery
    from umt_cli.evaluation.runtime import end_runtime, eval_runtime

    o = options
    mode = choice("--mode", o["mode"], MODES)
    device, precision = choice("--device", o["device"], DEVICES), choice("--precision", o["precision"], PRECISIONS)
    data, root = _annotation_paths(o["data"], o["root"])
    split = o["split"] or data.stem
    out = Path(o["out"]) if o["out"] is not None else default_out("retrieval", Path(o["ckpt"]), split)
    gallery = read_gallery(data, mode=mode, merge_identical=o["merge_identical"])  # type: ignore[arg-type]
    _check_text_encoder(o["text_encoder"])
    runtime = eval_runtime(device, precision)  # type: ignore[arg-type]
    created = _first_missing(out) if runtime.main else None
    try:
        if runtime.main:
            _writable_folder(out)
        result = _retrieval(o, data, root, split, gallery, runtime)
    except BaseException:
        _remove_empty(out, created)
        raise
    if runtime.main:
        files = write_report(out, result, retrieval_markdown(result))
        print_retrieval(result)
        _warn_skipped(result["skipped"])
        print(f"results: {files['results']}  report: {files['report']}")
    end_runtime()
    return result


def _warn_skipped(skipped: list[dict[str, str]], shown: int = 5) -> None:
    """Name the videos that could not be decoded on the terminal too (the report lists them all)."""
    if not skipped:
        return
    names = ", ".join(f"{s['video']} ({s['reason'].split(':', 1)[0]})" for s in skipped[:shown])
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    print(f"warning: {len(skipped)} video(s) could not be decoded and were left out: {names}{more} (see the report)",
          file=sys.stderr)  # fmt: skip


def _retrieval(o: dict[str, Any], data: Path, root: Path, split: str, gallery: Any, runtime: Any) -> dict[str, Any]:
    """Load the model named by `--ckpt` and run the protocol the options describe."""
    from umt_cli.evaluation.retrieval import RetrievalProtocol, RetrievalSettings, evaluate_retrieval
    from umt_cli.models.loading import load_model

    loaded = load_model(o["ckpt"], expect="video-text", trust=o["trust_checkpoint"], text_encoder=o["text_encoder"],
                        num_frames=o["frames"], img_size=o["size"])  # fmt: skip
    pre = loaded.config.preprocess
    protocol = RetrievalProtocol(
        split=split,
        mode=o["mode"],
        merge_identical=o["merge_identical"],
        trimmed30=o["trimmed30"],
        k=o["k"],
        num_frames=loaded.config.vision.num_frames,
        size=o["size"] or pre.size,
        max_len=o["max_len"] or pre.max_len,
    )
    _check_size(protocol.size, loaded)
    settings = RetrievalSettings(
        batch_size=o["batch_size"], rerank_batch=o["rerank_batch"],
        rerank_block=o.get("rerank_block") or RERANK_BLOCK, num_workers=o["workers"], rank=runtime.rank,
        world=runtime.world, device=runtime.device, autocast=runtime.autocast,
    )  # fmt: skip
    return evaluate_retrieval(loaded, data, root, protocol, settings, gallery=gallery)
