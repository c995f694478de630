"""Losses as pure functions of tensors; learnable state (e.g. the VTC temperature) lives in the models."""
