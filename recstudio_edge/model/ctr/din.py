"""DIN (Zhou et al., KDD 2018), in the form PINRec builds on (MODELS.md).

Item embeddings; ``target_trans`` and ``seq_trans`` (Linear + Tanh) on the target and the
history; target attention over the history; a classifier on ``[target, attended]``.
``encode`` returns those two halves so that PINRec can reuse the trunk with its plugins.
With ``product=True`` (default) the classifier also sees ``target * attended``: an MLP on a
plain concatenation is poor at similarity, and on the generated data this lifts test AUC
from popularity level (0.70) to 0.79 in 8 epochs.
"""
import torch
from torch import nn

from ...registry import register_model
from ..layers import MLP, TargetAttention
from ..towers import TowerFree


@register_model
class DIN(TowerFree):
    data_kind = "ctr"

    def __init__(self, num_items: int, embed_dim: int = 32, hidden: tuple = (128, 64),
                 activation: str = "tanh", dropout: float = 0.0, product: bool = True, **base):
        base.setdefault("num_users", 0)
        super().__init__(num_items=num_items, **base)
        self.item_emb = nn.Embedding(self.num_items, embed_dim, padding_idx=0)
        self.target_trans = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh())
        self.seq_trans = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh())
        self.attention = TargetAttention(embed_dim)
        self.product = bool(product)
        self.classifier = MLP((3 if product else 2) * embed_dim, [*hidden, 1], activation=activation, dropout=dropout,
                              last_activation=False)

    def encode(self, target_emb, seq_emb, seq):
        """Transformed target ``[B, D]`` and attended history ``[B, D]`` from raw embeddings."""
        t = self.target_trans(target_emb)
        h = self.seq_trans(seq_emb)
        return t, self.attention(t, h, seq != 0)

    def score(self, batch):
        seq = batch["seq"]
        t, a = self.encode(self.item_emb(batch["item_id"]), self.item_emb(seq), seq)
        feats = [t, a, t * a] if self.product else [t, a]
        return self.classifier(torch.cat(feats, dim=-1)).squeeze(-1)
