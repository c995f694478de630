"""`umt eval retrieval` on two CPU processes (gloo, launched by torchrun) gives the bits of one process.

Both runs go through this file as a script (below `__main__`): it runs the real CLI with re-ranking blocks of 2
queries (so both the features and the ITM blocks are dealt to the two processes) and saves the score matrices the
evaluation computed, so the comparison is of every score, not only of the coarse metrics. One process also runs in a
subprocess with the same thread count, so a difference can only come from sharding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve()


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def launch(command: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def evaluate(out: Path, args: list[str], processes: int) -> tuple[dict, dict]:
    """results.json and the recorded scores of one evaluation on `processes` processes."""
    script = [str(SCRIPT), str(out / "scores.pt"), "eval", "retrieval", *args, "--out", str(out)]
    if processes == 1:
        output = launch([sys.executable, *script])
    else:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                    "--master-port", free_port()]  # fmt: skip
        output = launch([*torchrun, *script])
    assert output.count("results: ") == 1  # one process writes and speaks for all
    return json.loads((out / "results.json").read_text()), torch.load(out / "scores.pt")


def test_two_processes_give_the_scores_and_metrics_of_one(tmp_path, stage2_run, synthetic_dir):
    entries = json.loads((synthetic_dir / "test.json").read_text())
    entries.insert(1, {"video": "videos/test/gone.mp4", "caption": ["a lost clip", "never recorded"]})
    annotations = tmp_path / "test.json"
    annotations.write_text(json.dumps(entries))
    # batches of 1 deal the 5 videos and 14 texts unevenly; k 3 re-ranks part of each list
    args = ["--ckpt", str(stage2_run), "--data", str(annotations), "--root", str(synthetic_dir), "--batch-size", "1",
            "--rerank-batch", "4", "--k", "3", "--device", "cpu"]  # fmt: skip
    one, one_scores = evaluate(tmp_path / "one", args, 1)
    two, two_scores = evaluate(tmp_path / "two", args, 2)
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["metrics"] == one["metrics"]
    assert two["counts"] == one["counts"] == {"texts": 12, "videos": 4, "skipped_videos": 1, "dropped_texts": 2}
    assert two["skipped"] == one["skipped"] and one["skipped"][0]["video"] == "videos/test/gone.mp4"
    assert one_scores.keys() == two_scores.keys() == {"itc", "t2v", "v2t"}
    for key, scores in one_scores.items():
        assert torch.equal(two_scores[key], scores), key
    assert one_scores["t2v"].shape == (12, 3) and one_scores["v2t"].shape == (4, 3)


def _record_and_run(scores_file: str, cli_args: list[str]) -> None:
    """Run the CLI with re-ranking blocks of 2 queries, saving the ITC matrix and the ITM logits it computed."""
    import umt_cli.evaluation.retrieval as retrieval
    import umt_cli.evaluation.run as run
    from umt_cli.cli.app import main

    run.RERANK_BLOCK = 2  # several blocks per direction, dealt to both processes
    seen: dict[str, torch.Tensor] = {}
    real_similarity, real_rerank = retrieval.frame_similarity, retrieval._rerank

    def similarity(frames, embeds):
        seen["itc"] = real_similarity(frames, embeds)
        return seen["itc"]

    def rerank(model, texts, tokens, itc, direction, *args):
        seen[direction] = real_rerank(model, texts, tokens, itc, direction, *args)
        return seen[direction]

    retrieval.frame_similarity, retrieval._rerank = similarity, rerank
    sys.argv = ["umt", *cli_args]
    try:
        main()
    except SystemExit as end:
        if end.code:
            raise
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(seen, scores_file)


if __name__ == "__main__":
    _record_and_run(sys.argv[1], sys.argv[2:])
