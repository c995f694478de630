"""What `umt evaluate` does after parsing: check the options, load the model, run, report (main process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from umt_cli.errors import UsageError

__all__ = ["run_retrieval", "default_out"]

MODES = ("standard", "paragraph")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")


def _choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")
    return value


def default_out(task: str, ckpt: Path, split: str) -> Path:
    """`eval/<checkpoint name>/<task>-<split>`."""
    name = ckpt.name if ckpt.is_dir() else ckpt.stem
    return Path("eval") / name / f"{task}-{split}"


def run_retrieval(**options: Any) -> dict[str, Any]:
    """`umt eval retrieval` (options as the command's parameters); returns the result."""
    from umt_cli.evaluation.report import print_retrieval, retrieval_markdown, write_report
    from umt_cli.evaluation.retrieval import RetrievalProtocol, RetrievalSettings, evaluate_retrieval
    from umt_cli.evaluation.runtime import eval_runtime
    from umt_cli.models.loading import load_model

    o = options
    mode = _choice("--mode", o["mode"], MODES)
    runtime = eval_runtime(
        _choice("--device", o["device"], DEVICES), _choice("--precision", o["precision"], PRECISIONS)
    )
    data = Path(o["data"])
    if not data.is_file():
        raise UsageError(f"--data: {data} {'is a folder, not an annotation file' if data.is_dir() else 'not found'}")
    root = Path(o["root"]) if o["root"] is not None else data.parent
    if not root.is_dir():
        raise UsageError(f"--root: {root} is not a folder")
    loaded = load_model(o["ckpt"], expect="video-text", trust=o["trust_checkpoint"], text_encoder=o["text_encoder"],
                        num_frames=o["frames"])  # fmt: skip
    pre = loaded.config.preprocess
    split = o["split"] or data.stem
    protocol = RetrievalProtocol(
        split=split,
        mode=mode,  # type: ignore[arg-type]
        merge_identical=o["merge_identical"],
        trimmed30=o["trimmed30"],
        k=o["k"],
        num_frames=loaded.config.vision.num_frames,
        size=o["size"] or pre.size,
        max_len=o["max_len"] or pre.max_len,
    )
    if protocol.size % loaded.config.vision.patch_size:
        raise UsageError(
            f"--size {protocol.size}: must be a multiple of the patch size {loaded.config.vision.patch_size}"
        )
    if protocol.size != loaded.config.vision.img_size:
        raise UsageError(f"--size {protocol.size}: this model runs at {loaded.config.vision.img_size} px")
    settings = RetrievalSettings(
        batch_size=o["batch_size"], rerank_batch=o["rerank_batch"], num_workers=o["workers"], rank=runtime.rank,
        world=runtime.world, device=runtime.device, autocast=runtime.autocast,
    )  # fmt: skip
    result = evaluate_retrieval(loaded, data, root, protocol, settings)
    if runtime.main:
        out = Path(o["out"]) if o["out"] is not None else default_out("retrieval", Path(o["ckpt"]), split)
        files = write_report(out, result, retrieval_markdown(result))
        print_retrieval(result)
        print(f"results: {files['results']}  report: {files['report']}")
    return result
