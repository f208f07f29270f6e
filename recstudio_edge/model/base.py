"""``Recommender``: the LightningModule every model shares (optimiser, logging, evaluation).

Subclasses do not write training loops: a tower (``towers.py``) turns a batch into a loss,
and evaluation is one of two kinds, chosen by the tower:
- ``ranking``: full-sort top-k over every item with the user's known items masked
  (recall, precision, map, ndcg, mrr, hit @ each cutoff);
- ``pointwise``: AUC, GAUC (per-user AUC weighted by impressions) and logloss, and the same
  per group when the rows carry ``group_id`` (``auc_g{k}`` ..., ``evaluation/groups.py``).
- any other name: the model's own evaluation. It writes ``new_accumulator()``, an object with
  ``update(model, batch)`` and ``compute(gather) -> {metric: value}`` (``gather``: concatenates a
  tensor across processes), and lists the keys it returns in ``metric_keys`` (the choices of
  ``eval.val_metric``); GGCN's multi-label micro-/macro-F1 is one.
Metric sums are reduced across processes, so DDP gives the same numbers as one process.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import lightning.pytorch as pl
import torch

from ..evaluation.groups import GroupedAccumulator, per_group_metrics
from ..evaluation.metrics import RankingAccumulator
from ..evaluation.topk import hits_of_topk, mask_scores_
from .fastloop import FastLoop, attached_trainer, single_optimizer

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "adagrad": torch.optim.Adagrad}
SCHEDULERS = ("none", "cosine")


def schedule_factor(step: int, total: int, warmup: float = 0.0, min_lr: float = 0.0) -> float:
    """``train.scheduler: cosine``: the learning rate's factor at optimiser step ``step`` (0-based)
    of ``total``: linear warm-up from ``1/w`` to 1 over the first ``w = round(warmup * total)``
    steps, then a half cosine from 1 down to ``min_lr`` at the last step (and ``min_lr`` after)."""
    w = int(round(float(warmup) * total))
    if step < w:
        return (step + 1) / w
    span = max(total - w - 1, 1)
    t = min(max(step - w, 0) / span, 1.0)
    return float(min_lr) + (1.0 - float(min_lr)) * 0.5 * (1.0 + math.cos(math.pi * t))


class StepSchedule:
    """The learning-rate schedule as a pre-hook of the optimiser's ``step``: it sets every group's
    lr to ``base * schedule_factor(step)`` before each step. No Lightning scheduler, so the model
    keeps one optimiser and nothing else (the fast loop's ``@single_optimizer``, model/fastloop.py),
    and the schedule follows the optimiser steps whichever loop takes them. The step count starts
    at ``start()`` (the Trainer's ``global_step`` at the first step: a resumed run continues the
    schedule where it stood)."""

    def __init__(self, optimizer, total: int, warmup: float, min_lr: float, start=lambda: 0):
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.total, self.warmup, self.min_lr, self.start = int(total), float(warmup), float(min_lr), start
        self.step = None
        self.handle = optimizer.register_step_pre_hook(self)

    def __call__(self, optimizer, args, kwargs):
        if self.step is None:
            self.step = int(self.start())
        f = schedule_factor(self.step, self.total, self.warmup, self.min_lr)
        for g, base in zip(optimizer.param_groups, self.base):
            g["lr"] = base * f
        self.step += 1


class Recommender(FastLoop, pl.LightningModule):
    """Base of every model. ``data_kind`` names the dataset kind it trains on
    (``mf``, ``ae``, ``seq``, ``ctr``); ``eval_kind`` is ``ranking`` or ``pointwise``.

    ``training_step`` comes from ``FastLoop`` (``model/fastloop.py``): ``compute_loss`` of the
    batch, logged; ``recstudio_edge.wiring.connect(model, datamodule, trainer)`` may switch it to
    the fast loop (the same updates with fewer Lightning calls, ``train.steps_per_call``)."""

    data_kind = "mf"
    eval_kind = "ranking"
    default_val_metric = "recall@10"

    def __init__(self, num_users: int, num_items: int, lr: float = 1e-3, weight_decay: float = 0.0,
                 optimizer: str = "adam", topk: Sequence[int] = (10, 20),
                 metrics: Sequence[str] = ("recall", "ndcg", "precision", "map", "mrr", "hit"),
                 mask_history: bool = True, max_seq_len: int = 50, scheduler: str = "none",
                 warmup: float = 0.0, min_lr: float = 0.0):
        super().__init__()
        from ..names import did_you_mean

        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}: {did_you_mean(optimizer, OPTIMIZERS)}")
        self.scheduler = str(scheduler or "none").lower()
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown train.scheduler {scheduler!r}: {did_you_mean(self.scheduler, SCHEDULERS)}")
        if not 0.0 <= float(warmup) < 1.0 or not 0.0 <= float(min_lr) <= 1.0:
            raise ValueError(f"train.warmup must be in [0, 1) (a share of the training steps), got {warmup}; "
                             f"train.min_lr in [0, 1] (a share of train.lr), got {min_lr}")
        self.warmup, self.min_lr = float(warmup), float(min_lr)
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.lr, self.weight_decay, self.optimizer_name = float(lr), float(weight_decay), optimizer.lower()
        self.topk = sorted(int(k) for k in topk)
        if self.topk and self.topk[0] < 1:
            raise ValueError(f"eval.topk {self.topk}: every cutoff must be a whole number >= 1")
        # pointwise (CTR) models score the rows they are given and never rank the items: no upper bound
        if self.topk and type(self).eval_kind == "ranking" and self.topk[-1] >= self.num_items:
            raise ValueError(f"eval.topk {self.topk}: every cutoff must be in 1..{self.num_items - 1} "
                             f"(the number of items)")
        self.metric_names = [m.lower() for m in metrics]
        self.mask_history = bool(mask_history)
        self.max_seq_len = int(max_seq_len)
        self._acc: Dict[str, object] = {}
        # set by callbacks that reweight the training loss per sample: batch -> weights [B] summing to 1
        self.loss_weighting = None
        self.last_metrics: Dict[str, Dict[str, float]] = {}
        self.last_metrics_epoch: Dict[str, int] = {}
        self.data_connected = False  # set by recstudio_edge.wiring.connect once on_data has the data's facts

    # ---- hooks a model may override --------------------------------------------------
    def on_data(self, item_counts: torch.Tensor, train_keys: Optional[torch.Tensor] = None) -> None:
        """Receives the training item counts (and the sorted ``user * num_items + item`` keys of the
        training interactions) before fitting: samplers and popularity use them. Called by
        ``recstudio_edge.wiring.connect(model, datamodule)``; a model that overrides it cannot
        be fitted unconnected (``on_fit_start`` says so)."""

    closed_form = False  # True: ``fit_closed_form(datamodule)`` replaces SGD training

    def fit_closed_form(self, datamodule) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # ---- Lightning ----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if not self.data_connected and type(self).on_data is not Recommender.on_data:
            raise RuntimeError(f"{type(self).__name__} trains on facts of its data (item counts, training "
                               f"interactions) that it has not been given: call "
                               f"recstudio_edge.wiring.connect(model, datamodule, trainer) before trainer.fit")

    def on_save_checkpoint(self, checkpoint) -> None:
        """Every checkpoint names the model that wrote it (``recstudio_edge.checkpoint`` refuses to load
        it into another model, naming both)."""
        from ..checkpoint import CKPT_KEY

        checkpoint[CKPT_KEY] = {"model": str(getattr(type(self), "registry_name", type(self).__name__))}

    @single_optimizer
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        kwargs = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.optimizer_name in ("adam", "adamw"):
            # torch's fused Adam (CPU and CUDA): same update, one kernel per step instead of a
            # dozen elementwise passes; BPR on ml-1m trains ~1.4x faster with it on 2 cores
            kwargs["fused"] = True
        opt = OPTIMIZERS[self.optimizer_name](params, **kwargs)
        if self.scheduler != "none":
            trainer = attached_trainer(self)
            if trainer is None:
                raise RuntimeError(f"train.scheduler={self.scheduler}: the schedule spans the fit's optimiser "
                                   f"steps, which only a Trainer knows (configure_optimizers outside a fit)")
            self._schedule = StepSchedule(opt, trainer.estimated_stepping_batches, self.warmup, self.min_lr,
                                          start=lambda: trainer.global_step)
        return opt

    def compute_loss(self, batch) -> torch.Tensor:  # pragma: no cover - towers implement it
        raise NotImplementedError

    # evaluation ----------------------------------------------------------------------
    def on_validation_epoch_start(self):
        self._acc["valid"] = self._new_acc()

    def on_test_epoch_start(self):
        self._acc["test"] = self._new_acc()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "valid")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self):
        self._finish("valid")

    def on_test_epoch_end(self):
        self._finish("test")

    metric_keys: Sequence[str] = ()  # a model's own evaluation: the metric names new_accumulator computes

    def new_accumulator(self):  # pragma: no cover - models with their own eval_kind write it
        raise NotImplementedError(f"{type(self).__name__}.eval_kind={self.eval_kind!r} needs new_accumulator()")

    def _custom_eval(self) -> bool:
        return self.eval_kind not in ("ranking", "pointwise")

    def _new_acc(self):
        if self.eval_kind == "ranking":
            return RankingAccumulator(self.topk, self.metric_names)
        if self._custom_eval():
            return self.new_accumulator()
        return GroupedAccumulator()

    def _eval_step(self, batch, stage):
        acc = self._acc[stage]
        if self._custom_eval():
            acc.update(self, batch)
        elif self.eval_kind == "ranking":
            top_scores, top_items = self.topk_items(batch, max(self.topk), exclude=self.mask_history)
            hits, num_pos = hits_of_topk(top_scores, top_items, batch["target_rows"], batch["target_cols"],
                                         self.num_items)
            acc.update(hits, num_pos)
        else:
            # rows without a user (Criteo) get no GAUC
            acc.update(self.score(batch).detach(), batch["label"], batch.get("user_id"), batch.get("group_id"))

    def _finish(self, stage):
        acc = self._acc.pop(stage)
        if self.eval_kind == "ranking":
            sums, count = acc.state()
            sums = self._reduce_sum(sums.to(self.device))
            count = self._reduce_sum(count.to(self.device))
            values = acc.compute(sums, count)
        elif self._custom_eval():
            values = acc.compute(lambda t: self._gather_cat(t.to(self.device)))
        else:
            logits, labels, users = (None if t is None else self._gather_cat(t.to(self.device)) for t in acc.tensors())
            values = acc.compute(logits, labels, users)
            if users is None:  # rows without users (Criteo): no GAUC
                values.pop("gauc", None)
            group_ids = acc.group_ids()
            if group_ids is not None:  # the rows carry group_id: the same metrics per group, for the
                # model's group_num groups when it has one, else up to the largest id of any process
                group_ids = self._gather_cat(group_ids.to(self.device))
                n = getattr(self, "group_num", None) or (int(group_ids.max()) + 1 if group_ids.numel() else 0)
                values.update(per_group_metrics(logits, labels, users, group_ids, int(n)))
        self.last_metrics[stage] = {k: float(v) for k, v in values.items()}
        self.last_metrics_epoch[stage] = self.current_epoch if attached_trainer(self) is not None else -1
        # the figures are already reduced across processes (above), so every rank logs the same
        # value: sync_dist=True averages identical numbers (exact) and lets every rank's
        # ModelCheckpoint / EarlyStopping read the monitor (rank_zero_only would hide it from the others)
        self.log_dict({f"{stage}/{k}": float(v) for k, v in values.items() if not k.startswith("rows_")},
                      sync_dist=True)

    # distributed helpers: sums and concatenations across processes ------------------------
    def _reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if attached_trainer(self) is None or self.trainer.world_size == 1:
            return t
        return self.trainer.strategy.reduce(t, reduce_op="sum")

    def _gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        if attached_trainer(self) is None or self.trainer.world_size == 1:
            return t
        n = torch.tensor([t.shape[0]], device=t.device)
        sizes = self.all_gather(n).flatten()
        pad = int(sizes.max()) - t.shape[0]
        padded = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
        gathered = self.all_gather(padded)  # [world, max, ...]
        return torch.cat([gathered[r, : int(sizes[r])] for r in range(gathered.shape[0])])

    # inference ------------------------------------------------------------------------------
    def full_scores(self, batch) -> torch.Tensor:  # pragma: no cover - ranking towers implement it
        raise NotImplementedError

    def score(self, batch) -> torch.Tensor:  # pragma: no cover - TowerFree implements it
        raise NotImplementedError

    def topk_items(self, batch, k: int, exclude: bool = True):
        """Top-k ``(scores [B, k], item ids [B, k])`` per row, best first, never the padding item
        and, with ``exclude``, never the known items ``(mask_rows, mask_cols)`` (a row with fewer
        than ``k`` other items gets ``-inf`` slots). Full sort here; ``model.ann`` replaces it with
        a faiss search (``ItemTower.topk_items``)."""
        scores = self.full_scores(batch)
        scores[:, 0] = float("-inf")
        if exclude and "mask_rows" in batch:
            mask_scores_(scores, batch["mask_rows"], batch["mask_cols"])
        return torch.topk(scores, k, dim=1)

    @torch.no_grad()
    def recommend(self, batch, k: int, exclude: bool = True):
        """Top-k ``(scores, item ids)`` for the users of an evaluation-style batch."""
        return self.topk_items(batch, min(k, self.num_items - 1), exclude)

    def metric_mode(self, metric: str) -> str:
        return "min" if metric.lower() == "logloss" else "max"


__all__ = ["Recommender", "OPTIMIZERS"]
