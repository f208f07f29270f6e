"""Behaviour of the general retrieval models (NCF, MultiVAE/MultiDAE, CML, LightGCN, DSSM, EASE,
ItemKNN): each against a hand computation of what its paper defines, and each learning on the
generated data (beats Pop on recall@10)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recstudio_edge.model import create_model
from recstudio_edge.registry import LOSSES, SCORERS
from recstudio_edge.wiring import connect
from tests.conftest import assert_beats_popularity

# 5 users (ids 1..4, 0 is padding), 5 items (ids 1..4): a tiny training matrix
PAIRS = [(1, 1), (1, 2), (2, 2), (2, 3), (3, 1), (3, 3), (3, 4), (4, 4)]
NU, NI = 5, 5


def _keys(pairs=PAIRS, num_items=NI):
    return torch.tensor(sorted(u * num_items + i for u, i in pairs))


class _DM:
    """What the closed-form models read from a data module."""

    def __init__(self, pairs=PAIRS):
        self.keys = _keys(pairs)

    def train_keys(self):
        return self.keys

    def item_counts(self):
        return torch.bincount(self.keys % NI, minlength=NI)


def _eval_batch(users, pairs=PAIRS):
    """An evaluation-style batch: every known item of each user as mask pairs."""
    rows, cols = [], []
    for r, u in enumerate(users):
        for uu, i in pairs:
            if uu == u:
                rows.append(r)
                cols.append(i)
    return {"user_id": torch.tensor(users), "mask_rows": torch.tensor(rows), "mask_cols": torch.tensor(cols)}


def _dense_x(pairs=PAIRS):
    x = np.zeros((NU, NI))
    for u, i in pairs:
        x[u, i] = 1.0
    return x


# ---- EASE / ItemKNN -----------------------------------------------------------------------------
def test_ease_matches_column_wise_ridge_regressions():
    """diag(B) = 0 makes EASE one ridge regression per item j of x_j on the other items: solve
    each by hand and compare with the closed form the model fits."""
    lam = 0.7
    x = _dense_x()[:, 1:]  # real items only (the padding column is all zero)
    n = x.shape[1]
    want = np.zeros((n, n))
    for j in range(n):
        others = [k for k in range(n) if k != j]
        a = x[:, others]
        want[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(n - 1), a.T @ x[:, j])
    m = create_model("EASE", num_users=NU, num_items=NI, reg_weight=lam, topk=[2])
    m.fit_closed_form(_DM())
    b = m.weights.double().numpy()
    np.testing.assert_allclose(np.diag(b), 0.0, atol=1e-12)
    np.testing.assert_allclose(b[1:, 1:], want, rtol=1e-5, atol=1e-6)
    # scores are x_u B for every user's known items
    batch = _eval_batch([1, 3])
    scores = m.full_scores(batch)
    np.testing.assert_allclose(scores.double().numpy(), _dense_x()[[1, 3]] @ b, rtol=1e-5, atol=1e-6)


def test_ease_runs_end_to_end_and_its_checkpoint_reloads(run_cli):
    res, run = run_cli("-m=EASE")
    assert res["epochs"] == 0 and res["test"]["recall@10"] > 0
    again, _ = run_cli("-m=EASE", "--task=test", f"--ckpt={run / 'best.ckpt'}")
    assert again["test"] == pytest.approx(res["test"])


def test_itemknn_is_top_k_cosine():
    m = create_model("ItemKNN", num_users=NU, num_items=NI, k=1, topk=[2])
    m.fit_closed_form(_DM())
    x = _dense_x()
    g = x.T @ x
    d = np.sqrt(np.diag(g))
    cos = np.divide(g, np.outer(d, d), out=np.zeros_like(g), where=np.outer(d, d) > 0)
    np.fill_diagonal(cos, 0.0)
    s = m.similarity.double().numpy()
    for j in range(1, NI):  # column j keeps its single largest entry
        col = cos[:, j]
        assert np.count_nonzero(s[:, j]) == 1
        assert s[:, j].max() == pytest.approx(col.max())
    np.testing.assert_allclose(m.full_scores(_eval_batch([2])).double().numpy(), x[[2]] @ s, atol=1e-6)


# ---- LightGCN -------------------------------------------------------------------------------------
def test_lightgcn_adjacency_and_propagation_match_dense_computation():
    from recstudio_edge.model.general.lightgcn import normalized_adjacency

    keys = _keys()
    adj = normalized_adjacency(keys // NI, keys % NI, NU, NI).to_dense().double().numpy()
    a = np.zeros((NU + NI, NU + NI))
    for u, i in PAIRS:
        a[u, NU + i] = a[NU + i, u] = 1.0
    deg = a.sum(1)
    inv = np.where(deg > 0, deg, 1.0) ** -0.5 * (deg > 0)
    want = inv[:, None] * a * inv[None, :]
    np.testing.assert_allclose(adj, want, atol=1e-7)
    assert adj[NU + 4, 4] == pytest.approx(1 / np.sqrt(2 * 1))  # user 4 (1 item) - item 4 (2 users)

    torch.manual_seed(0)
    m = create_model("LightGCN", num_users=NU, num_items=NI, embed_dim=3, num_layers=2, topk=[2])
    m.on_data(torch.bincount(keys % NI, minlength=NI), keys)
    e0 = torch.cat([m.user_emb.weight, m.item_emb.weight]).detach().double().numpy()
    mean = (e0 + want @ e0 + want @ want @ e0) / 3
    users, items = m.propagate()
    np.testing.assert_allclose(users.detach().double().numpy(), mean[:NU], atol=1e-6)
    np.testing.assert_allclose(items.detach().double().numpy(), mean[NU:], atol=1e-6)
    # evaluation uses the cached propagation, refreshed after the weights move
    m.eval()
    batch = _eval_batch([1, 2])
    np.testing.assert_allclose(m.full_scores(batch).detach().double().numpy(), mean[[1, 2]] @ mean[NU:].T, atol=1e-6)
    m.train()
    loss = m.compute_loss({"user_id": torch.tensor([1, 3]), "item_id": torch.tensor([2, 4])})
    loss.backward()
    with torch.no_grad():
        m.user_emb.weight -= 0.5 * m.user_emb.weight.grad
    m.eval()
    u2, i2 = m.propagate()
    torch.testing.assert_close(m.full_scores(batch), u2[[1, 2]] @ i2.T)


# ---- MultiVAE / MultiDAE ------------------------------------------------------------------------
def _ae_batch():
    x = torch.tensor(_dense_x()[1:], dtype=torch.float32)
    return {"user_id": torch.arange(1, NU), "item_id_set": x}


def test_multivae_kl_annealing_schedule():
    torch.manual_seed(0)
    m = create_model("MultiVAE", num_items=NI, num_users=NU, embed_dim=8, latent_dim=4, total_anneal_steps=4,
                     anneal_cap=0.5, topk=[2])
    m.train()
    batch = _ae_batch()
    seen = []
    for _ in range(7):
        seen.append(m.kl_weight())
        m.compute_loss(batch)
    assert seen == [0.0, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5]
    m.eval()
    m.compute_loss(batch)  # evaluation does not advance the schedule
    assert int(m.anneal_step) == 7
    # the loss is NLL + beta * KL: same random draws at beta 0 and beta 0.25 differ by 0.25 KL
    m.train()
    m.anneal_step.fill_(0)
    torch.manual_seed(1)
    l0 = m.compute_loss(batch)
    m.anneal_step.fill_(1)
    torch.manual_seed(1)
    l1 = m.compute_loss(batch)
    torch.manual_seed(1)
    _, kl = m.latent(m.encode_input(batch["item_id_set"]))
    assert kl.item() > 0
    assert (l1 - l0).item() == pytest.approx(0.25 * kl.item(), rel=1e-4)
    fixed = create_model("MultiVAE", num_items=NI, num_users=NU, total_anneal_steps=0, anneal_cap=0.3, topk=[2])
    assert fixed.kl_weight() == 0.3


@pytest.mark.parametrize("name", ["MultiDAE", "MultiVAE"])
def test_autoencoder_multinomial_likelihood_and_eval_input(name):
    torch.manual_seed(0)
    m = create_model(name, num_items=NI, num_users=NU, embed_dim=8, latent_dim=4, dropout=0.5, topk=[2])
    m.eval()  # no dropout, posterior mean: deterministic
    batch = _ae_batch()
    q = m.query(batch)
    logits = q @ torch.cat([m.item_emb.weight, m.item_bias], 1)[1:].T
    want = -(F.log_softmax(logits, 1) * batch["item_id_set"][:, 1:]).sum(1).mean()
    assert m.kl_weight() == 0.0  # MultiVAE's KL weight at step 0: the loss is the likelihood alone
    got = m.compute_loss(batch)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # evaluation reads the user's whole known set from the mask pairs, the same input as training
    ev = _eval_batch([1, 2, 3, 4])
    torch.testing.assert_close(m.full_scores(ev), m.full_scores(batch))
    # input dropout is active in training only
    m.train()
    assert not torch.equal(m.query(batch), m.query(batch))


# ---- CML, NCF, DSSM ---------------------------------------------------------------------------
def _tiny_dm(tmp_path):
    from recstudio_edge.data.datamodule import RecDataModule

    cfg = {"name": "synthetic", "format": "auto", "generator": {"num_users": 60, "num_items": 40,
           "mean_per_user": 10, "min_per_user": 4}, "split": {"mode": "user_entry", "ratios": [0.8, 0.1, 0.1],
           "order": "random"}, "max_seq_len": 10, "cache": False}
    dm = RecDataModule(cfg, tmp_path, "mf", batch_size=64, eval_batch_size=64, seed=0)
    dm.setup()
    return dm


def _trainer(**kw):
    import lightning.pytorch as pl

    return pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      use_distributed_sampler=False, num_sanity_val_steps=0, **kw)


def test_lightgcn_checkpoint_without_validation_holds_a_fresh_cache(tmp_path):
    """Trained without any validation, then saved: a model rebuilt from the checkpoint alone (no
    graph) scores with the propagation of the saved weights, not a stale or empty cache."""
    dm = _tiny_dm(tmp_path)
    torch.manual_seed(0)
    m = create_model("LightGCN", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, lr=0.05, topk=[5])
    trainer = _trainer()
    connect(m, dm, trainer)
    trainer.fit(m, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    fresh = create_model("LightGCN", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, topk=[5])
    fresh.load_state_dict(torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"])
    fresh.eval()
    batch = dm.eval_dataset("test")[torch.arange(5)]
    with torch.no_grad():
        u, i = m.propagate()
        torch.testing.assert_close(fresh.full_scores(batch), u[batch["user_id"]] @ i.T)


def test_cml_keeps_embeddings_in_the_unit_ball_after_training(tmp_path):
    dm = _tiny_dm(tmp_path)
    m = create_model("CML", num_users=dm.num_users, num_items=dm.num_items, embed_dim=8, lr=0.01, topk=[5])
    assert m.user_emb.weight.norm(dim=1).max() <= 1.0 + 1e-6
    with torch.no_grad():  # push every vector out of the ball: training must bring them back
        m.user_emb.weight.mul_(3 / m.user_emb.weight.norm(dim=1, keepdim=True))
        m.item_emb.weight[1:].mul_(3 / m.item_emb.weight[1:].norm(dim=1, keepdim=True))
    trainer = _trainer()
    connect(m, dm, trainer)
    trainer.fit(m, datamodule=dm)
    for w in (m.user_emb.weight, m.item_emb.weight[1:]):
        norms = w.detach().norm(dim=1)
        # on or inside the ball; the rows pushed out were scaled back near its surface, not shrunk
        assert norms.max() <= 1.0 + 1e-5 and norms.mean() > 0.9, norms


def test_hinge_loss():
    hinge = LOSSES.create("hinge", margin=1.0)
    pos, neg = torch.tensor([0.0, 2.0]), torch.tensor([[0.5, -2.0], [0.0, 1.5]])
    # row 0: [1.5, 0]; row 1: [0, 0.5]
    assert hinge(pos, neg).item() == pytest.approx((1.5 + 0 + 0 + 0.5) / 4)


def test_neumf_scorer_matches_the_concatenated_formula():
    torch.manual_seed(0)
    s = SCORERS.create("neumf", dim=10, gmf_dim=4, hidden=[6, 3], chunk_elements=30)  # several user chunks
    q, v = torch.randn(7, 10), torch.randn(5, 10)
    w1 = torch.cat([s.first_q.weight, s.first_v.weight], 1)  # Linear(2 * 6 -> 6) over [q_m, v_m]
    qe, ve = q.unsqueeze(1).expand(7, 5, 10), v.unsqueeze(0).expand(7, 5, 10)
    h = torch.relu(F.linear(torch.cat([qe[..., 4:], ve[..., 4:]], -1), w1, s.first_q.bias))
    h = s.rest[1:](h)
    fused = torch.cat([qe[..., :4] * ve[..., :4], h], -1)
    w_out = torch.cat([s.out_gmf.weight, s.out_mlp.weight], 1)
    want = F.linear(fused, w_out, s.out_mlp.bias).squeeze(-1)
    torch.testing.assert_close(s.all(q, v), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s(qe, ve), want, rtol=1e-5, atol=1e-5)


def test_conflicting_options_are_refused_and_dssm_scores_are_scaled_cosines():
    with pytest.raises(ValueError, match="scorer_args"):
        create_model("NCF", num_users=NU, num_items=NI, scorer_args={"dim": 4}, topk=[2])
    with pytest.raises(ValueError, match="multinomial"):
        create_model("MultiDAE", num_users=NU, num_items=NI, loss="bpr", topk=[2])
    torch.manual_seed(0)
    m = create_model("DSSM", num_users=NU, num_items=NI, embed_dim=4, hidden=[6, 3], temperature=0.2, topk=[2])
    batch = {"user_id": torch.tensor([1, 2])}
    u = m.user_tower(m.user_emb(batch["user_id"]))
    i = m.item_tower(m.item_emb.weight)
    want = F.cosine_similarity(u.unsqueeze(1), i.unsqueeze(0), dim=-1) / 0.2
    torch.testing.assert_close(m.full_scores(batch), want, rtol=1e-5, atol=1e-5)


# ---- learning: each beats Pop on the generated data ---------------------------------------------
FAST = ["--trainer.enable_progress_bar=false", "--data.generator.num_users=400",
        "--data.generator.num_items=200", "--data.generator.mean_per_user=30"]
LEARN = {
    "NCF": ["--epochs=15", "--lr=0.01"],
    "CML": ["--epochs=15", "--lr=0.01"],
    "LightGCN": ["--epochs=20", "--lr=0.01"],
    "DSSM": ["--epochs=15", "--lr=0.01"],
    "MultiDAE": ["--epochs=30", "--lr=0.003"],
    "MultiVAE": ["--epochs=30", "--lr=0.003"],
    "EASE": [],
    "ItemKNN": [],
}


@pytest.mark.parametrize("model", list(LEARN))
def test_general_models_beat_popularity(run_cli, model):
    assert_beats_popularity(run_cli, model, LEARN[model], 1.5, common=FAST)
