"""Evaluation metrics: top-k ranking metrics and pointwise (CTR) metrics.

Pure torch, vectorised (no Python loop over users, rows or groups) and
device-agnostic. Accumulations use float64 / int64 (float32 on Apple MPS,
which has no float64).

Ranking metrics follow RecBole's definitions so that numbers are comparable
with RecBole's (for a row with ``P = num_pos`` targets and binary hits
``h_1..h_K`` in ranked order, ``H_k = sum_{i<=k} h_i``):

=========  ==================================================================
recall@k   ``H_k / P``
precision  ``H_k / k``
hit@k      ``1 if H_k > 0 else 0``
mrr@k      ``1 / (1-based rank of the first hit)``, ``0`` without a hit in k
ndcg@k     ``DCG@k / IDCG@k``, ``DCG@k = sum_{i<=k} h_i / log2(i + 1)``,
           ``IDCG@k = sum_{i<=min(P, k)} 1 / log2(i + 1)``
map@k      ``sum_{i<=k} (H_i / i) * h_i / min(P, k)``
=========  ==================================================================

Differences from ``torchmetrics.functional.retrieval`` (1.9) found while
cross-checking (tests/evaluation/test_metrics.py):

* ``retrieval_average_precision(top_k=k)`` divides by the number of hits in the
  top k, not by ``min(P, k)``, so it is larger whenever some targets are missed.
* ``retrieval_precision`` / ``recall`` / ``reciprocal_rank`` /
  ``average_precision`` treat an item whose score is ``<= 0`` as irrelevant
  (``target = where(preds > 0, target, 0)``): with raw logits or inner products
  they silently drop hits; ``retrieval_hit_rate`` and ``retrieval_normalized_dcg``
  do not.
* ``retrieval_normalized_dcg`` averages the gain over tied scores (sklearn
  style); we score the order ``torch.topk`` returned.
* A query without positives gives ``0`` in torchmetrics; here it gives ``NaN``
  and is excluded from the mean (RecBole drops such users).
"""

from __future__ import annotations

import difflib
import math
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "RANKING_METRICS",
    "ranking_metrics",
    "mean_over_users",
    "RankingAccumulator",
    "auc",
    "gauc",
    "logloss",
    "PointwiseAccumulator",
]

RANKING_METRICS: Tuple[str, ...] = ("recall", "precision", "hit", "mrr", "ndcg", "map")


