"""Per-epoch table of metrics (``--mode=detail``) and a one-line summary per epoch in the log."""
from __future__ import annotations

import logging
import time

import lightning.pytorch as pl

log = logging.getLogger("recstudio_edge")


class MetricsTable(pl.Callback):
    """After each training epoch: ``epoch | train loss | valid metrics | seconds``.

    Printed in detail mode (global-zero process only) and always written to ``run.log``.
    Epochs without a validation show ``-`` for the metrics.
    """

    def __init__(self, monitor: str, detail: bool = False):
        self.monitor, self.detail = monitor, detail
        self._t = time.perf_counter()
        self._names = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self._t
        fresh = getattr(pl_module, "last_metrics_epoch", {}).get("valid") == trainer.current_epoch
        metrics = pl_module.last_metrics.get("valid", {}) if fresh else {}
        if self._names is None and metrics:
            self._names = list(metrics)
        names = self._names or []
        loss = trainer.callback_metrics.get("train/loss_epoch")
        loss_s = f"{float(loss):>10.4f}" if loss is not None else f"{'-':>10}"
        cells = [f"{metrics[n]:>10.4f}" if n in metrics else f"{'-':>10}" for n in names]
        log.info("epoch %d: loss=%s %s (%.1fs)", trainer.current_epoch, loss_s.strip(),
                 "  ".join(f"{n}={metrics[n]:.4f}" for n in names if n in metrics), seconds)
        if self.detail and trainer.is_global_zero:
            if trainer.current_epoch == 0 or getattr(self, "_printed_header", False) is False:
                head = [f"{'epoch':>5}", f"{'train loss':>10}"] + [f"{n:>10}" for n in names] + [f"{'seconds':>8}"]
                print(" | ".join(head), flush=True)
                self._printed_header = True
            print(" | ".join([f"{trainer.current_epoch:>5d}", loss_s, *cells, f"{seconds:>8.1f}"]), flush=True)
