"""Negative samplers, picked by name (``sampler:``).

``sampler(pos [M], num_neg, query=None, user=None, generator=None) -> (log_pos_prob [M], neg [M, K], log_neg_prob [M, K])``.
``generator``: draw from this ``torch.Generator`` instead of torch's global one (the static samplers,
when the data pipeline draws negatives, keyed per batch: ``data.dataset_sampling_count``).
The log-probabilities are exact, so that sampled-softmax losses can correct by log-Q:

- ``log_pos_prob`` is ``log Q(pos | query)``, the probability the proposal gives the positive;
- ``log_neg_prob`` is the probability with which each negative was actually drawn. By default a
  sampler never returns the positive as its own negative (``exclude_pos: true``): it draws from
  the proposal restricted to the other items, ``Q(i | query) / (1 - Q(pos | query))``, and reports
  that; with ``exclude_pos: false`` it draws from ``Q`` itself.

Static samplers: ``uniform``, ``popularity``. Dynamic samplers (``midx_uni``, ``midx_pop``,
``cluster_uni``, ``cluster_pop``) propose items in proportion to ``w_i * exp(q . c(i))`` where
``c(i)`` is the codeword of item ``i``'s cell: a k-means index over the current item vectors
that the tower rebuilds at the start of every training epoch (``update``), on the model's
device, with tensors only. ``w_i`` is 1 (``*_uni``) or ``(count_i + 1) ** alpha`` (``*_pop``).

- MIDX (Chen et al., "Fast Variational AutoEncoder with Inverted Multi-Index for Collaborative
  Filtering", WWW 2022, arXiv 2109.05773): item vectors are split into two halves, each half is
  k-means'd into ``num_clusters`` codewords, a cell is a codeword pair ``(k1, k2)`` and
  ``q . c(i) = q1 . C1[k1] + q2 . C2[k2]``. A draw takes ``k1`` from its marginal, ``k2`` given
  ``k1``, then an item inside the cell in proportion to ``w_i``: ``O(K)`` per draw, not ``O(N)``.
- cluster (Lian et al., "Personalized Ranking with Importance Sampling", WWW 2020): one codebook
  over the whole vector.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..registry import register_sampler


class Sampler(nn.Module):
    """Base class. ``dynamic`` samplers need the query and an index over the item vectors."""

    dynamic = False

    def __init__(self, num_items: int):
        super().__init__()
        self.num_items = int(num_items)  # including padding id 0
        if self.num_items < 3:
            raise ValueError(f"a sampler needs at least 2 real items, got num_items={num_items} (with padding)")

    def _no_exclude_seen(self, exclude_seen) -> None:
        if exclude_seen:
            raise ValueError(f"sampler {self.registry_name!r}: exclude_seen (redrawing the user's training items) is "
                             f"offered by the uniform sampler only: its probabilities would no longer be exact "
                             f"(set model.sampler_args.exclude_seen=false)")

    def prepare(self, item_counts: torch.Tensor, train_keys: torch.Tensor | None = None) -> None:
        """Called before fitting with the training item counts and the sorted
        ``user * num_items + item`` keys of the training interactions; samplers keep what they need."""


@register_sampler(name="uniform")
class UniformSampler(Sampler):
    """Uniform over the real items other than the positive; with ``exclude_seen`` also other
    than any of the user's training items (as RecBole samples: redrawn until unseen, up to 20
    rounds; the reported log-probabilities stay those of the uniform proposal, so with
    ``exclude_seen`` they are not exact)."""

    def __init__(self, num_items: int, exclude_seen: bool = False, exclude_pos: bool = True):
        super().__init__(num_items)
        self.exclude_seen = bool(exclude_seen)
        self.exclude_pos = bool(exclude_pos)
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

    def forward(self, pos, num_neg, query=None, user=None, generator=None):
        n = self.num_items - 1  # real items 1..num_items-1
        if self.exclude_pos:
            neg = torch.randint(1, n, (pos.numel(), num_neg), device=pos.device, generator=generator)  # n-1 choices
            neg = neg + (neg >= pos.unsqueeze(1)).long()  # skip the positive
        else:
            neg = torch.randint(1, n + 1, (pos.numel(), num_neg), device=pos.device, generator=generator)
        if self.exclude_seen and user is not None and self.train_keys.numel():
            # redraw the seen ones, 8 candidates per slot at a time: the first unseen candidate is
            # uniform over the unseen items (as one-at-a-time rejection is), in ~2 rounds instead
            # of ~5 (on ml-1m ~5% of draws are seen; the check was ~15% of a BPR step)
            rows = torch.arange(neg.size(0), device=neg.device).unsqueeze(1).expand_as(neg).reshape(-1)
            flat, users = neg.view(-1), user.reshape(-1)[rows]
            idx = self._seen(users, flat.unsqueeze(1)).view(-1).nonzero().view(-1)
            for _ in range(20):
                if idx.numel() == 0:
                    break
                cand = torch.randint(1, self.num_items, (idx.numel(), 8), device=pos.device, generator=generator)
                free = ~self._seen(users[idx], cand)
                ok = free.any(1)
                first = free.to(torch.uint8).argmax(1)
                flat[idx[ok]] = cand[ok, first[ok]]
                idx = idx[~ok]
        ln = -math.log(n - 1) if self.exclude_pos else -math.log(n)
        return (torch.full(pos.shape, -math.log(n), device=pos.device),
                neg, torch.full(neg.shape, ln, device=pos.device))


# ---- exact draws from categorical rows and from cells of items ----------------------------------
def _draw(weights: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` draws per row from the categorical rows ``weights [R, C]`` (non-negative, float64,
    each row with some positive weight), by inverse CDF: ``[R, num]`` long. A category of weight
    0 is never drawn (its CDF interval is empty; ``u = total`` by rounding maps to the last
    category with weight)."""
    cdf = weights.cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(weights.size(0), num, dtype=cdf.dtype, device=cdf.device) * total
    idx = torch.searchsorted(cdf, u, right=True)
    over = idx >= cdf.size(1)  # u rounded up to the total: take the last category with weight
    if over.any():
        rows = over.nonzero(as_tuple=True)[0]
        idx[over] = torch.searchsorted(cdf[rows], total[rows]).squeeze(1)
    return idx


