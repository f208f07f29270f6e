"""Loading a checkpoint's weights: one function below both the runner and inference.

Every way a checkpoint can be wrong for the model at hand is one ``ConfigError`` naming the file:
missing, a folder, not a PyTorch checkpoint (truncated, random bytes), written by another model
(the model name it carries, or the ``config.yaml`` of its run folder), or with a parameter whose
shape differs from the model built from this config (the first such parameter, both shapes).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from .config import ConfigError

CKPT_KEY = "recstudio_edge"  # a checkpoint's {"model": registry name}: Recommender.on_save_checkpoint


def _short(e: BaseException) -> str:
    from .data.errors import printable

    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    return printable(first.split(". ")[0].rstrip("."), limit=160)  # the first sentence: what torch found


def checkpoint_model_name(state: Any, path: Path) -> Optional[str]:
    """The model a checkpoint was written by: the name it carries, else its run folder's config.yaml."""
    if isinstance(state, Mapping):
        meta = state.get(CKPT_KEY)
        if isinstance(meta, Mapping) and meta.get("model"):
            return str(meta["model"])
    cfg = path.parent / "config.yaml"
    if cfg.is_file():
        try:
            import yaml

            data = yaml.safe_load(cfg.read_text())
            if isinstance(data, dict) and data.get("model_name"):
                return str(data["model_name"])
        except (OSError, ValueError, yaml.YAMLError):
            return None
    return None


def read_checkpoint(ckpt: str | Path, what: str = "checkpoint") -> Dict[str, Any]:
    """The checkpoint at ``ckpt`` as a dict (``weights_only=True``); ``ConfigError`` naming the file when
    it is missing, a folder, or not a readable PyTorch checkpoint."""
    path = Path(ckpt)
    if not path.exists():
        raise ConfigError(f"{what} not found: {path}")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.ckpt"))
        hint = f" (it holds {', '.join(found)}: pass e.g. {path / found[0]})" if found else " (it holds no .ckpt)"
        raise ConfigError(f"{what} {path} is a folder, not a .ckpt file{hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError, zipfile.BadZipFile,
            AttributeError, KeyError, IndexError, TypeError) as e:
        raise ConfigError(f"{what} {path} is not a readable PyTorch checkpoint (truncated, or another kind of "
                          f"file): {_short(e)}") from None
    if not isinstance(state, Mapping):
        raise ConfigError(f"{what} {path} holds a {type(state).__name__}, not a checkpoint (a dict of weights)")
    return dict(state)


def check_state(model, state: Mapping[str, Any], path: Path, what: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The state dict of ``state``, checked against ``model``: same model, same parameter names and shapes."""
    mine = getattr(type(model), "registry_name", type(model).__name__)
    theirs = checkpoint_model_name(state, path)
    if theirs is not None and theirs.lower() != str(mine).lower():
        raise ConfigError(f"{what} {path} was written by {theirs}, not {mine}: use -m={theirs}, or pass a "
                          f"{mine} checkpoint")
    sd = state.get("state_dict", state)
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{what} {path} holds no state_dict of tensors")
    own = model.state_dict()
    for name, t in own.items():
        if name not in sd:
            raise ConfigError(f"{what} {path} has no parameter {name!r} of {mine} (written by another model "
                              f"or configuration)")
        if tuple(sd[name].shape) != tuple(t.shape):
            raise ConfigError(f"{what} {path}: parameter {name!r} has shape {list(sd[name].shape)} in the "
                              f"checkpoint but {list(t.shape)} in the {mine} built from this config "
                              f"(another model.* size or dataset?)")
    extra = [k for k in sd if k not in own]
    if extra:
        raise ConfigError(f"{what} {path} has parameter {extra[0]!r} that the {mine} built from this config does "
                          f"not have (another model option?)")
    return dict(sd)


def load_weights(model, ckpt: str | Path, what: str = "checkpoint") -> Dict[str, Any]:
    """Load a checkpoint's weights (``weights_only=True``) into ``model``, whatever device it is on
    (a Lightning checkpoint's ``state_dict``, or a bare state dict); ``ConfigError`` naming the file
    for every checkpoint that does not fit (module docstring). Returns the checkpoint read (its
    ``epoch`` and other entries), so a caller needs not read the file again."""
    path = Path(ckpt)
    state = read_checkpoint(path, what)
    model.load_state_dict(check_state(model, state, path, what))
    return state


__all__ = ["load_weights", "read_checkpoint", "check_state", "checkpoint_model_name", "CKPT_KEY"]
