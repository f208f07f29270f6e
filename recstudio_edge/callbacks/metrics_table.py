"""What the run prints per epoch: a table in ``--mode=detail``, one line per epoch where no
progress bar is drawn (output that is not a terminal, or the bar turned off), and always a
one-line summary in ``run.log``."""
from __future__ import annotations

import logging
import time

import lightning.pytorch as pl

log = logging.getLogger("recstudio_edge")


class MetricsTable(pl.Callback):
    """After each training epoch, on the global-zero process.

    ``detail``: the table ``epoch | train loss | valid metrics | seconds`` (every validation
    metric). ``lines`` (and not ``detail``): ``epoch 3: 1.2s  train loss 0.6931  recall@10 0.0660  (at
    most 8.4s left)``, the monitored metric only, and the time the remaining epochs would take at the
    mean pace so far (validations included; early stopping may end the run sooner). Epochs without a
    validation show ``-`` for the metrics.
    """

    def __init__(self, monitor: str, detail: bool = False, lines: bool = False):
        self.monitor, self.detail, self.lines = monitor, detail, lines
        self._t = time.perf_counter()
        self._names = None
        self._printed_header = False

    def on_train_start(self, trainer, pl_module):
        self._fit_t0, self._fit_epoch0 = time.perf_counter(), trainer.current_epoch

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()

    def time_left(self, trainer) -> str:
        """``(at most 1m 12s left)``: the epochs still to run at the mean pace of those run so far."""
        done = trainer.current_epoch + 1 - getattr(self, "_fit_epoch0", 0)
        remaining = (trainer.max_epochs or 0) - trainer.current_epoch - 1
        if done <= 0 or remaining <= 0 or not hasattr(self, "_fit_t0"):
            return ""
        left = (time.perf_counter() - self._fit_t0) / done * remaining
        m, sec = divmod(int(round(left)), 60)
        h, m = divmod(m, 60)
        text = f"{h}h {m:02d}m" if h else (f"{m}m {sec:02d}s" if m else f"{left:.1f}s")
        return f"  (at most {text} left)"

    def on_train_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self._t
        fresh = getattr(pl_module, "last_metrics_epoch", {}).get("valid") == trainer.current_epoch
        metrics = pl_module.last_metrics.get("valid", {}) if fresh else {}
        if self._names is None and metrics:
            self._names = [n for n in metrics if not n.startswith("rows_")]
        names = self._names or []
        loss = trainer.callback_metrics.get("train/loss_epoch")
        loss_s = f"{float(loss):>10.4f}" if loss is not None else f"{'-':>10}"
        cells = [f"{metrics[n]:>10.4f}" if n in metrics else f"{'-':>10}" for n in names]
        log.info("epoch %d: loss=%s %s (%.1fs)", trainer.current_epoch, loss_s.strip(),
                 "  ".join(f"{n}={metrics[n]:.4f}" for n in names if n in metrics), seconds)
        if not trainer.is_global_zero:
            return
        if self.detail:
            if not self._printed_header:
                head = [f"{'epoch':>5}", f"{'train loss':>10}"] + [f"{n:>10}" for n in names] + [f"{'seconds':>8}"]
                print(" | ".join(head), flush=True)
                self._printed_header = True
            print(" | ".join([f"{trainer.current_epoch:>5d}", loss_s, *cells, f"{seconds:>8.1f}"]), flush=True)
        elif self.lines:
            name = self.monitor.split("/", 1)[-1]
            value = f"{metrics[name]:.4f}" if name in metrics else "-"
            print(f"epoch {trainer.current_epoch}: {seconds:.1f}s  train loss {loss_s.strip()}  {name} {value}"
                  f"{self.time_left(trainer)}", flush=True)
