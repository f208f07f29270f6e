"""What the run report (``recstudio_edge/evaluation/report.py``) needs from a Trainer.

- ``RunCSVLogger``: Lightning's ``CSVLogger`` writing ``logs/metrics.csv``, except that a resumed run
  keeps the rows of the epochs before the one it goes on from (Lightning's own logger deletes the
  file when its folder exists): at the first save, the old rows of an epoch ``>=`` the first epoch
  the new run logs are dropped (they belong to the epoch being redone, or to the end-of-run
  validation and test of the run resumed), the others are written again ahead of the new ones.
- ``epoch_events(trainer, model)``: the epoch events callbacks (or the model) mark for the plots.
  The protocol is one attribute: ``epoch_events``, a list of ``(epoch, label)`` pairs, on any
  callback of the Trainer or on the model; an event of epoch ``e`` happened at that epoch's start
  (``PluginStage`` marks its stage switch so; a memory-writing callback would append
  ``(epoch, "memory update")``). Nothing here knows a model or callback by name.
- ``TopkCurve``: a callback for ``--task=test`` that computes, in the same test pass, every ranking
  metric at each cutoff ``k = 1..max(eval.topk)`` (``curve``), while the model's own figures
  (metrics.json) stay those of its ``eval.topk`` cutoffs.
"""
from __future__ import annotations

import csv
import os
import warnings
from typing import Any, Dict, List, Optional, Tuple

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from ..evaluation.metrics import RankingAccumulator

__all__ = ["RunCSVLogger", "epoch_events", "TopkCurve"]


def _epoch_of(row: Dict[str, Any]) -> Optional[int]:
    try:
        return int(float(row.get("epoch", "")))
    except (TypeError, ValueError):
        return None


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` that keeps the earlier epochs' rows of ``logs/metrics.csv`` across ``--resume``."""

    def __init__(self, save_dir: str, name: str = "", version: str = "logs", **kwargs):
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._old_rows: Optional[List[Dict[str, str]]] = None
        self._merged = False

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = os.path.join(self.log_dir, "metrics.csv")
        if self._old_rows is None:
            self._old_rows = []
            if os.path.isfile(path):
                with open(path, newline="") as f:
                    self._old_rows = list(csv.DictReader(f))
        with warnings.catch_warnings():  # "Previous log files ... will be deleted": they are kept here
            warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
            return super().experiment

    @rank_zero_only
    def save(self) -> None:
        exp = self.experiment
        if not self._merged and self._old_rows and exp.metrics:
            first = min((e for e in map(_epoch_of, exp.metrics) if e is not None), default=None)
            keep = [{k: v for k, v in row.items() if v not in ("", None)} for row in self._old_rows
                    if first is None or (_epoch_of(row) is not None and _epoch_of(row) < first)]
            exp.metrics = keep + exp.metrics
            self._merged = True
        elif exp.metrics:
            self._merged = True
        super().save()


def epoch_events(trainer, model=None) -> List[Tuple[int, str]]:
    """Every ``(epoch, label)`` the Trainer's callbacks and the model mark (``epoch_events``), sorted."""
    out: List[Tuple[int, str]] = []
    for obj in [*(getattr(trainer, "callbacks", None) or []), model]:
        for ev in (getattr(obj, "epoch_events", None) or []) if obj is not None else []:
            epoch, label = ev
            if epoch is not None:
                out.append((int(epoch), str(label)))
    return sorted(set(out))


class _CurveAccumulator(RankingAccumulator):
    """Accumulates every cutoff ``1..K``; ``compute`` keeps the full curve and returns the model's keys."""

    def __init__(self, cutoffs, names, owner: "TopkCurve"):
        super().__init__(range(1, max(cutoffs) + 1), names)
        self._own_keys = [f"{n}@{k}" for n in self.names for k in sorted(int(c) for c in cutoffs)]
        self._owner = owner

    def compute(self, sums=None, count=None) -> Dict[str, float]:
        full = super().compute(sums, count)
        self._owner.curve = {n: [full[f"{n}@{k}"] for k in range(1, self._owner.max_k + 1)] for n in self.names}
        return {k: full[k] for k in self._own_keys}


class TopkCurve(pl.Callback):
    """During ``trainer.test`` of a ranking model, ``curve = {metric: [value at k=1, ..., k=max topk]}``.

    At the first test batch the model's test accumulator (a ``RankingAccumulator``) is replaced by one
    over every cutoff 1..max(topk); the per-batch cost is that of the top-k search already done plus a
    few cumulative sums of the ``[B, K]`` hit matrix. Models of other kinds are left alone (``curve``
    stays empty)."""

    def __init__(self):
        self.curve: Dict[str, List[float]] = {}
        self.max_k = 0

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        accs = getattr(pl_module, "_acc", None)
        acc = accs.get("test") if isinstance(accs, dict) else None
        if type(acc) is RankingAccumulator and acc._sums is None and acc.cutoffs:
            self.max_k = max(acc.cutoffs)
            accs["test"] = _CurveAccumulator(acc.cutoffs, acc.names, self)
