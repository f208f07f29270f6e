"""Negative samplers: the reported probabilities are exact (empirical frequencies of many draws
match them, with a chi-square test that rejects plausible wrong formulas), the positive is never
its own negative, the dynamic index follows the item vectors epoch by epoch, and the config key
``sampler:`` reaches every tower model."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recstudio_edge.model import create_model, get_model_class, list_models
from recstudio_edge.registry import SAMPLERS
from tests.conftest import synthetic_datamodule
from recstudio_edge.wiring import connect

DYNAMIC = ["midx_uni", "midx_pop", "cluster_uni", "cluster_pop"]
N, D, K = 61, 8, 4  # 60 real items


def chi2_threshold(df: int, z: float = 4.75) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df) at about 1e-6."""
    a = 2.0 / (9 * df)
    return df * (1 - a + z * math.sqrt(a)) ** 3


def chi2(counts: torch.Tensor, probs: torch.Tensor) -> (float, int):
    """Pearson's statistic of ``counts`` against ``probs`` (cells with expected < 5 pooled)."""
    total = counts.sum()
    exp = probs * total
    big = exp >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    ex = torch.cat([exp[big], exp[~big].sum().view(1)])
    keep = ex > 0
    stat = ((obs[keep] - ex[keep]) ** 2 / ex[keep]).sum().item()
    return stat, int(keep.sum()) - 1


def fixture_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(N, D, generator=g) * 0.5
    counts = torch.randint(0, 30, (N,), generator=g).double()
    counts[0] = 0
    q = torch.randn(D, generator=g) * 1.5
    return v, counts, q


