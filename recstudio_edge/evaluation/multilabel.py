"""Multi-label classification metrics: micro-F1 and macro-F1 (GGCN's evaluation, ``eval_kind = "multilabel"``).

A label is predicted when its probability is above ``threshold`` (0.5, GCNII's PPI protocol: a
sigmoid per class). With per-class counts over every evaluated node (``tp``, ``fp``, ``fn``):

- ``micro_f1 = 2 sum(tp) / (2 sum(tp) + sum(fp) + sum(fn))`` (every (node, class) decision counts once;
  what GCNII reports on PPI);
- ``macro_f1`` = the mean over classes of ``2 tp / (2 tp + fp + fn)``, over the classes where that is
  defined (a class nobody has and nobody predicted has no F1 and is left out, rather than counted as
  0 or 1); 0 when no class is defined;
- ``rows_nodes``: the nodes counted (not logged as a metric).

``MultiLabelAccumulator`` keeps only the counts (``[C]`` each), so evaluation never holds every
prediction; ``compute(gather)`` sums them across processes (``gather`` concatenates a tensor over
processes, ``Recommender._gather_cat``), so distributed runs give the same figures as one process.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

METRICS = ("micro_f1", "macro_f1")


def f1_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> Dict[str, float]:
    """``{micro_f1, macro_f1}`` of per-class counts (module docstring)."""
    tp, fp, fn = (t.double() for t in (tp, fp, fn))
    denom = 2 * tp.sum() + fp.sum() + fn.sum()
    micro = float(2 * tp.sum() / denom) if denom > 0 else 0.0
    per = 2 * tp + fp + fn
    defined = per > 0
    macro = float((2 * tp[defined] / per[defined]).mean()) if bool(defined.any()) else 0.0
    return {"micro_f1": micro, "macro_f1": macro}


def counts(prob: torch.Tensor, label: torch.Tensor, threshold: float = 0.5):
    """Per-class ``(tp, fp, fn)`` of probabilities ``[B, C]`` against 0/1 labels ``[B, C]``."""
    pred = prob > threshold
    truth = label > 0.5
    return ((pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0))


def multilabel_f1(prob: torch.Tensor, label: torch.Tensor, threshold: float = 0.5) -> Dict[str, float]:
    """``{micro_f1, macro_f1}`` of one set of predictions."""
    return f1_from_counts(*counts(prob, label, threshold))


class MultiLabelAccumulator:
    """``update(model, batch)``: ``model(batch)`` (probabilities ``[B, C]``) against ``batch["label"]``;
    ``compute(gather)``: the metrics of everything seen (module docstring)."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)
        self.tp: Optional[torch.Tensor] = None
        self.fp = self.fn = None
        self.rows = 0

    @torch.no_grad()
    def update(self, model, batch) -> None:
        self.add(model(batch), batch["label"])

    def add(self, prob: torch.Tensor, label: torch.Tensor) -> None:
        tp, fp, fn = (t.long() for t in counts(prob.detach(), label, self.threshold))
        if self.tp is None:
            self.tp, self.fp, self.fn = tp, fp, fn
        else:
            self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        self.rows += int(prob.shape[0])

    def compute(self, gather: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> Dict[str, float]:
        if self.tp is None:
            return {"micro_f1": 0.0, "macro_f1": 0.0, "rows_nodes": 0.0}
        stacked = gather(torch.stack([self.tp, self.fp, self.fn]).unsqueeze(0))  # [world, 3, C]
        tp, fp, fn = stacked.sum(0)
        rows = gather(torch.tensor([self.rows], device=stacked.device)).sum()
        return {**f1_from_counts(tp, fp, fn), "rows_nodes": float(rows)}


__all__ = ["MultiLabelAccumulator", "multilabel_f1", "f1_from_counts", "counts", "METRICS"]
