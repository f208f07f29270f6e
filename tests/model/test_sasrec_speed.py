"""SASRec's time-to-quality mechanisms (issue 14): the full softmax without its logits matrix
(float32 exact, bf16 close), length-bucketed seq batches with their padding columns cut (every
row once per epoch, the same model outputs), position-weighted seq loss, and the cosine
learning-rate schedule of ``train.scheduler``."""
from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from recstudio_edge.data.dataset import IndexBatchSampler, LengthBucketSampler
from recstudio_edge.model import create_model
from recstudio_edge.model.base import schedule_factor
from recstudio_edge.model.loss import linear_cross_entropy
from recstudio_edge.wiring import connect
from tests.conftest import synthetic_datamodule


# ---- the full softmax from the vectors -------------------------------------------------------------
def _grads(fn, q, w, t):
    q, w = q.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = fn(q, w, t)
    (3.0 * loss).backward()  # an upstream gradient other than 1
    return loss.detach(), q.grad, w.grad


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_linear_cross_entropy_is_the_plain_loss_and_its_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    q, w = torch.randn(150, 16, generator=g), torch.randn(40, 16, generator=g)
    t = torch.randint(0, 40, (150,), generator=g)
    ref = _grads(lambda a, b, c: F.cross_entropy(a @ b.T, c), q, w, t)
    got = _grads(lambda a, b, c: linear_cross_entropy(a, b, c, chunk), q, w, t)
    for r, x in zip(ref, got):
        torch.testing.assert_close(x, r, rtol=1e-5, atol=1e-6)


def test_linear_cross_entropy_in_bf16_autocast_is_close_to_float32():
    g = torch.Generator().manual_seed(1)
    q, w = torch.randn(300, 32, generator=g) * 0.5, torch.randn(100, 32, generator=g) * 0.5
    t = torch.randint(0, 100, (300,), generator=g)
    ref = _grads(lambda a, b, c: F.cross_entropy(a @ b.T, c), q, w, t)

    def bf16(a, b, c):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return linear_cross_entropy(a, b, c, 64)

    loss, gq, gw = _grads(bf16, q, w, t)
    assert loss.dtype == torch.float32  # the log-sum-exp stays float32
    assert abs(float(loss) - float(ref[0])) < 2e-3 * float(ref[0])
    for r, x in ((ref[1], gq), (ref[2], gw)):
        assert x.dtype == torch.float32
        assert F.cosine_similarity(x.flatten(), r.flatten(), dim=0) > 0.999
        assert (x - r).abs().max() < 0.02 * r.abs().max()


def test_tower_loss_takes_the_fused_path_with_the_same_value(tmp_path):
    dm = synthetic_datamodule(tmp_path, "seq", users=40, items=30, mean=12, max_seq_len=10)
    model = create_model("SASRec", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, num_blocks=1,
                         dropout=0.0, max_seq_len=10)
    q = torch.randn(25, 8)
    pos = torch.randint(1, dm.num_items, (25,))
    ref = F.cross_entropy(q @ model.item_emb.weight[1:].T, pos - 1)
    torch.testing.assert_close(model.tower_loss(q, pos), ref)
    model.loss_fn.fused = False
    torch.testing.assert_close(model.tower_loss(q, pos), ref)


# ---- length buckets --------------------------------------------------------------------------------
def test_length_buckets_keep_every_row_once_per_epoch_in_sorted_pools():
    lengths = torch.randint(1, 200, (1003,), generator=torch.Generator().manual_seed(2))
    s = LengthBucketSampler(lengths, 32, pool=4, seed=3)
    seen = []
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) == math.ceil(1003 / 32)
        assert all(b.numel() == 32 for b in batches[:-1]) and batches[-1].numel() == 1003 % 32
        rows = torch.cat(batches)
        assert torch.equal(rows.sort().values, torch.arange(1003))  # every row exactly once
        # a batch holds neighbours in length order: its spread is far below the whole range's
        spread = torch.tensor([float(lengths[b].max() - lengths[b].min()) for b in batches[:-1]])
        assert spread.mean() < 0.35 * float(lengths.max() - lengths.min())
        seen.append(rows)
    assert not torch.equal(seen[0], seen[1])  # reshuffled each epoch
    s.set_epoch(1)
    assert torch.equal(torch.cat(list(s)), seen[1])  # and reproducible


def test_length_buckets_split_across_ranks_cover_every_row(monkeypatch):
    lengths = torch.randint(1, 50, (101,), generator=torch.Generator().manual_seed(4))
    rows = []
    for rank in range(2):
        monkeypatch.setattr(IndexBatchSampler, "_world", staticmethod(lambda r=rank: (r, 2)))
        rows.append(torch.cat(list(LengthBucketSampler(lengths, 8, pool=3, seed=0))))
    assert rows[0].numel() == rows[1].numel() == 51  # padded by wrapping, as IndexBatchSampler does
    assert set(torch.cat(rows).tolist()) == set(range(101))


