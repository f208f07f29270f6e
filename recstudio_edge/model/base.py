"""``Recommender``: the LightningModule every model shares (optimiser, logging, evaluation).

Subclasses do not write training loops: a tower (``towers.py``) turns a batch into a loss,
and evaluation is one of two kinds, chosen by the tower:
- ``ranking``: full-sort top-k over every item with the user's known items masked
  (recall, precision, map, ndcg, mrr, hit @ each cutoff);
- ``pointwise``: AUC, GAUC (per-user AUC weighted by impressions) and logloss, and the same
  per group when the rows carry ``group_id`` (``auc_g{k}`` ..., ``evaluation/groups.py``).
Metric sums are reduced across processes, so DDP gives the same numbers as one process.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import lightning.pytorch as pl
import torch

from ..evaluation.groups import GroupedAccumulator, per_group_metrics
from ..evaluation.metrics import RankingAccumulator
from ..evaluation.topk import hits_of_topk, mask_scores_

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "adagrad": torch.optim.Adagrad}


class Recommender(pl.LightningModule):
    """Base of every model. ``data_kind`` names the dataset kind it trains on
    (``mf``, ``ae``, ``seq``, ``ctr``); ``eval_kind`` is ``ranking`` or ``pointwise``."""

    data_kind = "mf"
    eval_kind = "ranking"
    default_val_metric = "recall@10"

    def __init__(self, num_users: int, num_items: int, lr: float = 1e-3, weight_decay: float = 0.0,
                 optimizer: str = "adam", topk: Sequence[int] = (10, 20),
                 metrics: Sequence[str] = ("recall", "ndcg", "precision", "map", "mrr", "hit"),
                 mask_history: bool = True, max_seq_len: int = 50):
        super().__init__()
        if optimizer.lower() not in OPTIMIZERS:
            from ..names import did_you_mean

            raise ValueError(f"unknown optimizer {optimizer!r}: {did_you_mean(optimizer, OPTIMIZERS)}")
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.lr, self.weight_decay, self.optimizer_name = float(lr), float(weight_decay), optimizer.lower()
        self.topk = sorted(int(k) for k in topk)
        if self.topk and (self.topk[0] < 1 or self.topk[-1] >= self.num_items):
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

    # Lightning sets ``_current_fx_name`` around every hook it calls, ~44 times per training step,
    # and the running loss is updated every step; nn.Module.__setattr__ (parameter / module /
    # buffer bookkeeping) costs ~4 us each, ~0.2 ms of a step, 0.5 us set directly. These are
    # plain attributes, never parameters, buffers or modules.
    _PLAIN_ATTRS = frozenset({"_current_fx_name", "_loss_sum", "_loss_n"})

    def __setattr__(self, name, value):
        if name in self._PLAIN_ATTRS:
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    # ---- hooks a model may override --------------------------------------------------
    def on_data(self, item_counts: torch.Tensor, train_keys: Optional[torch.Tensor] = None) -> None:
        """Receives the training item counts (and the sorted ``user * num_items + item`` keys of the
        training interactions) before fitting: samplers and popularity use them."""

    closed_form = False  # True: ``fit_closed_form(datamodule)`` replaces SGD training

    def fit_closed_form(self, datamodule) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    # ---- Lightning ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and stage == "fit":
            keys = dm.train_keys() if callable(getattr(dm, "train_keys", None)) else None
            self.on_data(dm.item_counts(), keys)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        kwargs = {"lr": self.lr, "weight_decay": self.weight_decay}
        if self.optimizer_name in ("adam", "adamw"):
            # torch's fused Adam (CPU and CUDA): same update, one kernel per step instead of a
            # dozen elementwise passes; BPR on ml-1m trains ~1.4x faster with it on 2 cores
            kwargs["fused"] = True
        return OPTIMIZERS[self.optimizer_name](params, **kwargs)

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            loss = self.compute_loss(batch)
            self._log_train_loss(loss, batch_idx, batch["user_id"].numel())
            return loss
        # Lightning's manual optimisation (see ``on_fit_start``): for each batch the same zero_grad,
        # backward and step as the automatic loop, through the strategy and precision plugin, without
        # its closure; a list of consecutive batches when the loader groups them (train.steps_per_call)
        opt = self.optimizers()
        losses, sizes = [], []
        for b in (batch if isinstance(batch, list) else [batch]):
            loss = self.compute_loss(b)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt.step()
            losses.append(loss.detach())
            sizes.append(b["user_id"].numel())
        if len(losses) == 1:
            mean, rows = losses[0], sizes[0]
        else:  # the call's sample-weighted mean loss
            rows = sum(sizes)
            mean = sum(l * n for l, n in zip(losses, sizes)) / rows
        self._log_train_loss(mean, batch_idx, rows)
        return mean

    # hooks that only Lightning's automatic optimisation loop calls
    _AUTOMATIC_ONLY_HOOKS = ("optimizer_step", "optimizer_zero_grad", "on_before_zero_grad",
                             "configure_gradient_clipping")

    def _manual_step_fits(self) -> bool:
        """True when ``training_step`` may run the optimiser itself with the same result as the
        automatic loop: our own ``training_step``, one optimiser, no scheduler, no gradient clipping
        or accumulation, and no model or callback hook that only the automatic loop calls."""
        from lightning.pytorch.utilities.model_helpers import is_overridden

        tr = self.trainer
        if type(self).training_step is not Recommender.training_step:
            return False
        if tr.gradient_clip_val or tr.accumulate_grad_batches != 1:
            return False
        if len(tr.optimizers) != 1 or tr.lr_scheduler_configs:
            return False
        if any(is_overridden(h, self, parent=pl.LightningModule) for h in self._AUTOMATIC_ONLY_HOOKS):
            return False
        return not any(is_overridden("on_before_zero_grad", cb, parent=pl.Callback) for cb in tr.callbacks)

    def on_fit_start(self) -> None:
        # Lightning's automatic loop wraps every step in a closure and its hooks. When nothing needs
        # that loop, the step drives the optimiser itself (``training_step``), which is also what
        # lets ``train.steps_per_call`` run several steps per call. Decided per fit, after the
        # Trainer has validated its configuration for automatic optimisation; the choice stays
        # after the fit (``trainer.global_step`` reads the loop of the mode in force).
        if self.automatic_optimization or getattr(self, "_chose_manual", False):
            # (a subclass that chose manual optimisation itself keeps it)
            self._chose_manual = self._manual_step_fits()
            self.automatic_optimization = not self._chose_manual
        # train.steps_per_call > 1 (grouped batches) also needs no per-batch hook in the model:
        # on_train_batch_start/end then see each call once (callbacks too: docs/extending.md)
        from lightning.pytorch.utilities.model_helpers import is_overridden

        self.accepts_grouped_steps = bool(getattr(self, "_chose_manual", False)) and not any(
            is_overridden(h, self, parent=pl.LightningModule) for h in ("on_train_batch_start", "on_train_batch_end"))

    def _log_train_loss(self, loss: torch.Tensor, batch_idx: int, n: int) -> None:
        """``train/loss_step`` every ``log_every_n_steps`` steps (what the logger writes anyway; the
        progress bar shows it) and ``train/loss_epoch``, the sample-weighted mean of the epoch, at its
        last batch (so callbacks see it at epoch end). Kept as a running sum on the device: one
        ``self.log`` per step cost BPR ~8% of a step."""
        d = loss.detach() * n
        if batch_idx == 0 or getattr(self, "_loss_sum", None) is None:
            self._loss_sum, self._loss_n = d, n
        else:
            self._loss_sum, self._loss_n = self._loss_sum + d, self._loss_n + n
        trainer = self._trainer
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1)) if trainer is not None else 1
        if (batch_idx + 1) % every == 0:
            self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        last = getattr(trainer, "num_training_batches", None) if trainer is not None else None
        if last is not None and last != float("inf") and batch_idx + 1 >= int(last):
            self.log("train/loss_epoch", self._loss_sum / self._loss_n, prog_bar=True, on_step=False,
                     on_epoch=True, batch_size=self._loss_n)

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

    def _new_acc(self):
        if self.eval_kind == "ranking":
            return RankingAccumulator(self.topk, self.metric_names)
        return GroupedAccumulator()

    def _eval_step(self, batch, stage):
        acc = self._acc[stage]
        if self.eval_kind == "ranking":
            top_scores, top_items = self.topk_items(batch, max(self.topk), exclude=self.mask_history)
            hits, num_pos = hits_of_topk(top_scores, top_items, batch["target_rows"], batch["target_cols"],
                                         self.num_items)
            acc.update(hits, num_pos)
        else:
            acc.update(self.score(batch).detach(), batch["label"], batch["user_id"], batch.get("group_id"))

    def _finish(self, stage):
        acc = self._acc.pop(stage)
        if self.eval_kind == "ranking":
            sums, count = acc.state()
            sums = self._reduce_sum(sums.to(self.device))
            count = self._reduce_sum(count.to(self.device))
            values = acc.compute(sums, count)
        else:
            logits, labels, users = (self._gather_cat(t.to(self.device)) for t in acc.tensors())
            values = acc.compute(logits, labels, users)
            group_ids = acc.group_ids()
            if group_ids is not None:  # the rows carry group_id: the same metrics per group, for the
                # model's group_num groups when it has one, else up to the largest id of any process
                group_ids = self._gather_cat(group_ids.to(self.device))
                n = getattr(self, "group_num", None) or (int(group_ids.max()) + 1 if group_ids.numel() else 0)
                values.update(per_group_metrics(logits, labels, users, group_ids, int(n)))
        self.last_metrics[stage] = {k: float(v) for k, v in values.items()}
        self.last_metrics_epoch[stage] = self.current_epoch if self._trainer is not None else -1
        self.log_dict({f"{stage}/{k}": float(v) for k, v in values.items() if not k.startswith("rows_")},
                      sync_dist=False)

    # distributed helpers: sums and concatenations across processes ------------------------
    def _reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return t
        return self.trainer.strategy.reduce(t, reduce_op="sum")

    def _gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
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


def metric_names_for(model: Recommender) -> List[str]:
    if model.eval_kind == "ranking":
        return [f"{m}@{k}" for m in model.metric_names for k in model.topk]
    return ["auc", "gauc", "logloss"]


def default_val_metric(model_cls) -> str:
    return model_cls.default_val_metric


__all__ = ["Recommender", "OPTIMIZERS", "metric_names_for", "default_val_metric"]
