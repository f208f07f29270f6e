"""GRU4Rec (Hidasi et al., ICLR 2016; the cross-entropy variant of Hidasi & Karatzoglou 2018)."""
from torch import nn

from ...registry import register_model
from ..layers import GRUStack
from ..towers import ItemTower


@register_model
class GRU4Rec(ItemTower):
    """A GRU over the item history (``layers.GRUStack``, shared with PINRec's GRU4Rec trunk);
    every position predicts the next item."""

    data_kind = "seq"
    default_loss = "softmax"

    def __init__(self, num_items: int, embed_dim: int = 64, hidden_size: int = 128, num_layers: int = 1,
                 dropout: float = 0.3, **base):
        super().__init__(num_items=num_items, embed_dim=embed_dim, **base)
        self.encoder = GRUStack(embed_dim, hidden_size, num_layers, dropout)
        nn.init.xavier_normal_(self.item_emb.weight)

    def query_all(self, batch):
        return self.encoder(self.item_emb(batch["seq"]), batch["seq_len"])

    def query(self, batch):
        return self.query_all(batch)[:, -1]  # left-padded: the last position is the latest item
