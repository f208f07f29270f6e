"""FPMC (Rendle et al., WWW 2010): matrix factorisation plus a factorised first-order Markov chain.

The score of item ``i`` for user ``u`` whose latest item is ``l`` is
``<V_u^UI, V_i^IU> + <V_l^LI, V_i^IL>`` (the paper's pairwise-interaction model for a basket of
one item). It is one inner product: the query is ``[V_u^UI ; V_l^LI]`` and the item tower's
vector is ``[V_i^IU ; V_i^IL]``, so the item table has ``2 * embed_dim`` columns. On the
``seq`` data kind every position ``t`` is a training example (user, item at ``t`` -> the next
item). The paper trains with S-BPR and one sampled negative (``loss: bpr``); the default here
is the full-softmax cross-entropy the zoo's sequence models use.
"""
import torch
from torch import nn

from ...registry import register_model
from ..towers import ItemTower


@register_model
class FPMC(ItemTower):
    data_kind = "seq"
    default_loss = "softmax"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 64, **base):
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=2 * embed_dim, **base)
        self.factor_dim = int(embed_dim)
        self.user_emb = nn.Embedding(self.num_users, embed_dim)  # V^UI
        self.last_emb = nn.Embedding(self.num_items, embed_dim, padding_idx=0)  # V^LI
        for emb in (self.user_emb, self.last_emb, self.item_emb):  # item_emb = [V^IU | V^IL]
            nn.init.normal_(emb.weight, std=0.05)
        with torch.no_grad():
            self.last_emb.weight[0].zero_()
            self.item_emb.weight[0].zero_()

    def query_all(self, batch):
        """``[B, L, 2D]``: position t's query is the user's factor and the factor of the item at t."""
        seq = batch["seq"]
        user = self.user_emb(batch["user_id"]).unsqueeze(1).expand(-1, seq.size(1), -1)
        return torch.cat([user, self.last_emb(seq)], dim=-1)

    def query(self, batch):
        """Depends on the user and the latest item only (left padding: the last column)."""
        seq = batch["seq"]
        return torch.cat([self.user_emb(batch["user_id"]), self.last_emb(seq[:, -1])], dim=-1)
