"""Per-epoch table of metrics (``--mode=detail``) and a one-line summary per epoch in the log."""
from __future__ import annotations

import logging
import time

import lightning.pytorch as pl

log = logging.getLogger("recstudio_edge")


class MetricsTable(pl.Callback):
    """Prints ``epoch | train loss | valid metrics | seconds`` after each validation (detail mode)."""

    def __init__(self, monitor: str, detail: bool = False):
        self.monitor, self.detail = monitor, detail
        self._t = time.perf_counter()
        self._header_done = False

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = pl_module.last_metrics.get("valid", {})
        loss = trainer.callback_metrics.get("train/loss_epoch")
        names = list(metrics)
        row = [f"{trainer.current_epoch:>5d}", f"{float(loss):>10.4f}" if loss is not None else f"{'-':>10}"]
        row += [f"{metrics[n]:>10.4f}" for n in names]
        row.append(f"{time.perf_counter() - self._t:>8.1f}")
        line = " | ".join(row)
        log.info("epoch %d: %s", trainer.current_epoch, "  ".join(f"{n}={metrics[n]:.4f}" for n in names))
        if self.detail and trainer.is_global_zero:
            if not self._header_done:
                head = [f"{'epoch':>5}", f"{'train loss':>10}"] + [f"{n:>10}" for n in names] + [f"{'seconds':>8}"]
                print(" | ".join(head), flush=True)
                self._header_done = True
            print(line, flush=True)
