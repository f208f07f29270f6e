"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the item history.

As in the paper and its official code: item embeddings scaled by sqrt(D) plus learned
positions, dropout, blocks of (layer norm, causal multi-head attention, residual, layer
norm, point-wise feed-forward, residual), a final layer norm; every position predicts its
next item. Trained with full-softmax cross-entropy by default (Klenitskiy & Vasilev,
"Turning Dross Into Gold Loss", RecSys 2023), ``loss: bce`` with one sampled negative is
the paper's original objective.
"""
import math

import torch
from torch import nn

from ...registry import register_model
from ..layers import FastDropout, TransformerBlock, causal_padding_mask, right_aligned_positions, run_blocks
from ..towers import ItemTower


@register_model
class SASRec(ItemTower):
    data_kind = "seq"
    default_loss = "softmax"

    def __init__(self, num_items: int, embed_dim: int = 64, num_blocks: int = 2, num_heads: int = 1,
                 inner_dim: int = 64, dropout: float = 0.1, activation: str = "relu", **base):
        super().__init__(num_items=num_items, embed_dim=embed_dim, **base)
        self.pos_emb = nn.Embedding(self.max_seq_len, embed_dim)
        self.drop = FastDropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(embed_dim, num_heads, inner_dim, dropout, activation)
                                    for _ in range(num_blocks))
        self.last_ln = nn.LayerNorm(embed_dim, eps=1e-8)
        self.scale = math.sqrt(embed_dim)
        # Xavier for items AND positions, as the official code initialises both: nn.Embedding's
        # N(0, 1) positions outweighed the scaled items 4:1, every user got nearly the same
        # query, and ml-1m training sat at popularity level for the first epochs
        nn.init.xavier_normal_(self.item_emb.weight[1:])
        nn.init.xavier_normal_(self.pos_emb.weight)

    def query_all(self, batch, last_only: bool = False):
        seq = batch["seq"]
        pos = right_aligned_positions(seq, self.max_seq_len)
        keep = (seq != 0).unsqueeze(-1)
        x = self.item_emb(seq) * self.scale + self.pos_emb(pos).unsqueeze(0)
        x = self.drop(x) * keep
        return self.last_ln(run_blocks(self.blocks, x, causal_padding_mask(seq), keep, last_only))

    def query(self, batch):
        """The next-item query after the latest item (left padding: the last position)."""
        return self.query_all(batch, last_only=True)[:, -1]
