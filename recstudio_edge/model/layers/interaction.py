"""Feature-interaction layers of the CTR models, as plain ``nn.Module`` s on tensors.

- ``DotInteraction``: DLRM's ``dot`` (facebookresearch/dlrm ``interact_features``): the dense
  vector and the F sparse vectors, ``[B, 1 + F, D]``, every pairwise inner product of the strict
  lower triangle (``self_interaction=True``: the diagonal too), concatenated after the dense
  vector. Output ``D + n (n - 1) / 2`` (``n (n + 1) / 2`` with the diagonal), n = 1 + F (F without
  a dense vector). The pairs are in the reference's order: ``(1, 0), (2, 0), (2, 1), (3, 0) ...``.
- ``CatInteraction``: DLRM's ``cat``: the dense vector and the flattened sparse vectors.
- ``FactorizationMachine``: the FM second-order term ``sum_{i<j} <v_i, v_j>`` per row, by the
  identity ``0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)`` (Rendle 2010), ``[B, F, D] -> [B]``.
- ``CrossNetV2``: DCN-V2's cross network (Wang et al., WWW 2021):
  ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, with ``W_l`` full rank, low rank ``U_l V_l^T``
  (``low_rank=r``), or a mixture of low-rank experts (``num_experts > 1``, the paper's DCN-Mix:
  ``x_{l+1} = sum_i g_i(x_l) x_0 * (U_i tanh(C_i tanh(V_i^T x_l)) + b) + x_l``, softmax gates).

Every layer is made of matmuls, gathers and elementwise ops only, so it exports to ONNX (opset 17)
as it runs in PyTorch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def pair_index(n: int, self_interaction: bool = False) -> torch.Tensor:
    """Flat indices ``i * n + j`` of the pairs ``j < i`` (``j <= i`` with ``self_interaction``) of an
    ``n x n`` matrix, row by row: the reference DLRM's ``li, lj`` lists."""
    offset = 1 if self_interaction else 0
    return torch.tensor([i * n + j for i in range(n) for j in range(i + offset)], dtype=torch.long)


class DotInteraction(nn.Module):
    """``(dense [B, D] or None, sparse [B, F, D]) -> [B, D + pairs]`` (``[B, pairs]`` without dense).

    ``num_vectors``: F, plus 1 when a dense vector is given (the pair list is built for it)."""

    def __init__(self, num_vectors: int, self_interaction: bool = False, with_dense: bool = True):
        super().__init__()
        self.num_vectors, self.self_interaction = int(num_vectors), bool(self_interaction)
        self.with_dense = bool(with_dense)
        if self.num_vectors < (1 if self_interaction else 2):
            raise ValueError(f"dot interaction of {self.num_vectors} vector(s): no pair to take "
                             f"(it needs 2 vectors, or 1 with self_interaction)")
        self.register_buffer("index", pair_index(self.num_vectors, self.self_interaction), persistent=False)

    @property
    def num_pairs(self) -> int:
        return int(self.index.numel())

    def out_dim(self, dense_dim: int) -> int:
        return (int(dense_dim) if self.with_dense else 0) + self.num_pairs

    def forward(self, dense: Optional[torch.Tensor], sparse: torch.Tensor) -> torch.Tensor:
        t = sparse if dense is None else torch.cat([dense.unsqueeze(1), sparse], dim=1)  # [B, n, D]
        if t.shape[1] != self.num_vectors:
            raise ValueError(f"dot interaction built for {self.num_vectors} vectors, got {t.shape[1]}")
        z = torch.bmm(t, t.transpose(1, 2)).flatten(1)  # [B, n * n]
        pairs = z.index_select(1, self.index)
        return pairs if dense is None or not self.with_dense else torch.cat([dense, pairs], dim=1)


class CatInteraction(nn.Module):
    """``(dense [B, Dd] or None, sparse [B, F, D]) -> [B, Dd + F * D]``: DLRM's ``cat``."""

    def __init__(self, with_dense: bool = True):
        super().__init__()
        self.with_dense = bool(with_dense)

    def out_dim(self, dense_dim: int, num_slots: int, slot_dim: int) -> int:
        return (int(dense_dim) if self.with_dense else 0) + int(num_slots) * int(slot_dim)

    def forward(self, dense: Optional[torch.Tensor], sparse: torch.Tensor) -> torch.Tensor:
        flat = sparse.flatten(1)
        return flat if dense is None or not self.with_dense else torch.cat([dense, flat], dim=1)


