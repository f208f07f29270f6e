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

    def prepare(self, item_counts: torch.Tensor, train_keys: torch.Tensor | None = None) -> None:
        """Called before fitting with the training item counts and the sorted
        ``user * num_items + item`` keys of the training interactions; samplers keep what they need."""


@register_sampler(name="uniform")
class UniformSampler(Sampler):
    """Uniform over the real items other than the positive; with ``exclude_seen`` also other
    than any of the user's training items (as RecBole samples: redrawn until unseen, up to 20
    rounds; the reported log-probabilities stay those of the uniform proposal)."""

    def __init__(self, num_items: int, exclude_seen: bool = False):
        super().__init__(num_items)
        self.exclude_seen = bool(exclude_seen)
        self.register_buffer("train_keys", torch.zeros(0, dtype=torch.long), persistent=False)

    DENSE_LIMIT = 1 << 27  # users x items up to this: a dense bool table (128 MB), else binary search

    def prepare(self, item_counts, train_keys=None):
        if self.exclude_seen and train_keys is not None and train_keys.numel():
            size = int(train_keys.max()) + 1
            if size <= self.DENSE_LIMIT:  # O(1) lookups: twice the sampling speed of searchsorted
                table = torch.zeros(size + self.num_items, dtype=torch.bool, device=train_keys.device)
                table[train_keys] = True
                self.train_keys = table
                self._dense = True
            else:
                self.train_keys = train_keys
                self._dense = False

    def _seen(self, user, neg):
        k = user.unsqueeze(1) * self.num_items + neg
        if getattr(self, "_dense", False):
            return self.train_keys[k.clamp(max=self.train_keys.numel() - 1)]
        pos = torch.searchsorted(self.train_keys, k).clamp(max=self.train_keys.numel() - 1)
        return self.train_keys[pos] == k

    def forward(self, pos, num_neg, query=None, user=None):
        n = self.num_items - 1  # real items 1..num_items-1
        neg = torch.randint(1, n, (pos.numel(), num_neg), device=pos.device)  # n-1 choices
        neg = neg + (neg >= pos.unsqueeze(1)).long()  # skip the positive
        if self.exclude_seen and user is not None and self.train_keys.numel():
            for _ in range(20):
                bad = self._seen(user, neg)
                if not bad.any():
                    break
                neg[bad] = torch.randint(1, self.num_items, (int(bad.sum()),), device=pos.device)
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

    def prepare(self, item_counts, train_keys=None):
        w = (item_counts.double() + 1.0).pow(self.alpha)
        w[0] = 0
        self.log_prob.copy_(torch.log(w / w.sum()).float())

    def forward(self, pos, num_neg, query=None, user=None):
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
