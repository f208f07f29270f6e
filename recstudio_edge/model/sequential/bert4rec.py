"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained on the Cloze task.

Training batches come from the ``mlm`` data kind: the latest training items of a user, each
replaced by the mask token with probability ``data.mask_prob`` (redrawn every batch), and the
original items at the masked positions as targets; the loss is the full-softmax cross-entropy
over the real items at those positions (``ItemTower.compute_loss`` on ``query_all``). The mask
token's id is ``num_items``, so the item table has one extra row: it is an input embedding
only and never a candidate (``item_vectors`` leaves it out). Evaluation batches append the mask
token after the latest ``max_seq_len - 1`` known items, and the model scores that position.

The encoder is ``layers.TransformerStack`` (SASRec's stack of pre-norm blocks) with BERT's
embedding layer norm and a padding-only mask instead of the causal one, then BERT's prediction
head (linear, GELU, layer norm); output scores are inner products with the (tied) item embeddings.
"""
import torch
from torch import nn

from ...registry import register_model
from ..layers import TransformerStack
from ..towers import ItemTower


@register_model
class BERT4Rec(ItemTower):
    data_kind = "mlm"
    default_loss = "softmax"

    def __init__(self, num_items: int, embed_dim: int = 64, num_blocks: int = 2, num_heads: int = 2,
                 inner_dim: int = 256, dropout: float = 0.2, activation: str = "gelu", **base):
        super().__init__(num_items=num_items, embed_dim=embed_dim, **base)
        self.mask_token = self.num_items  # the data's mask id: one past the last real item
        self.item_emb = nn.Embedding(self.num_items + 1, embed_dim, padding_idx=0)
        self.encoder = TransformerStack(embed_dim, self.max_seq_len, num_blocks, num_heads, inner_dim, dropout,
                                        activation, mask="padding", eps=1e-12, input_norm=True)
        self.head = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU(), nn.LayerNorm(embed_dim, eps=1e-12))
        with torch.no_grad():  # BERT's initialisation: truncated normal, std 0.02
            for emb in (self.item_emb, self.encoder.pos_emb):
                nn.init.trunc_normal_(emb.weight, std=0.02, a=-0.04, b=0.04)
            self.item_emb.weight[0].zero_()

    def item_vectors(self, ids=None):
        """Real items and padding (rows ``0..num_items-1``); the mask token's row is not a candidate."""
        return self.item_emb.weight[: self.num_items] if ids is None else self.item_emb(ids)

    def query_all(self, batch, last_only: bool = False):
        """``[B, L, D]``: every position sees every real position of the (masked) sequence."""
        seq = batch["seq"]
        return self.head(self.encoder(self.item_emb(seq), seq, last_only))

    def query(self, batch):
        """The query at the last position: the mask token that ``mlm`` evaluation batches append.
        A plain history (``--task=infer``, another kind's batch) gets the token appended here, its
        oldest item dropped when the sequence would exceed ``max_seq_len``."""
        seq = batch["seq"]
        if not bool((seq[:, -1] == self.mask_token).all()):
            seq = torch.cat([seq, seq.new_full((seq.size(0), 1), self.mask_token)], 1)[:, -self.max_seq_len:]
            batch = dict(batch, seq=seq)
        return self.query_all(batch, last_only=True)[:, -1]
