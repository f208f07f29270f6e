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

    CHUNK_ELEMENTS = 1 << 24  # [chunk, N, 2D] floats per step (64 MB): ml-1m's 4096-user batch was 7.7 GB

    def all(self, q, v):
        N = v.size(0)
        step = max(1, self.CHUNK_ELEMENTS // max(1, N * 2 * v.size(-1)))
        parts = [self.forward(c.unsqueeze(1).expand(c.size(0), N, -1), v.unsqueeze(0).expand(c.size(0), N, -1))
                 for c in q.split(step)]
        return torch.cat(parts, 0) if parts else q.new_zeros(0, N)


@register_scorer(name="neumf")
class NeuMF(nn.Module):
    """NeuMF's head (He et al., WWW 2017): ``q`` and ``v`` are ``[GMF part (gmf_dim) | MLP part]``;
    the score is ``w . [q_g * v_g ; MLP([q_m, v_m])] + b``. No ANN (``metric = None``).

    ``all`` never builds the ``[B, N, 2 * mlp_dim]`` concatenation: the first MLP layer is split
    into its query and item halves (``W [q; v] = W_q q + W_v v``), the GMF half of the output layer
    is one matrix product, and users are taken in chunks so that ``[chunk, N, hidden]`` stays small.
    """

    metric = None

    def __init__(self, dim: int = 64, gmf_dim: int = 32, hidden: tuple = (32, 16, 8), dropout: float = 0.0,
                 chunk_elements: int = 1 << 24):
        super().__init__()
        hidden = [int(h) for h in hidden]
        if not 0 <= gmf_dim < dim or not hidden:
            raise ValueError(f"neumf: need 0 <= gmf_dim < dim and a non-empty hidden, got dim={dim}, "
                             f"gmf_dim={gmf_dim}, hidden={hidden}")
        self.gmf_dim, self.mlp_dim = int(gmf_dim), int(dim - gmf_dim)
        self.first_q = nn.Linear(self.mlp_dim, hidden[0])
        self.first_v = nn.Linear(self.mlp_dim, hidden[0], bias=False)
        self.rest = nn.Sequential(nn.ReLU(), *([nn.Dropout(dropout)] if dropout > 0 else []),
                                  *(MLP(hidden[0], hidden[1:], dropout=dropout) if len(hidden) > 1 else []))
        self.out_gmf = nn.Linear(self.gmf_dim, 1, bias=False)
        self.out_mlp = nn.Linear(hidden[-1], 1)
        self.chunk_elements = int(chunk_elements)

    def _split(self, x):
        return x[..., :self.gmf_dim], x[..., self.gmf_dim:]

    def forward(self, q, v):
        qg, qm = self._split(q)
        vg, vm = self._split(v)
        mlp = self.rest(self.first_q(qm) + self.first_v(vm))
        return self.out_gmf(qg * vg).squeeze(-1) + self.out_mlp(mlp).squeeze(-1)

    def all(self, q, v):
        qg, qm = self._split(q)
        vg, vm = self._split(v)
        gmf = (qg * self.out_gmf.weight[0]) @ vg.T  # [B, N]
        a, b = self.first_q(qm), self.first_v(vm)  # [B, H], [N, H]
        step = max(1, self.chunk_elements // max(1, b.numel()))
        parts = [self.out_mlp(self.rest(a[s:s + step].unsqueeze(1) + b.unsqueeze(0))).squeeze(-1)
                 for s in range(0, a.size(0), step)]
        return gmf + torch.cat(parts, 0) if parts else gmf
