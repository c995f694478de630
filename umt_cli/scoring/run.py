"""What `umt score align` and `umt score fvd` do after parsing: check the inputs, settle the protocol, load the model
(strictly), compute, write the JSON result with the protocol block beside the numbers, print a summary.

Cheap checks come first (protocol, prompt file, video folders, feature files, output folder) so that a typo fails
before a large checkpoint loads. Run on several processes with `accelerate launch -m umt_cli score ...`.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from umt_cli.errors import DataError, UsageError
from umt_cli.evaluation.run import DEVICES, _first_missing, _remove_empty, _writable_folder, choice
from umt_cli.evaluation.runtime import end_runtime
from umt_cli.scoring.protocols import ScoreProtocol, clip_reader, prompt_text, resolve_protocol
from umt_cli.utils.files import sha256_file, write_json

__all__ = ["run_align", "run_fvd", "HEADS"]

HEADS = {
    "itm": ("UMTScore", "raw ITM logit of the match class (fusion over all frame tokens); not a probability"),
    "itc": ("UMT clip score", "mean over frames of cos(frame embedding, prompt embedding), temperature 1"),
}
SHOWN = 10  # ids named in a warning


def _protocol(o: dict[str, Any]) -> tuple[ScoreProtocol, dict[str, Any]]:
    overrides = {key: o.get(key) for key in ("frames", "sampling", "size", "antialias", "clean_text", "max_len",
                                             "precision")}  # fmt: skip
    return resolve_protocol(o["protocol"], overrides)


def _runtime(o: dict[str, Any], protocol: ScoreProtocol, record: dict[str, Any]) -> tuple[Any, ScoreProtocol]:
    """Start (or join) the process group. On the CPU the protocol's half precision becomes fp32 (recorded as an
    override); asking for half precision there is an error."""
    import torch

    from umt_cli.evaluation.runtime import eval_runtime

    device = choice("--device", o["device"], DEVICES)
    on_cpu = device == "cpu" or not torch.cuda.is_available()
    if on_cpu and protocol.precision != "fp32" and o.get("precision") is None:
        record["overridden"]["precision"] = {"protocol": protocol.precision, "used": "fp32",
                                             "why": "the CPU computes in fp32"}  # fmt: skip
        protocol = replace(protocol, precision="fp32")
        record["precision"] = "fp32"
    runtime = eval_runtime(device, protocol.precision)  # type: ignore[arg-type]
    record["device"] = runtime.device
    return runtime, protocol


def _load(o: dict[str, Any], protocol: ScoreProtocol) -> Any:
    """The video-text model at `--ckpt`, strictly, run at the protocol's frame count and size."""
    from umt_cli.models.loading import load_model

    loaded = load_model(o["ckpt"], expect="video-text", trust=o["trust_checkpoint"], text_encoder=o["text_encoder"],
                        num_frames=protocol.frames, img_size=protocol.size)  # fmt: skip
    vision = loaded.config.vision
    if vision.img_size != protocol.size:
        raise UsageError(f"--size {protocol.size} (the protocol's frame side): this model runs at {vision.img_size} "
                         f"px", hint=f"pass --size {vision.img_size}")  # fmt: skip
    return loaded


def _tokenizer(source: str) -> Any:
    """The tokenizer of a local BERT folder, or of a hub id already in the hub cache: `umt score` downloads nothing
    (the upstream scripts fetch BERT weights that the checkpoint then overwrites)."""
    from umt_cli.data.text import build_tokenizer
    from umt_cli.errors import first_line

    try:
        return build_tokenizer(source, cached_only=True)
    except UsageError as error:
        raise UsageError(f"--text-encoder: {first_line(error)}", hint="pass --text-encoder DIR") from None


def _weights_block(loaded: Any) -> dict[str, Any]:
    return {"file": loaded.source, "sha256": loaded.sha256, "kind": loaded.kind}


def _out_folder(o: dict[str, Any], default: Path, main: bool) -> tuple[Path, Path | None]:
    out = Path(o["out"]) if o.get("out") is not None else default
    created = _first_missing(out) if main else None
    if main:
        _writable_folder(out)
    return out, created


# --- align ----------------------------------------------------------------------------------------------------------


