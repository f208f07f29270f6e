"""Full-sort top-k helpers for retrieval models.

All functions are pure torch, vectorised (no Python loop over users or rows)
and device-agnostic: they run on whatever device their inputs live on.

Typical use for one evaluation batch of users::

    scores = user_emb @ item_emb.T                      # [B, N]
    h_rows, h_cols = csr_rows(hist_indptr, hist_indices, users)
    mask_scores_(scores, h_rows, h_cols)                # hide training history
    scores[:, 0] = -inf                                 # padding item 0
    t_rows, t_cols = csr_rows(test_indptr, test_indices, users)
    items, hits, num_pos = topk_hits(scores, k, t_rows, t_cols)
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["mask_scores_", "csr_rows", "topk_hits"]


def mask_scores_(scores: Tensor, rows: Tensor, cols: Tensor, value: float = float("-inf")) -> Tensor:
    """In place, set ``scores[rows, cols] = value`` and return ``scores``.

    ``rows`` / ``cols`` are 1-D long tensors of equal length (e.g. from
    :func:`csr_rows`); they are moved to ``scores.device`` if needed. Duplicate
    pairs are harmless. Used to mask each user's training history (the caller
    also masks the padding column 0, e.g. ``scores[:, 0] = -inf``).
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [B, N], got shape {tuple(scores.shape)}")
    if rows.shape != cols.shape or rows.dim() != 1:
        raise ValueError(f"rows and cols must be 1-D of equal length, got {tuple(rows.shape)} and {tuple(cols.shape)}")
    if rows.numel() == 0:
        return scores
    rows = rows.to(device=scores.device, dtype=torch.long)
    cols = cols.to(device=scores.device, dtype=torch.long)
    fill = torch.tensor(value, dtype=scores.dtype, device=scores.device)
    scores.index_put_((rows, cols), fill)
    return scores


def csr_rows(indptr: Tensor, indices: Tensor, users: Tensor) -> Tuple[Tensor, Tensor]:
    """Expand the CSR rows of a batch of users into (row-in-batch, item) pairs.

    Args:
        indptr: ``[U + 1]`` long, CSR row pointers (user ``u``'s items are
            ``indices[indptr[u]:indptr[u + 1]]``).
        indices: ``[nnz]`` long, item ids.
        users: ``[B]`` long, user ids of the batch (any order, repeats allowed).

    Returns:
        ``(rows, cols)``, each ``[M]`` long with ``M = sum of the batch users'
        row lengths``: ``rows[j]`` is the position of the user in ``users``
        (0..B-1) and ``cols[j]`` the item. Both are on ``indptr.device``
        (``users`` is moved there); :func:`mask_scores_` / :func:`topk_hits`
        move them to the score device themselves.
    """
    device = indptr.device
    users = users.to(device=device, dtype=torch.long).reshape(-1)
    indptr = indptr.to(torch.long)
    starts = indptr[users]
    lengths = indptr[users + 1] - starts
    batch = users.numel()
    total = int(lengths.sum().item()) if batch else 0
    if total == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    rows = torch.repeat_interleave(torch.arange(batch, device=device), lengths, output_size=total)
    # position of each output element inside its own user's segment
    seg_begin = torch.cumsum(lengths, 0) - lengths
    offset = torch.arange(total, device=device) - torch.repeat_interleave(seg_begin, lengths, output_size=total)
    src = torch.repeat_interleave(starts, lengths, output_size=total) + offset
    cols = indices[src.to(indices.device)].to(device=device, dtype=torch.long)
    return rows, cols


def topk_hits(scores: Tensor, k: int, target_rows: Tensor, target_cols: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Top-k items per row and whether each is a target.

    Args:
        scores: ``[B, N]`` scores, already masked (history / padding at ``-inf``).
        k: number of items to retrieve, ``1 <= k <= N``.
        target_rows, target_cols: ``[M]`` (row-in-batch, item) pairs of the
            ground-truth items (e.g. from :func:`csr_rows` on the test CSR).

    Returns:
        ``(topk_items [B, k] long, hits [B, k] bool, num_pos [B] long)``.
        ``topk_items`` is sorted by descending score (``torch.topk``; the order
        among exactly tied scores is unspecified). ``num_pos`` counts the
        distinct targets of each row (duplicates are counted once), including
        targets that were masked. A top-k slot whose score is ``-inf`` (a
        masked item, only reachable when fewer than ``k`` items are unmasked)
        is never a hit, so a masked target can never be counted as a hit.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [B, N], got shape {tuple(scores.shape)}")
    batch, n_items = scores.shape
    k = int(k)
    if not 1 <= k <= n_items:
        raise ValueError(f"k must be in [1, {n_items}] (number of items), got {k}")
    top_scores, top_items = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    hits, num_pos = hits_of_topk(top_scores, top_items, target_rows, target_cols, n_items)
    return top_items, hits, num_pos


def hits_of_topk(top_scores: Tensor, top_items: Tensor, target_rows: Tensor, target_cols: Tensor,
                 n_items: int) -> Tuple[Tensor, Tensor]:
    """``(hits [B, k] bool, num_pos [B] long)`` of a top-k list (from :func:`topk_hits`, or an ANN
    search): as :func:`topk_hits`, a slot whose score is ``-inf`` is never a hit and ``num_pos``
    counts each row's distinct targets. Memory ``O(B * k + M)``, not ``O(B * n_items)``."""
    batch = top_items.size(0)
    device = top_items.device
    rows = target_rows.to(device=device, dtype=torch.long)
    cols = target_cols.to(device=device, dtype=torch.long)
    if rows.numel() == 0:
        return torch.zeros(top_items.shape, dtype=torch.bool, device=device), \
            torch.zeros(batch, dtype=torch.long, device=device)
    keys = torch.unique(rows * n_items + cols)
    num_pos = torch.bincount(keys // n_items, minlength=batch)
    cand = torch.arange(batch, device=device).unsqueeze(1) * n_items + top_items.long()
    at = torch.searchsorted(keys, cand).clamp(max=keys.numel() - 1)
    hits = (keys[at] == cand) & (top_scores != float("-inf"))
    return hits, num_pos
