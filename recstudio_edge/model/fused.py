"""Fused training kernels: one autograd node for a hot path that autograd would split into ~30.

On a CPU a BPR-MF step is small tensor work (a 2048 x 64 batch): most of its time goes to the
per-node cost of the autograd graph (three embedding lookups, the scores, the loss, their
backward nodes, two gradient accumulations into the item table), not to arithmetic. Writing
the forward and the analytic backward of the whole loss as one ``torch.autograd.Function``
removes that cost (ml-1m-sized tables, 1 thread: ~2.9 -> ~2.1 ms per step with Adam),
in the spirit of FBGEMM's fused embedding kernels, without a compiler at install time. The
value and both gradients equal autograd's to float rounding (tests/model/test_fast_paths.py);
``bpr_mf_loss_and_grads`` gives the same loss and gradients without building a graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _bpr_mf_forward(user_table, item_table, user, pos, neg):
    """The loss and what its gradients need: ``(loss, vu [B, D], d [B, K, D], x [B, K])``."""
    dim = item_table.shape[1]
    vu = user_table.index_select(0, user)  # [B, D]
    vi = item_table.index_select(0, pos)  # [B, D]
    vj = item_table.index_select(0, neg.reshape(-1)).view(*neg.shape, dim)  # [B, K, D]
    d = vi.unsqueeze(1) - vj  # [B, K, D]
    x = (vu.unsqueeze(1) * d).sum(-1)  # [B, K]
    return -F.logsigmoid(x).mean(), vu, d, x


def _bpr_mf_grads(grad, rows, user, pos, neg, vu, d, x, need_user=True, need_item=True):
    """The two tables' dense gradients ``(g_user, g_item)`` (None where not needed), ``grad`` being
    dL/d(loss) and ``rows`` the tables' row counts."""
    n_users, n_items = rows
    dim = vu.shape[1]
    c = (torch.sigmoid(-x) * (-grad / x.numel())).unsqueeze(-1)  # dL/dx [B, K, 1]
    one = x.shape[1] == 1  # one negative: sums over k are views, not copies
    g_user = g_item = None
    if need_user:  # dL/dU[u] = sum_k c_k (I[pos] - I[neg_k])
        cd = c * d
        g_user = vu.new_zeros(n_users, dim).index_add_(0, user, cd[:, 0] if one else cd.sum(1))
    if need_item:  # dL/dI[pos] = sum_k c_k U[u]; dL/dI[neg_k] = -c_k U[u]
        cu = c * vu.unsqueeze(1)  # [B, K, D]
        g_item = vu.new_zeros(n_items, dim).index_add_(0, pos, cu[:, 0] if one else cu.sum(1))
        # the negated rows, not alpha=-1: index_add_ with an alpha takes a slower path on the
        # CPU (2048 x 64 rows, 1 thread: ~100 us against ~28 us); -x is exact, so the sums are too
        g_item.index_add_(0, neg.reshape(-1), cu.reshape(-1, dim).neg())
    return g_user, g_item


class _BPRMF(torch.autograd.Function):
    """``-mean logsigmoid(U[u] . (I[pos] - I[neg_k]))`` over rows and negatives."""

    @staticmethod
    def forward(ctx, user_table, item_table, user, pos, neg):
        loss, vu, d, x = _bpr_mf_forward(user_table, item_table, user, pos, neg)
        ctx.save_for_backward(user, pos, neg, vu, d, x)
        ctx.rows = (user_table.shape[0], item_table.shape[0])
        return loss

    @staticmethod
    def backward(ctx, grad):
        user, pos, neg, vu, d, x = ctx.saved_tensors
        g_user, g_item = _bpr_mf_grads(grad, ctx.rows, user, pos, neg, vu, d, x,
                                       ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return g_user, g_item, None, None, None


def bpr_mf_loss(user_table: torch.Tensor, item_table: torch.Tensor, user: torch.Tensor, pos: torch.Tensor,
                neg: torch.Tensor) -> torch.Tensor:
    """BPR loss of matrix factorisation with inner-product scores, fused: ``user [B]``, ``pos [B]``,
    ``neg [B, K]`` ids into the ``[num_users, D]`` and ``[num_items, D]`` tables. Equals
    ``BPRLoss()(q . I[pos], q . I[neg])`` with ``q = U[user]``, and so do its gradients."""
    if neg.dim() == 1:
        neg = neg.unsqueeze(1)
    return _BPRMF.apply(user_table, item_table, user, pos, neg)


def bpr_mf_loss_and_grads(user_table: torch.Tensor, item_table: torch.Tensor, user: torch.Tensor,
                          pos: torch.Tensor, neg: torch.Tensor):
    """``bpr_mf_loss`` without autograd: ``(loss, g_user, g_item)``, the loss (detached) and the
    dense gradients ``loss.backward()`` would give the two tables (None for a table that does
    not require a gradient), by the same operations as the autograd node's backward, so equal to
    the bit. No graph is built: what the fast loop's direct steps use (``FastLoop.training_step``
    with a model's ``train_grads``), ~0.1 ms less per BPR step than the graph and its engine."""
    if neg.dim() == 1:
        neg = neg.unsqueeze(1)
    with torch.no_grad():
        loss, vu, d, x = _bpr_mf_forward(user_table, item_table, user, pos, neg)
        g_user, g_item = _bpr_mf_grads(torch.ones((), dtype=loss.dtype), (user_table.shape[0], item_table.shape[0]),
                                       user, pos, neg, vu, d, x, user_table.requires_grad, item_table.requires_grad)
    return loss, g_user, g_item


def fused_allowed(t: torch.Tensor) -> bool:
    """The fused kernels accumulate gradients with ``index_add_``, which CUDA does with atomics:
    under ``torch.use_deterministic_algorithms(True)`` on a GPU the generic path is taken."""
    return not (t.is_cuda and torch.are_deterministic_algorithms_enabled())
