"""What a checkpoint holds, as typed objects, each written and read back by the same class.

```
checkpoints/step_NNNNNN/
  model.safetensors   the trainable model's weights                     (main process)
  state.pt            SharedState: step, optimizer, scaler, last loss   (main process)
  meta.json           RunMeta: version, recipe, world size              (main process)
  rank{r}.pt          ProcessState: RNG and data-health counters        (each process r)
```

`state.pt` and the rank files hold plain data only (`torch.load(weights_only=True)` reads them); their keys are
fixed here, so checkpoints of earlier versions of this layout still resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from umt_cli.errors import CheckpointError

__all__ = ["TrainState", "SharedState", "ProcessState", "RunMeta", "rank_file_name"]


@dataclass
class TrainState:
    """The loop's own counters (mutable while training)."""

    steps_done: int = 0  # optimizer steps finished
    last_loss: float | None = None  # the last logged loss (None until one is logged)


def rank_file_name(rank: int) -> str:
    """The file of process `rank` inside a checkpoint directory."""
    return f"rank{rank}.pt"


@dataclass(frozen=True)
class SharedState:
    """`state.pt`: what every process restores alike (the main process writes it)."""

    steps_done: int
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None  # the fp16 gradient scaler, None without one
    last_loss: float | None

    def to_plain(self) -> dict[str, Any]:
        """The dict saved as `state.pt`."""
        return {
            "step": self.steps_done,
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "last_loss": self.last_loss,
        }

    @classmethod
    def from_plain(cls, data: Any, where: Path) -> SharedState:
        """Read back what `to_plain` wrote; `CheckpointError` naming `where` when it does not fit."""
        try:
            return cls(int(data["step"]), data["optimizer"], data.get("scaler"), data.get("last_loss"))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{where}: not a umt training state ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class ProcessState:
    """`rank{r}.pt`: what belongs to one process (its global RNG and its data-health counters)."""

    rng: dict[str, Any]
    data_health: dict[str, Any]

    def to_plain(self) -> dict[str, Any]:
        """The dict saved as `rank{r}.pt`."""
        return {"rng": self.rng, "data_health": self.data_health}

    @classmethod
    def from_plain(cls, data: Any, where: Path) -> ProcessState:
        """Read back what `to_plain` wrote; `CheckpointError` naming `where` when it does not fit."""
        try:
            return cls(data["rng"], data["data_health"])
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{where}: not a umt process state ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class RunMeta:
    """`meta.json`: what made the checkpoint (JSON, readable without torch; `step` is added by the writer)."""

    umt_version: str
    schema_version: int
    world_size: int
    recipe: dict[str, Any]  # the resolved recipe, as `Recipe.model_dump(mode="json")`

    def to_plain(self) -> dict[str, Any]:
        """The dict written as `meta.json`."""
        return {
            "umt_version": self.umt_version,
            "schema_version": self.schema_version,
            "world_size": self.world_size,
            "recipe": self.recipe,
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any], where: Path) -> RunMeta:
        """Read back what `to_plain` wrote; `CheckpointError` naming `where` when the recipe is missing."""
        if not isinstance(data.get("recipe"), dict):
            raise CheckpointError(f"{where}: no recipe recorded")
        return cls(
            str(data.get("umt_version")), data.get("schema_version", 1), data.get("world_size", 1), data["recipe"]
        )
