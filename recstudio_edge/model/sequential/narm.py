"""NARM (Li et al., CIKM 2017): a GRU encoder with a global and an attentive local summary.

The GRU's hidden states ``h_1..h_t`` over the history give the global encoder's summary
``c_g = h_t`` and the local encoder's ``c_l = sum_j a_tj h_j`` with
``a_tj = v^T sigmoid(A1 h_t + A2 h_j)`` (unnormalised, as in the paper), over the real items
``j <= t``. The bilinear decoder scores item ``i`` as ``emb_i^T B [c_g ; c_l]``: the query is
``B [c_g ; c_l]`` and the scorer an inner product with the item embeddings. Dropout on the
item embeddings and before ``B``, as in the paper (0.25 and 0.5).

On the ``seq`` data kind every position is a training example, so ``query_all`` computes the
attention of every position over its prefix: ``[B, L, L, hidden]`` values, which bounds the
batch size and ``max_seq_len`` that fit in memory. Trained with full-softmax cross-entropy,
as in the paper.
"""
import torch
from torch import nn

from ...registry import register_model
from ..layers import FastDropout, GRUEncoder
from ..towers import ItemTower


@register_model
class NARM(ItemTower):
    data_kind = "seq"
    default_loss = "softmax"

    def __init__(self, num_items: int, embed_dim: int = 64, hidden_size: int = 100, num_layers: int = 1,
                 emb_dropout: float = 0.25, ct_dropout: float = 0.5, **base):
        super().__init__(num_items=num_items, embed_dim=embed_dim, **base)
        self.emb_drop, self.ct_drop = FastDropout(emb_dropout), FastDropout(ct_dropout)
        self.encoder = GRUEncoder(embed_dim, hidden_size, num_layers)
        self.a1 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.a2 = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v = nn.Linear(hidden_size, 1, bias=False)
        self.b = nn.Linear(2 * hidden_size, embed_dim, bias=False)
        nn.init.xavier_normal_(self.item_emb.weight[1:])

    def query_all(self, batch, last_only: bool = False):
        """``[B, L, D]`` (``[B, 1, D]`` with ``last_only``): position t's query from ``h_1..h_t``."""
        seq = batch["seq"]
        h = self.encoder(self.emb_drop(self.item_emb(seq)), batch["seq_len"])  # [B, L, H]
        L = seq.size(1)
        t = torch.arange(L - 1 if last_only else 0, L, device=seq.device)
        h_t = h[:, t]  # [B, T, H]
        allowed = (t.unsqueeze(1) >= torch.arange(L, device=seq.device)) & (seq != 0).unsqueeze(1)  # [B, T, L]
        a = self.v(torch.sigmoid(self.a1(h_t).unsqueeze(2) + self.a2(h).unsqueeze(1))).squeeze(-1)  # [B, T, L]
        c_local = torch.bmm(a * allowed, h)  # [B, T, H]
        return self.b(self.ct_drop(torch.cat([h_t, c_local], dim=-1)))

    def query(self, batch):
        return self.query_all(batch, last_only=True)[:, -1]
