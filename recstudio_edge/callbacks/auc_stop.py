"""``AucStop``: stop training once a validation metric reaches a threshold, as MLPerf's DLRM
``--mlperf-auc-threshold`` (0.8025 on Criteo Terabyte) stops the reference at the target AUC.

After every validation (end of an epoch, or inside one with ``trainer.val_check_interval``) it reads
``valid/<metric>`` (``auc`` by default; ``logloss`` stops when it falls to the threshold or below) and,
when the target is reached, sets ``trainer.should_stop``: Lightning stops after the current step.
``reached`` records ``{metric, value, threshold, epoch, global_step}`` of the validation that
reached it (``None`` if none did); the run's checkpoints and test are as in any run.

Config (``auc_stop:`` section)::

    auc_stop:
      threshold: null   # float: stop when valid/<metric> reaches it; null: off
      metric: auc       # auc | gauc | logloss (logloss: stop at or below the threshold)
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import lightning.pytorch as pl

from ..config import ConfigError

log = logging.getLogger(__name__)

METRICS = ("auc", "gauc", "logloss")


class AucStop(pl.Callback):
    def __init__(self, threshold: float, metric: str = "auc", stage: str = "valid"):
        metric = str(metric).lower()
        if metric not in METRICS:
            from ..names import did_you_mean

            raise ConfigError(f"auc_stop.metric {metric!r}: {did_you_mean(metric, METRICS)}")
        try:
            self.threshold = float(threshold)
        except (TypeError, ValueError):
            raise ConfigError(f"auc_stop.threshold must be a number, got {threshold!r}") from None
        if metric != "logloss" and not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"auc_stop.threshold {self.threshold}: an {metric} target is in (0, 1]")
        self.metric, self.stage = metric, stage
        self.key = f"{stage}/{metric}"
        self.reached: Optional[Dict[str, Any]] = None

    def _hit(self, value: float) -> bool:
        return value <= self.threshold if self.metric == "logloss" else value >= self.threshold

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.key)
        if value is None:
            raise ConfigError(f"auc_stop: the validation logged no {self.key!r} (logged: "
                              f"{sorted(trainer.callback_metrics)}); auc_stop applies to CTR models")
        value = float(value)
        if self._hit(value):
            trainer.should_stop = True
            if self.reached is None:
                self.reached = {"metric": self.metric, "value": value, "threshold": self.threshold,
                                "epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step)}
                msg = (f"auc_stop: {self.key} = {value:.5f} reached the threshold {self.threshold:g} at epoch "
                       f"{trainer.current_epoch}, step {trainer.global_step}: training stops")
                log.info(msg)
                if trainer.is_global_zero:
                    print(msg, flush=True)

    def state_dict(self) -> Dict[str, Any]:
        return {"reached": self.reached}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.reached = state_dict.get("reached")


def auc_stop_from_config(cfg: Dict[str, Any], model_or_cls, run_dir=None) -> Optional[AucStop]:
    """The ``AucStop`` of the ``auc_stop:`` section, or ``None`` when ``threshold`` is null (or the
    section is absent). A threshold on a model without pointwise (CTR) metrics is an error."""
    section = dict(cfg.get("auc_stop") or {})
    unknown = sorted(set(section) - {"threshold", "metric"})
    if unknown:
        from ..names import did_you_mean

        raise ConfigError(f"auc_stop: unknown key {unknown[0]!r}: {did_you_mean(unknown[0], ['threshold', 'metric'])}")
    if section.get("threshold") is None:
        return None
    if getattr(model_or_cls, "eval_kind", None) != "pointwise":
        name = getattr(model_or_cls, "__name__", type(model_or_cls).__name__)
        raise ConfigError(f"auc_stop.threshold is set but {name} is not a CTR model (it computes no "
                          f"valid/{section.get('metric', 'auc')}): unset auc_stop.threshold")
    return AucStop(section["threshold"], section.get("metric", "auc"))


__all__ = ["AucStop", "auc_stop_from_config"]
