"""Batches of each data kind: the fields hold what the contract says, built by gathers."""
from __future__ import annotations

import pandas as pd
import torch

from recstudio_edge.data.dataset import IndexBatchSampler, KindBuilder, UserItemIndex, windows
from recstudio_edge.data.preprocess import build_interactions


def small():
    # user a: items 1..6 in time order; user b: items 7..9
    rows = [("a", str(i), 5.0, float(i)) for i in range(1, 7)] + [("b", str(i), 5.0, float(i)) for i in range(7, 10)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return build_interactions(df, None, {"split": {"mode": "loo", "ratios": [0.8, 0.1, 0.1]}}, seed=0)


def tok(d, ids):
    return [d.item_tokens[i] if i else 0 for i in ids]


def test_windows_left_pad():
    flat = torch.tensor([5, 6, 7, 8, 9])
    seq, n = windows(flat, torch.tensor([0, 2, 4]), torch.tensor([2, 5, 4]), 3)
    assert seq.tolist() == [[0, 5, 6], [7, 8, 9], [0, 0, 0]] and n.tolist() == [2, 3, 0]


def test_seq_kind_every_position_predicts_the_next_item():
    d = small()
    b = KindBuilder(d, max_seq_len=4).train("seq")
    batch = b[torch.arange(len(b))]
    ua = [i for i, u in enumerate(batch["user_id"].tolist()) if d.user_tokens[u] == "a"][0]
    # a's train items are 1..4 (5 is valid, 6 is test): inputs 1,2,3 -> targets 2,3,4
    assert tok(d, batch["seq"][ua].tolist()) == [0, "1", "2", "3"]
    assert tok(d, batch["target_seq"][ua].tolist()) == [0, "2", "3", "4"]
    assert batch["seq_len"][ua] == 3


def test_eval_users_see_known_items_and_mask_them():
    d = small()
    kb = KindBuilder(d, max_seq_len=5)
    valid = kb.eval("seq", "valid")
    test = kb.eval("seq", "test")
    bv, bt = valid[torch.arange(len(valid))], test[torch.arange(len(test))]
    assert len(valid) == 2 and len(test) == 2  # b, with 3 items, has a valid and a test item too
    a_v = bv["user_id"].tolist().index(d.user_tokens.index("a"))
    assert tok(d, bv["seq"][a_v].tolist()) == ["1", "2", "3", "4"]  # padding columns nobody needs are cut
    assert sorted(tok(d, bv["mask_cols"][bv["mask_rows"] == a_v].tolist())) == ["1", "2", "3", "4"]
    assert tok(d, bv["target_cols"][bv["target_rows"] == a_v].tolist()) == ["5"]
    a_t = bt["user_id"].tolist().index(d.user_tokens.index("a"))
    assert tok(d, bt["seq"][a_t].tolist()) == ["1", "2", "3", "4", "5"]  # test sees valid too
    assert tok(d, bt["target_cols"][bt["target_rows"] == a_t].tolist()) == ["6"]


def test_ctr_rows_history_before_target_and_unseen_negatives():
    d = small()
    kb = KindBuilder(d, max_seq_len=3, neg_per_pos=2, eval_neg_per_pos=3, seed=1)
    ds = kb.train("ctr")
    batch = ds[torch.arange(len(ds))]
    n_pos = len(ds)
    assert batch["label"].tolist() == [1.0] * n_pos + [0.0] * (2 * n_pos)
    # the rows are 3 blocks over the positives' histories, carried once (models read each once)
    assert torch.equal(batch["seq"], batch["seq_unique"].repeat(3, 1)) and len(batch["seq_unique"]) == n_pos
    trained = UserItemIndex(d, d.split == 0)  # training negatives avoid the user's training items
    assert not trained.contains(batch["user_id"][n_pos:], batch["item_id"][n_pos:]).any()
    assert trained.contains(batch["user_id"][:n_pos], batch["item_id"][:n_pos]).all()
    for r in range(n_pos):  # the history is the items just before the target
        target = int(d.item_tokens[batch["item_id"][r]])
        hist = [int(t) for t in tok(d, batch["seq"][r].tolist()) if t]
        assert hist == list(range(max(target - 3, hist[0] if hist else 0), target))[-len(hist):]
        assert hist[-1] == target - 1
    ev = kb.eval("ctr", "test")
    eb = ev[torch.arange(len(ev))]
    assert eb["label"].sum() == 2 and len(ev) == 2 * (1 + 3)
    negs = eb["label"] == 0  # evaluation negatives avoid every item the user touched
    assert not UserItemIndex(d).contains(eb["user_id"][negs], eb["item_id"][negs]).any()
    again = KindBuilder(d, max_seq_len=3, eval_neg_per_pos=3, seed=1).eval("ctr", "test")
    assert torch.equal(again[torch.arange(len(again))]["item_id"], eb["item_id"])  # fixed negatives


def test_index_sampler_shards_cover_rows_once_for_eval(monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setattr(IndexBatchSampler, "_world", staticmethod(lambda r=rank: (r, 3)))
        s = IndexBatchSampler(10, 2, shuffle=False, pad=False)
        seen += torch.cat(list(s)).tolist()
    assert sorted(seen) == list(range(10))
    monkeypatch.setattr(IndexBatchSampler, "_world", staticmethod(lambda: (0, 1)))
    s = IndexBatchSampler(10, 4, shuffle=True, seed=5)
    s.set_epoch(1)
    e1 = torch.cat(list(s)).tolist()
    s.set_epoch(2)
    assert sorted(e1) == list(range(10)) and torch.cat(list(s)).tolist() != e1 and len(s) == 3


def test_ae_kind_rows_are_users_with_their_train_items():
    d = small()
    ds = KindBuilder(d, max_seq_len=3).train("ae")
    batch = ds[torch.arange(len(ds))]
    assert batch["item_id_set"].shape == (2, d.num_items)
    a = batch["user_id"].tolist().index(d.user_tokens.index("a"))
    items = torch.nonzero(batch["item_id_set"][a]).flatten().tolist()
    assert sorted(tok(d, items)) == ["1", "2", "3", "4"]  # train only: 5 (valid) and 6 (test) are hidden


def test_activity_groups_are_equal_sized_quantiles():
    from recstudio_edge.data.dataset import activity_groups

    counts = torch.tensor([0, 5, 1, 9, 3, 7, 2])  # users 1..6
    g = activity_groups(counts, 3)
    # sorted by activity: u2(1) u6(2) | u4(3) u1(5) | u5(7) u3(9)
    assert g[1:].tolist() == [1, 0, 2, 1, 2, 0]


def test_ctr_rows_carry_group_ids_when_asked():
    d = small()
    kb = KindBuilder(d, max_seq_len=3, group_num=2)
    b = kb.train("ctr")[torch.arange(3)]
    assert torch.equal(b["group_id"], kb.user_group[b["user_id"]])
    assert kb.user_group[d.user_tokens.index("a")] == 1  # a is the more active user
