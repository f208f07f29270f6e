"""EASE (Steck, WWW 2019): a linear item-item model with a closed-form solution.

``B = argmin ||X - X B||^2 + reg_weight ||B||^2`` subject to ``diag(B) = 0`` is
``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + reg_weight I)^-1``, ``X`` the user-item
training matrix. A ``TwoTower`` fitted without SGD (``closed_form = True``): the query is the
user's known-item vector ``x_u`` and the item tower is ``B``'s columns, so the inner product
gives ``x_u B``, the paper's scores. Memory: ``B`` is dense ``[N, N]`` (ml-1m: 55 MB).
"""
import torch

from ...registry import register_model
from ..towers import TwoTower


def user_item_matrix(train_keys: torch.Tensor, num_users: int, num_items: int) -> torch.Tensor:
    """Dense ``[U, N]`` float 0/1 from the sorted ``user * num_items + item`` keys."""
    x = torch.zeros(num_users, num_items)
    x.view(-1)[train_keys] = 1.0
    return x


def ease_weights(x: torch.Tensor, reg_weight: float) -> torch.Tensor:
    """EASE's ``B`` (diagonal zero) for the user-item matrix ``x [U, N]``, solved in float64."""
    g = (x.T @ x).double()
    g.diagonal().add_(reg_weight)
    p = torch.cholesky_inverse(torch.linalg.cholesky(g))
    b = -p / p.diagonal().unsqueeze(0)  # B_ij = -P_ij / P_jj
    b.diagonal().zero_()
    return b.float()


@register_model
class EASE(TwoTower):
    """Closed-form item-item regression with a zero diagonal."""

    closed_form = True

    def __init__(self, num_users: int, num_items: int, reg_weight: float = 250.0, **base):
        base.pop("embed_dim", None)  # the item vectors are B's columns: num_items wide
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=1, **base)
        if self.scorer.metric != "ip":
            raise ValueError("EASE scores by x_u B: it needs the inner_product scorer")
        self.reg_weight = float(reg_weight)
        self.item_emb.weight.requires_grad_(False)
        self.register_buffer("weights", torch.zeros(num_items, num_items))  # B

    def fit_closed_form(self, datamodule):
        x = user_item_matrix(datamodule.train_keys(), self.num_users, self.num_items)
        x[:, 0] = 0.0
        self.weights.copy_(ease_weights(x, self.reg_weight).to(self.weights.device))

    def query(self, batch):
        return self.history_matrix(batch)

    def item_vectors(self, ids=None):
        v = self.weights.T  # row j: column j of B, the weights of every item towards item j
        return v if ids is None else v[ids]
