"""Mult-VAE (Liang et al., WWW 2018): the Mult-DAE network (``multidae.py``) with a Gaussian
latent code, a KL term annealed from 0 to ``anneal_cap`` over ``total_anneal_steps`` training
steps (``beta = min(anneal_cap, step / total_anneal_steps)``), and the posterior mean at evaluation."""
import torch

from ...registry import register_model
from .multidae import MultiDAE


@register_model
class MultiVAE(MultiDAE):
    """Variational autoencoder of the user's item set, multinomial likelihood, KL annealing."""

    latent_factor = 2  # mean and log-variance

    def __init__(self, num_items: int, embed_dim: int = 600, latent_dim: int = 200, dropout: float = 0.5,
                 total_anneal_steps: int = 200000, anneal_cap: float = 0.2, **base):
        super().__init__(num_items=num_items, embed_dim=embed_dim, latent_dim=latent_dim, dropout=dropout, **base)
        self.total_anneal_steps, self.anneal_cap = int(total_anneal_steps), float(anneal_cap)
        # training steps taken so far (in the checkpoint, so that a resumed run keeps its schedule)
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))

    def kl_weight(self) -> float:
        if self.total_anneal_steps <= 0:
            return self.anneal_cap
        return min(self.anneal_cap, int(self.anneal_step) / self.total_anneal_steps)

    def latent(self, h):
        mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        if not self.training:
            return mu, kl
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), kl

    def compute_loss(self, batch):
        loss = super().compute_loss(batch)  # uses kl_weight() of the current step
        if self.training:
            self.anneal_step += 1
        return loss
