"""DSSM (Huang et al., CIKM 2013) as a two-tower retrieval model: an MLP over the user embedding
and an MLP over the item embedding, scored by cosine similarity with a temperature.

Each tower's output is L2-normalised and the query is divided by ``temperature``, so the
``inner_product`` scorer gives ``cos(u, i) / temperature`` (and an ANN index over the item tower
works unchanged). The default loss is the full softmax over items (cheap while the catalogue is
small; ``loss: sampled_softmax`` with ``negative_count`` for large ones). The towers read ids
only: the data module does not hand user or item features to retrieval models.
"""
from typing import Sequence

import torch.nn.functional as F
from torch import nn

from ...registry import register_model
from ..layers import MLP
from ..towers import TwoTower


@register_model
class DSSM(TwoTower):
    """Two MLP towers over user and item ids, cosine similarity / temperature."""

    default_loss, default_scorer, default_sampler = "softmax", "inner_product", "uniform"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 64, hidden: Sequence[int] = (128, 64),
                 dropout: float = 0.0, activation: str = "tanh", temperature: float = 0.1, **base):
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=embed_dim, **base)
        self.temperature = float(temperature)
        self.user_emb = nn.Embedding(num_users, embed_dim)
        self.user_tower = MLP(embed_dim, list(hidden), activation=activation, dropout=dropout, last_activation=False)
        self.item_tower = MLP(embed_dim, list(hidden), activation=activation, dropout=dropout, last_activation=False)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)

    def query(self, batch):
        return F.normalize(self.user_tower(self.user_emb(batch["user_id"])), dim=-1) / self.temperature

    def item_vectors(self, ids=None):
        x = self.item_emb.weight if ids is None else self.item_emb(ids)
        return F.normalize(self.item_tower(x), dim=-1)
