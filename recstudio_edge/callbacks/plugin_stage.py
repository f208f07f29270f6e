"""``PluginStage``: two-stage plugin training (PINRec's schedule, docs/models.md), for any model with plugin sites.

Stage 1, epochs ``< stage_switch_epoch``: the trunk alone (plugins off), plain mean loss.
Stage 2, from ``stage_switch_epoch`` on (switched at that epoch's start):

- plugins on (``model.set_plugins(True)``);
- every learning rate multiplied by ``lr_factor`` (0.1: divided by 10), in each optimiser's
  param groups and in the ``base_lrs`` of any scheduler, so a scheduler does not undo it;
- with ``aggregate=True`` the loss is ``sum_i w_i * loss_i`` with ``w_i = 1 / (G * n_g(i))``
  (``n_g`` rows of group g in the batch, ``G`` groups present), set as the model's
  ``loss_weighting``: the gradient of every shared (trunk) parameter is then exactly the mean
  over the groups present of each group's mean gradient, so head groups do not drown the tail.
  A plugin copy only ever sees its own group's rows (routing), and its gradient is rescaled by
  ``G`` (a gradient hook, so gradient accumulation stays exact): plugin g's gradient is group
  g's mean gradient, as if it were trained on its group alone. Under DDP the group counts are
  summed over processes first, so the figures are those of the global batch.
  With ``aggregate=False`` the plain batch-mean loss is kept (the "plain gradients" variant).

``plugins=False`` keeps the plugins off after the switch (the trunk-only control run with the
same learning-rate drop and weighting choice); it works with any model.

Protocol a model offers (``PINRec`` does; nothing else is assumed):
``plugin_sites() -> {name: nn.Module}`` (non-empty; parameters hold the plugin copies, group on
the first axis), ``set_plugins(enabled: bool)``, optionally ``group_num`` (int), and training
batches carrying ``group_id [B]`` (long, 0-based). A model without plugin sites is an error.

The callback's state (``switched``) is saved in checkpoints and restored on ``--resume``; the
model's own plugin switch lives in its state dict, and the learning rate in the optimiser's,
so a run resumed after the switch neither switches nor divides the learning rate again.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import lightning.pytorch as pl
import torch

from ..evaluation.report import STAGE_SWITCH

log = logging.getLogger("recstudio_edge")


def has_plugin_sites(model_or_cls) -> bool:
    return callable(getattr(model_or_cls, "plugin_sites", None)) and callable(getattr(model_or_cls, "set_plugins", None))


def plugin_sites_of(model) -> Dict[str, torch.nn.Module]:
    """The model's plugin sites, or a ``TypeError`` that says what is missing."""
    if not has_plugin_sites(model):
        raise TypeError(f"PluginStage needs a model with plugin sites (plugin_sites() and set_plugins(); see "
                        f"recstudio_edge/callbacks/plugin_stage.py): {type(model).__name__} has none")
    sites = model.plugin_sites()
    if not sites:
        raise TypeError(f"PluginStage: {type(model).__name__}.plugin_sites() returned no site")
    return dict(sites)


def group_weights(group: torch.Tensor, group_num: Optional[int] = None, reduce=None, world: int = 1,
                  dtype: torch.dtype = torch.float32):
    """Per-row weights ``w_i = world / (G * n_g(i))`` and ``G`` (groups present, a 0-dim tensor).

    ``sum_i w_i * grad(loss_i)`` (summed over ``world`` processes, then averaged by DDP) is the
    mean over the G present groups of each group's mean gradient. ``reduce``: sums the counts
    across processes (``None`` on one process)."""
    group = group.reshape(-1).long()
    G = int(group_num) if group_num else int(group.max()) + 1
    counts = torch.bincount(group, minlength=G).to(dtype)
    if reduce is not None:
        counts = reduce(counts)
    present = (counts > 0).sum().to(dtype)
    return float(world) / (present * counts[group]), present


