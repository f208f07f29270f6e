"""GGCN: GCNII node classification, trained on the full graph in the cloud, inferred on the edge
from a node's ego graph (docs/models.md, "GGCN"; MODELS.md).

Network (``GCNIINet``, GCNII of Chen et al., ICML 2020, as the release ran it on PPI):
``h0 = ReLU(Linear(dropout(x)))``; then for layer ``l = 1..layers``
``s = (1 - alpha) A_hat dropout(h) + alpha h0``,
``h = ReLU(theta_l s W_l + (1 - theta_l) s + h)``, ``theta_l = ln(lambda / l + 1)``;
logits ``Linear(dropout(h))``, one per class; sigmoid, BCE, micro-F1. ``A_hat = D^-1/2 (A + I) D^-1/2``
is computed on the graph the batch comes from (the data side: ``data/formats/ggcn.py``) and
arrives as ``edge_index`` + ``edge_weight``. Each layer is torch_geometric's ``GCN2Conv`` (shared
weights, ``normalize=False``: the weights are given) plus the release's residual ``+ h``.

Batches (``data.format: ggcn``, or a graph built from interactions, ``-d=ml-1m-graph``): ``x [n, F]``,
``edge_index [2, e]``, ``edge_weight [e]``, ``target [B]`` (the batch's rows among the n nodes),
``label [B, C]``, ``node_id [B]``. ``forward(batch)`` is the rows' class probabilities ``[B, C]``.

Evaluation: its own kind, ``multilabel``: micro-F1 (the default validation metric) and macro-F1 at
threshold 0.5 (``evaluation/multilabel.py``).

On-device part (``edge_parts``): the whole network, variant ``"edge"``, ``(x [nodes, F], edge_index
[2, edges], edge_weight [edges], target [batch]) -> probability [batch, C]``, node and edge counts
dynamic: a device holding a node's k-hop ego graph (its features and ``A_hat`` weights, those of
the full graph sent by the cloud or its own) runs it with ``target = [the node's position]``.
With k >= layers and the full graph's weights the answer is the full graph's (a test); ``bench/ggcn.py``
measures what smaller k and on-device normalisation cost.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...edge.protocol import EdgeParts, Part, TensorSpec
from ...evaluation.multilabel import METRICS, MultiLabelAccumulator
from ...registry import register_model
from ..base import Recommender


class GCNIINet(nn.Module):
    """GCNII as a plain module: ``forward(x, edge_index, edge_weight, target) -> logits [B, C]``."""

    def __init__(self, num_features: int = 50, num_classes: int = 121, hidden: int = 128, layers: int = 9,
                 alpha: float = 0.5, lamda: float = 1.0, dropout: float = 0.2):
        super().__init__()
        from torch_geometric.nn import GCN2Conv

        if int(layers) < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.fc_in = nn.Linear(int(num_features), int(hidden))
        self.convs = nn.ModuleList(GCN2Conv(int(hidden), alpha=float(alpha), theta=float(lamda), layer=l + 1,
                                            shared_weights=True, cached=False, normalize=False)
                                   for l in range(int(layers)))
        self.fc_out = nn.Linear(int(hidden), int(num_classes))
        self.dropout = float(dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        h = h0 = F.relu(self.fc_in(x))
        for conv in self.convs:
            h = F.dropout(h, self.dropout, self.training)
            h = F.relu(conv(h, h0, edge_index, edge_weight) + h)
        h = F.dropout(h.index_select(0, target), self.dropout, self.training)
        return self.fc_out(h)


class _Probabilities(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, edge_index, edge_weight, target):
        return torch.sigmoid(self.net(x, edge_index, edge_weight, target))


@register_model
class GGCN(Recommender):
    """GCNII node classifier (module docstring). ``num_features`` / ``num_classes`` come from the data
    (``dm.model_args()``); the defaults are PPI's (50 features, 121 classes)."""

    data_kind = "graph"
    data_format = "ggcn"
    eval_kind = "multilabel"
    metric_keys = METRICS
    default_val_metric = "micro_f1"

    def __init__(self, num_features: int = 50, num_classes: int = 121, hidden: int = 128, layers: int = 9, alpha: float = 0.5,
                 lamda: float = 1.0, dropout: float = 0.2, threshold: float = 0.5, **base):
        base.setdefault("num_users", 0)
        base.setdefault("num_items", 0)
        super().__init__(**base)
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        self.layers, self.threshold = int(layers), float(threshold)
        self.net = GCNIINet(self.num_features, self.num_classes, hidden, layers, alpha, lamda, dropout)

    def logits(self, batch) -> torch.Tensor:
        return self.net(batch["x"], batch["edge_index"], batch["edge_weight"], batch["target"])

    def forward(self, batch) -> torch.Tensor:
        """Class probabilities of the batch's rows ``[B, C]``."""
        return torch.sigmoid(self.logits(batch))

    def compute_loss(self, batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(batch), batch["label"].float())

    def new_accumulator(self) -> MultiLabelAccumulator:
        return MultiLabelAccumulator(self.threshold)

    def edge_parts(self) -> EdgeParts:
        """One device model, ``"edge"``: the whole network with sigmoid outputs (a CPU copy in eval mode)."""
        module = _Probabilities(copy.deepcopy(self.net).cpu()).eval()
        inputs = (TensorSpec("x", "float32", ("nodes", self.num_features)),
                  TensorSpec("edge_index", "int64", (2, "edges")),
                  TensorSpec("edge_weight", "float32", ("edges",)),
                  TensorSpec("target", "int64", ("batch",)))
        outputs = (TensorSpec("probability", "float32", ("batch", self.num_classes)),)
        return EdgeParts(device={"edge": Part(module, inputs, outputs)})


__all__ = ["GGCN", "GCNIINet"]
