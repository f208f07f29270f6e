"""Scorers: how a query vector and an item vector make a score, picked by name (``scorer:``).

``forward(q [..., D], v [..., D]) -> [...]`` scores aligned pairs (broadcasting);
``all(q [B, D], v [N, D]) -> [B, N]`` scores every item for every query (full sort).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_scorer
from .layers import MLP


@register_scorer(name="inner_product")
class InnerProduct(nn.Module):
    metric = "ip"

    def forward(self, q, v):
        return (q * v).sum(-1)

    def all(self, q, v):
        return q @ v.T


@register_scorer(name="cosine")
class Cosine(nn.Module):
    metric = "cos"

    def forward(self, q, v):
        return F.cosine_similarity(q, v, dim=-1, eps=1e-8)

    def all(self, q, v):
        return F.normalize(q, dim=-1, eps=1e-8) @ F.normalize(v, dim=-1, eps=1e-8).T


@register_scorer(name="euclidean")
class Euclidean(nn.Module):
    """Negative squared euclidean distance (higher is closer)."""

    metric = "l2"

    def forward(self, q, v):
        return -((q - v) ** 2).sum(-1)

    def all(self, q, v):
        return -(q.pow(2).sum(-1, keepdim=True) - 2 * q @ v.T + v.pow(2).sum(-1).unsqueeze(0))


@register_scorer(name="mlp")
class MLPScorer(nn.Module):
    """A small MLP on ``[q, v]``: learnable, but every pair costs a forward pass (no ANN)."""

    metric = None

    def __init__(self, dim: int = 64, hidden: tuple = (64,)):
        super().__init__()
        self.mlp = MLP(2 * dim, [*hidden, 1], activation="relu", last_activation=False)

    def forward(self, q, v):
        q, v = torch.broadcast_tensors(q, v)
        return self.mlp(torch.cat([q, v], -1)).squeeze(-1)

    def all(self, q, v):
        B, N = q.size(0), v.size(0)
        return self.forward(q.unsqueeze(1).expand(B, N, -1), v.unsqueeze(0).expand(B, N, -1))
