"""``RecDataModule``: finds (generates, downloads) a dataset, parses it once, caches it, splits it
and serves the batches of the model's data kind.

Cache: ``<data_dir>/.cache/<name>-<hash>.pt`` where the hash covers every input file's name,
size and modification time and the ``data:`` config keys that shape the result (filters,
split, seed). A second run with the same inputs loads the tensors (``weights_only=True``)
instead of parsing. Files are written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from .dataset import BatchDataset, KindBuilder, make_loader
from .errors import DataError
from .preprocess import TRAIN, Interactions, build_interactions

log = logging.getLogger(__name__)

# data: keys that change the built tensors (the reader keys matter through the files and these)
SHAPING_KEYS = ("format", "fields", "sep", "header", "files", "generator", "rating_threshold",
                "min_user_inter", "min_item_inter", "split", "on_bad_line")
CACHE_VERSION = 1


def _fingerprint(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def locate(data_dir: Path, cfg: Dict[str, Any]) -> Path:
    """The folder holding the dataset's files: generated, local, or downloaded."""
    name = cfg["name"]
    folder = data_dir / name
    if cfg.get("format") == "synthetic" or (name.startswith("synthetic") and cfg.get("format") in ("auto", None)):
        from .synthetic import VERSION, write_atomic

        params = dict(cfg.get("generator") or {})
        stamp = folder / ".generator.json"
        want = json.dumps({"version": VERSION, "params": params}, sort_keys=True)
        if not (folder / f"{name}.inter").exists() or not stamp.exists() or stamp.read_text() != want:
            write_atomic(folder, name, **params)
            tmp = stamp.with_suffix(".tmp")
            tmp.write_text(want)
            os.replace(tmp, stamp)
        return folder
    from .catalog import ensure_dataset

    return Path(ensure_dataset(name, data_dir, cfg))


def load_interactions(data_dir: Path, cfg: Dict[str, Any], seed: int, use_cache: bool = True) -> Interactions:
    """Parse + filter + split, or load the same from the cache."""
    data_dir = Path(data_dir)
    folder = locate(data_dir, cfg)
    shaping = {k: cfg.get(k) for k in SHAPING_KEYS}
    key = json.dumps({"v": CACHE_VERSION, "name": cfg["name"], "files": _fingerprint(folder),
                      "cfg": shaping, "seed": seed}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = data_dir / ".cache" / f"{cfg['name']}-{digest}.pt"
    if use_cache and cache.exists():
        t = time.perf_counter()
        state = torch.load(cache, weights_only=True)
        log.info("loaded %s from cache %s in %.2fs", cfg["name"], cache, time.perf_counter() - t)
        return Interactions.from_state(state)
    from .readers import read_dataset

    t = time.perf_counter()
    spec = dict(cfg)
    if spec.get("format") == "synthetic" or spec.get("format") in ("auto", None):
        spec["format"] = "atomic" if (folder / f"{cfg['name']}.inter").exists() else spec.get("format", "auto")
    raw = read_dataset(data_dir, spec)
    t_read = time.perf_counter() - t
    data = build_interactions(raw.inter, raw.item, cfg, seed, source=str(folder))
    data.stats.update(read_seconds=t_read, build_seconds=time.perf_counter() - t - t_read,
                      skipped_lines=float(getattr(raw, "skipped", 0)))
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(data.to_state(), tmp)
        os.replace(tmp, cache)
    return data


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


class RecDataModule(pl.LightningDataModule):
    """Owns the dataset, its split and the dataloaders for one model's data kind.

    ``steps_per_call`` is ``train.steps_per_call`` as asked for; ``loader_steps``, the batches
    each item of the training loader holds, is 1 until ``recstudio_edge.wiring.connect`` finds
    the fast training loop in force for the fit (then ``steps_per_call``). What the model needs
    from the data and hands back passes through ``connect`` too: the data module reads nothing
    of the model or the trainer's module."""

    def __init__(self, data_cfg: Dict[str, Any], data_dir: str | Path, kind: str, batch_size: int = 2048,
                 eval_batch_size: int = 4096, seed: int = 0, num_workers: int = 0, steps_per_call: int = 1):
        super().__init__()
        if kind not in ("mf", "ae", "seq", "ctr", "mlm"):
            raise ValueError(f"unknown data kind {kind!r}")
        self.cfg, self.data_dir, self.kind = dict(data_cfg), Path(data_dir), kind
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.seed, self.num_workers = int(seed), int(num_workers)
        if int(steps_per_call) < 1:
            raise ValueError(f"train.steps_per_call must be >= 1, got {steps_per_call}")
        self.steps_per_call = int(steps_per_call)
        self.loader_steps = 1
        self.data: Optional[Interactions] = None
        self._train: Optional[BatchDataset] = None
        self._train_sampler = None  # with pipeline negatives: the loader's sampler, which the dataset follows
        # data.dataset_sampling_count: negatives drawn by the data pipeline with the model's sampler
        self.dataset_sampling_count = int(self.cfg.get("dataset_sampling_count") or 0)
        self._neg_sampler, self._neg_count = None, 0
        self._eval: Dict[str, BatchDataset] = {}

    def prepare_data(self) -> None:
        """Generate / download / parse (into the cache) once; ``setup`` then has nothing left to do."""
        if self.data is None:
            self.data = load_interactions(self.data_dir, self.cfg, self.seed, self.cfg.get("cache", True))

    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare_data()
        if not hasattr(self, "builder"):
            self.builder = KindBuilder(self.data, self.cfg.get("max_seq_len", 50), self.cfg.get("neg_per_pos", 1),
                                       self.cfg.get("eval_neg_per_pos", 1), self.seed,
                                       int(self.cfg.get("group_num") or 0), float(self.cfg.get("mask_prob", 0.2)))
            if int(self.train_mask().sum()) == 0:
                raise DataError(str(self.data_dir / self.cfg["name"]), message="the split left no training data")

    # facts the model needs (recstudio_edge.wiring.connect hands them over) -----------------
    @property
    def num_users(self) -> int:
        return self.data.num_users

    @property
    def num_items(self) -> int:
        return self.data.num_items

    def train_mask(self) -> torch.Tensor:
        return self.data.split == TRAIN

    def item_counts(self) -> torch.Tensor:
        return self.data.item_counts(self.train_mask())

    def train_keys(self) -> torch.Tensor:
        """Sorted ``user * num_items + item`` keys of the training interactions."""
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

    def train_dataloader(self) -> DataLoader:
        if self._train is None:
            self._train, self._train_sampler = self.builder.train(self.kind), None
            if self._neg_sampler is not None and self._neg_count:
                from .dataset import EpochKeyedBatchSampler, with_negatives

                # one sampler for the loader and the dataset: mf batches become slices of per-epoch
                # tables laid out in its batch order
                self._train_sampler = EpochKeyedBatchSampler(len(self._train), self.batch_size, shuffle=True,
                                                             seed=self.seed, pad=True)
                self._train = with_negatives(self._train, self._neg_sampler, self._neg_count, self.seed,
                                             self._train_sampler)
        return self._loader(self._train, self.batch_size, shuffle=True, pad=True, steps=self.loader_steps,
                            sampler=self._train_sampler)

    def eval_dataset(self, stage: str) -> BatchDataset:
        if stage not in self._eval:
            self._eval[stage] = self.builder.eval(self.kind, stage)
        return self._eval[stage]

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("valid"), self.eval_batch_size, shuffle=False, pad=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_dataset("test"), self.eval_batch_size, shuffle=False, pad=False)
