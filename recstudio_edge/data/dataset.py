"""Datasets that build whole batches by indexing tensors (one gather per field per batch).

A ``BatchDataset`` is indexed with a LongTensor of row ids and returns a
``dict[str, Tensor]`` batch; ``IndexBatchSampler`` yields those id tensors, shuffled per
epoch and sharded by distributed rank. With ``DataLoader(batch_size=None)`` nothing is
collated row by row, which is most of the CPU throughput.

Dataset kinds (a model class declares one as ``data_kind``):
- ``mf``:  training interactions ``{user_id, item_id}``; negatives come from the model's sampler;
- ``ae``:  one row per user ``{user_id, item_id_set}`` (a [B, N] 0/1 matrix of the user's train items);
- ``seq``: one row per user, every position predicts the next item
  ``{user_id, seq [B, L], seq_len, target_seq [B, L]}`` (left-padded, 0 = padding);
- ``mlm``: BERT4Rec's Cloze task, one row per user with at least 2 training items: the latest
  ``L`` training items, each replaced by the mask token ``num_items`` with probability
  ``mask_prob`` (redrawn for every batch, seeded by ``(seed, epoch, rank, step)``)
  ``{user_id, seq [B, L] (masked), seq_len, target_seq [B, L]}`` where ``target_seq`` holds the
  original item at masked positions and 0 elsewhere; evaluation appends the mask token after
  the latest ``L - 1`` known items;
- ``ctr``: labelled rows ``{user_id, item_id, seq, seq_len, label}``, the history being the
  user's items before the target; training negatives are drawn from items outside the user's
  training items, evaluation negatives from items the user never touched at all; with
  ``group_num > 0`` also ``group_id``, the user's activity quantile (0 = least active). A
  training batch is a block of positives then ``neg_per_pos`` blocks of their negatives, and
  carries its ``P`` distinct histories once as ``seq_unique [P, L]`` (``seq`` is it repeated).
Evaluation of retrieval kinds is per user: ``{user_id, seq, seq_len}`` plus the pairs to mask
(``mask_rows``, ``mask_cols``) and the targets (``target_rows``, ``target_cols``).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from ..evaluation.topk import csr_rows
from ..progress import stages
from .preprocess import HISTORY, TEST, TRAIN, VALID, Interactions

Batch = Dict[str, torch.Tensor]


def batch_generator(seed: int, key, salt: int = 0) -> (torch.Generator, torch.Tensor):
    """``(generator, idx)`` for one batch of an ``epoch_keyed`` dataset: ``key`` is
    ``((epoch, rank, step), idx)`` from ``EpochKeyedBatchSampler`` or a bare ``idx`` (key
    ``(0, 0, 0)``). Every random draw of a training batch comes from this generator, never from
    torch's global one, so a batch is the same with or without DataLoader worker processes
    and whatever else uses the global RNG."""
    (epoch, rank, step), idx = key if isinstance(key, tuple) else ((0, 0, 0), key)
    # the hash of a tuple of ints is the same in every process (PYTHONHASHSEED: str/bytes only)
    h = hash((int(seed), int(epoch), int(rank), int(step)) + ((int(salt),) if salt else ()))
    return torch.Generator().manual_seed(h & (2 ** 63 - 1)), idx


class BatchDataset(Dataset):
    """``dataset[idx_tensor] -> batch``: a thin adapter around a batch-building function.

    ``epoch_keyed`` datasets (``mlm``, ``ctr``, negatives drawn in the pipeline) are indexed with
    ``((epoch, rank, step), idx_tensor)`` from ``EpochKeyedBatchSampler``, so their random draws
    are redrawn every batch and epoch and still reproducible; they accept a bare ``idx_tensor``
    too (as key ``(0, 0, 0)``). Their ``make_batch`` draws random numbers only from the generator
    of ``batch_generator``, so a batch is the same whichever process or worker builds it.
    """

    def __init__(self, size: int, make_batch: Callable[[torch.Tensor], Batch], epoch_keyed: bool = False):
        self.size = int(size)
        self.make_batch = make_batch
        self.epoch_keyed = epoch_keyed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx):
        if isinstance(idx, list):  # a group of batches (train.steps_per_call, GroupedBatchSampler)
            return [self.make_batch(i) for i in idx]
        return self.make_batch(idx)


class IndexBatchSampler:
    """Yields LongTensors of row ids: a permutation per epoch (``seed + epoch``), this rank's share.

    Under torch.distributed every rank gets ``ceil(n / world)`` rows (the permutation is
    padded by wrapping, as ``DistributedSampler`` does), so all ranks run the same number of
    steps. Evaluation passes ``pad=False``: each rank takes a disjoint slice and the
    metric sums are all-reduced, so every row is counted exactly once.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, pad: bool = True):
        self.size, self.batch_size, self.shuffle = int(size), int(batch_size), shuffle
        self.seed, self.drop_last, self.pad, self.epoch = int(seed), drop_last, pad, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = int(epoch)

    @staticmethod
    def _world() -> (int, int):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _indices(self) -> torch.Tensor:
        return self.order(self.epoch)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Every row id once, in this epoch's order (before the split across ranks)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + int(epoch))
            return torch.randperm(self.size, generator=g)
        return torch.arange(self.size)

    def order(self, epoch: int) -> torch.Tensor:
        """This rank's row ids for ``epoch`` in batch order: batch ``i`` is ``order[i*bs:(i+1)*bs]``."""
        order = self.epoch_order(epoch)
        rank, world = self._world()
        if world == 1:
            return order
        if self.pad:
            per = math.ceil(self.size / world)
            if per * world > self.size:
                order = torch.cat([order, order[: per * world - self.size]])
            return order[rank::world]
        per = math.ceil(self.size / world)
        return order[rank * per:(rank + 1) * per]

    def __iter__(self) -> Iterator[torch.Tensor]:
        idx = self._indices()
        n = idx.numel()
        stop = n - n % self.batch_size if self.drop_last else n
        for s in range(0, stop, self.batch_size):
            yield idx[s:s + self.batch_size]

    def __len__(self) -> int:
        rank, world = self._world()
        n = math.ceil(self.size / world) if world > 1 else self.size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class LengthBucketSampler(IndexBatchSampler):
    """``data.length_buckets``: training batches of rows of similar length, so that trimming a
    batch's all-padding columns (``seq`` training batches) cuts most of the padding.

    Per epoch, a seeded permutation of the rows is cut into pools of ``pool`` batches; each pool
    is sorted by ``lengths`` (stable: ties stay in the permutation's order) and cut into batches;
    the full batches of every pool are shuffled together and the one short batch (if any) comes
    last, so ``order`` keeps ``IndexBatchSampler``'s layout (batch ``i`` = ``order[i*bs:(i+1)*bs]``)
    and its split across ranks. Every row exactly once per epoch; ``pool=1`` is plain shuffling."""

    def __init__(self, lengths: torch.Tensor, batch_size: int, pool: int, seed: int = 0, pad: bool = True):
        super().__init__(int(lengths.numel()), batch_size, shuffle=True, seed=seed, pad=pad)
        if int(pool) < 1:
            raise ValueError(f"data.length_buckets must be >= 1 batches per pool (0: off), got {pool}")
        self.lengths, self.pool = lengths.long(), int(pool)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + int(epoch))
        perm = torch.randperm(self.size, generator=g)
        bs, span = self.batch_size, self.pool * self.batch_size
        full, short = [], []
        for s in range(0, self.size, span):
            p = perm[s:s + span]
            p = p[torch.argsort(self.lengths[p], stable=True)]
            for b in range(0, p.numel(), bs):
                (full if b + bs <= p.numel() else short).append(p[b:b + bs])
        full = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        # the pools' short batches together at the end, cut again: only the very last may be short
        tail = torch.cat(short) if short else perm[:0]
        return torch.cat(full + [tail]) if full or short else perm


