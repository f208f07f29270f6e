"""The fast training loop, in one place, behind one switch.

Lightning's automatic loop wraps every optimiser step in a closure and a dozen hooks, about
1 ms a step on the CPU: as much as a whole BPR step. When nothing needs that loop, the training
step can drive the optimiser itself through Lightning's manual optimisation -- for each batch
``zero_grad``, ``manual_backward``, ``step``, through the strategy and the precision plugin --
which gives the same parameters after the same batches. That also lets the loader hand over
``k`` consecutive batches per call (``train.steps_per_call``, as Keras' ``steps_per_execution``),
so Lightning's per-call cost is paid once for ``k`` optimiser steps.

The switch is ``switch(module, trainer, wanted)``, called by ``recstudio_edge.wiring.connect``
before ``trainer.fit``. It turns the fast loop on for the fit by ``trainer`` when

- the module trains with ``FastLoop.training_step`` (a model that writes its own keeps
  Lightning's automatic loop) and its ``configure_optimizers`` is marked ``@single_optimizer``
  (one optimiser, no learning-rate scheduler);
- the trainer neither clips gradients nor accumulates batches;
- no hook that only the automatic loop calls is overridden (``optimizer_step``,
  ``optimizer_zero_grad``, ``on_before_zero_grad``, ``configure_gradient_clipping``; a callback's
  ``on_before_zero_grad`` neither);

and returns the batches per training step the data module should group: ``wanted``
(``train.steps_per_call``) with the fast loop on and no per-batch model hook
(``on_train_batch_start`` / ``_end``, which would then see each call once), else 1 (said once
in the log). Without a trainer the switch is off: Lightning's automatic loop, one batch per
step. Either way ``trainer.global_step`` counts optimiser steps. At each epoch's first fast step
the rules are checked again against the Trainer that fits (an error naming ``connect`` when the
switch was decided for another one that the fit does not match).

Everything that touches Lightning's private attributes is here and nowhere else in the package:
``attached_trainer`` (the module's Trainer or None, without the error ``module.trainer`` raises
on a bare module) and ``FastLoop.__setattr__`` (Lightning sets ``_current_fx_name`` around every
hook it calls, ~44 times a step; ``nn.Module.__setattr__`` costs ~4 us each, a plain write 0.5 us).
"""
from __future__ import annotations

import logging
from typing import Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

log = logging.getLogger(__name__)

