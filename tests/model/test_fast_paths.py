"""The training fast paths give the generic paths' numbers: the fused BPR-MF kernel, the fast loop
(``model/fastloop.py``: Lightning's manual optimisation driven by the training step, switched by
``recstudio_edge.wiring.connect``), and several optimiser steps per Lightning step
(``train.steps_per_call``)."""
from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from recstudio_edge.model.fused import bpr_mf_loss
from recstudio_edge.wiring import connect
from recstudio_edge.model import create_model


def _tables(seed=0, users=40, items=30, dim=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(users, dim, generator=g).requires_grad_(), torch.randn(items, dim, generator=g).requires_grad_())


@pytest.mark.parametrize("k", [1, 3])
def test_fused_bpr_loss_and_gradients_equal_the_textbook_formula(k):
    U, I = _tables()
    g = torch.Generator().manual_seed(1)
    # repeated ids on purpose: gradients of a row used several times must add up
    user = torch.randint(0, 40, (64,), generator=g)
    pos = torch.randint(1, 30, (64,), generator=g)
    neg = torch.randint(1, 30, (64, k), generator=g)
    fused = bpr_mf_loss(U, I, user, pos, neg)
    gu, gi = torch.autograd.grad(fused, (U, I))
    q = U[user]
    ref = -F.logsigmoid((q * I[pos]).sum(-1, keepdim=True) - (q.unsqueeze(1) * I[neg]).sum(-1)).mean()
    ru, ri = torch.autograd.grad(ref, (U, I))
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(gu, ru)
    torch.testing.assert_close(gi, ri)
    assert gu[user].abs().sum() > 0 and gi[neg].abs().sum() > 0  # the rows used really get gradients


def test_bpr_fused_compute_loss_matches_the_generic_tower_path():
    torch.manual_seed(0)
    fused = create_model("BPR", num_users=40, num_items=30, embed_dim=8, negative_count=4)
    plain = create_model("BPR", num_users=40, num_items=30, embed_dim=8, negative_count=4, fused=False)
    plain.load_state_dict(fused.state_dict())
    assert fused.fused and not plain.fused
    g = torch.Generator().manual_seed(2)
    batch = {"user_id": torch.randint(1, 40, (50,), generator=g), "item_id": torch.randint(1, 30, (50,), generator=g),
             "neg_item_id": torch.randint(1, 30, (50, 4), generator=g),
             "pos_log_prob": torch.zeros(50), "neg_log_prob": torch.zeros(50, 4)}
    a, b = fused.compute_loss(batch), plain.compute_loss(batch)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    for p, r in zip(fused.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, r.grad)
    # without pipeline negatives the fused path draws them with the model's sampler (seeded: same draws)
    del batch["neg_item_id"], batch["pos_log_prob"], batch["neg_log_prob"]
    torch.manual_seed(5)
    a = fused.compute_loss(batch)
    torch.manual_seed(5)
    torch.testing.assert_close(a, plain.compute_loss(batch))


def test_other_bpr_configurations_take_the_generic_path():
    assert not create_model("BPR", num_users=5, num_items=30, loss="bce").fused
    assert not create_model("BPR", num_users=5, num_items=30, scorer="cosine").fused
    assert not create_model("BPR", num_users=5, num_items=30, sampler="midx_uni").fused
    from recstudio_edge.model.general.bpr import BPR

    class Deeper(BPR):  # a subclass with its own user tower: the fused kernel would ignore it
        def query(self, batch):
            return 2 * self.user_emb(batch["user_id"])

    assert not Deeper(num_users=5, num_items=30).fused


# ---- the fast loop -------------------------------------------------------------------------------------
def _trainer(steps=3, **trainer_kw):
    return pl.Trainer(max_epochs=1, limit_train_batches=steps, limit_val_batches=0, accelerator="cpu",
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False, **trainer_kw)


def _fit(model, dm, steps=3, **trainer_kw):
    trainer = _trainer(steps, **trainer_kw)
    connect(model, dm, trainer)
    trainer.fit(model, datamodule=dm)
    return trainer


def test_manual_step_gives_the_automatic_loops_parameters(tmp_path):
    from tests.conftest import synthetic_datamodule

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=32, dataset_sampling_count=1)
    torch.manual_seed(0)
    manual = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])

    class Automatic(type(manual)):  # an optimizer_step override keeps Lightning's automatic loop
        def optimizer_step(self, *args, **kwargs):
            return super().optimizer_step(*args, **kwargs)

    auto = Automatic(num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    auto.load_state_dict(copy.deepcopy(manual.state_dict()))
    seen = {}

    class Mode(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            seen[module] = module.automatic_optimization

    t1 = _fit(manual, dm, callbacks=[Mode()])
    t2 = _fit(auto, dm, callbacks=[Mode()])
    assert seen[manual] is False and seen[auto] is True
    assert t1.global_step == t2.global_step == 3  # checkpoints and logging count optimiser steps either way
    for p, r in zip(manual.parameters(), auto.parameters()):
        torch.testing.assert_close(p, r)


def test_gradient_clipping_keeps_the_automatic_loop(tmp_path):
    from tests.conftest import synthetic_datamodule

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=32)
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    before = model.user_emb.weight.detach().clone()
    modes = []

    class Mode(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            modes.append(module.automatic_optimization)

    _fit(model, dm, gradient_clip_val=0.5, callbacks=[Mode()])  # Lightning refuses clipping in manual mode
    assert modes == [True] * 3
    assert not torch.equal(before, model.user_emb.weight)


def _grouped_fit(tmp_path, model_name, steps_per_call, batches, **kw):
    from tests.conftest import synthetic_datamodule
    from recstudio_edge.data.datamodule import RecDataModule

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=16)
    dm.steps_per_call = steps_per_call
    torch.manual_seed(0)
    model = create_model(model_name, num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5], **kw)
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append(len(batch) if isinstance(batch, list) else 1)

    trainer = _fit(model, dm, steps=batches, callbacks=[Spy()])
    assert isinstance(dm, RecDataModule)
    return model, trainer, seen, dm