def run_align(**o: Any) -> dict[str, Any]:
    """`umt score align` (options as the command's parameters); returns what `scores.json` holds."""
    from umt_cli.scoring.inputs import list_videos, pair_prompts, read_prompts

    head = choice("--head", o["head"], tuple(HEADS))
    protocol, record = _protocol(o)
    pairing = pair_prompts(read_prompts(o["prompts"]), list_videos(o["videos"]))
    runtime, protocol = _runtime(o, protocol, record)
    videos = Path(o["videos"])
    out, created = _out_folder(o, Path("score") / videos.stem / f"align-{protocol.name}", runtime.main)
    try:
        result = _align(o, head, protocol, record, pairing, runtime)
    except BaseException:
        _remove_empty(out, created)
        raise
    if runtime.main:
        write_json(out / "scores.json", result)
        _print_align(result, out / "scores.json")
    end_runtime()
    return result


def _align(o: dict[str, Any], head: str, protocol: ScoreProtocol, record: dict, pairing: Any, runtime: Any) -> dict:
    from umt_cli.data.text import word_piece_counts
    from umt_cli.evaluation.features import Shard
    from umt_cli.scoring.pairs import score_pairs
    from umt_cli.utils.progress import progress

    loaded = _load(o, protocol)
    model = loaded.model.to(runtime.device)
    tokenizer = _tokenizer(loaded.tokenizer)
    texts = [prompt_text(protocol, prompt) for prompt in pairing.prompts]
    truncated = [key for key, count in zip(pairing.ids, word_piece_counts(tokenizer, texts))
                 if count > protocol.max_len - 1]  # fmt: skip
    reader = clip_reader(protocol, loaded.config.preprocess, backend=o["backend"])
    with progress("scoring", total=len(pairing.ids), enabled=runtime.main) as bar:
        outputs = score_pairs(model, pairing.videos, reader, prompts=texts, tokenizer=tokenizer,
                              max_len=protocol.max_len, features=True, batch_size=o["batch_size"],
                              shard=Shard(runtime.rank, runtime.world), device=runtime.device,
                              autocast=runtime.autocast, num_workers=o["workers"], bar=bar)  # fmt: skip
    cache = _keep_features(o, loaded, record, pairing, outputs) if runtime.main else None
    values = getattr(outputs, head)
    scores = {key: value for i, (key, value) in enumerate(zip(pairing.ids, values)) if i not in outputs.failed}
    name, definition = HEADS[head]
    return {
        "metric": name,
        "head": head,
        "definition": definition,
        "mean": statistics.fmean(scores.values()) if scores else None,
        "count": len(scores),
        "scores": scores,
        "protocol": {**record, "weights": _weights_block(loaded)},
        "warnings": {"truncated_prompts": len(truncated), "truncated_ids": truncated},
        "skipped": {
            "no_video": pairing.no_video,
            "unreadable": {pairing.ids[i]: reason for i, reason in outputs.failed.items()},
        },
        "unused_videos": pairing.unused_videos,
        "fvd_features": cache,
    }


def _keep_features(o: dict, loaded: Any, record: dict, pairing: Any, outputs: Any) -> str | None:
    """The same pass computed each video's UMT-FVD feature: cache them as `umt score fvd` would (a later `fvd` on
    this folder, checkpoint and protocol then only computes the distance). Only for a folder of videos."""
    from umt_cli.data.decode import resolve_backend
    from umt_cli.scoring.feature_files import cache_file, cache_key, save_cached

    folder = Path(o["videos"])
    if not folder.is_dir():
        return None
    videos = dict(zip(pairing.ids, pairing.videos))
    key = cache_key(loaded.sha256, record, resolve_backend(o["backend"]), videos)
    path = cache_file(Path(o["cache_dir"]) if o.get("cache_dir") else folder, key)
    kept = [i for i in range(len(pairing.ids)) if i not in outputs.failed]
    failed = {pairing.ids[i]: reason for i, reason in outputs.failed.items()}
    return str(path) if save_cached(path, outputs.features[kept].numpy(), key, failed) else None


def _print_align(result: dict[str, Any], path: Path) -> None:
    from umt_cli.cli._common import print_summary

    mean, weights = result["mean"], result["protocol"]["weights"]
    print_summary(f"{result['metric']} ({result['head']})", {
        "mean": "-" if mean is None else f"{mean:.4f}",
        "pairs scored": result["count"],
        "weights": f"{weights['file']} (sha256 {str(weights['sha256'])[:12]})",
    })  # fmt: skip
    print(f"protocol: {_protocol_line(result['protocol'])}")  # one unwrapped line: it is quoted with the number
    warnings = result["warnings"]
    if warnings["truncated_prompts"]:
        _warn(f"{warnings['truncated_prompts']} prompt(s) longer than {result['protocol']['max_len']} tokens were "
              f"truncated", warnings["truncated_ids"])  # fmt: skip
    if result["skipped"]["no_video"]:
        _warn(f"{len(result['skipped']['no_video'])} prompt id(s) have no video and were not scored",
              result["skipped"]["no_video"])  # fmt: skip
    unreadable = result["skipped"]["unreadable"]
    if unreadable:
        _warn(f"{len(unreadable)} video(s) could not be decoded and were not scored",
              [f"{key} ({reason.split(':', 1)[0]})" for key, reason in unreadable.items()])  # fmt: skip
    print(f"scores: {path}")


