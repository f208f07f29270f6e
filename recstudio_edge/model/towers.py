"""The three base classes, by number of towers. A model subclasses one and writes one method.

- ``TowerFree``: ``score(batch) -> logits [B]``; pointwise BCE; AUC, GAUC, logloss.
- ``ItemTower``: ``query(batch) -> [B, D]`` from the item embeddings of the history; the item
  tower is an embedding table. Sequence models may also write ``query_all(batch) -> [B, L, D]``
  so that every position predicts its next item (``seq`` data kind, SASRec's training).
- ``TwoTower``: ``query(batch) -> [B, D]`` from a user tower; items as in ``ItemTower``.

Tower models pick ``loss``, ``scorer`` and ``sampler`` by name; full-sort top-k evaluation
masks the user's known items.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import LOSSES, SAMPLERS, SCORERS
from .base import Recommender


class TowerFree(Recommender):
    """Pointwise models that score a (user, item, context) row directly."""

    data_kind = "ctr"
    eval_kind = "pointwise"
    default_val_metric = "auc"

    def score(self, batch) -> torch.Tensor:  # pragma: no cover - subclasses implement it
        raise NotImplementedError

    def forward(self, batch) -> torch.Tensor:
        """Click probability per row."""
        return torch.sigmoid(self.score(batch))

    def compute_loss(self, batch):
        """Mean BCE, or ``sum(w * bce)`` when a callback set ``loss_weighting`` (e.g. PINRec's
        per-group averaging, which makes the gradient the mean of per-group mean gradients)."""
        losses = F.binary_cross_entropy_with_logits(self.score(batch), batch["label"].float(), reduction="none")
        if self.loss_weighting is not None:
            return (losses * self.loss_weighting(batch)).sum()
        return losses.mean()


class ItemTower(Recommender):
    """Retrieval models whose query comes from item embeddings (of a history)."""

    data_kind = "seq"
    default_loss, default_scorer, default_sampler = "softmax", "inner_product", "uniform"

    def __init__(self, num_items: int, embed_dim: int = 64, loss: str | None = None,
                 scorer: str | None = None, sampler: str | None = None, negative_count: int = 1,
                 scorer_args: dict | None = None, sampler_args: dict | None = None,
                 loss_args: dict | None = None, ann: dict | None = None, **base):
        base.setdefault("num_users", 0)
        super().__init__(num_items=num_items, **base)
        self.embed_dim = int(embed_dim)
        self.item_emb = nn.Embedding(self.num_items, self.embed_dim, padding_idx=0)
        self.loss_name = (loss or self.default_loss).lower()
        self.loss_fn = LOSSES.create(self.loss_name, **(loss_args or {}))
        scorer_name = (scorer or self.default_scorer).lower()
        sargs = dict(scorer_args or {})
        if scorer_name == "mlp":
            sargs.setdefault("dim", self.embed_dim)
        self.scorer = SCORERS.create(scorer_name, **sargs)
        self.sampler = SAMPLERS.create((sampler or self.default_sampler).lower(),
                                       num_items=self.num_items, **(sampler_args or {}))
        self.negative_count = int(negative_count)
        self.ann = None  # model.ann: faiss top-k for evaluation and inference (model/ann.py)
        if ann:
            if type(self).full_scores is not ItemTower.full_scores:
                raise ValueError(f"model.ann: {type(self).__name__} computes its own full_scores, so its "
                                 f"ranking is not a search over query and item vectors")
            from .ann import AnnIndex

            self.ann = AnnIndex(ann, getattr(self.scorer, "metric", None), scorer_name)

    # what subclasses write ---------------------------------------------------------------
    def query(self, batch) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def query_all(self, batch) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no per-position query; use a non-seq data kind")

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The item tower: vectors of ``ids`` (all items when None)."""
        return self.item_emb.weight if ids is None else self.item_emb(ids)

    def history_matrix(self, batch) -> torch.Tensor:
        """``[B, num_items]`` float 0/1 of each row's known items: ``item_id_set`` (``ae`` training
        batches) or the ``mask_rows`` / ``mask_cols`` pairs of evaluation and inference batches,
        which list every item the user is known to have (``seq`` holds the last ones only)."""
        if "item_id_set" in batch:
            return batch["item_id_set"]
        if "mask_rows" not in batch:
            raise KeyError(f"{type(self).__name__} needs the user's items: a batch with item_id_set "
                           f"or mask_rows/mask_cols")
        x = torch.zeros(batch["user_id"].numel(), self.num_items, device=batch["user_id"].device)
        x[batch["mask_rows"], batch["mask_cols"]] = 1.0
        return x

    # shared machinery --------------------------------------------------------------------
    def on_data(self, item_counts, train_keys=None):
        self.sampler.prepare(item_counts.to(self.device), None if train_keys is None else train_keys.to(self.device))

    def forward(self, batch) -> torch.Tensor:
        """Scores of every item for each query row ``[B, num_items]``."""
        return self.full_scores(batch)

    def full_scores(self, batch):
        return self.scorer.all(self.query(batch), self.item_vectors())

    def refresh_sampler(self) -> None:
        """Rebuild a dynamic sampler's index (MIDX, cluster) from the current item vectors."""
        if getattr(self.sampler, "dynamic", False) and not getattr(self.loss_fn, "full", False):
            with torch.no_grad():
                self.sampler.update(self.item_vectors().detach(), metric=getattr(self.scorer, "metric", None))

    def on_train_epoch_start(self):
        self.refresh_sampler()  # the index follows the item vectors, once per epoch

    # ANN index: compared with the item vectors (O(N * D), about one search of a batch) once per
    # evaluation epoch instead of once per batch; outside a Trainer loop, at every call
    _ann_checked = False

    def _ensure_ann(self) -> None:
        with torch.no_grad():
            self.ann.ensure(self.item_vectors()[1:], self.device)  # rebuilt when the item tower changed

    def _ann_epoch(self, start: bool) -> None:
        if self.ann is not None:
            if start:
                self._ensure_ann()
            self._ann_checked = start

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self._ann_epoch(True)

    def on_validation_epoch_end(self):
        self._ann_epoch(False)
        super().on_validation_epoch_end()

    def on_test_epoch_start(self):
        super().on_test_epoch_start()
        self._ann_epoch(True)

    def on_test_epoch_end(self):
        self._ann_epoch(False)
        super().on_test_epoch_end()

    def pipeline_negatives(self, data_kind: str, dataset_sampling_count: int = 0):
        """The negatives this model wants the data pipeline to draw, as ``(CPU copy of its sampler,
        negatives per positive)``, or None (the training step draws them, or the loss needs none).
        ``recstudio_edge.wiring.connect`` asks after ``on_data`` (the copy holds the prepared
        sampler) and hands the answer to the data module's ``set_negative_sampler``.

        - ``data.dataset_sampling_count`` > 0: that many per positive, with a static sampler (a
          dynamic one proposes by the query: an error), ``model.negative_count`` being 1 or the same;
        - else, on ``mf`` data, a static sampler's ``model.negative_count`` per row, drawn for a
          whole epoch at once (``data.with_negatives``), cheaper than per step;
        - never for a full-softmax loss."""
        if getattr(self.loss_fn, "full", False):
            return None
        import copy

        count = int(dataset_sampling_count or 0)
        dynamic = getattr(self.sampler, "dynamic", False)
        if count:  # data.dataset_sampling_count: negatives drawn by the data pipeline
            if dynamic:
                raise ValueError(f"data.dataset_sampling_count draws negatives in the data pipeline, without the "
                                 f"model's query; sampler {self.sampler.registry_name!r} proposes by the query: "
                                 f"use uniform or popularity, or set data.dataset_sampling_count=null")
            if self.negative_count not in (1, count):
                raise ValueError(f"model.negative_count={self.negative_count} would not be used: "
                                 f"data.dataset_sampling_count={count} draws the negatives in the data pipeline; set "
                                 f"data.dataset_sampling_count={self.negative_count} (or null to draw "
                                 f"model.negative_count)")
            return copy.deepcopy(self.sampler).cpu(), count
        if not dynamic and data_kind == "mf":
            # a static sampler does not depend on the model: the pipeline draws model.negative_count
            # per row for a whole epoch at once (data.with_negatives), cheaper than per step
            return copy.deepcopy(self.sampler).cpu(), self.negative_count
        return None

    def tower_loss(self, query: torch.Tensor, pos: torch.Tensor, user: torch.Tensor | None = None,
                   presampled=None) -> torch.Tensor:
        """Loss of queries ``[M, D]`` against their positive item ids ``[M]`` (``user [M]`` lets a
        sampler avoid each user's training items; ``presampled`` is ``(log_pos [M], neg [M, K],
        log_neg [M, K])`` drawn by the data pipeline, ``data.dataset_sampling_count``)."""
        if getattr(self.loss_fn, "full", False):  # real items only: row 0 (padding) is left out
            if type(self.scorer).registry_name == "inner_product" and hasattr(self.loss_fn, "from_vectors"):
                return self.loss_fn.from_vectors(query, self.item_vectors()[1:], pos - 1)  # no [M, N] logits
            return self.loss_fn(self.scorer.all(query, self.item_vectors()[1:]), pos - 1)
        if presampled is not None:
            log_pos, neg, log_neg = presampled
        else:
            if getattr(self.sampler, "dynamic", False) and not self.sampler.ready:
                self.refresh_sampler()  # used before any epoch start (a bare training_step)
            log_pos, neg, log_neg = self.sampler(pos, self.negative_count, query=query, user=user)
        pos_s = self.scorer(query, self.item_vectors(pos))
        neg_s = self.scorer(query.unsqueeze(1), self.item_vectors(neg))
        return self.loss_fn(pos_s, neg_s, log_pos, log_neg)

    def compute_loss(self, batch):
        if "target_seq" in batch:  # every position predicts its next item
            h = self.query_all(batch)
            tgt = batch["target_seq"]
            keep = tgt > 0
            user = batch["user_id"].unsqueeze(1).expand_as(tgt)[keep] if "user_id" in batch else None
            pre = self._presampled(batch, keep)
            loss = self.tower_loss(h[keep], tgt[keep], user, pre)
            return loss * self._position_weight(keep) if self.position_weighted else loss
        return self.tower_loss(self.query(batch), batch["item_id"], batch.get("user_id"), self._presampled(batch))

    # seq training: False, the loss is the mean over the batch's positions; True, the sum over them
    # divided by the mean positions per training batch so far (a running figure), so that every
    # position weighs the same whatever its batch: batches of similar lengths (data.length_buckets)
    # hold 2.5k to 25k positions on ml-1m, and a per-batch mean gave the short ones 10x the weight
    position_weighted = False

    def _position_weight(self, keep: torch.Tensor) -> float:
        if not self.training:
            return 1.0
        m = int(keep.sum())
        n, total = getattr(self, "_positions_seen", (0, 0))
        n, total = n + 1, total + m
        self._positions_seen = (n, total)
        return m * n / total

    @staticmethod
    def _presampled(batch, keep=None):
        if "neg_item_id" not in batch:
            return None
        parts = (batch["pos_log_prob"], batch["neg_item_id"], batch["neg_log_prob"])
        return parts if keep is None else tuple(t[keep] for t in parts)

    def topk_items(self, batch, k: int, exclude: bool = True):
        if self.ann is None:
            return super().topk_items(batch, k, exclude)
        if not self._ann_checked:  # inside an evaluation epoch the weights cannot change: checked at its start
            self._ensure_ann()
        rows, cols = (batch["mask_rows"], batch["mask_cols"]) if exclude and "mask_rows" in batch else (None, None)
        return self.ann.search(self.query(batch), k, rows, cols, self.num_items)


class TwoTower(ItemTower):
    """Retrieval models with a user tower (``query`` from the user id and features)."""

    data_kind = "mf"
    default_loss, default_scorer, default_sampler = "bpr", "inner_product", "uniform"


__all__ = ["TowerFree", "ItemTower", "TwoTower"]
