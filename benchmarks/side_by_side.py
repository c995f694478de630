"""What the step benchmarks share: run umt and the reference, each in its own child process (so each one's peak
memory can be read), alternating over rounds, on the same saved weights.

A benchmark script calls `main(...)` with its own pieces: `child(variant, device, steps, batch, weights_folder)`
returns one child's timings as JSON-able data, `save_weights(folder)` writes the weights both children load, and
`report(results, device, batch)` prints the comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable

VARIANTS = ("reference", "umt")


def main(
    script: str,
    doc: str,
    *,
    child: Callable[..., dict],
    save_weights: Callable[[str], None],
    report: Callable[[dict, str, int], None],
    batch_help: str,
    default_batch: dict[str, int],
    default_steps: int,
) -> None:
    """Parse the command line, then either run one child (`--child`) or all rounds of both and report."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help=batch_help)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=default_steps, help="timed steps per round (after a warm-up)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    require_device(parser, args)
    batch = args.batch or default_batch[args.device]
    if args.child:
        print(json.dumps(child(args.child, args.device, args.steps, batch, args.weights)))
        return
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as folder:
        save_weights(folder)
        for _ in range(args.rounds):
            for variant in VARIANTS:
                command = [sys.executable, script, "--child", variant, "--device", args.device, "--steps",
                           str(args.steps), "--batch", str(batch), "--weights", folder]  # fmt: skip
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode:
                    sys.exit(f"{variant} failed:\n{result.stderr[-3000:]}")
                results[variant].append(json.loads(result.stdout.strip().splitlines()[-1]))
    report(results, args.device, batch)


def device_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace, defaults: dict[str, dict]) -> None:
    """Fill the options left unset with the defaults of `--device`, and refuse `--device cuda` without a GPU."""
    for key, value in defaults[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    require_device(parser, args)


def require_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse `--device cuda` without a GPU in one line, before any work (a child is only started once the parent
    checked)."""
    import torch

    if args.device == "cuda" and not getattr(args, "child", None) and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")


def gpu_memory_and_exit_code(results: dict, device: str, ratio: float) -> None:
    """Print both variants' peak GPU memory (on CUDA) and exit non-zero when the speed-up is not a number."""
    import math

    if device == "cuda":
        gpu = {v: max(r["gpu_mib"] for r in rs) for v, rs in results.items()}
        print(f"peak GPU memory: reference {gpu['reference']:.0f} MiB, umt {gpu['umt']:.0f} MiB")
    if not math.isfinite(ratio):
        sys.exit(1)


def run_children(script: str, folder: str, rounds: int, line: Callable[[dict], str]) -> dict[str, list[dict]]:
    """Every round runs the reference, then umt, each as `script --child VARIANT --data FOLDER` in a fresh process
    (for benchmarks whose options `main`'s command line has no room for); prints `line(result)` after each child.

    Returns:
        Each variant's results (the JSON each child printed last), in round order.
    """
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS:
            command = [sys.executable, script, "--child", variant, "--data", str(folder)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[variant].append(result)
            print(f"  round {r + 1}/{rounds} {variant:>9}: {line(result)}", flush=True)
    return results
