"""``RecDataModule``: the one data module. It finds (generates, downloads) a dataset, parses it
once, caches it, splits it and serves the batches of the model's data kind; or it serves a
*source* of a seed format (``data/formats/__init__.py``): with ``data.format: <format>`` (e.g.
``pinrec``) the format's files under ``<data_dir>/<name>/``, the split being the files'; with a
model whose class declares ``data_format = "<format>"`` (ECRec, ...) and an interaction dataset
(``-d=ml-1m``), the same samples built from the interactions by the format's ``from_interactions``.

Loading and the cache: ``loading.py``. What the model needs from the data (item counts, the
training pairs, the group count) and what the model hands back (a sampler for pipeline
negatives, ``set_negative_sampler``) pass through ``recstudio_edge.wiring.connect``, which also
sets ``loader_steps`` (``train.steps_per_call`` when the fast training loop is in force); the
data module reads nothing of the model or the trainer's module.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from .dataset import BatchDataset, KindBuilder, make_loader
from .errors import DataError
from .loading import load_interactions
from .preprocess import TRAIN, Interactions

log = logging.getLogger(__name__)


def transfer_flat_batch(batch, device, dataloader_idx, fallback):
    """``transfer_batch_to_device`` for our batches, flat ``dict[str, Tensor]`` (or a list of them,
    ``train.steps_per_call``): one comprehension. Lightning's generic walk over collections cost
    BPR ~7% of a training step on the CPU."""
    def flat(b):
        return isinstance(b, dict) and all(isinstance(v, torch.Tensor) for v in b.values())

    if flat(batch):
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if isinstance(batch, list) and all(flat(b) for b in batch):
        return [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in batch]
    return fallback(batch, device, dataloader_idx)



class StreamPasses:
    """The training loader of a ``ShardedStream`` (``data.stream``): each pass is a ``StreamLoader``
    (``data/streaming.py``: ``num_workers`` processes, each reading its own row groups), its batches
    grouped by ``steps`` (``train.steps_per_call``). ``len()`` is the stream's batches per rank (equal on
    every rank, so DDP steps stay in lockstep). ``before_pass()`` runs when a pass starts (its first
    ``next``, before any worker copies the stream), so the position it sets is the one the workers read,
    whatever order Lightning creates iterators and calls hooks in."""

    def __init__(self, stream, steps: int = 1, before_pass=None):
        self.stream, self.steps, self.before_pass = stream, max(1, int(steps)), before_pass

    def __len__(self) -> int:
        return -(-len(self.stream) // self.steps)

    # Lightning keeps a stateful loader's state in its checkpoints too: the stream's position, the
    # same one the data module's state_dict holds (either restores it)
    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, state) -> None:
        self.stream.load_state_dict(state)

    def _in_order(self):
        """The loader's batches in the stream's own order, ``(index, worker)``. A DataLoader takes its
        workers round-robin from worker 0, so after a resume where worker 1 is a batch behind, its
        batch comes second instead of first: at most one batch per worker waits here to keep the
        order of the uninterrupted run."""
        k = self.stream.batches_per_worker()
        nxt = list(self.stream.state_dict()["next"])
        pending = {}
        for batch in self.stream.loader():
            _, worker, index = (int(x) for x in batch["_pos"].tolist())
            pending[(index, worker)] = batch
            while True:
                todo = [(nxt[w], w) for w in range(len(nxt)) if nxt[w] < k]
                if not todo or min(todo) not in pending:
                    break
                key = min(todo)
                nxt[key[1]] += 1
                yield pending.pop(key)
        yield from (pending[key] for key in sorted(pending))

    def __iter__(self):
        if self.before_pass is not None:
            self.before_pass()
        group = []
        for batch in self._in_order():
            if self.steps == 1:
                yield batch
                continue
            group.append(batch)
            if len(group) == self.steps:
                yield group
                group = []
        if group:
            yield group


class RecDataModule(pl.LightningDataModule):
    """Owns the dataset, its split and the dataloaders for one model's data kind.

    ``steps_per_call`` is ``train.steps_per_call`` as asked for; ``loader_steps``, the batches
    each item of the training loader holds, is 1 until ``recstudio_edge.wiring.connect`` finds
    the fast training loop in force for the fit (then ``steps_per_call``)."""

    def __init__(self, data_cfg: Dict[str, Any], data_dir: str | Path, kind: str, batch_size: int = 2048,
                 eval_batch_size: int = 4096, seed: int = 0, num_workers: int = 0, steps_per_call: int = 1,
                 data_format: Optional[str] = None):
        super().__init__()
        from .formats import format_module

        self.file_format = format_module(data_cfg.get("format"))  # data.format names a seed format
        self.data_format = format_module(data_format) if data_format else None  # the model's own format
        if data_format and self.data_format is None:
            raise ValueError(f"data_format {data_format!r}: no module recstudio_edge/data/formats/{data_format}.py "
                             f"with open_source")
        if self.file_format is None and kind not in ("mf", "ae", "seq", "ctr", "mlm") and self.data_format is None:
            raise ValueError(f"unknown data kind {kind!r}")
        self.cfg, self.data_dir, self.kind = dict(data_cfg), Path(data_dir), kind
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.seed, self.num_workers = int(seed), int(num_workers)
        if int(steps_per_call) < 1:
            raise ValueError(f"train.steps_per_call must be >= 1, got {steps_per_call}")
        self.steps_per_call = int(steps_per_call)
        self.loader_steps = 1
        self.source = None  # a seed format's samples (data/formats/__init__.py), set by prepare_data
        kinds = getattr(self.file_format, "KINDS", None)
        if kinds is not None and kind not in kinds and self.data_format is None:
            raise DataError(str(self.data_dir / self.cfg["name"]),
                            message=f"data.format={self.cfg.get('format')} holds {self.file_format.HOLDS} samples; "
                                    f"this model trains on '{kind}' data")
        if self.file_format is not None and self.data_format is not None and self.file_format is not self.data_format:
            fmt, want = self.cfg.get("format"), data_format
            raise DataError(str(self.data_dir / self.cfg["name"]),
                            message=f"data.format={fmt}: these are {fmt} samples; this model reads {want} samples "
                                    f"(data.format: {want}) or builds them from an interaction dataset (e.g. -d=ml-1m)")
        self.data: Optional[Interactions] = None
        self._train: Optional[BatchDataset] = None
        self._train_sampler = None  # with pipeline negatives: the loader's sampler, which the dataset follows
        # data.dataset_sampling_count: negatives drawn by the data pipeline with the model's sampler
        self.dataset_sampling_count = int(self.cfg.get("dataset_sampling_count") or 0)
        self._neg_sampler, self._neg_count = None, 0
        self._eval: Dict[str, BatchDataset] = {}
        self.stream = None  # data.stream: the training ShardedStream (data/streaming.py) of a source's shards
        self._stream_state: Optional[dict] = None  # a checkpoint's position, loaded before the stream exists

    def prepare_data(self) -> None:
        """Generate / download / parse (into the cache) once, or read a seed format's files; ``setup``
        then has nothing left to do."""
        if self.data is not None or self.source is not None:
            return
        if self.file_format is not None:
            self.source = self.file_format.open_source(self.data_dir / self.cfg["name"], self.cfg)
        else:
            self.data = load_interactions(self.data_dir, self.cfg, self.seed, self.cfg.get("cache", True))
            if self.data_format is not None:
                self.source = self.data_format.from_interactions(self.data, self.cfg, self.seed)

    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare_data()
        if not hasattr(self, "builder"):
            if self.source is not None:
                self.builder = self.source
                return
            self.builder = KindBuilder.from_config(self.data, self.cfg, self.seed)
            if int(self.train_mask().sum()) == 0:
                raise DataError(str(self.data_dir / self.cfg["name"]), message="the split left no training data")

    # facts the model needs (recstudio_edge.wiring.connect hands them over) -----------------
    @property
    def num_users(self) -> int:
        return (self.source or self.data).num_users

    @property
    def num_items(self) -> int:
        return (self.source or self.data).num_items

    @property
    def group_num(self) -> int:
        """Activity groups of the rows' ``group_id`` (0: none): ``data.group_num``, or the source's."""
        if self.source is not None:
            return int(getattr(self.source, "group_num", 0) or 0)
        return int(self.cfg.get("group_num") or 0)

    @property
    def stats(self) -> Dict[str, float]:
        """Counts of the data: interactions per split (``Interactions.stats``) or the source's."""
        return (self.source or self.data).stats

    def model_args(self) -> Dict[str, Any]:
        """The data's facts a model's constructor takes by name: ``num_users``, ``num_items`` and, for
        a source, its ``model_args()`` (``num_cates``, ``num_classes`` ...)."""
        args = {"num_users": self.num_users, "num_items": self.num_items}
        if self.source is not None and callable(getattr(self.source, "model_args", None)):
            args.update(self.source.model_args())
        return args

    def train_mask(self) -> torch.Tensor:
        """The training interactions (interaction data only)."""
        return self.data.split == TRAIN

    def item_counts(self) -> torch.Tensor:
        if self.source is not None:
            return self.source.item_counts()
        return self.data.item_counts(self.train_mask())

    def train_keys(self) -> torch.Tensor:
        """Sorted ``user * num_items + item`` keys of the training interactions (sample files: of the
        positive training rows)."""
        if self.source is not None:
            return self.source.train_keys()
        from .dataset import UserItemIndex

        return UserItemIndex(self.data, self.train_mask()).keys

    # loaders ------------------------------------------------------------------------------
    def _loader(self, ds: BatchDataset, batch_size: int, shuffle: bool, pad: bool, steps: int = 1,
                sampler=None) -> DataLoader:
        return make_loader(ds, batch_size, shuffle, self.seed, pad, self.num_workers, steps, sampler)

    def set_negative_sampler(self, sampler, count: Optional[int] = None) -> None:
        """A CPU copy of the model's static sampler (``ItemTower.pipeline_negatives``, handed over by
        ``recstudio_edge.wiring.connect``); every training batch then carries ``count`` (default
        ``data.dataset_sampling_count``) negatives per positive drawn here (``neg_item_id``,
        ``neg_log_prob``, ``pos_log_prob``) instead of in the training step. ``None``: no pipeline
        negatives (the training step draws them)."""
        if sampler is None:
            if self._neg_sampler is not None:
                self._neg_sampler, self._neg_count, self._train = None, 0, None
            return
        if self.kind not in ("mf", "seq"):
            raise ValueError(f"data.dataset_sampling_count applies to the mf and seq data kinds, not {self.kind!r}")
        self._neg_sampler = sampler
        self._neg_count = int(count or self.dataset_sampling_count)
        self._train = None

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return transfer_flat_batch(batch, device, dataloader_idx, super().transfer_batch_to_device)

    @property
    def streaming(self) -> bool:
        """``data.stream`` on a source that streams its training shards (CTR files)."""
        return bool(self.cfg.get("stream")) and callable(getattr(self.source, "train_stream", None))

    def train_dataloader(self):
        if self.streaming:
            if self.stream is None:
                self.stream = self.source.train_stream(self.batch_size, self.seed, self.num_workers)
                if self._stream_state is not None:
                    self.stream.load_state_dict(self._stream_state)
            return StreamPasses(self.stream, self.loader_steps, self._next_stream_pass)
        if self._train is None:
            buckets = int(self.cfg.get("length_buckets") or 0) if self.kind == "seq" else 0
            self._train = self.builder.train(self.kind, trim_columns=True) if buckets else self.builder.train(self.kind)
            self._train_sampler = None
            if self._neg_sampler is not None and self._neg_count:
                from .dataset import EpochKeyedBatchSampler, with_negatives

                # one sampler for the loader and the dataset: mf batches become slices of per-epoch
                # tables laid out in its batch order
                self._train_sampler = EpochKeyedBatchSampler(len(self._train), self.batch_size, shuffle=True,
                                                             seed=self.seed, pad=True)
                self._train = with_negatives(self._train, self._neg_sampler, self._neg_count, self.seed,
                                             self._train_sampler)
            if buckets and self._train_sampler is None:  # (with pipeline negatives: their own batch order)
                from .dataset import LengthBucketSampler

                self._train_sampler = LengthBucketSampler(self._train.lengths, self.batch_size, buckets,
                                                          seed=self.seed, pad=True)
        return self._loader(self._train, self.batch_size, shuffle=True, pad=True, steps=self.loader_steps,
                            sampler=self._train_sampler)

    # the stream's position, saved in every checkpoint (Lightning calls state_dict / load_state_dict) ----
    def state_dict(self) -> Dict[str, Any]:
        if self.stream is not None:
            return {"stream": self.stream.state_dict()}
        return {"stream": self._stream_state} if self._stream_state is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._stream_state = (state or {}).get("stream")
        if self.stream is not None and self._stream_state is not None:
            self.stream.load_state_dict(self._stream_state)

    def _next_stream_pass(self) -> None:
        """A pass over the stream starts where training stands: the next epoch once every worker's
        batches of the last one were trained on, else the rest of the interrupted one (a resumed run,
        or ``limit_train_batches``)."""
        state = self.stream.state_dict()
        if min(state["next"]) >= self.stream.batches_per_worker():
            self.stream.set_epoch(int(state["epoch"]) + 1)
        else:
            self.stream.load_state_dict(state)

    def consumed(self, batch) -> None:
        """A training batch (or a list of them) was trained on: the stream's position moves past it
        (``callbacks.stream_position.StreamPosition`` calls this after every training step)."""
        if self.stream is not None:
            self.stream.consumed(batch)

    def eval_dataset(self, stage: str) -> BatchDataset:
        if stage not in self._eval:
            self._eval[stage] = self.builder.eval(self.kind, stage)
        return self._eval[stage]

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("valid"), self.eval_batch_size, shuffle=False, pad=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test"), self.eval_batch_size, shuffle=False, pad=False)
