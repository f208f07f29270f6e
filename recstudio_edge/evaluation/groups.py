"""Metrics per row group and the head-vs-tail table.

Rows may carry a ``group_id`` (PINRec's user-activity groups, 0 = least active; any data with
``data.group_num`` set). Every pointwise model then reports, next to the overall AUC, GAUC and
logloss, the same three on the rows of each group: ``auc_g{k}``, ``gauc_g{k}`` (per-user AUC
within the group, impression-weighted), ``logloss_g{k}`` and the group's row count
``rows_g{k}`` (``Recommender`` collects the ids with ``GroupedAccumulator``). A group without
rows gets NaN metrics.

``group_table`` lays out one or several runs side by side with the tail (low-activity groups)
and head (the top group) means, the figure PINRec is judged by; ``head_tail_table`` is that
table for one run's metrics (what a PINRec run prints and saves at its end).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor

from .metrics import PointwiseAccumulator, auc, gauc, logloss

__all__ = ["GroupedAccumulator", "per_group_metrics", "group_count", "group_mean", "group_table", "head_tail_table"]


class GroupedAccumulator(PointwiseAccumulator):
    """A ``PointwiseAccumulator`` that also keeps each row's ``group_id``, when the batches carry one.

    ``update(logits, labels, users=None, group_id=None)``: ``users`` are GAUC's groups (as in
    ``PointwiseAccumulator``), ``group_id [N]`` the rows' groups, given for every batch or for
    none. ``group_ids()``: their concatenation, or ``None`` when never given.
    """

    def reset(self) -> None:
        super().reset()
        self._group_ids: List[Tensor] = []
        self._batches = 0

    def update(self, logits: Tensor, labels: Tensor, users: Optional[Tensor] = None,
               group_id: Optional[Tensor] = None) -> None:
        if self._batches and (group_id is not None) != bool(self._group_ids):
            raise ValueError("group_id must be given for every evaluation batch or for none")
        if group_id is not None and group_id.numel() != logits.numel():
            raise ValueError(f"logits has {logits.numel()} elements, group_id has {group_id.numel()}")
        super().update(logits, labels, users)
        self._batches += 1
        if group_id is not None:
            self._group_ids.append(group_id.detach().reshape(-1))

    def group_ids(self) -> Optional[Tensor]:
        if not self._group_ids:
            return None
        return torch.cat([g.to(self._group_ids[0].device) for g in self._group_ids])


def per_group_metrics(logits: Tensor, labels: Tensor, users: Optional[Tensor], groups: Tensor,
                      group_num: int) -> Dict[str, float]:
    """``auc_g{k}``, ``gauc_g{k}``, ``logloss_g{k}``, ``rows_g{k}`` for k in ``0..group_num-1``
    (rows of other groups are left out; ``gauc`` is NaN without ``users``). One pass of the
    overall metrics per group: the same values as evaluating each group's rows alone."""
    out: Dict[str, float] = {}
    for g in range(int(group_num)):
        m = groups == g
        n = int(m.sum())
        out[f"rows_g{g}"] = float(n)
        if n == 0:
            out.update({f"auc_g{g}": math.nan, f"gauc_g{g}": math.nan, f"logloss_g{g}": math.nan})
            continue
        out[f"auc_g{g}"] = float(auc(logits[m], labels[m]))
        out[f"gauc_g{g}"] = float(gauc(logits[m], labels[m], users[m])) if users is not None else math.nan
        out[f"logloss_g{g}"] = float(logloss(logits[m], labels[m]))
    return out


def group_count(metrics: Mapping[str, float], key: str = "rows") -> int:
    """How many groups ``metrics`` has per-group entries for (``rows_g0``, ``rows_g1``, ...; ``key="auc"``
    for the logged per-epoch figures, which hold no row counts); 0 if none."""
    k = 0
    while f"{key}_g{k}" in metrics:
        k += 1
    return k


def group_mean(metrics: Mapping[str, float], metric: str, groups: Sequence[int]) -> float:
    """The mean of ``{metric}_g{g}`` over ``groups`` (the tail or head figure; NaN for a missing entry or no groups)."""
    vals = [metrics.get(f"{metric}_g{g}", math.nan) for g in groups]
    return sum(vals) / len(vals) if vals else math.nan


def group_table(runs: Mapping[str, Mapping[str, float]], group_num: int, tail: Sequence[int] = (0, 1),
                head: Optional[Sequence[int]] = None, metrics: Sequence[str] = ("auc", "gauc")) -> str:
    """Text table of per-group metrics for runs side by side, plus tail / head means.

    ``runs``: ``{run name: metrics with auc_g0 ... keys}``; tail = mean over ``tail`` groups,
    head = mean over ``head`` groups (default: the top group)."""
    head = list(head) if head is not None else [group_num - 1]
    names = list(runs)
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["".join([f"{'':<16}", *(f"{n:>{width}}" for n in names)])]
    for metric in metrics:
        rows = [(f"{metric}", metric)] + [(f"{metric} g{g}", f"{metric}_g{g}") for g in range(group_num)]
        for label, key in rows:
            lines.append("".join([f"{label:<16}", *(f"{runs[n].get(key, math.nan):>{width}.4f}" for n in names)]))
        for label, gs in (("tail", tail), ("head", head)):
            lines.append("".join([f"{metric + ' ' + label:<16}",
                                  *(f"{group_mean(runs[n], metric, gs):>{width}.4f}" for n in names)]))
    return "\n".join(lines)


def head_tail_table(metrics: Mapping[str, float], name: str = "test", tail: Sequence[int] = (0, 1),
                    head: Optional[Sequence[int]] = None) -> Optional[str]:
    """The head-vs-tail table (``group_table``) of one run's metrics, in a column named ``name``;
    the groups are those ``metrics`` has (``group_count``), ``tail`` keeps the ones that exist.
    ``None`` when ``metrics`` has no per-group entries (the rows carried no ``group_id``)."""
    n = group_count(metrics)
    if not n:
        return None
    return group_table({name: metrics}, n, tail=[g for g in tail if g < n], head=head)
