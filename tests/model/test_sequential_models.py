"""The sequential family of issue 3: BERT4Rec's masked-item (``mlm``) data, and the behaviour of
BERT4Rec, Caser, NARM and FPMC (shapes, what each query may depend on, learning)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recstudio_edge.data.datamodule import RecDataModule
from recstudio_edge.data.preprocess import TRAIN
from recstudio_edge.model import create_model
from tests.conftest import assert_beats_popularity

L = 30
DATA = {"name": "synthetic", "format": "auto", "generator": {"num_users": 300, "num_items": 150,
                                                            "mean_per_user": 30, "min_per_user": 6},
        "split": {"mode": "loo"}, "max_seq_len": L, "mask_prob": 0.3, "cache": False}


@pytest.fixture(scope="module")
def dms(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqfam")
    made = {}

    def get(kind, **over):
        key = (kind, tuple(sorted(over.items())))
        if key not in made:
            dm = RecDataModule({**DATA, **over}, root, kind, batch_size=64, eval_batch_size=64, seed=7)
            dm.setup()
            made[key] = dm
        return made[key]

    return get


def last_train_items(dm, users):
    """Independent of the dataset code: each user's latest ``L`` training items, left-padded."""
    d = dm.data
    out = torch.zeros(len(users), L, dtype=torch.long)
    for r, u in enumerate(users.tolist()):
        items = d.item[(d.user == u) & (d.split == TRAIN)][-L:]
        out[r, L - items.numel():] = items
    return out


# ---- the mlm data kind ----------------------------------------------------------------------
def test_mlm_batches_mask_the_configured_share_of_real_items_only(dms):
    dm = dms("mlm")
    ds = dm.builder.train("mlm")
    token = dm.num_items
    b = ds[((0, 0, 0), torch.arange(len(ds)))]
    original = last_train_items(dm, b["user_id"])
    masked = b["seq"] == token
    real = original != 0
    # unmasked positions are the original items (padding stays 0), targets are exactly the masked originals
    assert torch.equal(torch.where(masked, original, b["seq"]), original)
    assert torch.equal(b["target_seq"], torch.where(masked, original, torch.zeros_like(original)))
    assert not (masked & ~real).any(), "padding was masked"
    assert torch.equal(b["seq_len"], real.sum(1))
    assert masked.any(1).all(), "a row without a target"
    share = masked.sum().item() / real.sum().item()
    assert abs(share - 0.3) < 0.03, share
    # another configured probability moves the share with it
    dm2 = dms("mlm", mask_prob=0.6)
    b2 = dm2.builder.train("mlm")[((0, 0, 0), torch.arange(len(ds)))]
    assert abs((b2["seq"] == token).sum().item() / real.sum().item() - 0.6) < 0.03