class EpochKeyedBatchSampler(IndexBatchSampler):
    """As ``IndexBatchSampler``, but yields ``((epoch, rank, step), idx)`` for ``epoch_keyed``
    datasets: the key seeds the batch's random draws (the ``mlm`` masks)."""

    def __iter__(self):
        rank, _ = self._world()
        for step, idx in enumerate(super().__iter__()):
            yield (self.epoch, rank, step), idx


class GroupedBatchSampler:
    """Yields lists of ``steps`` consecutive batches of ``inner`` (the last list may be shorter):
    ``train.steps_per_call``, several optimiser steps in one Lightning training step. The
    batches are those ``inner`` yields, in its order; ``set_epoch`` is passed on."""

    def __init__(self, inner: IndexBatchSampler, steps: int):
        self.inner, self.steps = inner, int(steps)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self):
        group = []
        for item in self.inner:
            group.append(item)
            if len(group) == self.steps:
                yield group
                group = []
        if group:
            yield group

    def __len__(self) -> int:
        return math.ceil(len(self.inner) / self.steps)


def make_loader(ds: BatchDataset, batch_size: int, shuffle: bool, seed: int, pad: bool,
                num_workers: int = 0, steps_per_call: int = 1,
                sampler: Optional[IndexBatchSampler] = None) -> DataLoader:
    """The one way the data modules build a loader: whole-batch indexing (``batch_size=None``),
    ``EpochKeyedBatchSampler`` for ``epoch_keyed`` datasets (or ``sampler``, one the dataset
    already follows: ``with_negatives``); with ``steps_per_call > 1`` each item is a list of that
    many consecutive batches."""
    if sampler is None:
        cls = EpochKeyedBatchSampler if getattr(ds, "epoch_keyed", False) else IndexBatchSampler
        sampler = cls(len(ds), batch_size, shuffle=shuffle, seed=seed, pad=pad)
    if steps_per_call > 1:
        sampler = GroupedBatchSampler(sampler, steps_per_call)
    return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0)