def _protocol_line(record: dict[str, Any]) -> str:
    """`fetv · 12 frames (middle) · 224 px, no antialias · cleaned text, 32 tokens · fp32 on cpu` (+ overrides)."""
    line = (f"{record['name']} · {record['frames']} frames ({record['sampling']}) · {record['size']} px, "
            f"{'antialias' if record['antialias'] else 'no antialias'} · "
            f"{'cleaned' if record['clean_text'] else 'raw'} text, {record['max_len']} tokens · "
            f"{record['precision']} on {record['device']}")  # fmt: skip
    if record["overridden"]:
        changed = ", ".join(
            f"{key} {value['protocol']} -> {value['used']}" for key, value in record["overridden"].items()
        )
        line += f" · overridden: {changed}"
    return line


def _warn(message: str, names: list[str]) -> None:
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    print(f"warning: {message}: {shown}", file=sys.stderr)


# --- fvd ------------------------------------------------------------------------------------------------------------


def run_fvd(**o: Any) -> dict[str, Any]:
    """`umt score fvd` (options as the command's parameters); returns what `fvd.json` holds."""
    from umt_cli.scoring.fvd import SEEDS, SIZES, fvd_runs, summaries

    sizes = _positive_ints("--n", o.get("n")) or list(SIZES)
    seeds = _positive_ints("--seeds", o.get("seeds"), least=0) or list(SEEDS)
    protocol, record = _protocol(o)
    sources = {side: _source(side, o[side]) for side in ("real", "fake")}
    needs_model = any(kind == "videos" for kind, _ in sources.values())
    if needs_model and o.get("ckpt") is None:
        raise UsageError("--ckpt: needed to compute features of a video folder (or pass feature files)")
    runtime, protocol = _runtime(o, protocol, record)
    default = Path("score") / f"fvd-{Path(o['fake']).stem}-vs-{Path(o['real']).stem}"
    out, created = _out_folder(o, default, runtime.main)
    try:
        features, info = _features(o, sources, protocol, record, runtime)
        _check_widths(o, features)
        runs = fvd_runs(features["real"], features["fake"], sizes, seeds)
    except BaseException:
        _remove_empty(out, created)
        raise
    result = {
        "figures": summaries(runs),
        "runs": [vars(run) for run in runs],
        "features": info,
        "protocol": record,
    }
    if runtime.main:
        write_json(out / "fvd.json", result)
        _print_fvd(result, out / "fvd.json")
    end_runtime()
    return result


def _positive_ints(option: str, values: list[str] | None, least: int = 1) -> list[int]:
    """Integers from a repeatable option whose values may also be comma-separated (`--n 32,64 --n 128`)."""
    numbers = []
    for value in values or []:
        for part in str(value).split(","):
            if not part.strip():
                continue
            try:
                number = int(part)
            except ValueError:
                raise UsageError(f"{option} {part!r}: not an integer") from None
            if number < least:
                raise UsageError(f"{option} {number}: must be at least {least}")
            numbers.append(number)
    return numbers


def _source(side: str, value: Any) -> tuple[str, Path]:
    """("videos", folder) or ("file", feature file), checked to exist."""
    from umt_cli.scoring.feature_files import FEATURE_SUFFIXES

    path = Path(value)
    if path.is_dir():
        return "videos", path
    if not path.exists():
        raise UsageError(f"--{side}: {path} not found")
    if path.suffix.lower() not in FEATURE_SUFFIXES:
        raise UsageError(f"--{side} {path}: not a folder of videos, nor a feature file ({', '.join(FEATURE_SUFFIXES)})")
    return "file", path


