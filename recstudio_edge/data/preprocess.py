"""From parsed tables to one tensor dataset: filtering, id remapping, splitting.

Everything here is vectorised over numpy arrays; a million interactions take well
under a second. The result, ``Interactions``, is a dict of tensors plus the id
vocabularies, so it caches with ``torch.save`` and loads with ``weights_only=True``.

Split codes (``Interactions.split``): 0 train, 1 valid target, 2 test target, 3 visible
history of an evaluation user that is not trained on (``user`` split mode).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .errors import DataError

log = logging.getLogger(__name__)

TRAIN, VALID, TEST, HISTORY = 0, 1, 2, 3
SPLIT_MODES = ("user_entry", "entry", "time", "user", "loo")


@dataclass
class Interactions:
    """All interactions, sorted by (user, time), with 1-based ids (0 is padding)."""

    num_users: int  # including the padding id 0
    num_items: int
    user: torch.Tensor  # [N] long
    item: torch.Tensor  # [N] long
    time: torch.Tensor  # [N] float64
    split: torch.Tensor  # [N] uint8, codes above
    user_tokens: List[str]  # id -> raw token, [0] = "[PAD]"
    item_tokens: List[str]
    rating: Optional[torch.Tensor] = None
    # the .user / .item files' columns as they were written, one string per remapped id ("" where
    # the file has no row or no value; [0] = padding): what format converters read features from
    # (a genre list, a year, a zip prefix) without a second pass over the files
    user_attrs: Dict[str, List[str]] = field(default_factory=dict)
    item_attrs: Dict[str, List[str]] = field(default_factory=dict)
    stats: Dict[str, float] = field(default_factory=dict)

    def to_state(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_state(cls, state: dict) -> "Interactions":
        return cls(**state)

    # ---- views --------------------------------------------------------------------
    def user_ptr(self, mask: torch.Tensor) -> (torch.Tensor, torch.Tensor):
        """CSR of the masked interactions: ``(indptr [num_users+1], items)`` in time order."""
        users = self.user[mask]
        counts = torch.bincount(users, minlength=self.num_users)
        indptr = torch.zeros(self.num_users + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=indptr[1:])
        return indptr, self.item[mask]

    def item_counts(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.bincount(self.item[mask], minlength=self.num_items)


def _kcore(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int,
           max_iter: int = 50) -> np.ndarray:
    """Boolean keep-mask after iterating user and item minimum-count filters to a fixed point."""
    keep = np.ones(users.shape[0], dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep
    for _ in range(max_iter):
        changed = False
        if min_user > 1:
            cnt = np.bincount(users[keep])
            bad = keep & (cnt[users] < min_user) if cnt.size else keep
            if bad.any():
                keep &= ~bad
                changed = True
        if min_item > 1:
            cnt = np.bincount(items[keep], minlength=items.max() + 1 if items.size else 0)
            bad = keep & (cnt[items] < min_item)
            if bad.any():
                keep &= ~bad
                changed = True
        if not changed:
            break
    return keep


def _group_rank(user: np.ndarray) -> (np.ndarray, np.ndarray):
    """For rows sorted by user: each row's position inside its user, and its user's size."""
    n = user.shape[0]
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    sizes = np.diff(np.r_[starts, n])
    pos = np.arange(n) - np.repeat(starts, sizes)
    return pos, np.repeat(sizes, sizes)


def _ratio_counts(n: np.ndarray, ratios: Sequence[float]) -> (np.ndarray, np.ndarray, np.ndarray):
    """Train/valid/test counts per group of size ``n``, rounding as RecBole does."""
    rv, rt = float(ratios[1]), float(ratios[2])
    cv = np.floor(rv * n).astype(np.int64)
    ct = np.floor(rt * n).astype(np.int64)
    ctr = n - cv - ct
    for c, r in ((ct, rt), (cv, rv)):  # RecBole gives a part with 0 < r*n < 1 one row
        bump = (ctr > 1) & (r * n > 0) & (r * n < 1)
        c += bump
        ctr -= bump
    return ctr, cv, ct


def split_codes(user: np.ndarray, time_rank: np.ndarray, mode: str, ratios: Sequence[float],
                order: str, seed: int, holdout: float = 0.2) -> np.ndarray:
    """Split codes for rows sorted by (user, time). ``time_rank`` is unused except for order."""
    n = user.shape[0]
    rng = np.random.default_rng(seed)
    codes = np.zeros(n, dtype=np.uint8)
    if mode not in SPLIT_MODES:
        from ..names import did_you_mean

        raise ValueError(f"unknown split mode {mode!r}: {did_you_mean(mode, SPLIT_MODES)}")
    if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    if mode in ("user_entry", "loo"):
        pos, size = _group_rank(user)
        if mode == "user_entry" and order == "random":
            key = rng.random(n)
            perm = np.lexsort((key, user))
            pos_r = np.empty(n, dtype=np.int64)
            pos_r[perm] = pos  # rows sorted by user stay grouped; rank inside by the random key
            pos = pos_r
        if mode == "loo":
            codes[(size >= 3) & (pos == size - 2)] = VALID
            codes[(size >= 2) & (pos == size - 1)] = TEST
            return codes
        ctr, cv, _ = _ratio_counts(size, ratios)
        codes[pos >= ctr] = VALID
        codes[pos >= ctr + cv] = TEST
        return codes
    if mode in ("entry", "time"):
        ordr = np.argsort(time_rank, kind="stable") if (mode == "time" or order == "time") else rng.permutation(n)
        ctr, cv, _ = _ratio_counts(np.array([n]), ratios)
        rank = np.empty(n, dtype=np.int64)
        rank[ordr] = np.arange(n)
        codes[rank >= ctr[0]] = VALID
        codes[rank >= ctr[0] + cv[0]] = TEST
        return codes
    # mode == "user": held-out users; their last `holdout` share (by time) is the target
    uniq = np.unique(user)
    perm = rng.permutation(uniq)
    ctr, cv, _ = _ratio_counts(np.array([uniq.size]), ratios)
    role = np.zeros(user.max() + 1, dtype=np.uint8)
    role[perm[ctr[0]:ctr[0] + cv[0]]] = VALID
    role[perm[ctr[0] + cv[0]:]] = TEST
    pos, size = _group_rank(user)
    n_target = np.maximum(1, np.floor(holdout * size)).astype(np.int64)
    r = role[user]
    is_target = pos >= size - n_target
    codes[(r != TRAIN) & ~is_target] = HISTORY
    codes[(r != TRAIN) & is_target] = r[(r != TRAIN) & is_target]
    return codes


def attribute_columns(table: Optional[pd.DataFrame], key: str, uniq) -> Dict[str, List[str]]:
    """``{column: [text per remapped id]}`` of a ``.user`` / ``.item`` table (``uniq``: raw ids in
    id order, id = position + 1); ids the table lacks get ``""``, index 0 (padding) too."""
    if table is None or key not in table.columns:
        return {}
    idx = pd.Index(uniq).get_indexer(table[key])
    ok = idx >= 0
    out: Dict[str, List[str]] = {}
    for col in table.columns:
        if col == key:
            continue
        values = table[col]
        text = np.full(len(uniq) + 1, "", dtype=object)
        if values.dtype.kind == "f":  # 1995.0 -> "1995"; NaN stays ""
            v = values.to_numpy()
            shown = np.where(np.isnan(v), "", pd.Series(v).map(lambda x: f"{x:g}").to_numpy())
        else:
            shown = values.astype(str).where(values.notna(), "").to_numpy()
        text[idx[ok] + 1] = shown[ok]
        out[str(col)] = [str(x) for x in text]
    return out


def build_interactions(inter: pd.DataFrame, item_table: Optional[pd.DataFrame], cfg: dict,
                       seed: int, source: str = "", user_table: Optional[pd.DataFrame] = None) -> Interactions:
    """Filter, remap and split a parsed interaction table as the ``data:`` config says."""
    if len(inter) == 0:
        raise DataError(source, message="no interactions left to build a dataset from")
    df = inter
    stats = {"raw_interactions": float(len(df))}
    thr = cfg.get("rating_threshold")
    if thr is not None:
        if "rating" not in df.columns:
            raise DataError(source, field="rating", message="rating_threshold is set but the data has no rating")
        df = df[df["rating"].to_numpy() >= float(thr)]
    u_codes, u_uniq = pd.factorize(df["user_id"], sort=False)
    i_codes, i_uniq = pd.factorize(df["item_id"], sort=False)
    keep = _kcore(u_codes, i_codes, int(cfg.get("min_user_inter") or 0), int(cfg.get("min_item_inter") or 0))
    if not keep.all():
        df = df[keep]
        u_codes, u_uniq = pd.factorize(df["user_id"], sort=False)
        i_codes, i_uniq = pd.factorize(df["item_id"], sort=False)
    if len(df) == 0:
        raise DataError(source, message="the filters removed every interaction "
                                        "(check rating_threshold / min_user_inter / min_item_inter)")
    user = u_codes.astype(np.int64) + 1
    item = i_codes.astype(np.int64) + 1
    if "timestamp" in df.columns:
        t = df["timestamp"].to_numpy(dtype=np.float64)
    else:
        t = np.arange(len(df), dtype=np.float64)
    order = np.lexsort((np.arange(len(df)), t, user))
    user, item, t = user[order], item[order], t[order]
    rating = df["rating"].to_numpy(dtype=np.float32)[order] if "rating" in df.columns else None
    split = cfg.get("split") or {}
    codes = split_codes(user, t, split.get("mode", "user_entry"), split.get("ratios", (0.8, 0.1, 0.1)),
                        split.get("order", "random"), seed, float(split.get("holdout", 0.2)))
    user_attrs = attribute_columns(user_table, "user_id", u_uniq)
    item_attrs = attribute_columns(item_table, "item_id", i_uniq)
    stats.update(interactions=float(len(user)), users=float(len(u_uniq)), items=float(len(i_uniq)))
    for name, code in (("train", TRAIN), ("valid", VALID), ("test", TEST), ("history", HISTORY)):
        stats[name] = float((codes == code).sum())
    return Interactions(
        num_users=len(u_uniq) + 1, num_items=len(i_uniq) + 1,
        user=torch.from_numpy(user), item=torch.from_numpy(item), time=torch.from_numpy(t),
        split=torch.from_numpy(codes), rating=None if rating is None else torch.from_numpy(rating),
        user_tokens=["[PAD]"] + [str(x) for x in u_uniq], item_tokens=["[PAD]"] + [str(x) for x in i_uniq],
        user_attrs=user_attrs, item_attrs=item_attrs, stats=stats,
    )
