"""Pop: every user gets the most popular training items (the baseline any model must beat)."""
import torch

from ...registry import register_model
from ..towers import TwoTower


@register_model
class Pop(TwoTower):
    """Closed-form popularity ranking: no parameters, fitted by counting training items."""

    closed_form = True

    def __init__(self, num_users: int, num_items: int, **base):
        base.pop("embed_dim", None)
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=1, **base)
        self.item_emb.weight.requires_grad_(False)
        self.register_buffer("counts", torch.zeros(num_items))

    def fit_closed_form(self, datamodule):
        self.counts.copy_(datamodule.item_counts().float())

    def query(self, batch):
        return torch.ones(batch["user_id"].numel(), 1, device=self.counts.device)

    def item_vectors(self, ids=None):
        v = torch.log1p(self.counts).unsqueeze(1)
        return v if ids is None else v[ids]
