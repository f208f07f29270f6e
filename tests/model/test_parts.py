"""Losses, scorers, samplers and layers against values computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recstudio_edge.registry import LOSSES, SAMPLERS, SCORERS
from recstudio_edge.model.layers import GRUEncoder, TargetAttention, causal_padding_mask
from recstudio_edge.model.layers.dropout import fast_dropout


def test_losses_by_hand():
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[1.0, 3.0], [0.0, -1.0]])
    bpr = LOSSES.create("bpr")(pos, neg)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = -(math.log(sig(1)) + math.log(sig(-1)) + math.log(sig(0)) + math.log(sig(1))) / 4
    assert bpr.item() == pytest.approx(want, rel=1e-6)
    bce = LOSSES.create("bce")(pos, neg)
    want = ((-math.log(sig(2)) - (math.log(sig(-1)) + math.log(sig(-3))) / 2)
            + (-math.log(sig(0)) - (math.log(sig(0)) + math.log(sig(1))) / 2)) / 2
    assert bce.item() == pytest.approx(want, rel=1e-6)
    # sampled softmax with log-Q: logits minus log proposal probability
    lp, ln = torch.log(torch.tensor([0.5, 0.25])), torch.log(torch.tensor([[0.1, 0.2], [0.5, 0.5]]))
    ss = LOSSES.create("sampled_softmax")(pos, neg, lp, ln)
    rows = torch.tensor([[2 - math.log(0.5), 1 - math.log(0.1), 3 - math.log(0.2)],
                         [0 - math.log(0.25), 0 - math.log(0.5), -1 - math.log(0.5)]])
    assert ss.item() == pytest.approx(F.cross_entropy(rows, torch.tensor([0, 0])).item(), rel=1e-6)
    # full softmax: cross-entropy over the real items' logits
    full = LOSSES.create("softmax")(torch.tensor([[1.0, 2.0]]), torch.tensor([1]))
    assert full.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(1) + math.exp(2))), rel=1e-6)


def test_full_softmax_tower_never_scores_padding():
    from recstudio_edge.model import create_model

    torch.manual_seed(0)
    m = create_model("SASRec", num_users=3, num_items=4, embed_dim=4, num_heads=1, max_seq_len=3, topk=[2])
    with torch.no_grad():
        m.item_emb.weight[0] = 50.0  # a huge padding vector would dominate a softmax that included it
    q = torch.randn(2, 4)
    loss = m.tower_loss(q, torch.tensor([1, 3]))
    logits = q @ m.item_emb.weight[1:].T
    want = F.cross_entropy(logits, torch.tensor([0, 2]))
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["inner_product", "cosine", "euclidean", "mlp"])
def test_scorer_all_matches_pairs(name):
    torch.manual_seed(0)
    s = SCORERS.create(name, **({"dim": 4} if name == "mlp" else {}))
    q, v = torch.randn(3, 4), torch.randn(5, 4)
    full = s.all(q, v)
    pairs = s(q.unsqueeze(1), v.unsqueeze(0))
    torch.testing.assert_close(full, pairs, rtol=1e-5, atol=1e-5)
    if name == "euclidean":
        assert full[0, 1].item() == pytest.approx(-((q[0] - v[1]) ** 2).sum().item(), rel=1e-5)


def test_uniform_sampler_excludes_positive_and_is_uniform():
    torch.manual_seed(0)
    s = SAMPLERS.create("uniform", num_items=6)  # items 1..5
    pos = torch.full((20000,), 3)
    lp, neg, ln = s(pos, 4)
    assert (neg != 3).all() and neg.min() >= 1 and neg.max() <= 5
    freq = torch.bincount(neg.flatten(), minlength=6)[[1, 2, 4, 5]].float() / neg.numel()
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.01)
    assert torch.allclose(ln, torch.full_like(ln, math.log(1 / 4)))


@pytest.mark.parametrize("dense_limit", [1 << 27, 0])  # dense table, and binary search for big data
def test_uniform_sampler_can_avoid_each_users_training_items(dense_limit, monkeypatch):
    torch.manual_seed(0)
    s = SAMPLERS.create("uniform", num_items=6, exclude_seen=True)
    monkeypatch.setattr(s, "DENSE_LIMIT", dense_limit)
    seen = {1: {1, 2, 3}, 2: {5}}  # user -> training items
    keys = torch.tensor(sorted(u * 6 + i for u, items in seen.items() for i in items))
    s.prepare(torch.ones(6), keys)
    user = torch.tensor([1, 2] * 2000)
    pos = torch.tensor([1, 5] * 2000)
    _, neg, _ = s(pos, 3, user=user)
    assert set(neg[user == 1].flatten().tolist()) == {4, 5}
    assert set(neg[user == 2].flatten().tolist()) == {1, 2, 3, 4}


def test_popularity_sampler_frequencies_match_reported_probabilities():
    torch.manual_seed(0)
    s = SAMPLERS.create("popularity", num_items=5)
    s.prepare(torch.tensor([0, 9, 3, 1, 0]))  # weights (count+1): 10, 4, 2, 1
    pos = torch.full((40000,), 1)
    lp, neg, ln = s(pos, 2)
    assert (neg != 1).all()
    p = torch.tensor([10, 4, 2, 1.0]) / 17
    assert lp[0].item() == pytest.approx(math.log(p[0].item()), rel=1e-5)
    # excluding the positive (item 1) renormalises over items 2..4
    freq = torch.bincount(neg.flatten(), minlength=5)[2:].float() / neg.numel()
    assert torch.allclose(freq, p[1:] / p[1:].sum(), atol=0.01)


def test_target_attention_masks_padding_and_empty_history():
    torch.manual_seed(0)
    att = TargetAttention(4)
    t, h = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[False, True, True], [False, False, False]])
    out = att(t, h, mask)
    h2 = h.clone()
    h2[0, 0] = 100.0  # a padded position cannot change the result
    torch.testing.assert_close(att(t, h2, mask), out)
    assert torch.equal(out[1], torch.zeros(4))
    q, k, v = att.q(t[0]), att.k(h[0, 1:]), att.v(h[0, 1:])
    w = torch.softmax(k @ q / 2.0, 0)
    torch.testing.assert_close(out[0], w @ v)


def test_causal_mask_for_left_padding():
    m = causal_padding_mask(torch.tensor([[0, 5, 6]]))[0, 0]
    assert m.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def test_gru_encoder_ignores_left_padding():
    torch.manual_seed(0)
    enc = GRUEncoder(3, 5)
    x = torch.randn(1, 4, 3)
    padded = torch.cat([torch.randn(1, 2, 3), x], dim=1)  # two junk padding steps in front
    out_pad = enc(padded, torch.tensor([4]))
    out = enc(x, torch.tensor([4]))
    torch.testing.assert_close(out_pad[:, 2:], out)


def test_fast_dropout_rate_and_scaling():
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = fast_dropout(x, 0.2, True)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(1 - 51 / 256, abs=0.003)
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)  # unbiased
    assert torch.equal(fast_dropout(x, 0.2, False), x)


def test_mlp_scorer_all_in_chunks_equals_pairwise_scores():
    from recstudio_edge.model.scorer import MLPScorer

    torch.manual_seed(0)
    m = MLPScorer(8)
    m.CHUNK_ELEMENTS = 100  # forces one query per chunk: 7 chunks
    q, v = torch.randn(7, 8), torch.randn(5, 8)
    pairwise = torch.stack([torch.stack([m(q[i], v[j]) for j in range(5)]) for i in range(7)])
    torch.testing.assert_close(m.all(q, v), pairwise)