class PluginStage(pl.Callback):
    """Switch plugins on at ``stage_switch_epoch``, drop the learning rate, aggregate group gradients."""

    def __init__(self, stage_switch_epoch: int = 2, lr_factor: float = 0.1, aggregate: bool = True,
                 plugins: bool = True, rescale_plugin_grad: bool = True):
        if int(stage_switch_epoch) < 0:
            raise ValueError(f"stage_switch_epoch must be >= 0, got {stage_switch_epoch}")
        if not float(lr_factor) > 0:
            raise ValueError(f"lr_factor must be > 0, got {lr_factor}")
        self.stage_switch_epoch = int(stage_switch_epoch)
        self.lr_factor = float(lr_factor)
        self.aggregate, self.plugins = bool(aggregate), bool(plugins)
        self.rescale_plugin_grad = bool(rescale_plugin_grad)
        self.switched = False
        self.switch_epoch: Optional[int] = None
        self._hooks: List[Any] = []
        self._present: Optional[torch.Tensor] = None
        self._fit_trainer = None
        self._module = None

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {"switched": self.switched, "switch_epoch": self.switch_epoch}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.switched = bool(state_dict.get("switched", False))
        self.switch_epoch = state_dict.get("switch_epoch")

    @property
    def epoch_events(self) -> List[Any]:
        """The stage switch as an epoch event for the run report (recstudio_edge/callbacks/report.py)."""
        return [] if self.switch_epoch is None else [(self.switch_epoch, STAGE_SWITCH)]

    # ---- Lightning hooks ----------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.plugins:
            plugin_sites_of(pl_module)  # fail early with a clear message

    def on_train_start(self, trainer, pl_module) -> None:
        self._fit_trainer, self._module = trainer, pl_module
        if self.switched:  # resumed after the switch: the lr is already lowered (optimiser state)
            self._enter_stage2(trainer, pl_module, lower_lr=False)
        elif self.plugins:
            pl_module.set_plugins(False)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self.switched and trainer.current_epoch >= self.stage_switch_epoch:
            self._enter_stage2(trainer, pl_module, lower_lr=True)
            self.switched, self.switch_epoch = True, int(trainer.current_epoch)
            log.info("PluginStage: epoch %d: plugins %s, lr x%g, %s gradients", trainer.current_epoch,
                     "on" if self.plugins else "off (control)", self.lr_factor,
                     "group-aggregated" if self.aggregate else "plain")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._remove_hooks()
        if stage == "fit" and getattr(pl_module, "loss_weighting", None) == self._weights:
            pl_module.loss_weighting = None

    # ---- the switch ---------------------------------------------------------------------------
    def _enter_stage2(self, trainer, pl_module, lower_lr: bool) -> None:
        if self.plugins:
            pl_module.set_plugins(True)
        if lower_lr:
            for opt in trainer.optimizers:
                for pg in opt.param_groups:
                    pg["lr"] = pg["lr"] * self.lr_factor
            for cfg in getattr(trainer, "lr_scheduler_configs", []) or []:
                sch = cfg.scheduler
                if hasattr(sch, "base_lrs"):
                    sch.base_lrs = [lr * self.lr_factor for lr in sch.base_lrs]
        if self.aggregate:
            pl_module.loss_weighting = self._weights
            if self.plugins and self.rescale_plugin_grad:
                self._remove_hooks()
                for site in plugin_sites_of(pl_module).values():
                    for p in site.parameters():
                        if p.requires_grad:
                            self._hooks.append(p.register_hook(self._scale_plugin_grad))

    def _weights(self, batch) -> torch.Tensor:
        group = batch.get("group_id")
        if group is None:
            raise ValueError("PluginStage(aggregate=True) needs batch['group_id']: set data.group_num > 0 "
                             "(or train from sample files that carry group_id)")
        trainer = self._fit_trainer
        world = trainer.world_size if trainer is not None else 1
        reduce = (lambda t: trainer.strategy.reduce(t, reduce_op="sum")) if world > 1 else None
        module = self._module
        dtype = getattr(module, "dtype", torch.float32)
        dtype = dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32
        w, present = group_weights(group, getattr(module, "group_num", None), reduce, world, dtype)
        self._present = present
        return w

    def _scale_plugin_grad(self, grad: torch.Tensor) -> torch.Tensor:
        return grad if self._present is None else grad * self._present.to(grad.dtype)

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


def plugin_stage_from_config(cfg: Dict[str, Any], model_or_cls, run_dir=None) -> Optional[PluginStage]:
    """The ``PluginStage`` the ``plugin_stage:`` config section asks for, or ``None`` when the
    model has no plugin sites or the section says ``enabled: false``."""
    section = dict(cfg.get("plugin_stage") or {})
    if not section.pop("enabled", True) or not has_plugin_sites(model_or_cls):
        return None
    return PluginStage(**section)


__all__ = ["PluginStage", "plugin_stage_from_config", "has_plugin_sites", "plugin_sites_of", "group_weights"]