# hooks that only Lightning's automatic optimisation loop calls
AUTOMATIC_ONLY_HOOKS = ("optimizer_step", "optimizer_zero_grad", "on_before_zero_grad", "configure_gradient_clipping")
# hooks that manual_backward and LightningOptimizer.step run (direct_steps: none overridden)
DIRECT_SKIPPED_HOOKS = ("backward", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
# per-batch hooks: with grouped batches (steps_per_call > 1) they would see each call once
PER_BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end")
# written very often (Lightning's hook bookkeeping, the running loss); never parameters, buffers or modules
_PLAIN_ATTRS = frozenset({"_current_fx_name", "_loss_sum", "_loss_n"})
_ON = "_fast_loop_on"  # True when the switch turned the fast loop on
_DIRECT = "_fast_loop_direct"  # id of the Trainer for whose fit direct_steps held at the epoch's first step


def attached_trainer(module) -> Optional["pl.Trainer"]:
    """The Trainer ``module`` is attached to, or None (``module.trainer`` raises on a bare module)."""
    return getattr(module, "_trainer", None)


def single_optimizer(fn):
    """Marks a ``configure_optimizers`` that returns one optimiser and no learning-rate scheduler:
    the fast loop may drive it. A model that overrides it without the mark trains in Lightning's
    automatic loop."""
    fn.single_optimizer = True
    return fn


def batch_rows(batch) -> int:
    """The rows a training batch trains on (what its loss is a mean over, for the logged running
    loss): ``user_id``'s, or ``node_id``'s (graph batches: the target nodes), ``label``'s (CTR rows), else
    the first field's."""
    for key in ("user_id", "node_id", "label"):
        if key in batch:
            return int(batch[key].shape[0])
    return int(next(iter(batch.values())).shape[0])


class FastLoop:
    """The training side of ``Recommender`` (a mixin before ``LightningModule``): ``training_step``
    is ``compute_loss`` with the running loss logged, plus the optimiser steps when the switch
    is on."""

    def __setattr__(self, name, value):
        if name in _PLAIN_ATTRS:
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            loss = self.compute_loss(batch)
            self._log_train_loss(loss, batch_idx, batch_rows(batch))
            return loss
        # the fast loop: the automatic loop's zero_grad, backward and step for each batch, through
        # the strategy and the precision plugin, without its closure; a list of consecutive
        # batches when the loader groups them (train.steps_per_call)
        if batch_idx == 0:
            _check_fit(self)
            # (id of the Trainer whose fit may take the direct steps, whether train_grads may set the
            # gradients), or None: through Lightning's calls
            self.__dict__[_DIRECT] = ((id(self.trainer), direct_grads(self))
                                      if is_on(self) and direct_steps(self, self.trainer) else None)
        opt = self.optimizers()
        losses, sizes = [], []
        batches = batch if isinstance(batch, list) else [batch]
        direct = self.__dict__.get(_DIRECT)
        if direct is not None and direct[0] == id(attached_trainer(self)):
            # what manual_backward and opt.step do when no hook, precision plugin or strategy adds
            # anything (direct_steps): loss.backward() and the torch optimiser's step, with the step
            # counted as Lightning counts it (trainer.global_step); the gradients from the model's
            # train_grads where it gives them (the same values, without an autograd graph)
            raw, before, after = opt.optimizer, opt._on_before_step, opt._on_after_step
            grads = self.train_grads if direct[1] else None
            adam = FusedAdamStep.of(raw)
            for b in batches:
                raw.zero_grad(set_to_none=True)
                loss = grads(b) if grads is not None else None
                if loss is None:
                    loss = self.compute_loss(b)
                    loss.backward()
                before()
                if adam is None or not adam.step():
                    raw.step()
                after()
                losses.append(loss.detach())
                sizes.append(batch_rows(b))
        else:
            for b in batches:
                loss = self.compute_loss(b)
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                opt.step()
                losses.append(loss.detach())
                sizes.append(batch_rows(b))
        if len(losses) == 1:
            mean, rows = losses[0], sizes[0]
        else:  # the call's sample-weighted mean loss
            rows = sum(sizes)
            mean = sum(l * n for l, n in zip(losses, sizes)) / rows
        self._log_train_loss(mean, batch_idx, rows)
        return mean

    def train_grads(self, batch) -> Optional[torch.Tensor]:
        """The fast loop's shortcut around autograd: the training loss of ``batch`` (detached) with
        the ``.grad`` of the parameters set as ``compute_loss(batch).backward()`` would set them
        after ``zero_grad(set_to_none=True)`` (called before; a parameter without a gradient keeps
        None), or None to take that path. Only called in the fast loop's direct steps and when no
        parameter has a gradient hook (``direct_grads``). BPR's fused kernel gives it
        (``model/fused.py``); the default gives None."""
        return None

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
        trainer = attached_trainer(self)
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1)) if trainer is not None else 1
        if (batch_idx + 1) % every == 0:
            self.log("train/loss_step", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        last = getattr(trainer, "num_training_batches", None) if trainer is not None else None
        if last is not None and last != float("inf") and batch_idx + 1 >= int(last):
            # each rank's own mean: averaged across processes once, at the epoch's end (sync_dist)
            self.log("train/loss_epoch", self._loss_sum / self._loss_n, prog_bar=True, on_step=False,
                     on_epoch=True, batch_size=self._loss_n, sync_dist=True)


def direct_steps(module, trainer: "pl.Trainer") -> bool:
    """True when the fast loop may call ``loss.backward()`` and the torch optimiser's ``step()``
    itself instead of ``manual_backward`` and ``LightningOptimizer.step``: a single-device strategy
    and the plain (``32-true``) precision plugin, exactly those classes (they add nothing to
    either call), and no hook that those two calls would run overridden, neither by the module
    (``backward``, ``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``) nor
    by a callback. Then the two calls only dispatched ~12 Python frames and a dozen empty hooks
    per optimiser step (~0.15 ms: as much as BPR's forward pass). Decided at each epoch's first
    fast step."""
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy

    if trainer is None or type(trainer.strategy) is not SingleDeviceStrategy:
        return False
    if type(trainer.strategy.precision_plugin) is not Precision:
        return False
    if any(is_overridden(h, module, parent=pl.LightningModule) for h in DIRECT_SKIPPED_HOOKS):
        return False
    callback_hooks = [h for h in DIRECT_SKIPPED_HOOKS if h != "backward"]
    return not any(is_overridden(h, cb, parent=pl.Callback) for cb in trainer.callbacks for h in callback_hooks)


class FusedAdamStep:
    """``optimizer.step()`` of a ``torch.optim.Adam`` / ``AdamW`` with ``fused=True`` on the CPU as
    the one kernel call it comes down to (``torch._fused_adam_`` / ``_fused_adamw_`` after the
    ``step`` counters' increment, what ``torch.optim.adam._fused_adam`` does), without the ~30 us
    of Python around it (step hooks, profiler records, grad-mode switch, per-step state lists):
    the same update to the bit (tests). ``of(optimizer)`` gives None unless every group is plain
    (fused, float lr, no amsgrad / capturable / differentiable, no gradient scaler), no step hook
    is registered (the optimiser's or the global ones) and every parameter's state exists (after
    the first ordinary step); ``step()`` returns False, having done nothing, when a parameter
    lacks a gradient or is not a float32 CPU tensor (then ``optimizer.step()`` runs). Built once
    per fast training step, so a change of ``lr`` or betas between calls is seen."""

    __slots__ = ("groups",)

    def __init__(self, groups):
        self.groups = groups

    @classmethod
    def of(cls, opt) -> Optional["FusedAdamStep"]:
        from torch.optim import optimizer as optim_mod

        if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
            return None
        if (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks or optim_mod._global_optimizer_pre_hooks
                or optim_mod._global_optimizer_post_hooks):
            return None
        if getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
            return None
        groups = []
        for g in opt.param_groups:
            if not g.get("fused") or g.get("amsgrad") or g.get("capturable") or g.get("differentiable"):
                return None
            if not isinstance(g["lr"], float) or any(torch.is_tensor(b) for b in g["betas"]):
                return None
            states = [opt.state.get(p) for p in g["params"]]
            if any(not st or "exp_avg" not in st or "exp_avg_sq" not in st or "step" not in st for st in states):
                return None
            fn = torch._fused_adamw_ if g.get("decoupled_weight_decay") or type(opt) is torch.optim.AdamW \
                else torch._fused_adam_
            groups.append((g, g["params"], [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
                           [st["step"] for st in states], fn))
        return cls(groups)

    def step(self) -> bool:
        for _, params, _, _, _, _ in self.groups:
            for p in params:
                if p.grad is None or p.device.type != "cpu" or p.dtype != torch.float32 or p.grad.is_sparse:
                    return False
        for g, params, exp_avgs, exp_avg_sqs, steps, fn in self.groups:
            if not params:
                continue
            beta1, beta2 = g["betas"]
            torch._foreach_add_(steps, 1)
            fn(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=g["lr"],
               beta1=beta1, beta2=beta2, weight_decay=g["weight_decay"], eps=g["eps"], maximize=g["maximize"],
               grad_scale=None, found_inf=None)
        return True


def direct_grads(module) -> bool:
    """True when the direct steps may let ``module.train_grads`` set the gradients: it overrides
    ``FastLoop.train_grads`` and no parameter has a gradient hook (``register_hook``,
    ``register_post_accumulate_grad_hook``), which a gradient set by hand would skip."""
    if type(module).train_grads is FastLoop.train_grads:
        return False
    return not any(getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None)
                   for p in module.parameters())


def fits(module, trainer: "pl.Trainer") -> bool:
    """True when ``module`` may drive its optimiser itself under ``trainer`` with the automatic
    loop's result (the rules in the module docstring)."""
    if not isinstance(module, FastLoop) or type(module).training_step is not FastLoop.training_step:
        return False
    if not getattr(type(module).configure_optimizers, "single_optimizer", False):
        return False
    if trainer.gradient_clip_val or trainer.accumulate_grad_batches != 1:
        return False
    if any(is_overridden(h, module, parent=pl.LightningModule) for h in AUTOMATIC_ONLY_HOOKS):
        return False
    return not any(is_overridden("on_before_zero_grad", cb, parent=pl.Callback) for cb in trainer.callbacks)


def switch(module, trainer: Optional["pl.Trainer"] = None, wanted: int = 1) -> int:
    """Turn the fast loop on or off for the fit of ``module`` by ``trainer`` (off without one);
    return the batches per training step the loader should hand over (``wanted`` or 1).
    A module that chose manual optimisation itself keeps it, one batch per step."""
    wanted = int(wanted)
    if wanted < 1:
        raise ValueError(f"train.steps_per_call must be >= 1, got {wanted}")
    if not isinstance(module, FastLoop):
        return 1
    if not module.automatic_optimization and not is_on(module):
        return 1  # the module's own choice of manual optimisation
    on = trainer is not None and fits(module, trainer)
    module.automatic_optimization = not on
    module.__dict__[_ON] = on
    if wanted == 1 or trainer is None:
        return 1
    if on and not any(is_overridden(h, module, parent=pl.LightningModule) for h in PER_BATCH_HOOKS):
        return wanted
    log.info("train.steps_per_call=%d: one optimiser step per training step instead (%s needs Lightning's "
             "automatic optimisation or per-batch hooks; docs/extending.md)", wanted, type(module).__name__)
    return 1


def is_on(module) -> bool:
    """Whether the switch turned the fast loop on."""
    return bool(module.__dict__.get(_ON))


def _check_fit(module) -> None:
    """At each epoch's first manual step: the fast loop still suits the fit (the switch may have
    been decided for another Trainer), and ``configure_optimizers`` kept its word (one optimiser,
    no scheduler)."""
    if not is_on(module):
        return  # manual optimisation chosen by the module itself
    trainer = module.trainer
    if not fits(module, trainer):
        raise RuntimeError(f"the fast training loop of {type(module).__name__} was switched on for another Trainer "
                           f"and does not suit this fit: call recstudio_edge.wiring.connect(model, datamodule, "
                           f"trainer) with the Trainer that fits")
    if len(trainer.optimizers) != 1 or trainer.lr_scheduler_configs:
        raise RuntimeError(f"{type(module).__name__}.configure_optimizers is marked @single_optimizer but gave "
                           f"{len(trainer.optimizers)} optimisers and {len(trainer.lr_scheduler_configs)} "
                           f"learning-rate schedulers: remove the mark (Lightning's automatic loop then runs)")


__all__ = ["FastLoop", "attached_trainer", "single_optimizer", "fits", "switch", "is_on", "direct_steps", "direct_grads",
           "FusedAdamStep", "AUTOMATIC_ONLY_HOOKS", "PER_BATCH_HOOKS", "DIRECT_SKIPPED_HOOKS"]
