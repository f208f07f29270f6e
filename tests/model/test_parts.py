"""Losses, scorers, samplers and layers against values computed by hand; the shared encoders and
the models that compose them; DIN as a plain network wrapped by its tower, and its device part."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recstudio_edge.registry import LOSSES, SAMPLERS, SCORERS
from recstudio_edge.model.layers import (GRUEncoder, GRUStack, TargetAttention, TargetAttentionEncoder,
                                         TransformerBlock, TransformerStack, causal_padding_mask, padding_mask)
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


def test_target_attention_encoder_on_a_table_equals_per_position():
    """forward_table (seq_trans once per table row, gathered) gives the values and the gradients of
    forward on the gathered history, an empty history included."""
    torch.manual_seed(0)
    enc = TargetAttentionEncoder(4).double()
    table = torch.randn(7, 4, dtype=torch.double)
    seq = torch.tensor([[0, 3, 5, 3], [0, 0, 0, 0], [1, 2, 6, 6]])
    target = torch.randn(3, 4, dtype=torch.double)
    out = {}
    for how in ("rows", "table"):
        enc.zero_grad()
        tab, tgt = table.clone().requires_grad_(), target.clone().requires_grad_()
        y = enc(tgt, tab[seq], seq) if how == "rows" else enc.forward_table(tgt, tab, seq, seq)
        (y * torch.arange(12, dtype=torch.double).view(3, 4)).sum().backward()
        out[how] = (y, tab.grad, tgt.grad, [p.grad.clone() for p in enc.parameters()])
    assert torch.equal(out["table"][0][1], torch.zeros(4, dtype=torch.double))
    for a, b in zip(out["rows"][:3], out["table"][:3]):
        torch.testing.assert_close(a, b)
    for a, b in zip(out["rows"][3], out["table"][3]):
        torch.testing.assert_close(a, b)
    assert torch.count_nonzero(out["table"][1][4]) == 0  # an item no history holds: no gradient


def test_din_table_and_per_position_history_agree():
    """DIN's training-size batches take the table path (auto); it equals the per-position path the
    exported model uses, in scores and in every parameter's gradient."""
    from recstudio_edge.model.ctr.din import DIN

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    seq = torch.randint(0, 9, (6, 5), generator=g)
    seq[2] = 0
    batch = {"item_id": torch.randint(1, 9, (6,), generator=g), "seq": seq,
             "label": torch.tensor([1.0, 0, 1, 0, 1, 0])}
    out = {}
    for mode in ("rows", "table", "auto"):
        torch.manual_seed(0)
        model = DIN(num_items=9, embed_dim=4, hidden=(8,), max_seq_len=5).double()
        model.net.features.history_mode = mode
        model.compute_loss(batch).backward()
        out[mode] = (model.score(batch).detach(), {n: p.grad for n, p in model.named_parameters()})
    for mode in ("table", "auto"):
        torch.testing.assert_close(out[mode][0], out["rows"][0])
        for name, grad in out["rows"][1].items():
            torch.testing.assert_close(out[mode][1][name], grad, msg=name)
    assert torch.count_nonzero(out["table"][1]["net.features.item_emb.weight"][0]) == 0


