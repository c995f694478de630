"""Gathering with gradient: two CPU processes (gloo) equal one process holding the whole batch, or half of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from umt_cli.losses.vtc import vtc_loss
from umt_cli.utils.dist import gather_no_grad, gather_with_grad

WORLD, BATCH = 2, 4  # processes, samples per process
IDX = torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])  # repeated ids across the two halves: positives on both processes


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(WORLD * BATCH, 1, 6, generator=generator), torch.randn(WORLD * BATCH, 5, generator=generator)


def heads() -> tuple[torch.nn.Linear, torch.nn.Linear, torch.nn.Parameter]:
    """Tiny `vision_proj`, `text_proj` and temperature, identical in every process."""
    torch.manual_seed(0)
    return torch.nn.Linear(6, 4), torch.nn.Linear(5, 4), torch.nn.Parameter(torch.tensor(0.07))


def gradients(
    vision: torch.Tensor, text: torch.Tensor, idx: torch.Tensor, mode: str | None
) -> tuple[float, dict[str, torch.Tensor]]:
    """VTC on the gathered projections of this process's rows; its loss and parameter gradients."""
    vision_proj, text_proj, temp = heads()
    v, t = vision_proj(vision), text_proj(text)  # (B, 1, E), (B, E)
    if mode is not None:
        v, t, idx = gather_with_grad(v, mode=mode), gather_with_grad(t, mode=mode), gather_no_grad(idx)
    loss = vtc_loss(v, t, idx, temp)
    loss.backward()
    named = {f"vision.{k}": p for k, p in vision_proj.named_parameters()}
    named |= {f"text.{k}": p for k, p in text_proj.named_parameters()} | {"temp": temp}
    return loss.item(), {k: p.grad.detach().clone() for k, p in named.items()}


def worker(rank: int, folder: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        vision, text = batch()
        rows = slice(rank * BATCH, (rank + 1) * BATCH)
        results = {}
        for mode in ("full", "local_grad"):
            loss, grads = gradients(vision[rows], text[rows], IDX[rows], mode)
            for grad in grads.values():  # what DDP does: average the gradients over the processes
                dist.all_reduce(grad)
                grad /= WORLD
            results[mode] = (loss, grads)
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("gloo")
    mp.start_processes(worker, args=(str(folder),), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_full_gather_equals_one_process_with_the_whole_batch(two_processes):
    vision, text = batch()
    single_loss, single = gradients(vision, text, IDX, mode=None)
    for result in two_processes:
        loss, grads = result["full"]
        assert loss == pytest.approx(single_loss, rel=1e-6)  # every process computes the same global loss
        for key, grad in single.items():
            torch.testing.assert_close(grads[key], grad, rtol=1e-5, atol=1e-7, msg=key)
    assert single["vision.weight"].abs().sum() > 0


def test_local_grad_gives_half_the_projection_gradient(two_processes):
    vision, text = batch()
    _, single = gradients(vision, text, IDX, mode=None)
    for result in two_processes:
        _, grads = result["local_grad"]
        for key, grad in single.items():
            # upstream's convention: the gathered projections get 1 / world size; the temperature, used after the
            # gather by every process on the whole batch, keeps its full gradient
            scale = 1.0 if key == "temp" else 1 / WORLD
            torch.testing.assert_close(grads[key], grad * scale, rtol=1e-5, atol=1e-7, msg=key)


def test_identity_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x, mode="full") is x and gather_with_grad(x, mode="local_grad") is x
    assert gather_no_grad(torch.arange(3)).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="mode must be one of full, local_grad"):
        gather_with_grad(x, mode="sum")
