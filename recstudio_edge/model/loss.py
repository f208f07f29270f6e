"""Losses for tower models, picked by name (``loss:`` in the model config).

Sampled losses take ``(pos [M], neg [M, K], log_pos_prob [M], log_neg_prob [M, K])``;
``softmax`` takes the logits over the real items ``[M, num_items - 1]`` and ``target - 1``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_loss


class SampledLoss(nn.Module):
    full = False  # needs negatives from a sampler


@register_loss(name="bpr")
class BPRLoss(SampledLoss):
    """Bayesian personalised ranking: ``-log sigmoid(pos - neg)``, averaged over negatives."""

    def forward(self, pos, neg, log_pos_prob=None, log_neg_prob=None):
        return -F.logsigmoid(pos.unsqueeze(1) - neg).mean()


@register_loss(name="bce")
class BCELoss(SampledLoss):
    """Binary cross-entropy: the positive is 1, each negative 0 (negatives averaged per row)."""

    def forward(self, pos, neg, log_pos_prob=None, log_neg_prob=None):
        return (-F.logsigmoid(pos) - F.logsigmoid(-neg).mean(1)).mean()


@register_loss(name="sampled_softmax")
class SampledSoftmaxLoss(SampledLoss):
    """Softmax over the positive and the sampled negatives with log-Q correction
    (Bengio & Senecal 2008; Yi et al. 2019): each logit minus the log probability that the
    sampler proposes that item, so the estimate is unbiased for the full softmax."""

    def forward(self, pos, neg, log_pos_prob=None, log_neg_prob=None):
        if log_pos_prob is not None:
            pos, neg = pos - log_pos_prob, neg - log_neg_prob
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
        return -torch.log_softmax(logits, dim=1)[:, 0].mean()


@register_loss(name="softmax")
class FullSoftmaxLoss(nn.Module):
    """Cross-entropy over every real item. The tower passes logits over items ``1..N-1`` only
    (the padding row is left out of the matrix product, no copy) and targets shifted by one."""

    full = True

    def forward(self, logits, target):
        return F.cross_entropy(logits, target)


@register_loss(name="hinge")
class HingeLoss(SampledLoss):
    """Margin ranking: ``max(0, margin - pos + neg)``, averaged over negatives and rows. With the
    ``euclidean`` scorer (negative squared distance) this is CML's ``[m + d(u,i)^2 - d(u,j)^2]+``
    (Hsieh et al., WWW 2017), without its rank weighting."""

    def __init__(self, margin: float = 0.5):
        super().__init__()
        self.margin = float(margin)

    def forward(self, pos, neg, log_pos_prob=None, log_neg_prob=None):
        return F.relu(self.margin - pos.unsqueeze(1) + neg).mean()