@pytest.mark.parametrize("mode", ["rows", "table"])
def test_din_reads_shared_histories_once_with_the_same_result(mode):
    """A training batch's rows are R blocks over P histories (seq == seq_unique.repeat(R, 1)): DIN
    reading each history once gives the scores and gradients of reading every row's copy; a
    seq_unique that does not repeat to seq is an error."""
    from recstudio_edge.model.ctr.din import DIN
    from recstudio_edge.model.layers import batch_histories

    g = torch.Generator().manual_seed(4)
    base = torch.randint(0, 9, (4, 5), generator=g)
    base[1] = 0
    full = {"item_id": torch.randint(1, 9, (12,), generator=g), "seq": base.repeat(3, 1),
            "label": (torch.rand(12, generator=g) < 0.5).float()}
    shared = {**full, "seq_unique": base}
    assert batch_histories(shared) is base and batch_histories(full) is full["seq"]
    out = []
    for batch in (full, shared):
        torch.manual_seed(0)
        model = DIN(num_items=9, embed_dim=4, hidden=(8,), max_seq_len=5).double()
        model.net.features.history_mode = mode
        model.compute_loss(batch).backward()
        out.append((model.score(batch).detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(out[1][0], out[0][0])
    for name, grad in out[0][1].items():
        torch.testing.assert_close(out[1][1][name], grad, msg=name)
    with pytest.raises(ValueError, match="seq_unique"):
        batch_histories({**full, "seq_unique": base.flip(0)})


def test_training_tanh_is_torch_tanh():
    """layers.tanh (2 sigmoid(2x) - 1 while training float32) equals torch.tanh to ~1e-7, with the
    same gradient; without a gradient, and in bfloat16, it is torch.tanh itself."""
    from recstudio_edge.model.layers import Tanh, tanh

    x = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor([0.0, 1e-8, -1e-6, float("inf"), -float("inf")])])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = tanh(a), torch.tanh(b)
    assert (ya - yb).abs().max().item() < 2e-7 and ya.grad_fn.name() == "_SigmoidTanhBackward"  # the fast path ran
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(a.grad, (1 - ya.detach() ** 2) * g)  # the gradient from its own output
    # and torch's within what the outputs' 2e-7 allows: |d(1 - y^2)| <= 4e-7 per unit of g
    torch.testing.assert_close(a.grad, b.grad, atol=4e-7 * g.abs().max().item(), rtol=0)
    with torch.no_grad():
        assert torch.equal(Tanh()(x), torch.tanh(x))
    xb = x.bfloat16().requires_grad_()
    assert torch.equal(tanh(xb), torch.tanh(xb))


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


def test_gru_encoder_last_only_is_the_last_position():
    """last_only reads the latest position where it lies after the roll: the full output's last
    position, an empty history included (its value is the all-padding run's, as before)."""
    torch.manual_seed(0)
    enc = GRUEncoder(3, 5)
    x, n = torch.randn(4, 6, 3), torch.tensor([6, 3, 1, 0])
    torch.testing.assert_close(enc(x, n, last_only=True), enc(x, n)[:, -1:])


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