def reference_log_q(s, v, counts, q, metric):
    """Q(i | q) over items 1..N-1 from the sampler's codebooks and the item weights, by brute force."""
    cell = s.index.cell[1:]
    if "midx" in s.registry_name:
        K2 = s.c2.size(0)
        code = torch.cat([s.c1[cell // K2], s.c2[cell % K2]], 1)
    else:
        code = s.codebook[cell]
    vv = v[1:].double()
    qq = q.double()
    if metric == "cos":
        vv, qq = F.normalize(vv, dim=-1), F.normalize(qq, dim=-1)
    logit = (2.0 if metric == "l2" else 1.0) * code.double() @ qq
    if s.popularity:
        logit = logit + torch.log(counts[1:] + 1.0)
    if metric == "l2":
        logit = logit - vv.pow(2).sum(1)
    return torch.cat([torch.tensor([float("-inf")], dtype=torch.float64), torch.log_softmax(logit, 0)])


def draw(s, pos_item, q, rows=60000, num_neg=4):
    pos = torch.full((rows,), pos_item)
    return s(pos, num_neg, query=q.expand(rows, -1))


@pytest.mark.parametrize("metric", ["ip", "cos", "l2"])
@pytest.mark.parametrize("name, num_neg", [(n, 4) for n in DYNAMIC] + [("midx_uni", 2), ("midx_pop", 2)])
def test_dynamic_sampler_draws_match_its_reported_probabilities(name, num_neg, metric):
    """MIDX draws a codeword pair jointly when ``num_neg >= K`` (4 here) and ``k1`` then ``k2 | k1``
    below: both paths are checked."""
    torch.manual_seed(0)
    v, counts, q = fixture_data()
    if metric == "l2":  # exp(-|v|^2) spreads the weights: smaller vectors keep every item drawable
        v, q = v * 0.6, q * 0.6
    s = SAMPLERS.create(name, num_items=N, num_clusters=K)
    s.prepare(counts)
    s.update(v, metric=metric)
    ref = reference_log_q(s, v, counts, q, metric)  # [N], -inf at padding
    pos_item = int(ref.argmax())  # the most likely item: excluding it matters most
    lp, neg, ln = draw(s, pos_item, q, rows=240000 // num_neg, num_neg=num_neg)
    assert (neg != pos_item).all() and (neg >= 1).all() and (neg < N).all()
    # the positive's reported probability is Q(pos); negatives come from Q without the positive
    assert lp[0].item() == pytest.approx(ref[pos_item].item(), abs=1e-4)
    cond = ref.exp()
    cond[pos_item] = 0
    cond = cond / cond.sum()
    # every draw reports its exact (conditional) probability
    torch.testing.assert_close(ln.double(), cond[neg].log(), atol=1e-4, rtol=0)
    # the reported probabilities of all items sum to one
    rep = torch.zeros(N, dtype=torch.float64)
    rep[neg.flatten()] = ln.flatten().double().exp()
    assert (rep > 0).sum() == N - 2  # every item but padding and the positive was drawn
    assert rep.sum().item() == pytest.approx(1.0, abs=1e-5)
    # empirical frequencies against those probabilities: accepted ...
    counts_drawn = torch.bincount(neg.flatten(), minlength=N).double()
    stat, df = chi2(counts_drawn, cond)
    assert stat < chi2_threshold(df), (stat, df)
    # ... while formulas one could plausibly write instead are rejected by the same test
    wrong = {"ignores the cell's weight": (ref - torch.log(torch.bincount(s.index.cell[1:], minlength=s.num_cells)
                                                           .double()[s.index.cell])),
             "keeps the positive's mass": ref,
             "exact softmax of the vectors": torch.cat([ref[:1], torch.log_softmax(v[1:].double() @ q.double(), 0)])}
    if s.popularity:
        wrong["uniform inside the cell"] = ref - torch.log(counts + 1.0)
    for why, lq in wrong.items():
        p = lq.exp()
        if why != "keeps the positive's mass":
            p[pos_item] = 0
        p = p / p.sum()
        w_stat, w_df = chi2(counts_drawn, p)
        assert w_stat > chi2_threshold(w_df), f"a sampler that {why} would pass"


@pytest.mark.parametrize("name", DYNAMIC + ["popularity", "uniform"])
def test_without_exclusion_the_positive_is_drawn_at_its_own_probability(name):
    torch.manual_seed(1)
    v, counts, q = fixture_data(1)
    kw = {"num_clusters": K} if name in DYNAMIC else {}
    s = SAMPLERS.create(name, num_items=N, exclude_pos=False, **kw)
    s.prepare(counts)
    if s.dynamic:
        s.update(v, metric="ip")
    pos_item = 3
    lp, neg, ln = draw(s, pos_item, q, rows=40000)
    freq = (neg == pos_item).double().mean().item()
    assert freq == pytest.approx(lp[0].exp().item(), abs=4 * math.sqrt(lp[0].exp().item() / neg.numel()) + 1e-4)
    hit = neg == pos_item
    assert hit.any()
    torch.testing.assert_close(ln[hit], lp[0].expand(int(hit.sum())))
    rep = torch.zeros(N, dtype=torch.float64)
    rep[neg.flatten()] = ln.flatten().double().exp()
    assert rep.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", DYNAMIC + ["popularity"])
def test_positive_holding_nearly_all_the_mass_is_still_never_drawn(name):
    """A positive alone in its cell, with most of the proposal's mass: its cell has no weight
    left once it is excluded, and the other items are drawn at their renormalised probabilities."""
    torch.manual_seed(2)
    v, counts, _ = fixture_data(2)
    v[5] = 40.0  # far from everything: its own cluster; and a query pointing at it
    counts[5] = 1e6
    q = v[5] / v[5].norm() * 3.0
    kw = {"num_clusters": K} if name in DYNAMIC else {}
    s = SAMPLERS.create(name, num_items=N, **kw)
    s.prepare(counts)
    if s.dynamic:
        s.update(v, metric="ip")
    lp, neg, ln = draw(s, 5, q, rows=20000)
    assert lp[0].exp().item() > 0.5
    assert (neg != 5).all()
    rep = torch.zeros(N, dtype=torch.float64)
    rep[neg.flatten()] = ln.flatten().double().exp()
    assert rep.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert torch.isfinite(ln).all()


def test_popularity_sampler_chi_square():
    torch.manual_seed(3)
    counts = torch.tensor([0, 500, 90, 40, 7, 3, 0, 0, 1, 20, 60], dtype=torch.float64)
    s = SAMPLERS.create("popularity", num_items=11, alpha=0.75)
    s.prepare(counts)
    pos = torch.randint(1, 11, (50000,))
    lp, neg, ln = s(pos, 3)
    assert (neg != pos[:, None]).all()
    w = (counts + 1).pow(0.75)
    w[0] = 0
    p = w / w.sum()
    torch.testing.assert_close(lp.double(), p[pos].log(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ln.double(), (p[neg] / (1 - p[pos])[:, None]).log(), atol=1e-5, rtol=0)
    for item in (1, 4):  # per positive: the conditional distribution
        rows = pos == item
        c = torch.bincount(neg[rows].flatten(), minlength=11).double()
        cond = p.clone()
        cond[item] = 0
        cond /= cond.sum()
        stat, df = chi2(c, cond)
        assert stat < chi2_threshold(df)
        wrong = p.clone()  # not renormalised: the positive's share handed to its neighbours
        assert chi2(c, wrong)[0] > chi2_threshold(df)


def test_kmeans_index_assigns_each_item_to_its_nearest_codewords():
    torch.manual_seed(4)
    v, counts, _ = fixture_data(4)
    for name in ("midx_uni", "cluster_uni"):
        s = SAMPLERS.create(name, num_items=N, num_clusters=K)
        s.update(v, metric="ip")
        cell = s.index.cell[1:]
        if name == "midx_uni":
            h = s.split
            k1 = torch.cdist(v[1:, :h], s.c1).argmin(1)
            k2 = torch.cdist(v[1:, h:], s.c2).argmin(1)
            assert torch.equal(cell, k1 * s.c2.size(0) + k2)
        else:
            assert torch.equal(cell, torch.cdist(v[1:], s.codebook).argmin(1))
        # cells hold exactly their items, and each cell's weight is the sum of its items'
        assert torch.equal(torch.sort(s.index.order).values, torch.arange(1, N))


def test_rebuild_changes_the_index_when_the_vectors_change():
    torch.manual_seed(5)
    v, _, q = fixture_data(5)
    s = SAMPLERS.create("midx_uni", num_items=N, num_clusters=K)
    s.update(v, metric="ip")
    c1, cell = s.c1.clone(), s.index.cell.clone()
    s.update(v, metric="ip")  # same vectors, warm start: the same index
    torch.testing.assert_close(s.c1, c1)
    assert torch.equal(s.index.cell, cell)
    v2 = v.clone()
    v2[1:31] += 3.0  # half the items move
    s.update(v2, metric="ip")
    assert not torch.allclose(s.c1, c1)
    assert not torch.equal(s.index.cell, cell)
    assert s.builds == 3


def test_sampler_index_is_rebuilt_at_every_training_epoch(tmp_path):
    """Inside a real fit: the tower rebuilds the index from its current item vectors each epoch."""
    import lightning.pytorch as pl

    dm = synthetic_datamodule(tmp_path, "mf", users=100, items=60, mean=15, max_seq_len=10)
    torch.manual_seed(0)
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, loss="sampled_softmax",
                         sampler="midx_pop", negative_count=8, sampler_args={"num_clusters": 4}, lr=0.05,
                         topk=[5])
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:  # the index in use was built from the vectors as they were at epoch start
                s = module.sampler
                v = module.item_vectors().detach()[1:]
                k1 = torch.cdist(v[:, :s.split], s.c1).argmin(1)
                k2 = torch.cdist(v[:, s.split:], s.c2).argmin(1)
                seen.append((s.builds, s.c1.clone(), torch.equal(s.index.cell[1:], k1 * s.c2.size(0) + k2)))

    trainer = pl.Trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=0, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, callbacks=[Spy()])
    connect(model, dm, trainer)
    trainer.fit(model, datamodule=dm)
    assert [b for b, _, _ in seen] == [1, 2, 3]
    assert all(ok for _, _, ok in seen)
    assert not torch.allclose(seen[0][1], seen[2][1])
    assert model.sampler.log_pop[1:].exp().sub(1).round().sum() == dm.item_counts()[1:].sum()  # popularity known


class _DM:
    num_users, num_items = 40, 50


def _tower_models():
    from recstudio_edge.model.towers import ItemTower

    return [n for n in list_models() if issubclass(get_model_class(n), ItemTower)]


@pytest.mark.parametrize("name", _tower_models())
def test_sampler_config_key_reaches_every_tower_model(name):
    """``model.sampler`` / ``negative_count`` / ``sampler_args`` from the command line end up in the
    model the runner builds (they were never read in the original RecStudio)."""
    from recstudio_edge.config import build_config
    from recstudio_edge.runner import build_model

    cls = get_model_class(name)
    cfg = build_config(name, None, None, {"model.sampler": "cluster_pop", "model.negative_count": "7",
                                          "model.sampler_args": "{num_clusters: 3, alpha: 0.5, exclude_seen: false}",
                                          "data.name": "x"}, model_cls=cls)
    model = build_model(cfg, cls, _DM())
    assert type(model.sampler).__name__ == "cluster_pop"
    assert model.negative_count == 7 and model.sampler.K == 3 and model.sampler.alpha == 0.5


def test_unknown_sampler_names_the_closest():
    with pytest.raises(KeyError, match="midx_uni"):
        create_model("BPR", num_users=5, num_items=30, sampler="midx_unif")
    with pytest.raises(ValueError, match="exclude_seen"):
        create_model("BPR", num_users=5, num_items=30, sampler="midx_uni", sampler_args={"exclude_seen": True})


def test_dataset_sampling_count_draws_negatives_in_the_data_pipeline(tmp_path):
    import lightning.pytorch as pl

    for kind, model_name in (("mf", "BPR"), ("seq", "SASRec")):
        dm = synthetic_datamodule(tmp_path / kind, kind, users=80, items=50, mean=12, batch_size=64,
                                  max_seq_len=10, dataset_sampling_count=5)
        model = create_model(model_name, num_users=dm.num_users, num_items=dm.num_items, loss="sampled_softmax",
                             sampler="popularity", negative_count=1, max_seq_len=10, topk=[5])
        got = []

        class Spy(pl.Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                got.append(batch)

        trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, accelerator="cpu",
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, use_distributed_sampler=False, callbacks=[Spy()])
        connect(model, dm, trainer)
        trainer.fit(model, datamodule=dm)
        b = got[0]
        pos = b["target_seq"] if kind == "seq" else b["item_id"]
        keep = pos > 0
        neg = b["neg_item_id"]
        assert neg.shape == (*pos.shape, 5)  # dataset_sampling_count, not negative_count
        assert (neg[keep] != pos[keep].unsqueeze(-1)).all() and (neg[keep] >= 1).all()
        assert (neg[~keep] == 0).all()
        # the log-probabilities are the model's popularity sampler's (log-Q correction)
        p = model.sampler.log_prob.double().exp()
        torch.testing.assert_close(b["pos_log_prob"][keep].double(), p[pos[keep]].log(), atol=1e-5, rtol=0)
        cond = (p[neg[keep]] / (1 - p[pos[keep]]).unsqueeze(-1)).log()
        torch.testing.assert_close(b["neg_log_prob"][keep].double(), cond, atol=1e-5, rtol=0)


def test_dataset_sampling_count_refuses_a_query_dependent_sampler(tmp_path):
    import lightning.pytorch as pl

    dm = synthetic_datamodule(tmp_path, "mf", users=50, items=30, mean=10, batch_size=64, dataset_sampling_count=2)
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, loss="sampled_softmax",
                         sampler="midx_uni", topk=[5])
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="proposes by the query"):
        connect(model, dm, trainer)
        trainer.fit(model, datamodule=dm)


# ---- negatives drawn in the data pipeline, once per epoch, for static samplers on mf data ------------
def _fit_spy(model, dm, epochs=2, batches=3):
    import lightning.pytorch as pl

    got = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            got.append((trainer.current_epoch, {k: v.clone() for k, v in batch.items()}))

    trainer = pl.Trainer(max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, callbacks=[Spy()])
    connect(model, dm, trainer)
    trainer.fit(model, datamodule=dm)
    return got


def test_static_sampler_negatives_are_drawn_per_epoch_in_the_pipeline(tmp_path):
    from recstudio_edge.data.dataset import UserItemIndex

    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=12, batch_size=64)
    calls = []
    runs = []
    for global_seed in (1, 2):  # the draws are keyed by (seed, epoch): the global RNG does not matter
        torch.manual_seed(global_seed)
        model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5],
                             negative_count=3, sampler_args={"exclude_seen": True})
        real_forward = type(model.sampler).forward

        def counting(self, pos, *a, **k):
            calls.append(pos.numel())
            return real_forward(self, pos, *a, **k)

        type(model.sampler).forward = counting
        try:
            runs.append(_fit_spy(model, dm))
        finally:
            type(model.sampler).forward = real_forward
    n_train = int(dm.train_mask().sum())
    assert calls == [n_train] * 4  # one vectorised draw per epoch (2 epochs x 2 runs), never one per batch
    seen = UserItemIndex(dm.data, dm.train_mask())
    for (e1, a), (e2, b) in zip(*runs):
        assert e1 == e2 and a["neg_item_id"].shape == (a["item_id"].numel(), 3)  # model.negative_count
        torch.testing.assert_close(a["neg_item_id"], b["neg_item_id"])  # same seed, same negatives
        u = a["user_id"].unsqueeze(1).expand_as(a["neg_item_id"])
        assert not seen.contains(u, a["neg_item_id"]).any()  # exclude_seen holds
    # the next epoch draws anew: the same (user, item) row gets other negatives
    by_row = [{(int(u), int(i)): n for e2, bt in runs[0] if e2 == e
               for u, i, n in zip(bt["user_id"], bt["item_id"], bt["neg_item_id"])} for e in (0, 1)]
    common = by_row[0].keys() & by_row[1].keys()
    assert len(common) >= 10
    assert sum(not torch.equal(by_row[0][r], by_row[1][r]) for r in common) > len(common) // 2


