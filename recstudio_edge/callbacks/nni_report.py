"""Report the validation metric to NNI after every validation of ``fit`` (an intermediate result).

Used by ``--mode=trial`` (``recstudio_edge.tune``); ``nni`` is imported when the callback is
made, so importing this module costs nothing outside tuning. Outside an NNI experiment NNI's
standalone mode only logs the values.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import lightning.pytorch as pl

log = logging.getLogger("recstudio_edge")


class NNIReport(pl.Callback):
    """After each validation during training: ``nni.report_intermediate_result(value)``.

    ``metric`` is the validation metric name (``recall@10``, ``auc``...), read from
    ``pl_module.last_metrics["valid"]``. Sanity checks and the validations that ``run_task`` runs
    after training (best checkpoint) are not reported. ``reported`` keeps what was sent.
    """

    def __init__(self, metric: str):
        import nni  # noqa: F401  (fail here, not after an epoch, if NNI is missing)

        self.metric = metric
        self.reported: List[float] = []

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        fn = getattr(trainer.state, "fn", None)
        if fn is None or str(getattr(fn, "value", fn)) != "fit":
            return
        value: Optional[float] = (getattr(pl_module, "last_metrics", {}).get("valid") or {}).get(self.metric)
        if value is None:
            return
        import nni

        nni.report_intermediate_result(float(value))
        self.reported.append(float(value))
        log.info("nni: intermediate %s=%.6f (epoch %d)", self.metric, value, trainer.current_epoch)
