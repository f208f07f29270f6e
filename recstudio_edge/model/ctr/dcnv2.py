"""DCN-V2 (Wang et al., WWW 2021): a cross network and a deep MLP on the concatenated features.

``DCNv2Net(sparse_arch, cross, stacked, parallel, fc)``: ``x_0 = sparse_arch.flat(batch)`` (the
dense values and every embedding, ``[B, n]``), ``cross = layers.interaction.CrossNetV2`` (full
rank, low rank ``U V^T``, or the mixture of low-rank experts), then by ``structure``:

- ``crossnet_only``: ``fc(cross(x_0))``;
- ``stacked``: ``fc(deep(cross(x_0)))``;
- ``parallel``: ``fc([cross(x_0), deep(x_0)])`` (the default, FuxiCTR's and the paper's best on Criteo);
- ``stacked_parallel``: ``fc([deep_s(cross(x_0)), deep_p(x_0)])``.

``configs/model/DCNv2.yaml`` holds FuxiCTR's ``DCNv2_default``. On-device part: the whole network,
``"edge"``, as ``EdgeStages`` ``features`` (embeddings, cross and deep parts) -> ``classifier``
(``fc``) -> ``output``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ...config import ConfigError
from ...registry import register_model
from ..layers import MLP
from ..layers.interaction import CrossNetV2
from .dlrm import BatchOf, FeatureTower, check_sparse_grad, feature_arch, hidden_sizes

STRUCTURES = ("crossnet_only", "stacked", "parallel", "stacked_parallel")


class DCNv2Features(nn.Module):
    """A batch -> the input of ``fc`` (module docstring)."""

    def __init__(self, sparse_arch: nn.Module, cross: nn.Module, structure: str,
                 stacked: Optional[nn.Module], parallel: Optional[nn.Module]):
        super().__init__()
        self.sparse_arch, self.cross, self.structure = sparse_arch, cross, structure
        self.stacked, self.parallel = stacked, parallel

    def forward(self, batch) -> torch.Tensor:
        return self.from_flat(self.sparse_arch.flat(batch))

    def from_flat(self, x0: torch.Tensor) -> torch.Tensor:
        c = self.cross(x0)
        if self.structure == "crossnet_only":
            return c
        if self.structure == "stacked":
            return self.stacked(c)
        if self.structure == "parallel":
            return torch.cat([c, self.parallel(x0)], dim=-1)
        return torch.cat([self.stacked(c), self.parallel(x0)], dim=-1)


class DCNv2Net(nn.Module):
    """DCN-V2 as a plain module of named parts; ``forward(batch) -> logits [B]``."""

    def __init__(self, features: DCNv2Features, fc: nn.Module):
        super().__init__()
        self.features, self.fc = features, fc

    @property
    def sparse_arch(self):
        return self.features.sparse_arch

    def forward(self, batch) -> torch.Tensor:
        return self.fc(self.features(batch)).squeeze(-1)

    def forward_flat(self, x0: torch.Tensor) -> torch.Tensor:
        """Logits from the concatenated features ``[B, n]``."""
        return self.fc(self.features.from_flat(x0)).squeeze(-1)


def build_dcnv2(sparse_arch: nn.Module, in_dim: int, structure: str = "parallel", num_cross_layers: int = 3,
                low_rank: Optional[int] = None, num_experts: int = 1, stacked_hidden: Sequence[int] = (),
                parallel_hidden: Sequence[int] = (), activation: str = "relu", dropout: float = 0.0,
                batch_norm: bool = False) -> DCNv2Net:
    structure = str(structure).lower()
    if structure not in STRUCTURES:
        from ...names import did_you_mean

        raise ConfigError(f"model.structure {structure!r}: {did_you_mean(structure, STRUCTURES)}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    try:
        cross = CrossNetV2(int(in_dim), int(num_cross_layers), low_rank, int(num_experts))
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
    stacked = parallel = None
    out = int(in_dim)
    mlp = dict(activation=activation, dropout=float(dropout), batch_norm=bool(batch_norm))
    if structure in ("stacked", "stacked_parallel"):
        if not stacked_hidden:
            raise ConfigError(f"model.stacked_hidden is empty: structure {structure} needs the deep part's sizes")
        stacked = MLP(int(in_dim), list(stacked_hidden), **mlp)
        out = stacked_hidden[-1]
    if structure in ("parallel", "stacked_parallel"):
        if not parallel_hidden:
            raise ConfigError(f"model.parallel_hidden is empty: structure {structure} needs the deep part's sizes")
        parallel = MLP(int(in_dim), list(parallel_hidden), **mlp)
        out = (int(in_dim) if structure == "parallel" else out) + parallel_hidden[-1]
    return DCNv2Net(DCNv2Features(sparse_arch, cross, structure, stacked, parallel), nn.Linear(out, 1))


@register_model
class DCNv2(FeatureTower):
    """DCN-V2 on the rows' features (``data.features``); the data's facts come from the ``ctr`` source."""


    def __init__(self, features: list = (), feature_sizes: Optional[dict] = None, embed_dim: Optional[int] = 40,
                 structure: str = "parallel", num_cross_layers: int = 3, low_rank: Optional[int] = None,
                 num_experts: int = 1, stacked_hidden: Sequence[int] = (500, 500, 500),
                 parallel_hidden: Sequence[int] = (500, 500, 500), activation: str = "relu", dropout: float = 0.0,
                 batch_norm: bool = False, sparse_grad: bool = False, **base):
        base.setdefault("num_users", 0)
        base.setdefault("num_items", 0)
        super().__init__(**base)
        check_sparse_grad(self, sparse_grad)
        arch = feature_arch(features, feature_sizes, embed_dim, "DCNv2", sparse_grad)
        in_dim = int(arch.dense_dim) + sum(int(d) for d in arch.slot_dims)
        self.net = build_dcnv2(arch, in_dim, structure, num_cross_layers, low_rank, num_experts,
                               hidden_sizes(stacked_hidden, "stacked_hidden"),
                               hidden_sizes(parallel_hidden, "parallel_hidden"), activation, dropout, batch_norm)

    def edge_stages(self, net, names) -> dict:
        return {"features": BatchOf(names, net.features), "classifier": net.fc}
