"""Guards of an optimizer step: stop cleanly on a non-finite loss; measure (and optionally clip) the gradient norm."""

from __future__ import annotations

import torch
from torch import Tensor

from umt_cli.errors import UmtError
from umt_cli.training.session import Run
from umt_cli.utils import checkpoint as ckpt
from umt_cli.utils.files import write_json

__all__ = ["stop_if_not_finite", "gradient_norm"]


def stop_if_not_finite(run: Run, loss: Tensor, step_index: int, sample_indices: Tensor) -> None:
    """Stop every process at once on a non-finite loss, naming the step and samples (in `nonfinite.json` too); the
    last checkpoint stays as it is.

    Args:
        loss: This process's 0-D loss of the micro-batch.
        step_index: The 0-based optimizer step (reported 1-based).
        sample_indices: (B,) data-set indices of the micro-batch.
    """
    acc = run.accelerator
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=acc.device)
    if acc.num_processes > 1:
        bad = acc.reduce(bad, reduction="sum")
    if bad.item() == 0:
        return
    value, samples = float(loss.detach()), sample_indices.tolist()
    if run.main:
        write_json(
            run.run_dir / "nonfinite.json", {"step": step_index + 1, "loss": str(value), "sample_indices": samples}
        )
    raise UmtError(
        f"non-finite loss ({value}) at step {step_index + 1} (samples {samples}); "
        f"details in {run.run_dir / 'nonfinite.json'}",
        hint=_nonfinite_hint(run),
    )


def _nonfinite_hint(run: Run) -> str:
    """What to do about a non-finite loss, true to this run: what is kept, and what a new run could change."""
    kept = ckpt.latest_checkpoint(run.run_dir)
    where = f"the last good checkpoint, {kept}, is kept" if kept else "no checkpoint had been written yet"
    fixes = ["a lower optim.lr", "optim.grad_clip"]
    if run.recipe.run.precision != "fp32":
        fixes.append("run.precision=fp32")
    return f"{where}; a changed recipe cannot resume, so start a new run directory with {', '.join(fixes)}"


def gradient_norm(run: Run) -> Tensor:
    """The total gradient norm before clipping; the gradients are clipped to `optim.grad_clip` when it is set."""
    acc, limit = run.accelerator, run.recipe.optim.grad_clip
    if limit:
        return acc.clip_grad_norm_(run.model.parameters(), limit)
    acc.unscale_gradients()  # fp16: measure true gradients (a no-op otherwise)
    grads = [p.grad for p in run.model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # one pass, no rescaling pass