# ---- the shared encoders ----------------------------------------------------------------------
def test_transformer_stack_by_hand():
    """Right-aligned positions, padding zeroed, blocks under the mask, final layer norm; a shorter
    history takes the last positions of the table; ``last_only`` is the last position, exactly."""
    torch.manual_seed(0)
    seq = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    x = torch.randn(2, 5, 8)
    for mask, make_mask, input_norm in (("causal", causal_padding_mask, False), ("padding", padding_mask, True)):
        st = TransformerStack(8, 6, 2, 2, 16, 0.0, "relu", mask=mask, input_norm=input_norm).eval()
        with torch.no_grad():
            for L in (5, 3):
                s_, x_ = seq[:, -L:], x[:, -L:]
                keep = (s_ != 0).unsqueeze(-1)
                h = x_ + st.pos_emb.weight[6 - L:]  # the latest item sits at position max_seq_len - 1
                h = st.emb_ln(h) if input_norm else h
                h = h * keep
                for blk in st.blocks:
                    h = blk(h, make_mask(s_)) * keep
                want = st.last_ln(h)
                got = st(x_, s_)
                torch.testing.assert_close(got, want)
                torch.testing.assert_close(st(x_, s_, last_only=True)[:, -1], got[:, -1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        TransformerStack(8, 4, 1, 1, 8, 0.0)(x, seq)


def test_gru_stack_and_target_attention_encoder_by_hand():
    torch.manual_seed(0)
    gs = GRUStack(4, 6, 1, 0.0, out_dim=3).eval()
    x, n = torch.randn(2, 5, 4), torch.tensor([5, 2])
    with torch.no_grad():
        want = gs.proj(gs.encoder(x, n))
        torch.testing.assert_close(gs(x, n), want)
        torch.testing.assert_close(gs(x, n, last_only=True)[:, 0], want[:, -1])
    enc = TargetAttentionEncoder(4)
    t, h = torch.randn(2, 4), torch.randn(2, 3, 4)
    seq = torch.tensor([[0, 7, 8], [1, 2, 3]])
    torch.testing.assert_close(enc(t, h, seq), enc.attention(t, torch.tanh(enc.seq_trans[0](h)), seq != 0))


def encoders_of(model):
    return [m for m in model.modules() if isinstance(m, (TransformerStack, GRUStack, TargetAttentionEncoder))]


@pytest.mark.parametrize("name,kw,cls", [
    ("SASRec", {}, TransformerStack), ("BERT4Rec", {}, TransformerStack), ("GRU4Rec", {}, GRUStack),
    ("DIN", {}, TargetAttentionEncoder), ("PINRec", {"arch_config": {"trunk": "DIN"}}, TargetAttentionEncoder),
    ("PINRec", {"arch_config": {"trunk": "SASRec"}}, TransformerStack),
    ("PINRec", {"arch_config": {"trunk": "GRU4Rec"}}, GRUStack)])
def test_models_compose_the_shared_encoders(name, kw, cls):
    """Each model holds exactly one shared encoder of the expected class, and every transformer
    block or GRU it has sits inside it (nothing re-assembles a stack by hand)."""
    from recstudio_edge.model import create_model

    torch.manual_seed(0)
    model = create_model(name, num_users=5, num_items=30, max_seq_len=6, **kw)
    (enc,) = encoders_of(model)
    assert type(enc) is cls
    inside = {id(m) for m in enc.modules()}
    for m in model.modules():
        if isinstance(m, (TransformerBlock, GRUEncoder, TargetAttention)):
            assert id(m) in inside, f"{name}: a {type(m).__name__} outside the shared encoder"
    masks = {"SASRec": "causal", "BERT4Rec": "padding", "PINRec": "causal"}
    if cls is TransformerStack:
        assert enc.mask == masks[name]


# ---- DIN: a plain network in a tower, and its device part -----------------------------------------
def tiny_din(**kw):
    from recstudio_edge.model.ctr.din import DIN

    torch.manual_seed(0)
    return DIN(num_items=30, embed_dim=8, hidden=(16, 8), max_seq_len=6, **kw)


def din_batch(B=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(1, 30, (B, 6), generator=g)
    seq[1, :4] = 0
    seq[2] = 0  # an empty history
    return {"item_id": torch.randint(1, 30, (B,), generator=g), "seq": seq, "user_id": torch.arange(B),
            "label": (torch.rand(B, generator=g) < 0.5).float()}


@pytest.mark.parametrize("product", [True, False])
def test_din_network_parts_by_hand(product):
    import lightning.pytorch as pl

    din = tiny_din(product=product).eval()
    net = din.net
    assert isinstance(net, torch.nn.Module) and not isinstance(net, pl.LightningModule)
    assert [n for n, _ in net.named_children()] == ["features", "classifier"]
    assert [n for n, _ in net.features.named_children()] == ["item_emb", "target_trans", "encoder"]
    b = din_batch()
    f = net.features
    with torch.no_grad():
        t = torch.tanh(f.target_trans[0](f.item_emb(b["item_id"])))
        a = f.encoder.attention(t, torch.tanh(f.encoder.seq_trans[0](f.item_emb(b["seq"]))), b["seq"] != 0)
        x = torch.cat([t, a, t * a] if product else [t, a], -1)
        torch.testing.assert_close(din.score(b), net.classifier(x).squeeze(-1))
    assert torch.equal(a[2], torch.zeros_like(a[2]))


def test_din_edge_parts_are_the_whole_network():
    from recstudio_edge.edge.protocol import EdgeParts, edge_parts_of

    din = tiny_din()
    parts = edge_parts_of(din)
    assert isinstance(parts, EdgeParts) and parts.variants == ["edge"] and parts.cloud is None
    part = parts.device["edge"]
    assert part.rows == {} and part.input_names == ["item_id", "seq"] and part.output_names == ["probability"]
    item, seq = part.inputs
    assert (item.low, item.high, item.padding) == (1, 29, None) and (seq.low, seq.high, seq.padding) == (1, 29, 0)
    assert part.axis_limits == {"seq": 6} and part.dynamic_axes()["seq"] == {0: "batch", 1: "seq"}
    mod = part.module
    assert not mod.training and all(p.device.type == "cpu" for p in mod.parameters())
    assert mod.stage_names()[:2] == ["classifier.0", "classifier.1"] and mod.stage_names()[-1] == "output"
    b = din_batch()
    din.eval()
    with torch.no_grad():
        torch.testing.assert_close(part(b), din(b))
        ex = part.example_inputs(7)
        torch.testing.assert_close(part(ex), din(ex))
        before = part(b).clone()
        for p in din.parameters():  # a snapshot: the model trains on, the part stays
            p.add_(0.1)
        assert torch.equal(part(b), before)
        assert not torch.equal(din(b), before)