def test_mlm_masks_are_redrawn_every_batch_and_epoch_and_reproducible(dms):
    dm = dms("mlm")
    ds = dm.builder.train("mlm")
    idx = torch.arange(64)
    a, again = ds[((0, 0, 0), idx)], ds[((0, 0, 0), idx)]
    assert torch.equal(a["seq"], again["seq"])
    for key in ((1, 0, 0), (0, 0, 1), (0, 1, 0)):  # another epoch, step or rank
        assert not torch.equal(a["seq"], ds[(key, idx)]["seq"]), key
    # through the loader: the epoch reaches the dataset, and a new data module with the same
    # seed reproduces every batch of every epoch
    def epoch_batches(dm, epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [(b["user_id"], b["seq"]) for b in loader]

    fresh = RecDataModule(dict(DATA), dm.data_dir, "mlm", batch_size=64, eval_batch_size=64, seed=7)
    fresh.setup()
    e0, e1 = epoch_batches(dm, 0), epoch_batches(dm, 1)
    for (u, s), (u2, s2) in zip(e0, epoch_batches(fresh, 0)):
        assert torch.equal(u, u2) and torch.equal(s, s2)
    masks0 = {int(u): row for bu, bs in e0 for u, row in zip(bu, bs == dm.num_items)}
    masks1 = {int(u): row for bu, bs in e1 for u, row in zip(bu, bs == dm.num_items)}
    same = sum(torch.equal(masks0[u], masks1[u]) for u in masks0)
    assert same < len(masks0) // 10, f"{same} of {len(masks0)} users kept their mask across epochs"


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_mlm_evaluation_appends_the_mask_token(dms, stage):
    mlm, seq = dms("mlm"), dms("seq")
    n = len(mlm.eval_dataset(stage))
    a = mlm.eval_dataset(stage)[torch.arange(n)]
    b = seq.eval_dataset(stage)[torch.arange(n)]  # same users, same order
    assert torch.equal(a["user_id"], b["user_id"])
    assert (a["seq"][:, -1] == mlm.num_items).all()
    assert torch.equal(a["seq_len"], (b["seq_len"] + 1).clamp(max=L))
    assert a["seq"].size(1) <= L
    k = a["seq"].size(1) - 1  # the history before the token: the latest known items
    assert torch.equal(a["seq"][:, :-1], b["seq"][:, -k:] if k else b["seq"][:, :0])
    for f in ("mask_rows", "mask_cols", "target_rows", "target_cols"):
        assert torch.equal(a[f], b[f]), f
    assert (b["seq_len"] == L).any(), "no full-length history: the oldest-item drop is untested"


# ---- models -----------------------------------------------------------------------------
def make(name, dm, **kw):
    torch.manual_seed(0)
    model = create_model(name, num_users=dm.num_users, num_items=dm.num_items, max_seq_len=L, **kw)
    return model.eval()


def eval_batch(dm, n=16):
    ds = dm.eval_dataset("test")
    return ds[torch.arange(len(ds) - n, len(ds))]  # the longest histories (sorted by length)


@pytest.mark.parametrize("name,dim", [("Caser", 128), ("NARM", 64), ("FPMC", 128), ("BERT4Rec", 64)])
def test_output_shapes_and_query_is_the_last_position(dms, name, dim):
    kind = "mlm" if name == "BERT4Rec" else "seq"
    dm = dms(kind)
    model = make(name, dm, embed_dim=64)
    batch = eval_batch(dm)
    with torch.no_grad():
        q_all, q = model.query_all(batch), model.query(batch)
        scores = model.full_scores(batch)
    B, T = batch["seq"].shape
    assert q_all.shape == (B, T, dim) and q.shape == (B, dim)
    assert scores.shape == (B, dm.num_items) and torch.isfinite(scores).all()
    torch.testing.assert_close(q, q_all[:, -1], rtol=1e-5, atol=1e-5)
    train = dm.builder.train(kind)[torch.arange(8)]
    model.train()
    loss = model.compute_loss(train)
    loss.backward()
    assert torch.isfinite(loss)


def perturb(batch, t, num_items):
    """A copy of ``batch`` whose item at column t is another real item."""
    out = dict(batch)
    seq = batch["seq"].clone()
    seq[:, t] = seq[:, t] % (num_items - 1) + 1
    out["seq"] = seq
    return out


@pytest.mark.parametrize("name", ["Caser", "NARM", "FPMC"])
def test_sequence_queries_are_causal(dms, name):
    """Position s's query depends on items at positions <= s only (the training is next-item)."""
    dm = dms("seq")
    model = make(name, dm)
    batch = eval_batch(dm)
    T = batch["seq"].size(1)
    assert (batch["seq_len"] == T).all()
    t = T // 2
    with torch.no_grad():
        a, b = model.query_all(batch), model.query_all(perturb(batch, t, dm.num_items))
    torch.testing.assert_close(a[:, :t], b[:, :t])
    assert (a[:, t] - b[:, t]).abs().amax() > 1e-4
    if name == "FPMC":  # first order: only the position itself
        torch.testing.assert_close(a[:, t + 1:], b[:, t + 1:])
    if name == "Caser":  # the window of the latest `window` items
        w = model.window
        assert (a[:, t + w - 1] - b[:, t + w - 1]).abs().amax() > 1e-4
        torch.testing.assert_close(a[:, t + w:], b[:, t + w:])
    if name == "NARM":  # recurrent: later positions do depend on it
        assert (a[:, -1] - b[:, -1]).abs().amax() > 1e-4


def test_bert4rec_attends_both_ways_and_never_ranks_the_mask_token(dms):
    dm = dms("mlm")
    model = make("BERT4Rec", dm)
    batch = eval_batch(dm)
    with torch.no_grad():
        a = model.query_all(batch)
        b = model.query_all(perturb(batch, batch["seq"].size(1) // 2, dm.num_items))
        assert (a[:, 0] - b[:, 0]).abs().amax() > 1e-4, "an earlier position ignores a later item"
        # padding is ignored: more left padding does not change a real position's output
        padded = dict(batch, seq=F.pad(batch["seq"][:, 1:], (1, 0)))
        short = dict(batch, seq=batch["seq"][:, 1:])
        torch.testing.assert_close(model.query_all(padded)[:, 1:], model.query_all(short))
    assert model.item_emb.num_embeddings == dm.num_items + 1
    assert model.item_vectors().shape == (dm.num_items, model.embed_dim)
    assert model.full_scores(batch).shape[1] == dm.num_items


def test_bert4rec_appends_the_mask_token_to_a_plain_history(dms):
    """Inference batches (and other kinds') hold the bare history: scores equal the mlm evaluation's."""
    mlm, seq = dms("mlm"), dms("seq")
    model = make("BERT4Rec", mlm)
    n = len(seq.eval_dataset("test"))
    idx = torch.cat([torch.arange(8), torch.arange(n - 8, n)])  # short and full-length histories
    with torch.no_grad():
        plain = model.full_scores(seq.eval_dataset("test")[idx])
        masked = model.full_scores(mlm.eval_dataset("test")[idx])
    torch.testing.assert_close(plain, masked, rtol=1e-4, atol=1e-5)


def test_fpmc_scores_depend_on_the_user_and_the_latest_item_only(dms):
    dm = dms("seq")
    model = make("FPMC", dm)
    batch = eval_batch(dm)
    other = dict(batch, seq=batch["seq"].clone())
    other["seq"][:, :-1] = torch.randint(1, dm.num_items, other["seq"][:, :-1].shape)
    with torch.no_grad():
        s = model.full_scores(batch)
        torch.testing.assert_close(model.full_scores(other), s)
        assert (model.full_scores(perturb(batch, -1, dm.num_items)) - s).abs().amax() > 1e-4
        assert (model.full_scores(dict(batch, user_id=batch["user_id"].flip(0))) - s).abs().amax() > 1e-4
        # the paper's form: <V_u^UI, V_i^IU> + <V_l^LI, V_i^IL>
        d = model.factor_dim
        iu, il = model.item_emb.weight[:, :d], model.item_emb.weight[:, d:]
        expect = model.user_emb(batch["user_id"]) @ iu.T + model.last_emb(batch["seq"][:, -1]) @ il.T
    torch.testing.assert_close(s, expect)


def test_caser_matches_the_papers_per_window_convolutions(dms):
    """The sequence-level convolutions equal convolving each window on its own (the paper)."""
    dm = dms("seq")
    model = make("Caser", dm, window=4, num_h=3, num_v=2, embed_dim=8)
    batch = eval_batch(dm, n=4)
    W = model.window
    with torch.no_grad():
        got = model.query_all(batch)
        x = F.pad(model.seq_emb(batch["seq"]), (0, 0, W - 1, 0))
        for t in (0, 2, batch["seq"].size(1) - 1):
            win = x[:, t:t + W]  # [B, W, D]: the window ending at position t
            o_h = []
            for h, conv in enumerate(model.conv_h, start=1):  # a [h, D] filter over the rows
                wts = conv.weight.permute(0, 2, 1)  # [num_h, h, D]
                vals = torch.stack([(win[:, s:s + h].unsqueeze(1) * wts).sum((2, 3)) + conv.bias
                                    for s in range(W - h + 1)], -1)
                o_h.append(F.relu(vals).amax(-1))
            o_v = torch.einsum("bld,vl->bvd", win, model.conv_v.weight[:, 0]) + model.conv_v.bias[:, None]
            z = F.relu(model.fc(torch.cat([o_v.flatten(1), torch.cat(o_h, 1)], 1)))
            want = torch.cat([z, model.user_emb(batch["user_id"])], 1)
            torch.testing.assert_close(got[:, t], want, rtol=1e-5, atol=1e-5)


def test_narm_local_attention_is_the_papers(dms):
    """c_l = sum_j v^T sigmoid(A1 h_t + A2 h_j) h_j over the real items j <= t (unnormalised)."""
    dm = dms("seq")
    model = make("NARM", dm)
    batch = eval_batch(dm, n=3)
    batch = dict(batch, seq=F.pad(batch["seq"][:, 5:], (3, 0)), seq_len=batch["seq_len"] - 5)  # some padding
    with torch.no_grad():
        got = model.query_all(batch)
        h = model.encoder(model.item_emb(batch["seq"]), batch["seq_len"])
        for t in (4, batch["seq"].size(1) - 1):
            terms = [model.v(torch.sigmoid(model.a1(h[:, t]) + model.a2(h[:, j]))) * h[:, j] for j in range(3, t + 1)]
            c_l = torch.stack(terms).sum(0)
            torch.testing.assert_close(got[:, t], model.b(torch.cat([h[:, t], c_l], 1)), rtol=1e-4, atol=1e-5)


# ---- learning -----------------------------------------------------------------------------
FAST = ["--trainer.enable_progress_bar=false", "--data.generator.num_users=400",
        "--data.generator.num_items=200", "--data.generator.mean_per_user=30", "--data.split.mode=loo"]
RECIPES = {  # each under ~15 s on one CPU thread
    "FPMC": ["--epochs=15", "--lr=0.005", "--data.max_seq_len=30", "--train.batch_size=256"],
    "Caser": ["--epochs=15", "--lr=0.005", "--data.max_seq_len=30", "--train.batch_size=256"],
    "NARM": ["--epochs=10", "--lr=0.005", "--data.max_seq_len=30", "--train.batch_size=128"],
    "BERT4Rec": ["--epochs=25", "--lr=0.003", "--data.max_seq_len=20", "--train.batch_size=32",
                 "--data.mask_prob=0.5", "--model.dropout=0.1", "--model.num_blocks=1", "--eval.patience=25"],
}


@pytest.mark.parametrize("model", list(RECIPES))
def test_sequential_family_beats_popularity(run_cli, model):
    assert_beats_popularity(run_cli, model, RECIPES[model], 2, common=FAST)