EPOCH_DRAW_LIMIT = 1 << 24  # rows x negatives drawn at once per epoch (128 MB of int64 ids) at most


def with_negatives(ds: BatchDataset, sampler, count: int, seed: int = 0,
                   batches: Optional[IndexBatchSampler] = None) -> BatchDataset:
    """``data.dataset_sampling_count``: ``ds`` (``mf`` or ``seq`` training) with ``count`` negatives
    per positive drawn by ``sampler``: ``neg_item_id [B, count]`` (``seq``: ``[B, L, count]``, 0 at
    padding targets), ``neg_log_prob`` of the same shape and ``pos_log_prob [B]`` (``[B, L]``), the
    sampler's log-probabilities for the log-Q correction.

    For ``mf`` data (one positive per row) the negatives of every row are drawn at once at the
    first batch of each epoch (as RecBole's data loader does), keyed by ``(seed, epoch, rank)``,
    and batches take their rows' share: one vectorised draw instead of one per batch, a third
    of the time (with ``exclude_seen``). Given ``batches``, the ``EpochKeyedBatchSampler`` the
    loader iterates (``make_loader(..., sampler=batches)``), every field is laid out in that
    epoch's batch order once, and batch ``step`` is a slice (views, no gathers); a batch whose
    ids are not that slice (one built by hand) draws its own. Otherwise, or beyond
    ``EPOCH_DRAW_LIMIT`` ids, each batch draws its own, keyed by ``(seed, epoch, rank, step)``
    (``batch_generator``)."""
    inner_keyed = getattr(ds, "epoch_keyed", False)
    whole = None  # mf: every row's user and positive, for the per-epoch draw
    if not inner_keyed and len(ds) and len(ds) * int(count) <= EPOCH_DRAW_LIMIT:
        with stages("negative table", ["rows"]) as step:
            step("rows")
            every = ds.make_batch(torch.arange(len(ds)))
        if "target_seq" not in every and every.get("item_id") is not None and every["item_id"].dim() == 1:
            whole = every
    drawn = {}

    def epoch_table(epoch: int, rank: int) -> Dict[str, torch.Tensor]:
        """Every field of every row plus its negatives for ``(epoch, rank)``: in the epoch's batch
        order when ``batches`` is given (``rows`` = that order), else in row order."""
        if drawn.get("key") != (epoch, rank):
            rows = batches.order(epoch) if batches is not None else None
            t = dict(whole) if rows is None else {k: v.index_select(0, rows) for k, v in whole.items()}
            g, _ = batch_generator(seed, ((epoch, rank, -1), None), salt=1)
            with torch.no_grad(), stages("negative table", [f"epoch {epoch}"]) as step:
                step(f"epoch {epoch}")  # once per epoch, at its first batch
                t["pos_log_prob"], t["neg_item_id"], t["neg_log_prob"] = sampler(
                    t["item_id"], count, user=t["user_id"], generator=g)
            drawn.clear()
            drawn.update(key=(epoch, rank), table=t, rows=rows)
        return drawn["table"]

    def make(key):
        (epoch, rank, step), idx = key if isinstance(key, tuple) else ((0, 0, 0), key)
        if whole is not None and batches is None:
            t = epoch_table(int(epoch), int(rank))
            return {k: v.index_select(0, idx) for k, v in t.items()}
        if whole is not None and isinstance(key, tuple):
            t, n = epoch_table(int(epoch), int(rank)), idx.numel()
            rows, start = drawn["rows"], int(step) * batches.batch_size
            if n and start + n <= rows.numel() and torch.equal(rows[start:start + n], idx):
                return {k: v[start:start + n] for k, v in t.items()}  # the loader's own batch: a slice
        # seq data, or ids that are not the loader's batch (built by hand): drawn for this batch
        g, _ = batch_generator(seed, key, salt=1)  # salt: not the inner dataset's stream
        b = ds.make_batch(key if inner_keyed else idx)
        pos = b["target_seq"] if "target_seq" in b else b["item_id"]
        with torch.no_grad():
            if pos.dim() == 1:  # one positive per row
                lp, neg, ln = sampler(pos, count, user=b["user_id"], generator=g)
                b.update(pos_log_prob=lp, neg_item_id=neg, neg_log_prob=ln)
                return b
            user = b["user_id"].unsqueeze(1).expand_as(pos)
            keep = pos > 0
            lp, neg, ln = sampler(pos[keep], count, user=user[keep], generator=g)
        b["pos_log_prob"] = torch.zeros(pos.shape).masked_scatter(keep, lp)
        b["neg_item_id"] = torch.zeros(*pos.shape, count, dtype=torch.long).masked_scatter(keep.unsqueeze(-1), neg)
        b["neg_log_prob"] = torch.zeros(*pos.shape, count).masked_scatter(keep.unsqueeze(-1), ln)
        return b

    return BatchDataset(len(ds), make, epoch_keyed=True)


