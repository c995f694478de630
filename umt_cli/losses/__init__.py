"""Losses as pure functions of tensors; learnable state (e.g. the VTC temperature) lives in the models."""

from umt_cli.losses.uta import UtaKind, uta_loss

__all__ = ["UtaKind", "uta_loss"]
