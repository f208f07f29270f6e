"""The fast loop's direct steps (``model/fastloop.py``: ``loss.backward()`` and the torch optimiser's
``step()`` instead of Lightning's ``manual_backward`` / ``LightningOptimizer.step``, and the
gradients from the model's ``train_grads`` instead of autograd) give the automatic loop's
parameters to the bit, count the optimiser steps as Lightning does, and step aside for whatever
those Lightning calls would have run (a hook, another precision plugin, a gradient hook)."""
from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch

from recstudio_edge.model import create_model
from recstudio_edge.model.fastloop import direct_grads, direct_steps
from recstudio_edge.model.fused import bpr_mf_loss, bpr_mf_loss_and_grads
from recstudio_edge.wiring import connect


@pytest.mark.parametrize("k", [1, 3])
def test_fused_bpr_loss_and_grads_equal_the_autograd_node_to_the_bit(k):
    g = torch.Generator().manual_seed(0)
    U = torch.randn(40, 8, generator=g).requires_grad_()
    I = torch.randn(30, 8, generator=g).requires_grad_()
    user = torch.randint(0, 40, (64,), generator=g)  # repeated ids: the rows' gradients add up
    pos = torch.randint(1, 30, (64,), generator=g)
    neg = torch.randint(1, 30, (64, k), generator=g)
    ref = bpr_mf_loss(U, I, user, pos, neg)
    ru, ri = torch.autograd.grad(ref, (U, I))
    loss, gu, gi = bpr_mf_loss_and_grads(U, I, user, pos, neg)
    assert not loss.requires_grad and loss.grad_fn is None  # no graph
    assert torch.equal(loss, ref.detach()) and torch.equal(gu, ru) and torch.equal(gi, ri)
    # a frozen table gets no gradient, as autograd gives it none
    U.requires_grad_(False)
    _, gu, gi = bpr_mf_loss_and_grads(U, I, user, pos, neg)
    assert gu is None and torch.equal(gi, torch.autograd.grad(bpr_mf_loss(U, I, user, pos, neg), I)[0])


def test_bpr_train_grads_sets_what_backward_sets():
    torch.manual_seed(0)
    a = create_model("BPR", num_users=40, num_items=30, embed_dim=8, negative_count=2)
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(2)
    batch = {"user_id": torch.randint(1, 40, (50,), generator=g), "item_id": torch.randint(1, 30, (50,), generator=g),
             "neg_item_id": torch.randint(1, 30, (50, 2), generator=g)}
    loss = a.train_grads(batch)
    ref = b.compute_loss(batch)
    ref.backward()
    assert torch.equal(loss, ref.detach())
    for p, r in zip(a.parameters(), b.parameters()):
        assert torch.equal(p.grad, r.grad)
    # the generic path (fused=false) and a subclass with its own loss: autograd
    assert create_model("BPR", num_users=40, num_items=30, embed_dim=8, fused=False).train_grads(batch) is None
    from recstudio_edge.model.general.bpr import BPR

    class Regularised(BPR):
        def compute_loss(self, batch):
            return super().compute_loss(batch) + self.user_emb.weight.square().sum()

    assert Regularised(num_users=40, num_items=30, embed_dim=8).train_grads(batch) is None


def _trainer(steps, **kw):
    return pl.Trainer(max_epochs=2, limit_train_batches=steps, limit_val_batches=0, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      use_distributed_sampler=False, **kw)


