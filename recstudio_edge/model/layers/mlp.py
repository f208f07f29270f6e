"""Multi-layer perceptron with a configurable activation and dropout."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .activations import Tanh

ACTIVATIONS = {"relu": nn.ReLU, "tanh": Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
               "prelu": nn.PReLU, "leakyrelu": nn.LeakyReLU, "identity": nn.Identity}


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> hidden[-1]``; activation after every layer except,
    with ``last_activation=False``, the last one (a logit or an embedding)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], activation: str = "relu",
                 dropout: float = 0.0, last_activation: bool = True, batch_norm: bool = False):
        if activation.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        layers = []
        dims = [in_dim, *hidden]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(hidden) - 1
            layers.append(nn.Linear(a, b))
            if last and not last_activation:
                break
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(ACTIVATIONS[activation.lower()]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        super().__init__(*layers)
        self.out_dim = dims[-1]