def _features(o: dict, sources: dict, protocol: ScoreProtocol, record: dict, runtime: Any) -> tuple[dict, dict]:
    """Each side's (n, E) features and where they came from; the model is loaded only if a folder's features are
    not cached yet."""
    from umt_cli.scoring.feature_files import read_features

    features, info, model = {}, {}, []
    if any(kind == "videos" for kind, _ in sources.values()):  # the caches' key, hashed once for both sides
        o = {**o, "ckpt_sha256": _weights_sha(Path(o["ckpt"]))}
    for side, (kind, path) in sources.items():
        if kind == "file":
            features[side] = read_features(path, option=f"--{side}")
            info[side] = {"source": str(path), "count": len(features[side]), "from": "feature file"}
        else:
            features[side], info[side] = _folder_features(o, side, path, protocol, record, runtime, model)
    return features, info


def _folder_features(o: dict, side: str, folder: Path, protocol: ScoreProtocol, record: dict, runtime: Any,
                     model: list) -> tuple[Any, dict]:  # fmt: skip
    """A folder's features, from its cache when made under the same checkpoint, protocol and videos."""
    import numpy as np

    from umt_cli.data.decode import resolve_backend
    from umt_cli.scoring.feature_files import cache_file, cache_key, load_cached, save_cached
    from umt_cli.scoring.inputs import list_videos

    videos = list_videos(folder, option=f"--{side}")
    key = cache_key(o["ckpt_sha256"], record, resolve_backend(o["backend"]), videos)
    path = cache_file(Path(o["cache_dir"]) if o.get("cache_dir") else folder, key)
    cached = load_cached(path, key)
    if cached is not None:
        features, failed = cached
        source = "cache"
    else:
        features, failed = _compute_features(o, side, videos, protocol, runtime, model)
        if runtime.main:
            save_cached(path, features, key, failed)
        source = "computed"
    if len(features) < 2:
        raise DataError(f"--{side} {folder}: {len(features)} video(s) could be decoded; UMT-FVD needs at least 2")
    if failed:
        _warn(f"--{side}: {len(failed)} video(s) could not be decoded and were left out",
              [f"{key} ({reason.split(':', 1)[0]})" for key, reason in failed.items()])  # fmt: skip
    info = {"source": str(folder), "count": len(features), "from": source, "cache": str(path), "skipped": failed}
    return np.asarray(features, dtype=np.float32), info


def _weights_sha(ckpt: Path) -> str:
    """The sha256 of the weights file `--ckpt` names (the file itself, or the weights inside a run or export
    folder)."""
    from umt_cli.models.finetune_init import weights_file

    if not ckpt.exists():
        raise UsageError(f"--ckpt: {ckpt} not found")
    return sha256_file(weights_file(ckpt))


def _compute_features(o: dict, side: str, videos: dict, protocol: ScoreProtocol, runtime: Any,
                      model: list) -> tuple[Any, dict[str, str]]:  # fmt: skip
    from umt_cli.evaluation.features import Shard
    from umt_cli.scoring.pairs import score_pairs
    from umt_cli.utils.progress import progress

    if not model:  # loaded once, for whichever side needs it first
        loaded = _load(o, protocol)
        model.append((loaded.model.to(runtime.device), loaded))
    network, loaded = model[0]
    ids, paths = list(videos), list(videos.values())
    reader = clip_reader(protocol, loaded.config.preprocess, backend=o["backend"])
    with progress(f"{side} features", total=len(paths), enabled=runtime.main) as bar:
        outputs = score_pairs(network, paths, reader, features=True, batch_size=o["batch_size"],
                              shard=Shard(runtime.rank, runtime.world), device=runtime.device,
                              autocast=runtime.autocast, num_workers=o["workers"], bar=bar)  # fmt: skip
    kept = [i for i in range(len(ids)) if i not in outputs.failed]
    failed = {ids[i]: reason for i, reason in outputs.failed.items()}
    return outputs.features[kept].numpy(), failed


def _check_widths(o: dict, features: dict) -> None:
    real, fake = features["real"].shape[1], features["fake"].shape[1]
    if real != fake:
        raise DataError(f"--fake {o['fake']}: features {fake} wide, but --real {o['real']}: {real} wide (both "
                        "sides must come from the same model)")  # fmt: skip


def _print_fvd(result: dict[str, Any], path: Path) -> None:
    from umt_cli.cli._common import print_summary

    rows = {}
    for figure in result["figures"].values():
        value = figure["value"]
        rows[figure["label"]] = "-" if value is None else f"{value:.2f}"
    for side in ("real", "fake"):
        info = result["features"][side]
        rows[f"{side} features"] = f"{info['count']} from {info['from']} ({info['source']})"
    print_summary("UMT-FVD", rows)
    print(f"protocol: {_protocol_line(result['protocol'])}")
    print(f"results: {path}")