def test_steps_per_call_takes_the_same_optimiser_steps(tmp_path):
    one, t1, seen1, _ = _grouped_fit(tmp_path / "a", "BPR", 1, 8)
    four, t4, seen4, dm4 = _grouped_fit(tmp_path / "b", "BPR", 4, 2)  # 2 calls of 4 batches = the same 8 batches
    assert seen1 == [1] * 8 and seen4 == [4, 4] and dm4.loader_steps == 4
    assert t1.global_step == t4.global_step == 8  # optimiser steps, whatever the grouping
    for p, r in zip(one.parameters(), four.parameters()):
        torch.testing.assert_close(p, r)


def test_steps_per_call_falls_back_to_one_for_a_model_with_per_batch_hooks(tmp_path):
    # CML clips its embeddings in on_train_batch_end, after every optimiser step
    model, trainer, seen, dm = _grouped_fit(tmp_path, "CML", 4, 3)
    assert seen == [1, 1, 1] and trainer.global_step == 3 and dm.loader_steps == 1
    assert model.user_emb.weight.norm(dim=1).max() <= 1 + 1e-5  # clipped after each step, as without grouping


def test_steps_per_call_must_be_positive(tmp_path):
    from recstudio_edge.data.datamodule import RecDataModule

    with pytest.raises(ValueError, match="steps_per_call must be >= 1"):
        RecDataModule({"name": "synthetic"}, tmp_path, "mf", steps_per_call=0)


def test_without_a_trainer_connect_leaves_lightnings_automatic_loop(tmp_path):
    """The switch is per fit: connect without a trainer (or for a trainer that clips) turns the fast
    loop off again and the loader hands over one batch per step."""
    from tests.conftest import synthetic_datamodule

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=16)
    dm.steps_per_call = 4
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    assert connect(model, dm, _trainer()) == 4 and not model.automatic_optimization and dm.loader_steps == 4
    assert connect(model, dm) == 1 and model.automatic_optimization and dm.loader_steps == 1
    assert len(next(iter(dm.train_dataloader()))["user_id"]) == 16  # one batch, not a list of four
    connect(model, dm, _trainer())
    assert connect(model, dm, _trainer(gradient_clip_val=1.0)) == 1 and model.automatic_optimization


def test_the_fast_loop_is_decided_for_the_trainer_that_fits(tmp_path):
    """Switched on for one Trainer, fitted by another that it does not suit (a callback with an
    automatic-loop hook): an error naming connect, not a silently different loop."""
    from tests.conftest import synthetic_datamodule

    class ZeroGradHook(pl.Callback):
        def on_before_zero_grad(self, trainer, module, optimizer):
            pass

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=16)
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    connect(model, dm, _trainer())
    with pytest.raises(RuntimeError, match=r"switched on for another Trainer.*wiring\.connect"):
        _trainer(callbacks=[ZeroGradHook()]).fit(model, datamodule=dm)
    assert connect(model, dm, _trainer(callbacks=[ZeroGradHook()])) == 1 and model.automatic_optimization


def test_a_model_with_its_own_optimisers_keeps_the_automatic_loop(tmp_path):
    """configure_optimizers overridden without @single_optimizer (here: a scheduler): the automatic
    loop, which steps the scheduler; with the mark, the fast loop."""
    from tests.conftest import synthetic_datamodule
    from recstudio_edge.model.fastloop import single_optimizer
    from recstudio_edge.model.general.bpr import BPR

    class Scheduled(BPR):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}

    class Marked(BPR):
        @single_optimizer
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=16)
    dm.steps_per_call = 2
    sched = Scheduled(num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    trainer = _fit(sched, dm, steps=2)
    assert sched.automatic_optimization and dm.loader_steps == 1 and trainer.global_step == 2
    # Lightning stepped the scheduler after the epoch (the fast loop would not have)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)
    marked = Marked(num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    trainer = _fit(marked, dm, steps=2)
    assert not marked.automatic_optimization and dm.loader_steps == 2 and trainer.global_step == 4


def test_a_model_that_needs_its_data_refuses_to_fit_unconnected(tmp_path):
    from tests.conftest import synthetic_datamodule

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=10, batch_size=16)
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    with pytest.raises(RuntimeError, match=r"recstudio_edge\.wiring\.connect\(model, datamodule, trainer\)"):
        _trainer().fit(model, datamodule=dm)