def _fits(tmp_path, model_cls=None, steps_per_call=2, **trainer_kw):
    """The same BPR fitted 2 epochs x 6 batches by the fast loop (``trainer_kw``) and by Lightning's
    automatic loop: (fast model, its trainer, automatic model, its trainer, what the spy saw)."""
    from tests.conftest import synthetic_datamodule
    from recstudio_edge.model.general.bpr import BPR

    model_cls = model_cls or BPR
    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=16, dataset_sampling_count=1)
    torch.manual_seed(0)
    fast = model_cls(num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])

    class Automatic(model_cls):  # an optimizer_step override keeps Lightning's automatic loop
        def optimizer_step(self, *args, **kwargs):
            return super().optimizer_step(*args, **kwargs)

    auto = Automatic(num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    auto.load_state_dict(copy.deepcopy(fast.state_dict()))
    seen = {"direct": [], "grads": 0}
    original = type(fast).train_grads

    def spy(self, batch):
        seen["grads"] += 1
        return original(self, batch)

    class Mode(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            if module is fast:
                seen["direct"].append(module.__dict__.get("_fast_loop_direct"))

    type(fast).train_grads = spy
    try:
        dm.steps_per_call = steps_per_call
        t_fast = _trainer(6 // steps_per_call, callbacks=[Mode(), *trainer_kw.pop("callbacks", [])], **trainer_kw)
        connect(fast, dm, t_fast)
        t_fast.fit(fast, datamodule=dm)
    finally:
        type(fast).train_grads = original
    dm.steps_per_call = 1
    t_auto = _trainer(6)
    connect(auto, dm, t_auto)
    t_auto.fit(auto, datamodule=dm)
    assert not fast.automatic_optimization and auto.automatic_optimization
    return fast, t_fast, auto, t_auto, seen


def _same(a, b):
    for p, r in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, r)


def test_direct_steps_give_the_automatic_loops_parameters_to_the_bit(tmp_path):
    fast, t_fast, auto, t_auto, seen = _fits(tmp_path)
    assert all(d is not None and d[1] for d in seen["direct"]) and len(seen["direct"]) == 6  # 2 epochs x 3 calls
    assert seen["grads"] == 12  # every optimiser step took train_grads
    assert t_fast.global_step == t_auto.global_step == 12  # optimiser steps counted as Lightning counts them
    _same(fast, auto)
    assert torch.equal(t_fast.optimizers[0].state_dict()["state"][0]["exp_avg"],
                       t_auto.optimizers[0].state_dict()["state"][0]["exp_avg"])


def test_a_hook_that_lightnings_calls_would_run_keeps_them(tmp_path):
    calls = []

    class BeforeStep(pl.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            calls.append(module.user_emb.weight.grad is not None)

    fast, t_fast, auto, _, seen = _fits(tmp_path, callbacks=[BeforeStep()])
    assert seen["direct"] == [None] * 6 and seen["grads"] == 0  # manual_backward and opt.step, autograd
    assert calls == [True] * 12 and t_fast.global_step == 12
    _same(fast, auto)
    assert not direct_steps(fast, _trainer(1, callbacks=[BeforeStep()]))
    assert not direct_steps(fast, _trainer(1, precision="bf16-mixed"))
    assert direct_steps(fast, _trainer(1))


def test_a_module_hook_keeps_lightnings_calls(tmp_path):
    from recstudio_edge.model.general.bpr import BPR

    class AfterBackward(BPR):
        def on_after_backward(self):
            self.after = getattr(self, "after", 0) + 1

    fast, _, auto, _, seen = _fits(tmp_path, model_cls=AfterBackward)
    assert seen["direct"] == [None] * 6 and fast.after == 12
    _same(fast, auto)


def test_a_gradient_hook_keeps_autograd(tmp_path):
    model = create_model("BPR", num_users=10, num_items=30, embed_dim=8)
    assert direct_grads(model)
    model.item_emb.weight.register_hook(lambda g: g * 2)
    assert not direct_grads(model)
    other = create_model("BPR", num_users=10, num_items=30, embed_dim=8)
    other.user_emb.weight.register_post_accumulate_grad_hook(lambda p: None)
    assert not direct_grads(other)
    assert not direct_grads(create_model("Pop", num_users=10, num_items=30))  # no train_grads of its own


@pytest.mark.parametrize("cls,kw", [(torch.optim.Adam, {}),
                                    (torch.optim.Adam, {"weight_decay": 0.01, "maximize": True}),
                                    (torch.optim.AdamW, {"weight_decay": 0.05, "betas": (0.8, 0.99), "eps": 1e-6})])
def test_the_fused_adam_step_is_the_optimisers_step_to_the_bit(cls, kw):
    from recstudio_edge.model.fastloop import FusedAdamStep

    g = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(7, 4, generator=g)), torch.nn.Parameter(torch.randn(5, generator=g))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a, b = cls(ours, lr=0.01, fused=True, **kw), cls(ref, lr=0.01, fused=True, **kw)
    assert FusedAdamStep.of(a) is None  # no state before the first ordinary step
    for step in range(6):
        grads = [torch.randn(p.shape, generator=g) for p in ours]
        for p, r, gr in zip(ours, ref, grads):
            p.grad, r.grad = gr.clone(), gr.clone()
        fast = FusedAdamStep.of(a)
        if step == 0:
            a.step()
        else:
            assert fast is not None and fast.step()
        b.step()
        for p, r in zip(ours, ref):
            assert torch.equal(p, r)
        for sa, sb in zip(a.state.values(), b.state.values()):
            assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    ours[1].grad = None  # a parameter without a gradient: left to optimizer.step()
    assert not FusedAdamStep.of(a).step()
    a.register_step_post_hook(lambda *args: None)
    assert FusedAdamStep.of(a) is None
    amsgrad = torch.optim.Adam(ref, lr=0.01, fused=True, amsgrad=True)
    amsgrad.step()
    assert FusedAdamStep.of(amsgrad) is None and FusedAdamStep.of(torch.optim.SGD(ref, lr=0.1)) is None
