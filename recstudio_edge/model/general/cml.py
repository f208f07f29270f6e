"""CML, collaborative metric learning (Hsieh et al., WWW 2017): users and items in one euclidean
space, a user close to the items they like.

A ``TwoTower`` with the ``euclidean`` scorer (negative squared distance) and the ``hinge`` loss
``[margin + d(u,i)^2 - d(u,j)^2]+`` over sampled negatives; after every optimiser step (and at
initialisation) the user and item vectors are clipped back into the unit ball. Left out of the
paper: the WARP rank weighting of the hinge and the covariance regulariser.
"""
import torch
from torch import nn

from ...registry import register_model
from ..towers import TwoTower


@register_model
class CML(TwoTower):
    """Metric learning: hinge on squared euclidean distances, embeddings kept in the unit ball."""

    default_loss, default_scorer, default_sampler = "hinge", "euclidean", "uniform"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 64, margin: float = 0.5,
                 max_norm: float = 1.0, **base):
        if "loss_args" in base:
            raise ValueError("CML sets its hinge loss's margin from `margin`: set that instead of loss_args")
        if (base.get("loss") or self.default_loss).lower() == "hinge":
            base["loss_args"] = {"margin": margin}
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=embed_dim, **base)
        self.max_norm = float(max_norm)
        self.user_emb = nn.Embedding(num_users, embed_dim)
        nn.init.normal_(self.user_emb.weight, std=1.0 / embed_dim ** 0.5)
        nn.init.normal_(self.item_emb.weight, std=1.0 / embed_dim ** 0.5)
        self.clip_norms()

    def query(self, batch):
        return self.user_emb(batch["user_id"])

    @torch.no_grad()
    def clip_norms(self) -> None:
        """Rows of the user and item tables with a norm above ``max_norm`` are scaled onto the ball."""
        for w in (self.user_emb.weight, self.item_emb.weight):
            w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=self.max_norm))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.clip_norms()
