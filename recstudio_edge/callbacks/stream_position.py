"""``StreamPosition``: moves a streaming data module's position past every batch trained on.

With ``data.stream: true`` the training rows come from ``ShardedStream`` (``data/streaming.py``); its
position (each loader worker's next batch, the epoch) is part of the data module's ``state_dict``, which
Lightning writes into every checkpoint. This callback tells the data module, after each training step,
which batch was trained on (``RecDataModule.consumed``): a batch fetched ahead but not yet trained is not
counted, so ``--resume`` from any checkpoint neither repeats nor skips a row. Lightning runs checkpoint
callbacks after the others, so a checkpoint of a step already counts that step's batch.
"""
from __future__ import annotations

import lightning.pytorch as pl


class StreamPosition(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and callable(getattr(dm, "consumed", None)):
            dm.consumed(batch)


def stream_position_from_config(cfg, model, run_dir):
    """The callback when ``data.stream`` is on, else None."""
    return StreamPosition() if (cfg.get("data") or {}).get("stream") else None


__all__ = ["StreamPosition", "stream_position_from_config"]
