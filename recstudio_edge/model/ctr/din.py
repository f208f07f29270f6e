"""DIN (Zhou et al., KDD 2018), in PINRec's trunk form (docs/models.md).

The network is a plain module with named parts (``DINNet``): ``features`` (item embeddings;
``target_trans``, Linear + Tanh, on the target; ``encoder``, the shared
``layers.TargetAttentionEncoder``: ``seq_trans``, Linear + Tanh, on the history, then target
attention) and ``classifier`` on ``[target, attended]``. The ``DIN`` tower wraps it for training
and evaluation; PINRec's DIN trunk composes the same encoder class, with its plugin sites around
it (``model/edge/pinrec.py``). With ``product=True`` (default) the classifier also sees
``target * attended``: an MLP on a plain concatenation is poor at similarity, and on the
generated data this lifts test AUC from popularity level (0.70) to 0.79 in 8 epochs.

On-device part (``edge_parts``): the whole network, one variant ``"edge"``,
``(item_id [B], seq [B, L]) -> probability [B]``, built from the network's own ``features`` and
``classifier`` (copies, CPU, eval mode) as ``EdgeStages`` that split inference can cut.
"""
import copy
from typing import Sequence

import torch
from torch import nn

from ...edge.modules import EdgeStages, Probability
from ...edge.protocol import EdgeParts, Part, history, ids, probability
from ...registry import register_model
from ..layers import MLP, Tanh, TargetAttentionEncoder, batch_histories, padded_table, pair_features
from ..towers import TowerFree


class DINFeatures(nn.Module):
    """``(item_id [B], seq [B, L]) -> [B, 2D]`` (``[B, 3D]`` with ``product``): the classifier's input.
    ``seq`` may hold ``P`` histories shared by ``B = R * P`` rows (row ``b`` has history ``b % P``:
    ``layers.batch_histories``)."""

    def __init__(self, num_items: int, dim: int, product: bool = True):
        super().__init__()
        self.item_emb = nn.Embedding(num_items, dim, padding_idx=0)
        self.target_trans = nn.Sequential(nn.Linear(dim, dim), Tanh())
        self.encoder = TargetAttentionEncoder(dim)
        self.product = bool(product)
        self.history_mode = "auto"  # "table" | "rows" | "auto": see forward

    def forward(self, item_id: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """The history's ``seq_trans`` acts on each item alone: when the batch
        has more history positions than the table has items (training and evaluation batches), they
        run once per item of the table and are gathered per position (``history_mode="table"``,
        ``TargetAttentionEncoder.forward_table``, same values and gradients); otherwise, and in the
        exported device model (``"rows"``), once per position."""
        t = self.target_trans(self.item_emb(item_id))
        weight = self.item_emb.weight
        mode = self.history_mode
        if mode == "auto":
            mode = "table" if weight.size(0) < seq.numel() else "rows"
        if mode == "table":
            a = self.encoder.forward_table(t, padded_table(weight), seq, seq)
        else:
            a = self.encoder(t, self.item_emb(seq), seq)
        return pair_features(t, a, self.product)


class DINNet(nn.Module):
    """DIN as a plain module: ``features`` then ``classifier``; ``forward(item_id, seq) -> logits [B]``."""

    def __init__(self, num_items: int, embed_dim: int = 32, hidden: Sequence[int] = (128, 64),
                 activation: str = "tanh", dropout: float = 0.0, product: bool = True):
        super().__init__()
        self.features = DINFeatures(num_items, embed_dim, product)
        self.classifier = MLP((3 if product else 2) * embed_dim, [*hidden, 1], activation=activation, dropout=dropout,
                              last_activation=False)

    def forward(self, item_id: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(item_id, seq)).squeeze(-1)


@register_model
class DIN(TowerFree):
    data_kind = "ctr"

    def __init__(self, num_items: int, embed_dim: int = 32, hidden: tuple = (128, 64),
                 activation: str = "tanh", dropout: float = 0.0, product: bool = True, **base):
        base.setdefault("num_users", 0)
        super().__init__(num_items=num_items, **base)
        self.net = DINNet(self.num_items, embed_dim, hidden, activation, dropout, product)

    def score(self, batch):
        return self.net(batch["item_id"], batch_histories(batch))  # a training batch: each history once

    def edge_parts(self) -> EdgeParts:
        """One device model, ``"edge"``: the whole network with a probability output (a snapshot)."""
        net = copy.deepcopy(self.net).cpu()
        net.features.history_mode = "rows"  # a device scores a few rows: per position, no table pass
        module = EdgeStages(features=net.features, classifier=net.classifier, output=Probability()).eval()
        part = Part(module, inputs=(ids("item_id", self.num_items), history("seq", self.num_items)),
                    outputs=(probability(),), axis_limits={"seq": self.max_seq_len})
        return EdgeParts(device={"edge": part})
