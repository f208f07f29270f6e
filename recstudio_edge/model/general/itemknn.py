"""ItemKNN (Sarwar et al., WWW 2001; Deshpande & Karypis 2004): item-based neighbourhood scoring.

Cosine similarity of the items' training user sets, ``S_ij = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink)``,
diagonal zero, each item keeping its ``k`` most similar items. A user's score for item ``j`` is
the sum of ``S_ij`` over the user's known items ``i``. Closed form (``closed_form = True``), a
``TwoTower`` like ``EASE``: the query is the known-item vector ``x_u`` and the item vector of ``j``
is column ``j`` of ``S``.
"""
import torch

from ...registry import register_model
from ..towers import TwoTower
from .ease import user_item_matrix


def knn_similarity(x: torch.Tensor, k: int, shrink: float = 0.0) -> torch.Tensor:
    """``[N, N]`` cosine item-item similarity of ``x [U, N]``, diagonal zero, the top ``k`` of each
    column kept (column ``j``: the neighbours that score item ``j``), the rest zero."""
    g = x.T @ x
    norm = g.diagonal().clamp(min=0).sqrt()
    s = g / (norm.unsqueeze(1) * norm.unsqueeze(0) + shrink + 1e-12)
    s.diagonal().zero_()
    if k < s.size(0):
        top = torch.topk(s, k, dim=0).indices
        keep = torch.zeros_like(s, dtype=torch.bool).scatter_(0, top, True)
        s = s * keep
    return s


@register_model
class ItemKNN(TwoTower):
    """Sum of the cosine similarities to the user's items, ``k`` neighbours per item."""

    closed_form = True

    def __init__(self, num_users: int, num_items: int, k: int = 100, shrink: float = 0.0, **base):
        base.pop("embed_dim", None)  # the item vectors are columns of S: num_items wide
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=1, **base)
        if self.scorer.metric != "ip":
            raise ValueError("ItemKNN scores by x_u S: it needs the inner_product scorer")
        self.k, self.shrink = int(k), float(shrink)
        self.item_emb.weight.requires_grad_(False)
        self.register_buffer("similarity", torch.zeros(num_items, num_items))

    def fit_closed_form(self, datamodule):
        x = user_item_matrix(datamodule.train_keys(), self.num_users, self.num_items)
        x[:, 0] = 0.0
        self.similarity.copy_(knn_similarity(x, self.k, self.shrink).to(self.similarity.device))

    def query(self, batch):
        return self.history_matrix(batch)

    def item_vectors(self, ids=None):
        v = self.similarity.T
        return v if ids is None else v[ids]