class CellIndex:
    """Items grouped by cell, each cell with its in-cell distribution ``w_i / W_cell``.

    ``order``: item ids sorted by cell; ``ptr [C + 1]``: each cell's segment of ``order``;
    ``rank [num_items]``: position of an item in ``order``; ``keys`` (float64): ``cell + the
    in-cell CDF`` at each position (the last item of a cell has exactly ``cell + 1``), so one
    ``searchsorted`` finds the item of a uniform draw in any cell; ``log_w [num_items]`` the item
    log-weights, ``log_cell_w [C]`` the cells' (``-inf`` when empty).
    """

    def __init__(self, cell_of: torch.Tensor, log_w: torch.Tensor, num_cells: int):
        """``cell_of [N]`` and ``log_w [N]`` for the real items ``1..N`` (index 0 of the item ids is padding)."""
        device = cell_of.device
        n = cell_of.numel()
        self.num_cells = int(num_cells)
        cell_of = cell_of.long()
        self.cell = torch.cat([cell_of.new_zeros(1), cell_of])  # by item id (padding: cell 0, never used)
        lw = log_w.double()
        self.log_w = torch.cat([lw.new_full((1,), float("-inf")), lw])
        order = torch.argsort(cell_of, stable=True)
        self.order = order + 1
        counts = torch.bincount(cell_of, minlength=self.num_cells)
        self.ptr = torch.zeros(self.num_cells + 1, dtype=torch.long, device=device)
        self.ptr[1:] = counts.cumsum(0)
        self.rank = torch.full((n + 1,), -1, dtype=torch.long, device=device)
        self.rank[self.order] = torch.arange(n, device=device)
        sc = cell_of[order]
        # in-cell weights relative to the cell's largest (no overflow, nothing lost to a global scale)
        cmax = torch.full((self.num_cells,), float("-inf"), dtype=torch.float64, device=device)
        cmax = cmax.scatter_reduce(0, sc, lw[order], reduce="amax")
        rel = torch.exp(lw[order] - cmax[sc])
        total = torch.zeros(self.num_cells, dtype=torch.float64, device=device).index_add_(0, sc, rel)
        self.log_cell_w = torch.where(counts > 0, torch.log(total) + cmax, torch.full_like(total, float("-inf")))
        csum = rel.cumsum(0)
        start = self.ptr[:-1][sc]
        before = torch.where(start > 0, csum[(start - 1).clamp(min=0)], torch.zeros_like(csum))
        frac = (csum - before) / total[sc]
        last = torch.zeros(n, dtype=torch.bool, device=device)
        last[self.ptr[1:][counts > 0] - 1] = True
        frac = torch.where(last, torch.ones_like(frac), frac.clamp(max=1.0))
        self.keys = sc.double() + frac
        # equal weights inside every cell (the uniform variants): an item is picked by its index
        self.uniform = bool((lw[order] == cmax[sc]).all())

    def to(self, device) -> "CellIndex":
        for name, value in vars(self).items():
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))
        return self

    def _sample_uniform(self, cells: torch.Tensor, pos: Optional[torch.Tensor],
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``sample`` when every item of a cell has the same weight: position ``floor(u * n)`` in
        the cell's segment, skipping the positive's (``n`` one less in the positive's cell)."""
        start = self.ptr[cells]
        n = self.ptr[cells + 1] - start
        u = torch.rand(cells.shape, dtype=torch.float64, device=cells.device, generator=generator)
        if pos is None:
            j = (u * n).long()
            return self.order[start + torch.minimum(j, n - 1)]
        same = self.cell[pos].unsqueeze(1) == cells
        n = n - same.long()
        j = torch.minimum((u * n).long(), n - 1)
        j = j + (same & (j >= (self.rank[pos].unsqueeze(1) - start))).long()
        return self.order[start + j]

    def sample(self, cells: torch.Tensor, pos: Optional[torch.Tensor],
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """An item of each cell in ``cells [M, K]``, drawn in proportion to ``w_i``; with ``pos [M]``
        never row m's ``pos[m]`` (drawn from the cell's distribution without it): ``[M, K]`` ids.
        A cell must hold some item other than the excluded positive."""
        if self.uniform:
            return self._sample_uniform(cells, pos, generator)
        c = cells.double()
        u = torch.rand(cells.shape, dtype=torch.float64, device=cells.device, generator=generator)
        if pos is None:
            t = c + u
        else:
            r = self.rank[pos].unsqueeze(1)  # [M, 1]
            same = self.cell[pos].unsqueeze(1) == cells
            hi = self.keys[r]
            lo = torch.where(r > self.ptr[self.cell[pos]].unsqueeze(1), self.keys[(r - 1).clamp(min=0)],
                             self.cell[pos].unsqueeze(1).double())
            width = torch.where(same, hi - lo, torch.zeros_like(hi))
            t = c + u * (1.0 - width)
            # past the positive's interval: shift by its width (written from hi, so never inside it)
            t = torch.where(same & (t >= lo), hi + (t - lo), t)
        idx = torch.searchsorted(self.keys, t.flatten(), right=True).view(cells.shape)
        idx = torch.minimum(torch.maximum(idx, self.ptr[cells]), self.ptr[cells + 1] - 1)
        items = self.order[idx]
        if pos is not None:  # only reachable through float rounding at an interval's edge
            clash = items == pos.unsqueeze(1)
            if clash.any():
                step = torch.where(idx[clash] + 1 < self.ptr[cells[clash] + 1], 1, -1)
                items[clash] = self.order[idx[clash] + step]
        return items


@register_sampler(name="popularity")
class PopularitySampler(Sampler):
    """Proportional to ``(count + 1) ** alpha`` over training counts. With ``exclude_pos`` (the
    default) the draw is exactly from that distribution without the positive (inverse CDF with
    the positive's interval cut out: no redraws), and that is the probability reported."""

    def __init__(self, num_items: int, alpha: float = 1.0, exclude_pos: bool = True, exclude_seen: bool = False):
        super().__init__(num_items)
        self._no_exclude_seen(exclude_seen)
        self.alpha = float(alpha)
        self.exclude_pos = bool(exclude_pos)
        self.register_buffer("log_prob", torch.full((self.num_items,), -math.log(max(self.num_items - 1, 1))))
        self.log_prob[0] = float("-inf")
        self._index: Optional[CellIndex] = None
        self._index_key = None

    def prepare(self, item_counts, train_keys=None):
        w = (item_counts.double() + 1.0).pow(self.alpha)
        w[0] = 0
        self.log_prob.copy_(torch.log(w / w.sum()).float())

    def _cells(self) -> CellIndex:
        # rebuilt when log_prob changes (prepare, load_state_dict, a device move)
        key = (self.log_prob.data_ptr(), self.log_prob._version)
        if self._index is None or self._index_key != key:
            lp = self.log_prob[1:]
            self._index = CellIndex(torch.zeros_like(lp, dtype=torch.long), lp, 1)
            self._index_key = key
        return self._index

    def forward(self, pos, num_neg, query=None, user=None, generator=None):
        index = self._cells()
        cells = torch.zeros(pos.numel(), num_neg, dtype=torch.long, device=pos.device)
        neg = index.sample(cells, pos if self.exclude_pos else None, generator)
        lw = index.log_w - index.log_cell_w[0]  # float64 log-probabilities, normalised
        log_pos = lw[pos]
        log_neg = lw[neg]
        if self.exclude_pos:
            log_neg = log_neg - torch.log1p(-torch.exp(log_pos)).unsqueeze(1)
        return log_pos.float(), neg, log_neg.float()


# ---- k-means, in torch ---------------------------------------------------------------------------
@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 10, init: Optional[torch.Tensor] = None,
           generator: Optional[torch.Generator] = None, chunk: int = 1 << 16):
    """Lloyd's k-means of ``x [N, d]`` into ``k`` centroids: ``(centroids [k, d], assign [N])``.

    Starts from ``init`` (e.g. the previous epoch's codebook) or ``k`` distinct random rows; an
    empty cluster is re-seeded with the point farthest from its centroid. Distances are computed
    in chunks of rows, so memory stays ``O(chunk * k)``."""
    n = x.size(0)
    k = min(int(k), n)
    if init is not None and init.shape == (k, x.size(1)):
        c = init.to(x).clone()
    else:
        perm = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
        c = x[perm].clone()
    xx = x.pow(2).sum(1)
    assign = torch.zeros(n, dtype=torch.long, device=x.device)
    dist = torch.zeros(n, dtype=x.dtype, device=x.device)
    for it in range(iters + 1):
        cc = c.pow(2).sum(1)
        for s in range(0, n, chunk):
            d = xx[s:s + chunk, None] - 2 * x[s:s + chunk] @ c.T + cc[None]
            dist[s:s + chunk], assign[s:s + chunk] = d.min(1)
        if it == iters:
            break
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp(min=1)[:, None].to(x.dtype))
        if empty.any():  # re-seed with the worst-served points
            far = torch.topk(dist, int(empty.sum())).indices
            c[empty] = x[far]
    return c, assign


class CodebookSampler(Sampler):
    """The shared machinery of the dynamic samplers: item weights, the cell index, exact
    log-probabilities. Subclasses build their codebooks (``_build``) and draw cells (``_cells``)."""

    dynamic = True
    _codebooks: tuple = ()

    def __init__(self, num_items: int, num_clusters: int = 32, kmeans_iters: int = 10, alpha: float = 1.0,
                 popularity: bool = False, exclude_pos: bool = True, seed: int = 0):
        super().__init__(num_items)
        self.K = int(num_clusters)
        if self.K < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.kmeans_iters, self.alpha, self.popularity = int(kmeans_iters), float(alpha), bool(popularity)
        self.exclude_pos, self.seed = bool(exclude_pos), int(seed)
        # log w_i of the real items (0: uniform); set by prepare for the popularity variants
        self.register_buffer("log_pop", torch.zeros(self.num_items), persistent=False)
        for name in self._codebooks:  # non-persistent buffers: they follow the module's device
            self.register_buffer(name, None, persistent=False)
        self.index: Optional[CellIndex] = None
        self.query_scale = 1.0
        self.normalize = False
        self.builds = 0

    @property
    def ready(self) -> bool:
        return self.index is not None

    def prepare(self, item_counts, train_keys=None):
        if self.popularity:
            self.log_pop.copy_(self.alpha * torch.log(item_counts.double().to(self.log_pop.device) + 1.0).float())

    @torch.no_grad()
    def update(self, item_vectors: torch.Tensor, metric: Optional[str] = "ip") -> None:
        """Rebuild the index from ``item_vectors [num_items, D]`` (row 0, padding, is left out).

        ``metric`` is the scorer's: ``ip`` proposes by ``q . v``; ``cos`` normalises queries and
        items first; ``l2`` (score ``-|q - v|^2``) uses ``2 q . c`` and item weights times
        ``exp(-|v|^2)``, the parts of ``exp(-|q - v|^2)`` that depend on the item."""
        v = item_vectors.detach()[1:].float()
        if v.size(0) != self.num_items - 1:
            raise ValueError(f"{type(self).__name__}: {v.size(0) + 1} item vectors for {self.num_items} items")
        self.normalize = metric == "cos"
        self.query_scale = 2.0 if metric == "l2" else 1.0
        if self.normalize:
            v = torch.nn.functional.normalize(v, dim=-1, eps=1e-8)
        log_w = self.log_pop[1:].to(v.device).double()
        if metric == "l2":
            log_w = log_w - v.double().pow(2).sum(1)
        g = torch.Generator().manual_seed(self.seed + self.builds)
        cell_of = self._build(v, g)
        self.index = CellIndex(cell_of, log_w, self.num_cells)
        self.builds += 1

    def _apply(self, fn, *args, **kwargs):  # keep the (plain-tensor) index on the module's device
        out = super()._apply(fn, *args, **kwargs)
        if self.index is not None:
            self.index.to(self.log_pop.device)
        return out

    def _query(self, query: Optional[torch.Tensor]) -> torch.Tensor:
        if query is None:
            raise ValueError(f"sampler {self.registry_name!r} proposes by the query: call it with query=")
        if self.index is None:
            raise RuntimeError(f"sampler {self.registry_name!r} has no index: call update(item_vectors) first "
                               f"(the tower does at every training epoch start)")
        q = query.detach().float().reshape(-1, query.size(-1))
        if self.normalize:
            q = torch.nn.functional.normalize(q, dim=-1, eps=1e-8)
        return q * self.query_scale

    def forward(self, pos, num_neg, query=None, user=None, generator=None):
        if generator is not None:  # they run in the training step, never in the data pipeline
            raise ValueError(f"sampler {self.registry_name!r} draws with torch's global generator (it needs the "
                             f"query, so it runs in the training step); generator= is for the static samplers")
        q = self._query(query)
        pos = pos.reshape(-1)
        if q.size(0) != pos.numel():
            raise ValueError(f"{q.size(0)} queries for {pos.numel()} positives")
        ex = pos if self.exclude_pos else None
        cells, log_cell_pos, log_cell_neg = self._cells(q, pos, num_neg, ex)
        neg = self.index.sample(cells, ex)
        lw = self.index.log_w
        log_pos = log_cell_pos + lw[pos]
        log_neg = log_cell_neg + lw[neg]
        return log_pos.float(), neg, log_neg.float()

    # what subclasses write
    num_cells: int

    def _build(self, v: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _cells(self, q, pos, num_neg, exclude):  # pragma: no cover
        """``(cells [M, K], log a(pos) [M], log a(cell) [M, K])`` where ``a(i) = exp(q . c(i)) / Z``
        so that ``Q(i) = a(i) w_i``; with ``exclude``, cells and ``Z`` are those of the proposal
        without the positive (``Z' = Z - exp(q . c(pos)) w_pos``)."""
        raise NotImplementedError


def _pos_weight(index: CellIndex, pos: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``w_pos / exp(shift)`` in float64 (the positive's share of its cell's weight, on the same scale)."""
    return torch.exp(index.log_w[pos] - shift)


class ClusterSampler(CodebookSampler):
    """PRIS's cluster proposal: one codebook ``C [K, D]``; ``Q(i | q) ∝ w_i exp(q . C[k(i)])``."""

    _codebooks = ("codebook",)

    @property
    def num_cells(self) -> int:
        return self.codebook.size(0)

    def _build(self, v, g):
        self.codebook, assign = kmeans(v, self.K, self.kmeans_iters, init=self.codebook, generator=g)
        return assign

    def _cells(self, q, pos, num_neg, exclude):
        index = self.index
        r = (q @ self.codebook.T).double()  # [M, C]
        lcw = index.log_cell_w.to(r.device)
        a = r + lcw  # log (exp(r_c) W_c)
        shift = a.max(1, keepdim=True).values
        e = torch.exp(a - shift)  # [M, C]
        log_z = torch.log(e.sum(1)) + shift.squeeze(1)
        pc = index.cell[pos]
        log_cell_pos = r.gather(1, pc[:, None]).squeeze(1) - log_z
        if exclude is not None:  # remove the positive's own weight from its cell
            wp = torch.exp(r.gather(1, pc[:, None]).squeeze(1) + index.log_w[pos] - shift.squeeze(1))
            left = (e.gather(1, pc[:, None]).squeeze(1) - wp).clamp(min=0)
            e = e.scatter(1, pc[:, None], left[:, None])
            log_z = torch.log(e.sum(1)) + shift.squeeze(1)
        cells = _draw(e, num_neg)
        log_cell_neg = r.gather(1, cells) - log_z[:, None]
        return cells, log_cell_pos, log_cell_neg


class MIDXSampler(CodebookSampler):
    """MIDX's inverted multi-index: two codebooks over the halves of the vectors, cells ``(k1, k2)``;
    ``Q(i | q) ∝ w_i exp(q1 . C1[k1(i)] + q2 . C2[k2(i)])``; draws ``k1`` from its marginal, then
    ``k2 | k1``, then the item in the cell."""

    _codebooks = ("c1", "c2")

    @property
    def num_cells(self) -> int:
        return self.c1.size(0) * self.c2.size(0)

    def _build(self, v, g):
        h = v.size(1) // 2
        if h == 0:
            raise ValueError("MIDX splits item vectors in two halves: it needs embed_dim >= 2")
        self.c1, a1 = kmeans(v[:, :h], self.K, self.kmeans_iters, init=self.c1, generator=g)
        self.c2, a2 = kmeans(v[:, h:], self.K, self.kmeans_iters, init=self.c2, generator=g)
        self.split = h
        return a1 * self.c2.size(0) + a2

    def _cells(self, q, pos, num_neg, exclude):
        index = self.index
        K1, K2 = self.c1.size(0), self.c2.size(0)
        r1 = (q[:, :self.split] @ self.c1.T).double()  # [M, K1]
        r2 = (q[:, self.split:] @ self.c2.T).double()  # [M, K2]
        lcw = index.log_cell_w.view(K1, K2)
        wmax = lcw.max()
        W = torch.exp(lcw - wmax)  # [K1, K2] cell weights, scaled
        m1, m2 = r1.max(1, keepdim=True).values, r2.max(1, keepdim=True).values
        e1, e2 = torch.exp(r1 - m1), torch.exp(r2 - m2)
        S = e2 @ W.T  # [M, K1]: sum over k2 of W[k1, k2] exp(r2[k2])
        shift = (m1 + m2).squeeze(1) + wmax
        pc = index.cell[pos]
        p1, p2 = pc // K2, pc % K2
        lp = r1.gather(1, p1[:, None]).squeeze(1) + r2.gather(1, p2[:, None]).squeeze(1)
        log_cell_pos = lp - (torch.log((e1 * S).sum(1)) + shift)  # under the full proposal
        if exclude is not None:
            # the positive's row of W without its own weight, and S[p1] recomputed from it (no cancellation)
            wp = _pos_weight(index, pos, wmax)  # [M]
            Wp = W[p1].clone()  # [M, K2]
            Wp.scatter_(1, p2[:, None], (Wp.gather(1, p2[:, None]).squeeze(1) - wp).clamp(min=0)[:, None])
            S = S.scatter(1, p1[:, None], (Wp * e2).sum(1, keepdim=True))
        joint1 = e1 * S  # [M, K1]
        log_z = torch.log(joint1.sum(1)) + shift
        if num_neg >= K1:  # one draw over the K1 * K2 pairs costs less than K2 per negative
            joint = (e1[:, :, None] * W[None] * e2[:, None, :]).reshape(-1, K1 * K2)  # [M, K1 K2]
            if exclude is not None:  # the positive's pair without the positive's weight
                jp = (e1.gather(1, p1[:, None]).squeeze(1) * Wp.gather(1, p2[:, None]).squeeze(1)
                      * e2.gather(1, p2[:, None]).squeeze(1))
                joint.scatter_(1, pc[:, None], jp[:, None])
            cells = _draw(joint, num_neg)
            k1, k2 = cells // K2, cells % K2
            log_cell_neg = r1.gather(1, k1) + r2.gather(1, k2) - log_z[:, None]
            return cells, log_cell_pos, log_cell_neg
        k1 = _draw(joint1, num_neg)  # [M, n]
        w2 = W[k1] * e2[:, None, :]  # [M, n, K2]
        if exclude is not None:
            hit = k1 == p1[:, None]
            if hit.any():
                rows = hit.nonzero(as_tuple=True)
                w2[rows[0], rows[1]] = Wp[rows[0]] * e2[rows[0]]
        k2 = _draw(w2.reshape(-1, K2), 1).view(k1.shape)
        log_cell_neg = r1.gather(1, k1) + r2.gather(1, k2) - log_z[:, None]
        return k1 * K2 + k2, log_cell_pos, log_cell_neg


def _variant(base, popularity: bool, name: str, doc: str):
    class Variant(base):
        __doc__ = doc

        def __init__(self, num_items: int, num_clusters: int = 32, kmeans_iters: int = 10, alpha: float = 1.0,
                     exclude_pos: bool = True, seed: int = 0, exclude_seen: bool = False):
            super().__init__(num_items, num_clusters, kmeans_iters, alpha, popularity, exclude_pos, seed)
            self._no_exclude_seen(exclude_seen)

    Variant.__name__ = Variant.__qualname__ = name
    return register_sampler(Variant, name=name.lower().replace("sampler", ""))


MIDXUni = _variant(MIDXSampler, False, "midx_uni",
                   "MIDX proposal, items uniform inside a cell: Q(i|q) ∝ exp(q1.C1[k1(i)] + q2.C2[k2(i)]).")
MIDXPop = _variant(MIDXSampler, True, "midx_pop",
                   "MIDX proposal, items by popularity inside a cell: Q(i|q) ∝ (count_i+1)^alpha exp(q.c(i)).")
ClusterUni = _variant(ClusterSampler, False, "cluster_uni",
                      "Cluster (PRIS) proposal, items uniform inside a cluster: Q(i|q) ∝ exp(q.C[k(i)]).")
ClusterPop = _variant(ClusterSampler, True, "cluster_pop",
                      "Cluster (PRIS) proposal, items by popularity: Q(i|q) ∝ (count_i+1)^alpha exp(q.C[k(i)]).")
