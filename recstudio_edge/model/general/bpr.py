"""BPR-MF (Rendle et al., UAI 2009): user and item embeddings, pairwise ranking loss."""
from torch import nn

from ...registry import register_model
from ..towers import TwoTower


@register_model
class BPR(TwoTower):
    """Matrix factorisation trained with BPR on uniformly sampled negatives."""

    default_loss, default_scorer, default_sampler = "bpr", "inner_product", "uniform"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 64, **base):
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=embed_dim, **base)
        self.user_emb = nn.Embedding(num_users, embed_dim)
        nn.init.xavier_normal_(self.user_emb.weight)
        nn.init.xavier_normal_(self.item_emb.weight)

    def query(self, batch):
        return self.user_emb(batch["user_id"])
