"""A stage of its own on the shared training engine, for `test_stub_stage.py`: nothing of `umt_cli/stages/`.

    python tests/training/stub_stage.py RUN_DIR [--resume auto] [KEY=VALUE ...]

It reads the `quickstart/distill` recipe (for its data, optimizer, schedule, checkpoint and run tables) with the
overrides given, and trains a tiny regressor of its own: pooled pixels -> linear -> dropout -> linear, fitted by MSE
to a fixed function of the clip. Dropout draws from the global torch RNG, so an exact resume needs the RNG state the
engine checkpoints. Environment: `STUB_SLEEP_S` sleeps that long in every step (so a test can kill the run midway);
`STUB_TRACE` names a file that gets one line per step: the epoch and the batch's sample indices.
"""

# ruff: noqa: E402 (the imports of umt_cli follow the sys.path line that makes them work)
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `umt_cli` without installing

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from umt_cli.data.datasets import build_train_dataset
from umt_cli.data.loaders import ClipBatch
from umt_cli.recipe import DistillRecipe, load_recipe
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.training.loop import StepOutput, WeightsExport, fit
from umt_cli.training.plan import make_plan
from umt_cli.training.session import assemble, open_session
from umt_cli.utils.optim import build_adamw

OUT = 12  # 3 channels x 2 x 2 pooled cells: what the model predicts


def target(video: Tensor) -> Tensor:
    """A fixed function of the clip (B, 3, T, H, W) -> (B, OUT): the coarse mean colours, squashed."""
    return torch.tanh(F.adaptive_avg_pool3d(video, (1, 2, 2)).flatten(1))


def build_model() -> nn.Module:
    """Pooled pixels (3 x 4 x 4 x 4 cells) -> OUT, with dropout between the layers."""
    return nn.Sequential(
        nn.AdaptiveAvgPool3d((4, 4, 4)),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4 * 4, 32),
        nn.GELU(),
        nn.Dropout(0.5),
        nn.Linear(32, OUT),
    )


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--resume", default=None)
    args = parser.parse_args(argv)

    recipe = load_recipe(resolve_recipe("quickstart/distill"), args.overrides, expect=DistillRecipe)
    session = open_session(recipe, args.run_dir, resume=args.resume)
    dataset = build_train_dataset(recipe, status_dir=session.decoding_status_dir())
    torch.manual_seed(recipe.run.seed)  # the same initial weights on every process
    model = build_model()
    session.seed_process()  # then dropout's stream, per process
    sampler, loader = session.train_loader(dataset)
    plan = make_plan(len(dataset), batch_size=recipe.data.batch_size, world_size=session.accelerator.num_processes,
                     optim=recipe.optim, schedule=recipe.schedule)  # fmt: skip
    o = recipe.optim
    optimizer = build_adamw(model, lr=plan.peak_lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps)
    run = assemble(session, model=model, optimizer=optimizer, sampler=sampler, loader=loader, plan=plan,
                   overrides=args.overrides)  # fmt: skip

    sleep_s = float(os.environ.get("STUB_SLEEP_S", "0"))
    trace = os.environ.get("STUB_TRACE")

    def step(batch: ClipBatch, epoch: int) -> StepOutput:
        video = batch.video.to(run.accelerator.device)
        with run.accelerator.autocast():
            predicted = run.model(video)
        loss = F.mse_loss(predicted.float(), target(video))
        if trace:
            with open(trace, "a", encoding="utf-8") as file:
                file.write(f"{epoch} {' '.join(map(str, batch.index.tolist()))}\n")
        if sleep_s:
            time.sleep(sleep_s)
        return StepOutput(total=loss, parts={"loss/mse": loss.detach()})

    return fit(run, step, WeightsExport("stub.safetensors", {"format": "umt-stub-stage"}))


if __name__ == "__main__":
    main()