# ---- windows over per-user item lists ------------------------------------------------
def windows(flat: torch.Tensor, start: torch.Tensor, end: torch.Tensor, length: int) -> (torch.Tensor, torch.Tensor):
    """Left-padded windows ``flat[max(start, end-length):end]`` for each row: ``(seq [B, L], seq_len [B])``."""
    pos = end.unsqueeze(1) - length + torch.arange(length, device=flat.device).unsqueeze(0)
    valid = pos >= start.unsqueeze(1)
    seq = torch.where(valid, flat[pos.clamp(min=0)], torch.zeros((), dtype=flat.dtype))
    return seq, valid.sum(1)


def trim(seq: torch.Tensor, seq_len: torch.Tensor) -> (torch.Tensor, torch.Tensor):
    """Drop the leading columns that are padding in every row (at least one column is kept)."""
    keep = max(int(seq_len.max()) if seq_len.numel() else 1, 1)
    return seq[:, seq.size(1) - keep:], seq_len


class UserItemIndex:
    """Sorted keys ``user * num_items + item`` of every known interaction, for fast membership tests."""

    def __init__(self, data: Interactions, mask: Optional[torch.Tensor] = None):
        u, i = (data.user, data.item) if mask is None else (data.user[mask], data.item[mask])
        self.num_items = data.num_items
        self.keys = torch.unique(u * data.num_items + i)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        k = users * self.num_items + items
        pos = torch.searchsorted(self.keys, k).clamp(max=self.keys.numel() - 1)
        return self.keys[pos] == k

    def sample_unseen(self, users: torch.Tensor, generator: Optional[torch.Generator] = None,
                      rounds: int = 20) -> torch.Tensor:
        """One item per user drawn uniformly from items the user never touched (rejection sampling)."""
        items = torch.randint(1, self.num_items, users.shape, generator=generator)
        for _ in range(rounds):
            bad = self.contains(users, items)
            if not bad.any():
                break
            items[bad] = torch.randint(1, self.num_items, (int(bad.sum()),), generator=generator)
        return items