def _acc_dtype(device: torch.device) -> torch.dtype:
    """float64 for accumulations, except on MPS which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_names(names: Iterable[str]) -> List[str]:
    out = []
    for name in names:
        key = str(name).lower()
        if key not in RANKING_METRICS:
            close = difflib.get_close_matches(key, RANKING_METRICS, n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown ranking metric {name!r}{hint} (known: {', '.join(RANKING_METRICS)})")
        out.append(key)
    return out


def _check_cutoffs(cutoffs: Iterable[int], max_k: Optional[int] = None) -> List[int]:
    out = []
    for k in cutoffs:
        if isinstance(k, bool) or int(k) != k or int(k) < 1:
            raise ValueError(f"cutoffs must be positive integers, got {k!r}")
        k = int(k)
        if max_k is not None and k > max_k:
            raise ValueError(f"cutoff {k} exceeds the number of ranked items per row ({max_k})")
        out.append(k)
    if not out:
        raise ValueError("cutoffs must not be empty")
    return out


def metric_keys(cutoffs: Sequence[int], names: Sequence[str]) -> List[str]:
    """Output keys in order: ``[f"{name}@{k}" for name in names for k in cutoffs]``."""
    return [f"{n}@{k}" for n in _check_names(names) for k in _check_cutoffs(cutoffs)]


def ranking_metrics(hits: Tensor, num_pos: Tensor, cutoffs: Sequence[int], names: Sequence[str]) -> Dict[str, Tensor]:
    """Per-row top-k ranking metrics.

    Args:
        hits: ``[B, K]`` bool, ``hits[b, i]`` is True when the item ranked
            ``i + 1`` for row ``b`` is a target (e.g. from ``topk_hits``).
        num_pos: ``[B]`` number of targets of each row (over all items, not
            only the top K).
        cutoffs: the ``k`` values, each ``1 <= k <= K``.
        names: metric names among ``recall, precision, hit, mrr, ndcg, map``
            (case-insensitive; an unknown name raises ``ValueError`` that
            suggests the closest known one).

    Returns:
        ``{f"{name}@{k}": Tensor[B]}`` (float32, names lower-case), ordered by
        name then cutoff. Rows with ``num_pos == 0`` get ``NaN`` for every
        metric: the caller must exclude them (see :func:`mean_over_users`,
        :class:`RankingAccumulator`), as RecBole drops users without
        test items.
    """
    names = _check_names(names)
    if hits.dim() != 2:
        raise ValueError(f"hits must be 2-D [B, K], got shape {tuple(hits.shape)}")
    batch, max_k = hits.shape
    cutoffs = _check_cutoffs(cutoffs, max_k)
    device = hits.device
    num_pos = num_pos.to(device).reshape(-1)
    if num_pos.numel() != batch:
        raise ValueError(f"num_pos has {num_pos.numel()} rows, hits has {batch}")

    h = hits.to(torch.float32)
    pos = torch.arange(1, max_k + 1, device=device, dtype=torch.float32)  # 1-based ranks
    cum_hits = h.cumsum(dim=1)  # H_i
    npos = num_pos.to(torch.float32)
    invalid = num_pos <= 0
    nan = torch.tensor(float("nan"), device=device)

    need = set(names)
    if "mrr" in need:
        first_hit = h * (cum_hits == 1).to(h.dtype)  # 1 only at the first hit
        mrr_cum = (first_hit / pos).cumsum(dim=1)
    if "ndcg" in need:
        discount = 1.0 / torch.log2(pos + 1.0)
        dcg_cum = (h * discount).cumsum(dim=1)
        idcg_table = discount.cumsum(dim=0)  # idcg_table[j - 1] = IDCG with j ideal hits
    if "map" in need:
        ap_cum = (cum_hits / pos * h).cumsum(dim=1)

    out: Dict[str, Tensor] = {}
    for name in names:
        for k in cutoffs:
            hk = cum_hits[:, k - 1]
            if name == "recall":
                val = hk / npos
            elif name == "precision":
                val = hk / k
            elif name == "hit":
                val = (hk > 0).to(torch.float32)
            elif name == "mrr":
                val = mrr_cum[:, k - 1]
            elif name == "ndcg":
                ideal = num_pos.clamp(min=1, max=k).to(torch.long)
                val = dcg_cum[:, k - 1] / idcg_table[ideal - 1]
            else:  # map
                val = ap_cum[:, k - 1] / npos.clamp(min=1, max=k)
            out[f"{name}@{k}"] = torch.where(invalid, nan, val)
    return out


def mean_over_users(values: Dict[str, Tensor], num_pos: Tensor) -> Dict[str, float]:
    """Average each per-row metric over the rows with ``num_pos > 0``.

    Returns ``NaN`` for every key when no row has a positive.
    """
    out: Dict[str, float] = {}
    for key, val in values.items():
        valid = num_pos.to(val.device).reshape(-1) > 0
        cnt = int(valid.sum().item())
        if cnt == 0:
            out[key] = float("nan")
        else:
            out[key] = float(val[valid].to(_acc_dtype(val.device)).sum().item() / cnt)
    return out


class RankingAccumulator:
    """Accumulate per-user ranking metric sums and the user count over batches.

    ``state()`` returns ``(sums [len(keys)], count [])``, both of the same
    floating dtype and device, so a caller can all-reduce (sum) them across
    processes (or ``torch.cat([sums, count[None]])`` into one tensor) before
    ``compute(sums, count)``. Users with ``num_pos == 0`` are not counted.
    """

    def __init__(self, cutoffs: Sequence[int], names: Sequence[str]):
        self.names = _check_names(names)
        self.cutoffs = _check_cutoffs(cutoffs)
        self.keys = [f"{n}@{k}" for n in self.names for k in self.cutoffs]
        self._sums: Optional[Tensor] = None
        self._count: Optional[Tensor] = None

    def reset(self) -> None:
        self._sums = None
        self._count = None

    def update(self, hits: Tensor, num_pos: Tensor) -> Dict[str, Tensor]:
        """Add one batch; returns the batch's per-row values (NaN for rows without positives)."""
        values = ranking_metrics(hits, num_pos, self.cutoffs, self.names)
        device = hits.device
        dtype = _acc_dtype(device)
        valid = num_pos.to(device).reshape(-1) > 0
        stacked = torch.stack([values[key] for key in self.keys], dim=0).to(dtype)  # [M, B]
        batch_sums = torch.where(valid.unsqueeze(0), stacked, torch.zeros((), dtype=dtype, device=device)).sum(dim=1)
        batch_count = valid.sum().to(dtype)
        if self._sums is None:
            self._sums, self._count = batch_sums, batch_count
        else:
            self._sums = self._sums + batch_sums.to(self._sums.device, self._sums.dtype)
            self._count = self._count + batch_count.to(self._count.device, self._count.dtype)
        return values

    def state(self) -> Tuple[Tensor, Tensor]:
        """``(sums, count)``; zeros on CPU before the first update."""
        if self._sums is None:
            return torch.zeros(len(self.keys), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        return self._sums, self._count

    def compute(self, sums: Optional[Tensor] = None, count: Optional[Tensor] = None) -> Dict[str, float]:
        """Means ``sums / count`` keyed by ``name@k``; defaults to this accumulator's own state.

        All values are ``NaN`` when ``count == 0``.
        """
        if sums is None or count is None:
            own_sums, own_count = self.state()
            sums = own_sums if sums is None else sums
            count = own_count if count is None else count
        sums = sums.detach().to("cpu", torch.float64).reshape(-1)
        n = float(torch.as_tensor(count).detach().to("cpu", torch.float64).reshape(()).item())
        if sums.numel() != len(self.keys):
            raise ValueError(f"sums has {sums.numel()} entries, expected {len(self.keys)}")
        if n <= 0:
            return {key: float("nan") for key in self.keys}
        return {key: float(s) / n for key, s in zip(self.keys, sums.tolist())}


# --------------------------------------------------------------------------- #
# pointwise metrics
# --------------------------------------------------------------------------- #


def _grouped_auc_parts(scores: Tensor, labels: Tensor, groups: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-group Mann-Whitney statistics with ties counted half.

    Returns int64 tensors ``(twice_u, n_pos, n_neg)`` with one entry per
    distinct group (in increasing group order), where ``twice_u`` is twice the
    number of (positive, negative) pairs of the group ranked correctly, ties
    counting half: ``AUC_g = twice_u / (2 * n_pos * n_neg)``. Integer
    arithmetic keeps this exact.
    """
    s = scores.detach().reshape(-1)
    y = labels.detach().reshape(-1).to(s.device)
    if y.numel() != s.numel():
        raise ValueError(f"scores has {s.numel()} elements, labels has {y.numel()}")
    y = y if y.dtype == torch.bool else y > 0.5
    device = s.device
    n = s.numel()
    if groups is None:
        order = torch.argsort(s)
        new_group = None
    else:
        g = groups.detach().reshape(-1).to(device)
        if g.numel() != n:
            raise ValueError(f"scores has {n} elements, groups has {g.numel()}")
        # lexicographic sort by (group, score): sort by score, then a stable sort by group
        # (the order among tied scores does not matter: ties are handled as runs)
        order = torch.argsort(s)
        g_sorted, by_group = torch.sort(g[order], stable=True)
        order = order[by_group]
        new_group = torch.ones(n, dtype=torch.bool, device=device)
        new_group[1:] = g_sorted[1:] != g_sorted[:-1]
    s_sorted = s[order]
    y_sorted = y[order]

    # runs: maximal blocks of equal score inside one group (positions in sorted order)
    new_run = torch.ones(n, dtype=torch.bool, device=device)
    new_run[1:] = s_sorted[1:] != s_sorted[:-1]
    if new_group is not None:
        new_run |= new_group
    run_start = torch.nonzero(new_run).reshape(-1)  # [R]
    n_arr = torch.full((1,), n, dtype=torch.long, device=device)

    cum_pos = torch.cumsum(y_sorted, 0, dtype=torch.long)  # inclusive prefix count of positives
    pos_before_run = cum_pos[run_start] - y_sorted[run_start].to(torch.long)  # [R]
    neg_before_run = run_start - pos_before_run
    pos_bounds = torch.cat([pos_before_run, cum_pos[-1:]])  # [R + 1]
    pos_run = pos_bounds[1:] - pos_bounds[:-1]
    neg_run = torch.diff(run_start, append=n_arr) - pos_run

    if new_group is None:
        first_run = torch.zeros(1, dtype=torch.long, device=device)
        run_group = torch.zeros_like(run_start)
    else:
        run_opens_group = new_group[run_start]  # [R]
        first_run = torch.nonzero(run_opens_group).reshape(-1)  # [G], first run of each group
        run_group = torch.cumsum(run_opens_group, 0, dtype=torch.long) - 1
    # negatives of the same group scored strictly lower than the run, ties count half
    neg_below = neg_before_run - neg_before_run[first_run][run_group]
    twice_u_run = pos_run * (2 * neg_below + neg_run)
    # per-group sums of the contiguous runs via prefix sums at group boundaries
    zero = torch.zeros(1, dtype=torch.long, device=device)
    cum_u = torch.cat([zero, torch.cumsum(twice_u_run, 0)])
    run_bounds = torch.cat([first_run, torch.full((1,), run_start.numel(), dtype=torch.long, device=device)])
    twice_u = cum_u[run_bounds[1:]] - cum_u[run_bounds[:-1]]
    n_pos = pos_bounds[run_bounds[1:]] - pos_bounds[run_bounds[:-1]]
    n_rows = torch.diff(torch.cat([run_start[first_run], n_arr]))
    n_neg = n_rows - n_pos
    return twice_u, n_pos, n_neg


def auc(scores: Tensor, labels: Tensor) -> Tensor:
    """ROC AUC with tied scores counted half (Mann-Whitney U with midranks).

    ``labels`` may be bool, int or float (positive when ``> 0.5``). Returns a
    0-dim float tensor on the scores' device; ``NaN`` when only one class (or
    nothing) is present.

    Own implementation rather than ``torchmetrics``' ``binary_auroc``: that one
    also counts ties half, but returns ``0`` (with a warning) for a single
    class, applies a sigmoid to inputs outside ``[0, 1]`` and integrates a
    float32 ROC curve. NaN scores are not supported.
    """
    dtype = _acc_dtype(scores.device)
    if scores.numel() == 0:
        return torch.tensor(float("nan"), dtype=dtype, device=scores.device)
    twice_u, n_pos, n_neg = _grouped_auc_parts(scores, labels, None)
    denom = (2 * n_pos * n_neg).to(dtype)
    res = twice_u.to(dtype) / denom
    return torch.where(denom > 0, res, torch.full_like(res, float("nan")))[0]


def gauc(scores: Tensor, labels: Tensor, groups: Tensor) -> Tensor:
    """Group AUC (DIN paper): impression-weighted mean of per-group AUC.

    ``GAUC = sum_g n_g * AUC_g / sum_g n_g`` over the groups (e.g. users) that
    have both a positive and a negative, with ``n_g`` the group's number of
    rows (impressions) and ``AUC_g`` counting ties half. Groups with a single
    class are excluded. Returns ``NaN`` when no group qualifies.
    """
    dtype = _acc_dtype(scores.device)
    if scores.numel() == 0:
        return torch.tensor(float("nan"), dtype=dtype, device=scores.device)
    twice_u, n_pos, n_neg = _grouped_auc_parts(scores, labels, groups)
    valid = (n_pos > 0) & (n_neg > 0)
    weight = (n_pos + n_neg).to(dtype) * valid
    group_auc = twice_u.to(dtype) / (2 * n_pos * n_neg).clamp(min=1).to(dtype)
    total = weight.sum()
    res = (weight * group_auc).sum() / total
    return torch.where(total > 0, res, torch.full_like(res, float("nan")))


def logloss(probs_or_logits: Tensor, labels: Tensor, from_logits: bool = True) -> Tensor:
    """Mean binary cross-entropy.

    With ``from_logits=True`` the input is logits (numerically stable
    ``binary_cross_entropy_with_logits``); otherwise probabilities, clipped to
    ``[1e-7, 1 - 1e-7]``. Computed in at least float32; ``NaN`` for empty input.
    """
    x = probs_or_logits.detach().reshape(-1)
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.to(torch.float32)
    y = labels.detach().reshape(-1).to(device=x.device, dtype=x.dtype)
    if y.numel() != x.numel():
        raise ValueError(f"inputs have {x.numel()} elements, labels has {y.numel()}")
    if x.numel() == 0:
        return torch.tensor(float("nan"), dtype=x.dtype, device=x.device)
    if from_logits:
        return F.binary_cross_entropy_with_logits(x, y)
    return F.binary_cross_entropy(x.clamp(1e-7, 1.0 - 1e-7), y)


class PointwiseAccumulator:
    """Collect ``(logits, labels, groups)`` batch by batch; compute AUC, GAUC, logloss.

    ``update(logits, labels, groups=None)`` stores detached copies on their
    device; ``tensors()`` returns the concatenation ``(logits, labels, groups)``
    (``groups`` is ``None`` if never given) for the caller to gather across
    processes; ``compute()`` (or ``compute(logits, labels, groups)`` on
    gathered tensors) returns ``{"auc", "gauc", "logloss"}`` as floats
    (``gauc`` is NaN without groups). Set ``from_logits=False`` when the
    model outputs probabilities.
    """

    def __init__(self, from_logits: bool = True):
        self.from_logits = from_logits
        self.reset()

    def reset(self) -> None:
        self._logits: List[Tensor] = []
        self._labels: List[Tensor] = []
        self._groups: List[Tensor] = []

    def update(self, logits: Tensor, labels: Tensor, groups: Optional[Tensor] = None) -> None:
        logits = logits.detach().reshape(-1)
        labels = labels.detach().reshape(-1)
        if labels.numel() != logits.numel():
            raise ValueError(f"logits has {logits.numel()} elements, labels has {labels.numel()}")
        has_groups = groups is not None
        if self._logits and has_groups != bool(self._groups):
            raise ValueError("groups must be given for every batch or for none")
        self._logits.append(logits)
        self._labels.append(labels)
        if has_groups:
            groups = groups.detach().reshape(-1)
            if groups.numel() != logits.numel():
                raise ValueError(f"logits has {logits.numel()} elements, groups has {groups.numel()}")
            self._groups.append(groups)

    def tensors(self) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Concatenated ``(logits [N], labels [N], groups [N] or None)``."""
        if not self._logits:
            empty = torch.zeros(0)
            return empty, empty.clone(), None
        logits = torch.cat(self._logits)
        labels = torch.cat([lb.to(logits.device) for lb in self._labels])
        groups = torch.cat([g.to(logits.device) for g in self._groups]) if self._groups else None
        return logits, labels, groups

    def compute(
        self,
        logits: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        groups: Optional[Tensor] = None,
    ) -> Dict[str, float]:
        """Metrics on the given tensors, or on everything collected when ``logits`` is None."""
        if logits is None:
            logits, labels, groups = self.tensors()
        elif labels is None:
            raise ValueError("labels are required when logits are given")
        res = {
            "auc": float(auc(logits, labels).item()),
            "gauc": float(gauc(logits, labels, groups).item()) if groups is not None else math.nan,
            "logloss": float(logloss(logits, labels, from_logits=self.from_logits).item()),
        }
        return res
