"""DLRM, DeepFM, DCNv2 and their layers: interactions against hand values, the FM identity, the cross
layer's formula, each model learning planted feature crosses that a first-order model cannot, the
device parts in ONNX equal to PyTorch, and the AUC-threshold stop in a plain Trainer."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from recstudio_edge.config import ConfigError
from recstudio_edge.edge.protocol import TensorSpec
from recstudio_edge.model.layers.interaction import (CatInteraction, CrossNetV2, DotInteraction,
                                                     FactorizationMachine, pair_index)


# ---- layers against hand values ------------------------------------------------------------------
def test_dot_interaction_is_the_strict_lower_triangle_of_inner_products_in_the_reference_order():
    dense = torch.tensor([[1.0, 0.0]])
    sparse = torch.tensor([[[0.0, 2.0], [3.0, 1.0]]])  # v0 = dense, v1, v2
    out = DotInteraction(3)(dense, sparse)
    # dense, then <v1,v0>=0, <v2,v0>=3, <v2,v1>=2
    assert out.tolist() == [[1.0, 0.0, 0.0, 3.0, 2.0]]
    # with the vectors themselves: (0,0) (1,0) (1,1) (2,0) (2,1) (2,2)
    out = DotInteraction(3, self_interaction=True)(dense, sparse)
    assert out.tolist() == [[1.0, 0.0, 1.0, 0.0, 4.0, 3.0, 2.0, 10.0]]
    assert DotInteraction(3).out_dim(2) == 5 and DotInteraction(27).num_pairs == 27 * 26 // 2  # Kaggle: 351
    # without a dense vector: the pairs of the sparse vectors only
    assert DotInteraction(2)(None, sparse).tolist() == [[2.0]]
    assert pair_index(3).tolist() == [3, 6, 7]
    with pytest.raises(ValueError, match="built for 3 vectors, got 2"):
        DotInteraction(3)(None, sparse)
    with pytest.raises(ValueError, match="no pair to take"):
        DotInteraction(1)


def test_dot_interaction_equals_a_loop_over_pairs_on_random_vectors():
    g = torch.Generator().manual_seed(0)
    dense, sparse = torch.randn(4, 3, generator=g), torch.randn(4, 5, 3, generator=g)
    t = torch.cat([dense.unsqueeze(1), sparse], 1)
    want = torch.stack([(t[:, i] * t[:, j]).sum(-1) for i in range(6) for j in range(i)], 1)
    torch.testing.assert_close(DotInteraction(6)(dense, sparse), torch.cat([dense, want], 1))
    assert CatInteraction()(dense, sparse).tolist() == torch.cat([dense, sparse.flatten(1)], 1).tolist()


def test_fm_second_order_identity_equals_the_explicit_pair_sum():
    v = torch.tensor([[[1.0], [2.0], [3.0]]])
    assert FactorizationMachine()(v).tolist() == [11.0]  # 1*2 + 1*3 + 2*3
    g = torch.Generator().manual_seed(1)
    v = torch.randn(6, 7, 4, generator=g, dtype=torch.float64)
    want = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(7), 2))
    torch.testing.assert_close(FactorizationMachine()(v), want)


def test_cross_layer_formula_full_low_rank_and_mixture():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    full = CrossNetV2(6, num_layers=2).double()
    with torch.no_grad():
        full.bias.copy_(torch.randn(2, 6, generator=g))
    x = x0
    for i in range(2):  # x_{l+1} = x0 * (W x_l + b) + x_l
        x = x0 * (x @ full.w[i].weight.T + full.bias[i]) + x
    torch.testing.assert_close(full(x0), x)
    # low rank = full rank with W = U V^T
    low = CrossNetV2(6, num_layers=2, low_rank=3).double()
    with torch.no_grad():
        low.bias.copy_(full.bias)
        for i in range(2):
            full.w[i].weight.copy_(low.u[i].weight @ low.v[i].weight)
    torch.testing.assert_close(low(x0), full(x0))
    assert sum(p.numel() for p in low.parameters()) == 2 * (2 * 6 * 3 + 6)
    # mixture: sum_e softmax(G x)_e * x0 * (U_e tanh(C_e tanh(V_e^T x)) + b) + x
    mix = CrossNetV2(6, num_layers=1, low_rank=3, num_experts=2).double()
    gate = torch.softmax(x0 @ mix.gate.weight.T, -1)
    want = x0.clone()
    for e in range(2):
        h = torch.tanh(torch.tanh(x0 @ mix.V[0, e]) @ mix.C[0, e])
        want = want + gate[:, e:e + 1] * x0 * (h @ mix.U[0, e] + mix.bias[0])
    torch.testing.assert_close(mix(x0), want)
    with pytest.raises(ValueError, match="mixture of 4 experts is a mixture of low-rank experts: set low_rank"):
        CrossNetV2(6, num_experts=4)
