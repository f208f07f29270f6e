"""Attention blocks: DIN-style target attention (DIN and PINRec's DIN trunk) and masks."""
from __future__ import annotations

import math

import torch
from torch import nn


class TargetAttention(nn.Module):
    """The target item attends over the history (DIN; docs/models.md).

    Bias-free linear maps for query (target), key and value; logits ``q.k / sqrt(D)``,
    masked where the history is padding (id 0); softmax over positions; weighted sum of
    values. A row with an empty history returns zeros (not NaN).

    Computed without a key or value per position: keys and values are linear in the history,
    so ``q . (W_k h) = (W_k^T q) . h`` and ``sum_l w_l W_v h_l = W_v (sum_l w_l h_l)``. The maps act
    on ``B`` rows instead of ``B x L`` positions, and the history is read twice (the logits, the
    weighted sum) as it is. The same function, its rounding aside; the parameters are the
    ``q``, ``k``, ``v`` linear layers as before.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``target [B, D]``, ``history [B, L, D]``, ``mask [B, L]`` (True = real item) -> ``[B, D]``.

        ``history`` and ``mask`` may also hold ``P`` rows with ``B = R * P``: row ``b`` of the target
        then attends over history ``b % P`` (the ``R`` blocks of a training batch, a positive and its
        negatives, share their histories), which is read once per history instead of once per row."""
        qk = (self.q(target) * self.scale) @ self.k.weight  # [B, D]: the query in the history's space
        P = history.size(0)
        if P == target.size(0):
            logits = (history * qk.unsqueeze(1)).sum(-1)  # [B, L]
            weights = torch.nan_to_num(torch.softmax(logits.masked_fill(~mask, float("-inf")), -1), nan=0.0)
            return self.v((weights.unsqueeze(-1) * history).sum(1))  # all-padding rows: zeros, not NaN
        if target.size(0) % P:
            raise ValueError(f"target rows {target.size(0)} are not a multiple of the {P} histories")
        queries = qk.view(-1, P, qk.size(-1)).transpose(0, 1)  # [P, R, D]
        logits = torch.bmm(queries, history.transpose(1, 2))  # [P, R, L]
        weights = torch.softmax(logits.masked_fill(~mask.unsqueeze(1), float("-inf")), -1)
        pooled = torch.bmm(torch.nan_to_num(weights, nan=0.0), history)  # [P, R, D]
        return self.v(pooled.transpose(0, 1).reshape(target.size(0), -1))


def causal_padding_mask(seq: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask ``[B, 1, L, L]`` (True = may attend) for left-padded sequences.

    Position i attends to real positions j <= i. Padding positions attend to themselves
    only, so no row is fully masked (no NaN); their outputs are never read.
    """
    L = seq.size(1)
    causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()
    keys = (seq != 0).unsqueeze(1)  # [B, 1, L]
    mask = causal.unsqueeze(0) & keys
    mask = mask | torch.eye(L, dtype=torch.bool, device=seq.device).unsqueeze(0)
    return mask.unsqueeze(1)


def padding_mask(seq: torch.Tensor) -> torch.Tensor:
    """Bidirectional attention mask ``[B, 1, L, L]`` (True = may attend): every position attends
    to every real position (id != 0), before or after it (BERT4Rec). Padding positions also
    attend to themselves, so no row is fully masked; their outputs are never read."""
    L = seq.size(1)
    keys = (seq != 0).unsqueeze(1).expand(-1, L, -1)  # [B, L, L]
    return (keys | torch.eye(L, dtype=torch.bool, device=seq.device).unsqueeze(0)).unsqueeze(1)
