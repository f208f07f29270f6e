"""Loading a checkpoint's weights: one function below both the runner and inference."""
from __future__ import annotations

from pathlib import Path

import torch

from .config import ConfigError


def load_weights(model, ckpt: str | Path) -> None:
    """Load a checkpoint's weights (``weights_only=True``) into ``model``, whatever device it is on
    (a Lightning checkpoint's ``state_dict``, or a bare state dict)."""
    path = Path(ckpt)
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    sd = state.get("state_dict", state) if isinstance(state, dict) else state
    model.load_state_dict(sd)


__all__ = ["load_weights"]
