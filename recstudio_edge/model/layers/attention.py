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
    """

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``target [B, D]``, ``history [B, L, D]``, ``mask [B, L]`` (True = real item) -> ``[B, D]``."""
        q = self.q(target).unsqueeze(1)  # [B, 1, D]
        logits = (q * self.k(history)).sum(-1) * self.scale  # [B, L]
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        weights = torch.nan_to_num(weights, nan=0.0)  # all-padding rows
        return torch.bmm(weights.unsqueeze(1), self.v(history)).squeeze(1)


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