def test_query_dependent_sampler_stays_in_the_training_step(tmp_path):
    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=12, batch_size=64)
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5],
                         loss="sampled_softmax", sampler="cluster_uni", sampler_args={"num_clusters": 4})
    got = _fit_spy(model, dm, epochs=1, batches=1)
    assert "neg_item_id" not in got[0][1]


def test_negative_count_that_the_pipeline_would_ignore_is_an_error(tmp_path):
    dm = synthetic_datamodule(tmp_path, "mf", users=60, items=40, mean=12, batch_size=64, dataset_sampling_count=2)
    model = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5],
                         negative_count=4)
    with pytest.raises(ValueError, match=r"negative_count=4 would not be used.*dataset_sampling_count=4"):
        _fit_spy(model, dm, epochs=1, batches=1)


def test_ctr_training_negatives_are_keyed_not_drawn_from_the_global_rng(tmp_path):
    dm = synthetic_datamodule(tmp_path, "ctr", users=60, items=40, mean=12, batch_size=64)
    ds = dm.builder.train("ctr")
    idx = torch.arange(32)
    torch.manual_seed(1)
    a = ds[((3, 0, 5), idx)]
    torch.manual_seed(2)
    b = ds[((3, 0, 5), idx)]
    c = ds[((4, 0, 5), idx)]
    torch.testing.assert_close(a["item_id"], b["item_id"])
    assert not torch.equal(a["item_id"][32:], c["item_id"][32:])  # another epoch, other negatives


def test_connect_hands_each_model_its_own_pipeline_negatives(tmp_path):
    """One data module, two models in turn: the static sampler's negatives are drawn by the
    pipeline for the first; the second (a query-dependent sampler) draws its own in the step, so
    connect takes the first model's sampler back instead of leaving it in the pipeline."""
    dm = synthetic_datamodule(tmp_path, "mf", users=50, items=30, mean=10, batch_size=64)
    static = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, negative_count=3, topk=[5])
    connect(static, dm)
    batch = next(iter(dm.train_dataloader()))
    assert batch["neg_item_id"].shape == (64, 3)
    dynamic = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, loss="sampled_softmax",
                           sampler="midx_uni", topk=[5])
    connect(dynamic, dm)
    assert "neg_item_id" not in next(iter(dm.train_dataloader()))