def test_trimmed_seq_batches_give_the_same_sasrec_outputs(tmp_path):
    dm = synthetic_datamodule(tmp_path, "seq", users=60, items=40, mean=8, min_per_user=3, max_seq_len=20)
    full, cut = dm.builder.train("seq"), dm.builder.train("seq", trim_columns=True)
    idx = torch.argsort(full.lengths)[:10]  # the shortest rows: most columns are padding
    a, b = full[idx], cut[idx]
    w = b["seq"].size(1)
    assert w < a["seq"].size(1) and w == int(full.lengths[idx].max())
    assert torch.equal(a["seq"][:, -w:], b["seq"]) and not a["seq"][:, :-w].any()
    assert torch.equal(a["target_seq"][:, -w:], b["target_seq"]) and torch.equal(a["seq_len"], b["seq_len"])
    torch.manual_seed(0)
    model = create_model("SASRec", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, num_blocks=2,
                         max_seq_len=20).eval()
    with torch.no_grad():
        ha, hb = model.query_all(a), model.query_all(b)
        keep = b["seq"] != 0
        torch.testing.assert_close(ha[:, -w:][keep], hb[keep], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.compute_loss(a), model.compute_loss(b), rtol=1e-5, atol=1e-6)


def test_datamodule_buckets_seq_batches_when_asked(tmp_path):
    dm = synthetic_datamodule(tmp_path, "seq", users=80, items=40, mean=10, min_per_user=3, max_seq_len=30,
                              batch_size=16, length_buckets=4)
    batches = list(dm.train_dataloader())
    assert sum(b["user_id"].numel() for b in batches) == len(dm.builder.train("seq"))
    assert all(b["seq"].size(1) == int(b["seq_len"].max()) for b in batches)


def test_position_weighted_loss_weighs_positions_not_batches(tmp_path):
    dm = synthetic_datamodule(tmp_path, "seq", users=40, items=30, mean=12, max_seq_len=10)
    model = create_model("SASRec", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, num_blocks=1,
                         dropout=0.0, max_seq_len=10, position_weighted=True).train()
    weights = [model._position_weight(torch.ones(m, dtype=torch.bool)) for m in (100, 300, 200)]
    # each batch's mean loss times positions / mean positions so far: 100/100, 300/200, 200/200
    assert weights == pytest.approx([1.0, 1.5, 1.0])
    assert model.eval()._position_weight(torch.ones(5, dtype=torch.bool)) == 1.0


# ---- train.scheduler ---------------------------------------------------------------------------------
def test_schedule_factor_warms_up_then_follows_a_half_cosine():
    assert [schedule_factor(s, 10, warmup=0.2) for s in (0, 1)] == [0.5, 1.0]
    assert schedule_factor(2, 10, warmup=0.2) == pytest.approx(1.0)
    assert schedule_factor(9, 10, warmup=0.2, min_lr=0.1) == pytest.approx(0.1)
    mid = 2 + (10 - 2 - 1) / 2
    assert schedule_factor(mid, 10, warmup=0.2) == pytest.approx(0.5)
    assert schedule_factor(50, 10) == 0.0


class LrLog(pl.Callback):
    def __init__(self):
        self.lrs = []

    def on_train_batch_end(self, trainer, model, *args):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_cosine_scheduler_sets_the_lr_of_every_step(tmp_path, scheduler):
    dm = synthetic_datamodule(tmp_path, "seq", users=60, items=30, mean=10, max_seq_len=10, batch_size=16)
    model = create_model("SASRec", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, num_blocks=1,
                         max_seq_len=10, lr=0.01, scheduler=scheduler, warmup=0.25, min_lr=0.1)
    log = LrLog()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[log],
                         default_root_dir=str(tmp_path))
    connect(model, dm, trainer)
    trainer.fit(model, datamodule=dm)
    steps = len(log.lrs)
    assert steps == 2 * len(dm.train_dataloader())
    if scheduler == "none":
        assert log.lrs == [0.01] * steps
    else:  # the lr each step used: the factor of that step
        assert log.lrs == pytest.approx([0.01 * schedule_factor(s, steps, 0.25, 0.1) for s in range(steps)])
        assert log.lrs[-1] == pytest.approx(0.001)


def test_scheduler_names_are_checked():
    with pytest.raises(ValueError, match="train.scheduler"):
        create_model("SASRec", num_users=5, num_items=5, scheduler="cosin")
    with pytest.raises(ValueError, match="warmup"):
        create_model("SASRec", num_users=5, num_items=5, scheduler="cosine", warmup=1.5)
