"""Mult-DAE (Liang et al., WWW 2018): a denoising autoencoder of the user's item set with a
multinomial likelihood. ``MultiVAE`` (``multivae.py``) is the same network made variational.

An ``ItemTower`` on the ``ae`` data kind (one row per user, ``item_id_set [B, N]``): the encoder
reads the user's (L2-normalised, dropped-out) item set, ``N -> embed_dim -> latent_dim``; the
decoder ``latent_dim -> embed_dim`` gives the query, and the last decoder layer
``embed_dim -> N`` is the item tower: ``item_emb`` plus a per-item bias, appended as one more
dimension (query ``[h ; 1]``, item vector ``[w_i ; b_i]``), so the scores stay an inner product.
Evaluation encodes every known item of the user (``history_matrix``), without dropout.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ...registry import register_model
from ..towers import ItemTower


@register_model
class MultiDAE(ItemTower):
    """Denoising autoencoder: dropout on the input, tanh layers, multinomial log-likelihood."""

    data_kind = "ae"
    default_loss = "softmax"  # informational: the multinomial likelihood is computed in compute_loss
    latent_factor = 1  # encoder outputs per latent dimension (the VAE's are mean and log-variance)

    def __init__(self, num_items: int, embed_dim: int = 600, latent_dim: int = 200, dropout: float = 0.5, **base):
        super().__init__(num_items=num_items, embed_dim=embed_dim, **base)
        if self.loss_name != "softmax":
            raise ValueError(f"{type(self).__name__} trains on the multinomial likelihood of the whole item set "
                             f"(a softmax over every item); loss={self.loss_name!r} is not available")
        self.latent_dim = int(latent_dim)
        self.input_dropout = nn.Dropout(float(dropout))
        self.encoder = nn.Sequential(nn.Linear(num_items, embed_dim), nn.Tanh(),
                                     nn.Linear(embed_dim, self.latent_dim * self.latent_factor))
        self.decoder = nn.Sequential(nn.Linear(self.latent_dim, embed_dim), nn.Tanh())
        self.item_bias = nn.Parameter(torch.zeros(num_items, 1))
        for m in [*self.encoder, *self.decoder]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.normal_(m.bias, std=0.001)
        nn.init.xavier_normal_(self.item_emb.weight)

    # the autoencoder ---------------------------------------------------------------------------------
    def encode_input(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised item set, dropped out in training, through the encoder."""
        return self.encoder(self.input_dropout(F.normalize(x, dim=1)))

    def latent(self, h: torch.Tensor):
        """``(z, kl)`` from the encoder output: the DAE's code is ``tanh(h)``, no KL term."""
        return torch.tanh(h), h.new_zeros(())

    def _query_and_kl(self, x: torch.Tensor):
        z, kl = self.latent(self.encode_input(x))
        h = self.decoder(z)
        return torch.cat([h, torch.ones_like(h[:, :1])], 1), kl

    def query(self, batch):
        return self._query_and_kl(self.history_matrix(batch))[0]

    def item_vectors(self, ids=None):
        v = torch.cat([self.item_emb.weight, self.item_bias], 1)
        return v if ids is None else v[ids]

    # training ------------------------------------------------------------------------------------------
    def kl_weight(self) -> float:
        return 0.0

    def compute_loss(self, batch):
        x = batch["item_id_set"]
        q, kl = self._query_and_kl(x)
        logits = self.scorer.all(q, self.item_vectors()[1:])  # real items only (0 is padding)
        nll = -(F.log_softmax(logits, 1) * x[:, 1:]).sum(1).mean()
        return nll + self.kl_weight() * kl