def activity_groups(counts: torch.Tensor, group_num: int) -> torch.Tensor:
    """Group id per user id: activity quantiles of ``counts``, equal-sized by users.

    Group 0 holds the least active users, ``group_num - 1`` the most active; ties are
    broken by user id so the groups are deterministic. Index 0 (padding) gets group 0.
    """
    users = torch.arange(1, counts.numel())
    order = users[torch.argsort(counts[1:], stable=True)]
    group = torch.zeros(counts.numel(), dtype=torch.long)
    group[order] = torch.arange(order.numel()) * group_num // max(order.numel(), 1)
    return group


# ---- the kinds -----------------------------------------------------------------------
class KindBuilder:
    """Builds the train and evaluation datasets of one kind from ``Interactions``."""

    def __init__(self, data: Interactions, max_seq_len: int, neg_per_pos: int = 1,
                 eval_neg_per_pos: int = 1, seed: int = 0, group_num: int = 0, mask_prob: float = 0.2):
        self.data = data
        if not 0 < float(mask_prob) <= 1:
            raise ValueError(f"data.mask_prob must be in (0, 1], got {mask_prob}")
        self.mask_prob = float(mask_prob)
        self.L = int(max_seq_len)
        self.neg_per_pos = int(neg_per_pos)
        self.eval_neg_per_pos = int(eval_neg_per_pos)
        self.seed = seed
        split = data.split
        self.train_mask = split == TRAIN
        # what an evaluation may see as the user's past, per stage
        self.known = {"valid": (split == TRAIN) | (split == HISTORY),
                      "test": (split == TRAIN) | (split == HISTORY) | (split == VALID)}
        self.target_code = {"valid": VALID, "test": TEST}
        self.train_ptr, self.train_items = data.user_ptr(self.train_mask)
        self.user_group = activity_groups(self.train_ptr[1:] - self.train_ptr[:-1], group_num) if group_num else None

    @classmethod
    def from_config(cls, data: Interactions, cfg: Dict, seed: int = 0) -> "KindBuilder":
        """The builder for ``data`` from the ``data:`` config keys (``max_seq_len``, ``neg_per_pos``,
        ``eval_neg_per_pos``, ``group_num``, ``mask_prob``)."""
        return cls(data, cfg.get("max_seq_len", 50), cfg.get("neg_per_pos", 1), cfg.get("eval_neg_per_pos", 1), seed,
                   int(cfg.get("group_num") or 0), float(cfg.get("mask_prob", 0.2)))

    def with_group(self, batch: Batch) -> Batch:
        """Add ``group_id`` (the user's activity group) when the data has groups."""
        if self.user_group is not None:
            batch["group_id"] = self.user_group[batch["user_id"]]
        return batch

    # -- training
    def train(self, kind: str, trim_columns: bool = False) -> BatchDataset:
        """The training dataset of ``kind``; ``trim_columns`` (``seq`` only): each batch drops the
        columns that are padding in all its rows (``data.length_buckets``)."""
        if kind == "seq":
            return self._train_seq(trim_columns)
        return getattr(self, f"_train_{kind}")()

    def _train_mf(self) -> BatchDataset:
        u, i = self.data.user[self.train_mask], self.data.item[self.train_mask]
        # index_select: a third of the time of u[idx] for a 1-D gather
        return BatchDataset(u.numel(), lambda idx: {"user_id": u.index_select(0, idx), "item_id": i.index_select(0, idx)})

    def _train_ae(self) -> BatchDataset:
        users = torch.nonzero(self.train_ptr[1:] > self.train_ptr[:-1]).flatten()
        ptr, items, n = self.train_ptr, self.train_items, self.data.num_items

        def make(idx):
            u = users[idx]
            rows, cols = csr_rows(ptr, items, u)
            dense = torch.zeros(u.numel(), n)
            dense[rows, cols] = 1.0
            return {"user_id": u, "item_id_set": dense}

        return BatchDataset(users.numel(), make)

    def _train_seq(self, trim_columns: bool = False) -> BatchDataset:
        ptr, items, L = self.train_ptr, self.train_items, self.L
        users = torch.nonzero(ptr[1:] - ptr[:-1] >= 2).flatten()

        def make(idx):
            u = users[idx]
            start, end = ptr[u], ptr[u + 1]
            seq, n = windows(items, start, end - 1, L)  # inputs: all but the last item
            tgt, _ = windows(items, start + 1, end, L)  # targets: shifted by one
            if trim_columns:  # the columns that are padding in every row are cut (as in evaluation):
                # positions are right-aligned, so the models compute the same thing on less padding
                seq, n = trim(seq, n)
                tgt = tgt[:, tgt.size(1) - seq.size(1):]
            return {"user_id": u, "seq": seq, "seq_len": n, "target_seq": tgt}

        ds = BatchDataset(users.numel(), make)
        ds.lengths = (ptr[users + 1] - ptr[users] - 1).clamp(max=L)  # positions per row, for LengthBucketSampler
        return ds

    def _train_mlm(self) -> BatchDataset:
        """BERT4Rec's Cloze task: mask each real item with probability ``mask_prob`` (padding
        never), the token being ``num_items`` (the model's item table has that extra row);
        a row where nothing was drawn gets its latest item masked, so every row has a target."""
        ptr, items, L, p, seed = self.train_ptr, self.train_items, self.L, self.mask_prob, self.seed
        users = torch.nonzero(ptr[1:] - ptr[:-1] >= 2).flatten()
        token = self.data.num_items

        def make(key):
            g, idx = batch_generator(seed, key)
            u = users[idx]
            seq, n = windows(items, ptr[u], ptr[u + 1], L)
            real = seq != 0
            masked = (torch.rand(seq.shape, generator=g) < p) & real
            masked[:, -1] |= ~masked.any(1)  # left padding: the last column is always a real item
            return {"user_id": u, "seq": torch.where(masked, token, seq), "seq_len": n,
                    "target_seq": torch.where(masked, seq, 0)}

        return BatchDataset(users.numel(), make, epoch_keyed=True)

    def _train_ctr(self) -> BatchDataset:
        ptr, items, L, k = self.train_ptr, self.train_items, self.L, self.neg_per_pos
        with stages("ctr samples train", ["positives", "seen items"]) as step:
            step("positives")
            # every train interaction after the user's first is a positive sample
            pos_idx = torch.arange(items.numel())
            user_of = torch.repeat_interleave(torch.arange(self.data.num_users), ptr[1:] - ptr[:-1])
            first = pos_idx == ptr[user_of]
            pos_idx, pos_user = pos_idx[~first], user_of[~first]
            step("seen items")
            # training negatives avoid the user's training items only: excluding their valid/test
            # items too would tell the model which items those are (they could never be negatives)
            seen = UserItemIndex(self.data, self.train_mask)
        seed = self.seed

        def make(key):
            rng, idx = batch_generator(seed, key)
            g, u = pos_idx[idx], pos_user[idx]
            seq, n = windows(items, ptr[u], g, L)
            uu = u.repeat(k)
            negs = seen.sample_unseen(uu, generator=rng)
            label = torch.cat([torch.ones(g.numel()), torch.zeros(uu.numel())])
            # seq_unique: the rows are k + 1 blocks over the same histories (layers.batch_histories)
            return self.with_group({"user_id": torch.cat([u, uu]), "item_id": torch.cat([items[g], negs]),
                                     "seq": seq.repeat(k + 1, 1), "seq_len": n.repeat(k + 1), "label": label,
                                     "seq_unique": seq})

        return BatchDataset(pos_idx.numel(), make, epoch_keyed=True)

    # -- evaluation
    def eval(self, kind: str, stage: str) -> BatchDataset:
        if kind == "mlm":
            return self._eval_mlm(stage)
        return self._eval_ctr(stage) if kind == "ctr" else self._eval_users(stage)

    def _eval_mlm(self, stage: str) -> BatchDataset:
        """``_eval_users`` with the mask token appended after the history (the position scored);
        a full-length history drops its oldest item, so ``seq`` stays within ``max_seq_len``."""
        base, token, L = self._eval_users(stage), self.data.num_items, self.L

        def make(idx):
            b = base.make_batch(idx)
            seq = torch.cat([b["seq"], b["seq"].new_full((b["seq"].size(0), 1), token)], 1)
            b["seq"], b["seq_len"] = seq[:, -L:], (b["seq_len"] + 1).clamp(max=L)
            return b

        return BatchDataset(len(base), make)

    def _eval_users(self, stage: str) -> BatchDataset:
        d = self.data
        known = self.known[stage]
        k_ptr, k_items = d.user_ptr(known)
        t_ptr, t_items = d.user_ptr(d.split == self.target_code[stage])
        users = torch.nonzero(t_ptr[1:] > t_ptr[:-1]).flatten()
        # users in order of history length, so that a batch's histories have similar lengths
        # and the padding columns no user of the batch needs are cut (metrics are sums: order-free)
        users = users[torch.argsort(k_ptr[users + 1] - k_ptr[users], stable=True)]
        L = self.L

        def make(idx):
            u = users[idx]
            seq, n = trim(*windows(k_items, k_ptr[u], k_ptr[u + 1], L))
            mr, mc = csr_rows(k_ptr, k_items, u)
            tr, tc = csr_rows(t_ptr, t_items, u)
            return {"user_id": u, "seq": seq, "seq_len": n, "mask_rows": mr, "mask_cols": mc,
                    "target_rows": tr, "target_cols": tc}

        return BatchDataset(users.numel(), make)

    def _eval_ctr(self, stage: str) -> BatchDataset:
        """Each target interaction plus ``eval_neg_per_pos`` fixed negatives (seeded), history = known items."""
        d = self.data
        with stages(f"ctr samples {stage}", ["history", "negatives"]) as step:
            step("history")
            known = self.known[stage]
            k_ptr, k_items = d.user_ptr(known)
            tmask = d.split == self.target_code[stage]
            tu, ti = d.user[tmask], d.item[tmask]
            g = torch.Generator().manual_seed(self.seed + (1 if stage == "valid" else 2))
            k = self.eval_neg_per_pos
            uu = tu.repeat(k)
            step("negatives")
            negs = UserItemIndex(d).sample_unseen(uu, generator=g)
        users = torch.cat([tu, uu])
        items = torch.cat([ti, negs])
        labels = torch.cat([torch.ones(tu.numel()), torch.zeros(uu.numel())])

        def make(idx):
            u = users[idx]
            seq, n = windows(k_items, k_ptr[u], k_ptr[u + 1], self.L)
            return self.with_group({"user_id": u, "item_id": items[idx], "seq": seq, "seq_len": n,
                                     "label": labels[idx]})

        return BatchDataset(users.numel(), make)