INTERACTIONS = {"dot": DotInteraction, "cat": CatInteraction}


class FactorizationMachine(nn.Module):
    """``[B, F, D] -> [B]``: ``sum_{i<j} <v_i, v_j>`` by ``0.5 * ((sum v)^2 - sum v^2)``."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        s = v.sum(dim=1)
        return 0.5 * (s * s - (v * v).sum(dim=1)).sum(dim=1)


class CrossNetV2(nn.Module):
    """``[B, n] -> [B, n]``: ``num_layers`` cross layers ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``.

    ``low_rank=None``: ``W_l`` a full ``n x n`` matrix; ``low_rank=r``: ``W_l = U_l V_l^T`` (``n x r``
    each, ``2 n r`` weights instead of ``n^2``); ``num_experts > 1`` (with ``low_rank``): the
    mixture of low-rank experts with a non-linearity in the low-rank space and softmax gates."""

    def __init__(self, in_dim: int, num_layers: int = 3, low_rank: Optional[int] = None, num_experts: int = 1):
        super().__init__()
        self.in_dim, self.num_layers = int(in_dim), int(num_layers)
        self.low_rank = None if low_rank in (None, 0) else int(low_rank)
        self.num_experts = int(num_experts)
        if self.in_dim < 1 or self.num_layers < 1:
            raise ValueError(f"CrossNetV2: in_dim and num_layers must be >= 1, got {in_dim}, {num_layers}")
        if self.low_rank is not None and self.low_rank < 1:
            raise ValueError(f"CrossNetV2: low_rank must be >= 1 (or null: full rank), got {low_rank}")
        if self.num_experts < 1:
            raise ValueError(f"CrossNetV2: num_experts must be >= 1, got {num_experts}")
        if self.num_experts > 1 and self.low_rank is None:
            raise ValueError(f"CrossNetV2: a mixture of {self.num_experts} experts is a mixture of low-rank "
                             f"experts: set low_rank (e.g. 32)")
        n, L = self.in_dim, self.num_layers
        self.bias = nn.Parameter(torch.zeros(L, n))
        if self.low_rank is None:
            self.w = nn.ModuleList(nn.Linear(n, n, bias=False) for _ in range(L))
        elif self.num_experts == 1:
            self.v = nn.ModuleList(nn.Linear(n, self.low_rank, bias=False) for _ in range(L))
            self.u = nn.ModuleList(nn.Linear(self.low_rank, n, bias=False) for _ in range(L))
        else:
            E, r = self.num_experts, self.low_rank
            def xavier(*shape):  # each expert's matrix as its own xavier_normal_ draw
                w = torch.empty(L * E, *shape)
                for m in w:
                    nn.init.xavier_normal_(m)
                return nn.Parameter(w.reshape(L, E, *shape))

            self.V, self.C, self.U = xavier(n, r), xavier(r, r), xavier(r, n)
            self.gate = nn.Linear(n, E, bias=False)

    def layer(self, i: int, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Cross layer ``i`` applied to ``x`` (``x0`` the network's input)."""
        if self.low_rank is None:
            return x0 * (self.w[i](x) + self.bias[i]) + x
        if self.num_experts == 1:
            return x0 * (self.u[i](self.v[i](x)) + self.bias[i]) + x
        h = torch.tanh(torch.einsum("bn,enr->ber", x, self.V[i]))
        h = torch.tanh(torch.einsum("ber,ers->bes", h, self.C[i]))
        experts = x0.unsqueeze(1) * (torch.einsum("ber,ern->ben", h, self.U[i]) + self.bias[i])  # [B, E, n]
        g = torch.softmax(self.gate(x), dim=-1).unsqueeze(-1)  # [B, E, 1]
        return (g * experts).sum(dim=1) + x

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for i in range(self.num_layers):
            x = self.layer(i, x0, x)
        return x


__all__ = ["DotInteraction", "CatInteraction", "INTERACTIONS", "FactorizationMachine", "CrossNetV2", "pair_index"]
