"""Negative samplers, picked by name (``sampler:``).

``sampler(pos [M], num_neg, query=None) -> (log_pos_prob [M], neg [M, K], log_neg_prob [M, K])``:
the log probabilities are those of the proposal distribution, so sampled-softmax losses can
correct by log-Q. The positive is never returned as its own negative.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import register_sampler


class Sampler(nn.Module):
    def __init__(self, num_items: int):
        super().__init__()
        self.num_items = int(num_items)  # including padding id 0

    def prepare(self, item_counts: torch.Tensor) -> None:
        """Called with the training item counts before fitting; samplers that need them keep them."""


@register_sampler(name="uniform")
class UniformSampler(Sampler):
    """Uniform over the real items other than the positive."""

    def forward(self, pos, num_neg, query=None):
        n = self.num_items - 1  # real items 1..num_items-1
        neg = torch.randint(1, n, (pos.numel(), num_neg), device=pos.device)  # n-1 choices
        neg = neg + (neg >= pos.unsqueeze(1)).long()  # skip the positive
        lp = -math.log(max(n - 1, 1))
        return (torch.full(pos.shape, lp, device=pos.device),
                neg, torch.full(neg.shape, lp, device=pos.device))


@register_sampler(name="popularity")
class PopularitySampler(Sampler):
    """Proportional to ``(count + 1) ** alpha`` over training counts; a draw equal to the
    positive is redrawn (up to a few rounds), so the positive is never its own negative."""

    def __init__(self, num_items: int, alpha: float = 1.0):
        super().__init__(num_items)
        self.alpha = alpha
        self.register_buffer("log_prob", torch.full((self.num_items,), -math.log(max(self.num_items - 1, 1))))
        self.log_prob[0] = float("-inf")

    def prepare(self, item_counts):
        w = (item_counts.double() + 1.0).pow(self.alpha)
        w[0] = 0
        self.log_prob.copy_(torch.log(w / w.sum()).float())

    def forward(self, pos, num_neg, query=None):
        probs = self.log_prob.exp()
        neg = torch.multinomial(probs, pos.numel() * num_neg, replacement=True).view(pos.numel(), num_neg)
        for _ in range(10):
            clash = neg == pos.unsqueeze(1)
            if not clash.any():
                break
            neg[clash] = torch.multinomial(probs, int(clash.sum()), replacement=True)
        clash = neg == pos.unsqueeze(1)
        if clash.any():  # a positive holding nearly all the mass: fall back to its neighbour id
            neg[clash] = neg[clash] % (self.num_items - 1) + 1
        return self.log_prob[pos], neg, self.log_prob[neg]
