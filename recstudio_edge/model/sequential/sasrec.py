"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item history.

As in the paper and its official code: item embeddings scaled by sqrt(D) plus learned
positions, dropout, blocks of (layer norm, causal multi-head attention, residual, layer
norm, point-wise feed-forward, residual), a final layer norm (``layers.TransformerStack``,
shared with BERT4Rec and PINRec's SASRec trunk); every position predicts its next item.
Trained with full-softmax cross-entropy by default (Klenitskiy & Vasilev,
"Turning Dross Into Gold Loss", RecSys 2023), ``loss: bce`` with one sampled negative is
the paper's original objective.
"""
import math

from torch import nn

from ...registry import register_model
from ..layers import TransformerStack
from ..towers import ItemTower


@register_model
class SASRec(ItemTower):
    data_kind = "seq"
    default_loss = "softmax"

    def __init__(self, num_items: int, embed_dim: int = 64, num_blocks: int = 2, num_heads: int = 1,
                 inner_dim: int = 64, dropout: float = 0.1, activation: str = "relu",
                 position_weighted: bool = False, **base):
        super().__init__(num_items=num_items, embed_dim=embed_dim, **base)
        self.position_weighted = bool(position_weighted)
        self.encoder = TransformerStack(embed_dim, self.max_seq_len, num_blocks, num_heads, inner_dim, dropout,
                                        activation, mask="causal")
        self.scale = math.sqrt(embed_dim)
        # Xavier for items AND positions, as the official code initialises both: nn.Embedding's
        # N(0, 1) positions outweighed the scaled items 4:1, every user got nearly the same
        # query, and ml-1m training sat at popularity level for the first epochs
        nn.init.xavier_normal_(self.item_emb.weight[1:])
        nn.init.xavier_normal_(self.encoder.pos_emb.weight)

    def query_all(self, batch, last_only: bool = False):
        seq = batch["seq"]
        return self.encoder(self.item_emb(seq) * self.scale, seq, last_only)

    def query(self, batch):
        """The next-item query after the latest item (left padding: the last position)."""
        return self.query_all(batch, last_only=True)[:, -1]
