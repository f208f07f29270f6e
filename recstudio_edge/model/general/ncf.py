"""NCF / NeuMF (He et al., WWW 2017): a GMF branch and an MLP branch over (user, item), fused.

A ``TwoTower`` whose scorer is NeuMF's head (``scorer: neumf`` in ``model/scorer.py``): the user
tower is ``[p_gmf ; p_mlp]`` (two embedding tables), the item tower ``[q_gmf ; q_mlp]``, and the
scorer computes ``w . [p_gmf * q_gmf ; MLP([p_mlp, q_mlp])]``. So NCF keeps the tower's samplers,
losses and full-sort ranking evaluation; only ANN retrieval is out (the score is not a metric).
"""
from typing import Sequence

import torch
from torch import nn

from ...registry import register_model
from ..towers import TwoTower


@register_model
class NCF(TwoTower):
    """NeuMF trained pointwise (BCE) on sampled negatives, ranked by full sort."""

    default_loss, default_scorer, default_sampler = "bce", "neumf", "uniform"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 32, mlp_embed_dim: int = 32,
                 mlp_hidden: Sequence[int] = (32, 16, 8), dropout: float = 0.0, **base):
        if "scorer_args" in base:
            raise ValueError("NCF sets its scorer's arguments from embed_dim, mlp_embed_dim, mlp_hidden and "
                             "dropout: set those instead of scorer_args")
        if (base.get("scorer") or self.default_scorer).lower() == "neumf":
            base["scorer_args"] = {"dim": embed_dim + mlp_embed_dim, "gmf_dim": embed_dim,
                                   "hidden": list(mlp_hidden), "dropout": dropout}
        # the item tower is item_emb = [q_gmf ; q_mlp]
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=embed_dim + mlp_embed_dim, **base)
        self.user_emb = nn.Embedding(num_users, embed_dim + mlp_embed_dim)  # [p_gmf ; p_mlp]
        nn.init.normal_(self.user_emb.weight, std=0.01)
        nn.init.normal_(self.item_emb.weight, std=0.01)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def query(self, batch):
        return self.user_emb(batch["user_id"])
