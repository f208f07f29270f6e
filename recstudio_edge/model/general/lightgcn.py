"""LightGCN (He et al., SIGIR 2020): embeddings smoothed over the user-item graph.

The graph is the bipartite user-item graph of the training interactions (from ``on_data``'s
``train_keys``), normalised symmetrically, ``A_hat = D^-1/2 A D^-1/2``; ``num_layers`` sparse
propagations ``E_{k+1} = A_hat E_k`` are averaged with the layer-0 embeddings,
``E = mean(E_0 .. E_K)``. Training propagates once per step (BPR on sampled negatives by
default); evaluation uses propagated embeddings cached at the start of each validation / test
(a buffer, so a checkpoint reloaded without the training data scores the same).
"""
import warnings

import torch
from torch import nn

from ...registry import register_model
from ..towers import TwoTower


def normalized_adjacency(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int) -> torch.Tensor:
    """Sparse ``[U + N, U + N]`` ``D^-1/2 A D^-1/2`` of the bipartite graph with an edge per
    (user, item) pair; node ``u`` is user ``u``, node ``U + i`` item ``i`` (duplicates count once)."""
    n = num_users + num_items
    keys = torch.unique(users * num_items + items)
    u, i = keys // num_items, keys % num_items + num_users
    row, col = torch.cat([u, i]), torch.cat([i, u])
    deg = torch.bincount(row, minlength=n).float()
    inv = deg.pow(-0.5)
    inv[deg == 0] = 0.0
    val = inv[row] * inv[col]
    return torch.sparse_coo_tensor(torch.stack([row, col]), val, (n, n), check_invariants=True).coalesce()


class SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``: the gradient ``adj^T @ g`` is ``adj @ g``, so
    both directions use the CSR product (torch's own backward of a sparse product is ~4x slower)."""

    @staticmethod
    def forward(ctx, adj, x):
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.adj @ grad


def to_csr(adj: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product we use is stable
        warnings.simplefilter("ignore", UserWarning)
        return adj.to_sparse_csr()


@register_model
class LightGCN(TwoTower):
    """Layer-mean of linear graph propagations of user and item embeddings."""

    default_loss, default_scorer, default_sampler = "bpr", "inner_product", "uniform"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 64, num_layers: int = 3, **base):
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=embed_dim, **base)
        self.num_layers = int(num_layers)
        self.user_emb = nn.Embedding(num_users, embed_dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.adj = None  # sparse (CSR) normalised adjacency, set by on_data
        # propagated embeddings for evaluation and inference
        self.register_buffer("cached_users", torch.zeros(num_users, embed_dim))
        self.register_buffer("cached_items", torch.zeros(num_items, embed_dim))
        self._step = None  # (users, items) propagated for the current training step
        self._stale = False

    def on_data(self, item_counts, train_keys=None):
        super().on_data(item_counts, train_keys)
        if train_keys is None:
            raise ValueError("LightGCN needs the training interactions (train_keys) to build its graph")
        keys = train_keys.cpu()
        self.adj = to_csr(normalized_adjacency(keys // self.num_items, keys % self.num_items,
                                               self.num_users, self.num_items))
        self._stale = True

    def propagate(self):
        """``(users [U, D], items [N, D])``: the mean of the embeddings after 0..K propagations
        (``A_hat`` is symmetric, which ``SymmetricSpMM``'s backward relies on)."""
        x = torch.cat([self.user_emb.weight, self.item_emb.weight])
        if self.adj.device != x.device:
            self.adj = self.adj.to(x.device)
        total, h = x, x
        for _ in range(self.num_layers):
            h = SymmetricSpMM.apply(self.adj, h)
            total = total + h
        total = total / (self.num_layers + 1)
        return total[:self.num_users], total[self.num_users:]

    @torch.no_grad()
    def refresh_cache(self) -> None:
        if self.adj is not None:
            u, i = self.propagate()
            self.cached_users.copy_(u)
            self.cached_items.copy_(i)
            self._stale = False

    def _embeddings(self):
        if self._step is not None:
            return self._step
        if self._stale:
            self.refresh_cache()
        return self.cached_users, self.cached_items

    def compute_loss(self, batch):
        self._step = self.propagate()
        try:
            return super().compute_loss(batch)
        finally:
            self._step = None
            self._stale = True

    def on_validation_epoch_start(self):
        self.refresh_cache()
        super().on_validation_epoch_start()

    def on_test_epoch_start(self):
        self.refresh_cache()
        super().on_test_epoch_start()

    def on_save_checkpoint(self, checkpoint):
        """A checkpoint written after training steps without a validation since (``last.ckpt``
        with ``eval.every_n_epochs > 1``) gets the cache of the weights it holds."""
        if self._stale and self.adj is not None:
            self.refresh_cache()
            sd = checkpoint.get("state_dict", {})
            for name in ("cached_users", "cached_items"):
                if name in sd:
                    sd[name] = getattr(self, name).detach().clone()

    def query(self, batch):
        return self._embeddings()[0][batch["user_id"]]

    def item_vectors(self, ids=None):
        items = self._embeddings()[1]
        return items if ids is None else items[ids]
