"""Shared training utilities: EMA, safetensors checkpoints with exact resume, progress."""

from invgen.train.checkpoint import EMA, load_checkpoint, save_checkpoint

__all__ = ["EMA", "load_checkpoint", "save_checkpoint"]
