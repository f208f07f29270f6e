"""``MemoryUpdate``: write each user's aggregated long-term vector into a model's memory tables.

After fit (and, with ``every_n_epochs: N``, after every N-th training epoch), one no-grad pass
over the training rows, in row order, computes each row's aggregate and writes, for every user,
the one of the user's *latest* row into the model's memory tables. The tables are buffers of the
model, so they are saved with every checkpoint and restored with it (and with ``--resume``, whose
callback state, ``epochs_written`` / ``refreshed``, is saved too).

The best checkpoint and the final test. ``runner._train`` reloads ``best.ckpt`` after fit and
then validates and tests, so a refresh done only in memory would be overwritten. At the end of
fit this callback therefore loads the best checkpoint's weights (the monitored
``ModelCheckpoint``'s ``best_model_path``; the current weights when there is none), refreshes
the memory from them, and writes the refreshed tables into ``best.ckpt`` (read with
``weights_only=True``, written to a temporary name and renamed): the reload then brings the best
weights *with* the refreshed memory, and the test is the model served with it.

The protocol a model offers (``ECRec`` does; nothing else is assumed):

- ``memory_tables() -> {name: Tensor [num_users, ...]}``: the buffers the update writes;
- ``memory_pass(batch) -> (user_id [B], {name: values [B, ...]}, recency [B] or None)``: the
  aggregates of a batch of training rows (no grad); of a user's rows the one with the largest
  ``recency``, then the later row, is written (a model gives the history length);
- optionally ``memory_defaults() -> {name: Tensor [num_users, ...]}``: every user's row before the
  pass (users without a training row keep it), and ``memory_written(bool)``: told when the tables
  hold a written memory (ECRec then serves its device part from them).

Config (``memory_update:`` section): ``enabled`` (bool), ``every_n_epochs`` (0: after fit only),
``batch_size`` (rows per batch of the pass), ``write_best`` (bool: write the refreshed memory into
the best checkpoint file).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch

log = logging.getLogger("recstudio_edge")


def has_memory(model_or_cls) -> bool:
    return callable(getattr(model_or_cls, "memory_tables", None)) and callable(getattr(model_or_cls, "memory_pass", None))


@torch.no_grad()
def refresh_memory(model, dataset, batch_size: int = 1024) -> Dict[str, int]:
    """One pass over ``dataset`` (a ``BatchDataset`` of training rows, row order) writing every user's
    latest aggregate into ``model.memory_tables()``; returns ``{"rows": .., "users": ..}``."""
    if not has_memory(model):
        raise TypeError(f"MemoryUpdate needs a model with a memory (memory_tables() and memory_pass(); see "
                        f"recstudio_edge/callbacks/memory_update.py): {type(model).__name__} has none")
    tables = model.memory_tables()
    dev = next(iter(tables.values())).device
    was_training = model.training
    model.eval()
    defaults = model.memory_defaults() if callable(getattr(model, "memory_defaults", None)) else {}
    new = {k: (defaults[k] if k in defaults else t).detach().clone() for k, t in tables.items()}
    num_users = next(iter(tables.values())).shape[0]
    best = torch.full((num_users,), -1, dtype=torch.long, device=dev)  # key of the written row per user
    n, seen = len(dataset), 0
    for start in range(0, n, int(batch_size)):
        idx = torch.arange(start, min(start + int(batch_size), n))
        batch = dataset[((0, 0, 0), idx)] if getattr(dataset, "epoch_keyed", False) else dataset[idx]
        batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        users, values, recency = model.memory_pass(batch)
        B = users.numel()
        pos = torch.arange(seen, seen + B, device=dev)
        seen += B
        rec = torch.zeros(B, dtype=torch.long, device=dev) if recency is None else recency.to(dev).long()
        key = rec * (1 << 40) + pos  # larger recency first, then the later row
        top = torch.full((num_users,), -1, dtype=torch.long, device=dev).scatter_reduce(0, users, key, "amax")
        win = (key == top[users]) & (key > best[users])
        if win.any():
            u = users[win]
            best[u] = key[win]
            for k, v in values.items():
                new[k][u] = v[win].to(new[k].dtype)
    for k, t in tables.items():
        t.copy_(new[k])
    if callable(getattr(model, "memory_written", None)):
        model.memory_written(True)
    model.train(was_training)
    return {"rows": seen, "users": int((best >= 0).sum())}


def write_into_checkpoint(path: Path, model) -> None:
    """Replace the memory tables (and every buffer ``memory_written`` set) of checkpoint ``path``
    with the model's, atomically."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    sd = state.get("state_dict", state)
    names = dict(model.named_buffers())
    for k in list(sd):
        if k in names:
            sd[k] = names[k].detach().cpu().clone()
    tmp = path.with_name(f".{path.name}.memory.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


class MemoryUpdate(pl.Callback):
    """Refresh the model's memory after fit (and every ``every_n_epochs`` epochs); see the module docstring."""

    def __init__(self, every_n_epochs: int = 0, batch_size: int = 1024, write_best: bool = True):
        if int(every_n_epochs) < 0 or int(batch_size) < 1:
            raise ValueError(f"memory_update: every_n_epochs >= 0 and batch_size >= 1, got {every_n_epochs}, {batch_size}")
        self.every_n_epochs, self.batch_size, self.write_best = int(every_n_epochs), int(batch_size), bool(write_best)
        self.epochs_written: list = []
        self.refreshed: Optional[str] = None  # "fit end" once written after fit

    def state_dict(self) -> Dict[str, Any]:
        return {"epochs_written": list(self.epochs_written), "refreshed": self.refreshed}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.epochs_written = list(state_dict.get("epochs_written", []))
        self.refreshed = state_dict.get("refreshed")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not has_memory(pl_module):
            refresh_memory(pl_module, None)  # raises the TypeError that names what is missing

    def _dataset(self, trainer, pl_module):
        dm = trainer.datamodule
        return dm.builder.train(pl_module.data_kind)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        e = int(trainer.current_epoch)
        if self.every_n_epochs and (e + 1) % self.every_n_epochs == 0 and e not in self.epochs_written:
            res = refresh_memory(pl_module, self._dataset(trainer, pl_module), self.batch_size)
            self.epochs_written.append(e)
            log.info("MemoryUpdate: epoch %d: memory of %d users written from %d rows", e, res["users"], res["rows"])

    def on_fit_end(self, trainer, pl_module) -> None:
        from ..checkpoint import load_weights

        ckpt = getattr(trainer, "checkpoint_callback", None)
        best = Path(ckpt.best_model_path) if ckpt is not None and ckpt.best_model_path else None
        if best is not None and best.exists():
            load_weights(pl_module, best)
        res = refresh_memory(pl_module, self._dataset(trainer, pl_module), self.batch_size)
        self.refreshed = "fit end"
        if best is not None and best.exists() and self.write_best and trainer.is_global_zero:
            write_into_checkpoint(best, pl_module)
        trainer.strategy.barrier()
        log.info("MemoryUpdate: memory of %d users written from %d training rows%s", res["users"], res["rows"],
                 f" into {best.name}" if best is not None and self.write_best else "")


def memory_update_from_config(cfg: Dict[str, Any], model_or_cls, run_dir=None) -> Optional[MemoryUpdate]:
    """The ``MemoryUpdate`` of the ``memory_update:`` section, or ``None`` when the model declares no
    memory or the section says ``enabled: false`` (or is absent)."""
    section = dict(cfg.get("memory_update") or {})
    if not section.pop("enabled", False) or not has_memory(model_or_cls):
        return None
    known = ("every_n_epochs", "batch_size", "write_best")
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"memory_update: unknown keys {unknown} (known: enabled, {', '.join(known)})")
    return MemoryUpdate(every_n_epochs=int(section.get("every_n_epochs", 0)),
                        batch_size=int(section.get("batch_size", 1024)),
                        write_best=bool(section.get("write_best", True)))


__all__ = ["MemoryUpdate", "memory_update_from_config", "refresh_memory", "write_into_checkpoint", "has_memory"]
