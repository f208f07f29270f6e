"""BPR-MF (Rendle et al., UAI 2009): user and item embeddings, pairwise ranking loss."""
from torch import nn

from ...registry import register_model
from ..fused import bpr_mf_loss, bpr_mf_loss_and_grads, fused_allowed
from ..towers import ItemTower, TwoTower


@register_model
class BPR(TwoTower):
    """Matrix factorisation trained with BPR on uniformly sampled negatives.

    ``fused`` (default true): in its own configuration (``bpr`` loss, ``inner_product`` scorer,
    a static sampler) the training loss is one fused autograd node (``model/fused.py``), the
    same value and gradients as the generic tower path, ~30% less time per step on a CPU. Any
    other loss, scorer or sampler, or a subclass with its own towers, takes the generic path."""

    default_loss, default_scorer, default_sampler = "bpr", "inner_product", "uniform"

    def __init__(self, num_users: int, num_items: int, embed_dim: int = 64, fused: bool = True, **base):
        super().__init__(num_users=num_users, num_items=num_items, embed_dim=embed_dim, **base)
        self.user_emb = nn.Embedding(num_users, embed_dim)
        nn.init.xavier_normal_(self.user_emb.weight)
        nn.init.xavier_normal_(self.item_emb.weight)
        self.fused = (bool(fused) and self.loss_name == "bpr" and self.scorer.registry_name == "inner_product"
                      and not getattr(self.sampler, "dynamic", False)
                      and type(self).query is BPR.query and type(self).item_vectors is ItemTower.item_vectors)

    def query(self, batch):
        return self.user_emb(batch["user_id"])

    def _fused_inputs(self, batch):
        """``(user, pos, neg)`` for the fused kernel, or None where the generic path trains."""
        if not (self.fused and "target_seq" not in batch and fused_allowed(self.item_emb.weight)):
            return None
        user, pos = batch["user_id"], batch["item_id"]
        if "neg_item_id" in batch:  # drawn in the data pipeline (data.dataset_sampling_count)
            neg = batch["neg_item_id"]
        else:
            neg = self.sampler(pos, self.negative_count, user=user)[1]
        return user, pos, neg

    def compute_loss(self, batch):
        ids = self._fused_inputs(batch)
        if ids is None:
            return super().compute_loss(batch)
        return bpr_mf_loss(self.user_emb.weight, self.item_emb.weight, *ids)

    def train_grads(self, batch):
        """The fast loop's direct steps (``model/fastloop.py``): the fused kernel's loss with the two
        tables' gradients set, without an autograd graph (``bpr_mf_loss_and_grads``: the same
        values as ``compute_loss(batch).backward()``); None on the generic path."""
        if type(self).compute_loss is not BPR.compute_loss:
            return None  # a subclass's own loss: through autograd
        ids = self._fused_inputs(batch)
        if ids is None:
            return None
        u, i = self.user_emb.weight, self.item_emb.weight
        loss, g_user, g_item = bpr_mf_loss_and_grads(u, i, *ids)
        if g_user is not None:
            u.grad = g_user
        if g_item is not None:
            i.grad = g_item
        return loss
