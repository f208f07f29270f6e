"""Caser (Tang & Wang, WSDM 2018): convolutional sequence embedding of the latest ``window`` items.

The embeddings of the last ``window`` items form an image ``[window, D]``. Horizontal filters of
every height ``h = 1..window`` (``num_h`` each) slide over the rows and are max-pooled over time
(union-level patterns); ``num_v`` vertical filters ``[window, 1]`` take weighted sums of the
rows (point-level patterns). Both are concatenated, dropped out and mapped by a fully connected
layer to ``z [D]``; the query is ``[z ; P_u]`` with the user's embedding ``P_u``, scored against
a separate output item table of ``2 * D`` columns (the item tower), as in the paper (the
paper's output bias ``b'`` is left out: the scorer is a plain inner product).

On the ``seq`` data kind every position ``t`` is a training example: the window ending at ``t``
(zero-padded on the left) predicts the item after ``t``; this is the paper's sliding-window
augmentation with ``T = 1`` target. Default loss: full-softmax cross-entropy (the paper uses
binary cross-entropy with sampled negatives: ``loss: bce``).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ...registry import register_model
from ..layers import FastDropout
from ..towers import ItemTower


@register_model
class Caser(ItemTower):
    data_kind = "seq"
    default_loss = "softmax"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 64, window: int = 5, num_h: int = 16,
                 num_v: int = 4, dropout: float = 0.5, **base):
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=2 * embed_dim, **base)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window, self.dim = int(window), int(embed_dim)
        self.seq_emb = nn.Embedding(self.num_items, embed_dim, padding_idx=0)  # input item embeddings
        self.user_emb = nn.Embedding(self.num_users, embed_dim)
        self.conv_h = nn.ModuleList(nn.Conv1d(embed_dim, num_h, h) for h in range(1, self.window + 1))
        self.conv_v = nn.Conv1d(1, num_v, self.window)  # a [window, 1] filter: a weighted sum of the rows
        self.drop = FastDropout(dropout)
        self.fc = nn.Linear(num_h * self.window + num_v * embed_dim, embed_dim)
        for emb in (self.seq_emb, self.user_emb, self.item_emb):
            nn.init.normal_(emb.weight, std=1.0 / embed_dim)
        with torch.no_grad():
            self.seq_emb.weight[0].zero_()
            self.item_emb.weight[0].zero_()

    def _encode(self, seq: torch.Tensor, user: torch.Tensor) -> torch.Tensor:
        """``[B, L, 2D]``: the query of every position t from the ``window`` items ending at t.

        The convolutions run once over the whole (left zero-padded) sequence: a horizontal
        filter's value at offset s of the window ending at t is its value at sequence position
        ``t - window + 1 + s``, so the max over the window is a sliding max-pool of the
        sequence-level convolution; a vertical filter is a 1-d convolution over time of every
        embedding column. Same numbers as convolving each window, ``window`` times less work."""
        B, L = seq.shape
        W, D = self.window, self.dim
        x = F.pad(self.seq_emb(seq), (0, 0, W - 1, 0)).transpose(1, 2)  # [B, D, L + W - 1]
        o_h = torch.cat([F.max_pool1d(F.relu(conv(x)), W - h, stride=1) for h, conv in enumerate(self.conv_h)],
                        dim=1)  # [B, num_h * W, L]
        o_v = self.conv_v(x.reshape(B * D, 1, -1)).view(B, D, -1, L).permute(0, 3, 2, 1)  # [B, L, num_v, D]
        feats = torch.cat([o_v.flatten(2), o_h.transpose(1, 2)], dim=2)
        z = F.relu(self.fc(self.drop(feats)))
        return torch.cat([z, self.user_emb(user).unsqueeze(1).expand(B, L, D)], dim=2)

    def query_all(self, batch):
        """``[B, L, 2D]``: position t's query sees the ``window`` items ending at t, and the user."""
        return self._encode(batch["seq"], batch["user_id"])

    def query(self, batch):
        """The window of the latest items (left padding: the last columns)."""
        return self._encode(batch["seq"][:, -self.window:], batch["user_id"])[:, -1]
