"""`umt quickstart`: the built-in default job on CPU: synthetic data -> the training data pipeline -> a short
stage-1 distillation with the tiny recipe -> a short stage-2 pre-training from it. Later stages (evaluate, export)
join the chain as they land.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from umt_cli.data.datasets import build_train_dataset
from umt_cli.data.failures import DataHealth
from umt_cli.data.loaders import ShardedSampler, build_loader, iterate_epoch
from umt_cli.data.prepare.synthetic import FORMAT, prepare_synthetic
from umt_cli.recipe import DistillRecipe, PretrainRecipe, load_recipe
from umt_cli.recipe.catalog import resolve_recipe
from umt_cli.recipe.prepare import SyntheticSource

__all__ = ["run_quickstart"]


def _synthetic(data: Path, console: Console) -> Path:
    """Generate the synthetic data set once; reuse it when its manifest says it was made with the same options."""
    source = SyntheticSource(out=data)
    manifest = data / "manifest.json"
    made = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if made.get("format") == FORMAT and made.get("options") == source.model_dump(mode="json"):
        console.print(f"reusing synthetic data in {data}", style="dim", markup=False)
        return data
    console.print(f"generating the synthetic data set in {data} ...", markup=False)
    prepare_synthetic(source)
    return data


def run_quickstart(out: Path, *, batches: int = 4) -> dict[str, object]:
    """Prepare data, show the training data pipeline, then distil the tiny student (resuming a finished run)."""
    console = Console()
    data = _synthetic(out / "data" / "synthetic", console)
    overrides = [f"data.train_list={data / 'train.csv'}"]  # paths in the list are relative to its folder
    recipe = load_recipe(resolve_recipe("quickstart/distill"), overrides, expect=DistillRecipe)
    dataset = build_train_dataset(recipe)
    sampler = ShardedSampler(len(dataset), batch_size=recipe.data.batch_size, seed=recipe.run.seed)
    loader = build_loader(dataset, sampler, num_workers=recipe.data.num_workers)
    health = DataHealth(max_fail_ratio=recipe.decode.max_fail_ratio)
    start, shown = time.perf_counter(), 0
    for batch in iterate_epoch(loader, health):
        if shown < batches:
            console.print(
                f"batch {shown}: video {tuple(batch.video.shape)} {batch.video.dtype}, labels {batch.label.tolist()}"
            )
        shown += 1
    elapsed = time.perf_counter() - start
    summary = {
        "data": str(data),
        "recipe": "quickstart/distill",
        "clips": health.delivered,
        "clip_shape": list(batch.video.shape[1:]),
        "clips_per_s": round(health.delivered / elapsed, 1),
        "data_health": health.line(),
    }
    console.print(
        f"one epoch: {health.delivered} clips in {elapsed:.2f}s ({summary['clips_per_s']} clips/s); {health.line()}"
    )
    from umt_cli.stages import distill, pretrain

    console.print("stage 1: distilling the tiny student from the tiny teacher ...")
    result = distill.run(recipe, out / "runs" / "distill", resume="auto", overrides=overrides)
    summary.update({"distill_steps": result["steps"], "distill_final_loss": result["final_loss"],
                    "student_weights": result["weights"]})  # fmt: skip
    console.print("stage 2: video-text pre-training from that student, with a tiny random BERT ...")
    stage2 = [
        f"data.corpora.clips.annotations={data / 'train.json'}",
        f"data.corpora.clips.root={data}",
        f"data.corpora.stills.annotations={data / 'train_images.json'}",
        f"data.corpora.stills.root={data}",
        f"text.encoder={data / 'bert'}",
        f"init.student={result['weights']}",
    ]
    recipe2 = load_recipe(resolve_recipe("quickstart/pretrain"), stage2, expect=PretrainRecipe)
    result2 = pretrain.run(recipe2, out / "runs" / "pretrain", resume="auto", overrides=stage2)
    summary.update({"pretrain_steps": result2["steps"], "pretrain_final_loss": result2["final_loss"],
                    "video_text_weights": result2["weights"]})  # fmt: skip
    return summary
