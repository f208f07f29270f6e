"""DeepFM (Guo et al., IJCAI 2017): first order + FM second order + a deep MLP, one logit each, summed.

``DeepFMNet(sparse_arch, first_order, dense_fields, fm, deep)``:

- ``sparse_arch``: the feature pipeline (``features.FeatureArch``): ``(dense [B, Dd], slots [B, F, D])``;
- ``first_order``: ``w_0 + sum_i w_i``, a second ``FeatureArch`` of the same features with
  embedding size 1 (``dim=1``: one weight per id) and a ``Linear(Dd, 1)`` on the dense values;
- ``dense_fields``: each dense value ``x_k`` as a field ``x_k * e_k`` (FuxiCTR's numeric
  embedding), so dense values enter the FM and the deep part as fields like the sparse ones;
- ``fm``: ``layers.interaction.FactorizationMachine`` over the ``F + Dd`` fields;
- ``deep``: an MLP on the flattened fields, its last layer the logit.

``configs/model/DeepFM.yaml`` holds FuxiCTR's ``DeepFM_default`` (the template of the BARS
benchmark's configurations). On-device part: the whole network, ``"edge"``, features -> probability.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ...config import ConfigError
from ...registry import register_model
from ..layers import MLP
from ..layers.interaction import FactorizationMachine
from .dlrm import BatchOf, FeatureTower, check_sparse_grad, feature_arch, hidden_sizes


class DenseFields(nn.Module):
    """``dense [B, K] -> [B, K, D]``: value ``k`` times its own vector ``e_k``."""

    def __init__(self, num_values: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(int(num_values), int(dim)))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.unsqueeze(-1) * self.weight


class FirstOrder(nn.Module):
    """``w_0 + sum of the ids' weights + Linear(dense)``: a batch -> ``[B]``."""

    def __init__(self, arch: nn.Module):
        super().__init__()
        self.arch = arch
        self.bias = nn.Parameter(torch.zeros(1))
        self.dense = nn.Linear(int(arch.dense_dim), 1, bias=False) if int(arch.dense_dim) > 0 else None

    def forward(self, batch) -> torch.Tensor:
        dense, slots = self.arch(batch)
        out = slots.sum(dim=(1, 2)) + self.bias
        if self.dense is not None:
            out = out + self.dense(dense).squeeze(-1)
        return out


class DeepFMNet(nn.Module):
    """DeepFM as a plain module of named parts (module docstring); ``forward(batch) -> logits [B]``."""

    def __init__(self, sparse_arch: nn.Module, first_order: nn.Module, dense_fields: Optional[nn.Module],
                 fm: nn.Module, deep: nn.Module):
        super().__init__()
        self.sparse_arch, self.first_order, self.dense_fields = sparse_arch, first_order, dense_fields
        self.fm, self.deep = fm, deep

    def fields(self, batch) -> torch.Tensor:
        dense, slots = self.sparse_arch(batch)
        return self.fields_of(dense, slots)

    def fields_of(self, dense: Optional[torch.Tensor], slots: torch.Tensor) -> torch.Tensor:
        if self.dense_fields is None:
            return slots
        return torch.cat([self.dense_fields(dense), slots], dim=1)

    def forward(self, batch) -> torch.Tensor:
        v = self.fields(batch)
        return self.first_order(batch) + self.fm(v) + self.deep(v.flatten(1)).squeeze(-1)


def build_deepfm(sparse_arch: nn.Module, first_arch: nn.Module, hidden: Sequence[int], activation: str = "relu",
                 dropout: float = 0.0, batch_norm: bool = False) -> DeepFMNet:
    dims = sorted(set(int(d) for d in sparse_arch.slot_dims))
    if int(sparse_arch.num_slots) < 1:
        raise ConfigError("DeepFM: the features give no sparse (embedded) feature; the FM pairs embeddings")
    if len(dims) != 1:
        raise ConfigError(f"DeepFM: every sparse feature needs the same embedding size (the FM pairs them), "
                          f"got sizes {dims}: set model.embed_dim")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    D, K = dims[0], int(sparse_arch.dense_dim)
    dense_fields = DenseFields(K, D) if K > 0 else None
    deep = MLP((K + int(sparse_arch.num_slots)) * D, [*hidden, 1], activation=activation, dropout=float(dropout),
               last_activation=False, batch_norm=bool(batch_norm))
    return DeepFMNet(sparse_arch, FirstOrder(first_arch), dense_fields, FactorizationMachine(), deep)


class DeepFMScore(nn.Module):
    """A batch -> logits ``[B]`` (the device part's first stage)."""

    def __init__(self, net: DeepFMNet):
        super().__init__()
        self.net = net

    def forward(self, batch) -> torch.Tensor:
        return self.net(batch)


@register_model
class DeepFM(FeatureTower):
    """DeepFM on the rows' features (``data.features``); the data's facts come from the ``ctr`` source."""


    def __init__(self, features: list = (), feature_sizes: Optional[dict] = None, embed_dim: Optional[int] = 40,
                 hidden: Sequence[int] = (300, 300, 300), activation: str = "relu", dropout: float = 0.0,
                 batch_norm: bool = False, sparse_grad: bool = False, **base):
        base.setdefault("num_users", 0)
        base.setdefault("num_items", 0)
        super().__init__(**base)
        check_sparse_grad(self, sparse_grad)
        arch = feature_arch(features, feature_sizes, embed_dim, "DeepFM", sparse_grad)
        first = feature_arch(features, feature_sizes, 1, "DeepFM", sparse_grad)
        self.net = build_deepfm(arch, first, hidden_sizes(hidden, "hidden"), activation, dropout, batch_norm)

    def edge_stages(self, net, names) -> dict:
        return {"features": BatchOf(names, DeepFMScore(net))}
