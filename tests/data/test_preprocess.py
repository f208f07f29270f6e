"""Filtering, id remapping, the five split modes, and the cache."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recstudio_edge.data.preprocess import HISTORY, TEST, TRAIN, VALID, build_interactions, split_codes


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).astype(
        {"user_id": str, "item_id": str, "rating": float, "timestamp": float})


def test_remap_sorts_by_user_then_time_and_reserves_zero():
    df = frame([("u2", "b", 5, 30), ("u1", "a", 4, 20), ("u2", "a", 3, 10), ("u1", "c", 1, 5)])
    d = build_interactions(df, None, {"split": {"mode": "user_entry", "ratios": [1, 0, 0]}}, seed=0)
    assert d.user_tokens[0] == "[PAD]" and d.item_tokens[0] == "[PAD]"
    assert d.num_users == 3 and d.num_items == 4
    pairs = [(d.user_tokens[u], d.item_tokens[i], t) for u, i, t in zip(d.user.tolist(), d.item.tolist(), d.time.tolist())]
    by_user = {}
    for u, i, t in pairs:
        by_user.setdefault(u, []).append((t, i))
    assert by_user == {"u2": [(10.0, "a"), (30.0, "b")], "u1": [(5.0, "c"), (20.0, "a")]}
    assert int(d.user.min()) >= 1 and int(d.item.min()) >= 1


def test_rating_threshold_and_iterated_kcore():
    # user z has 2 items; after dropping z, item q has only 1 user and goes too; then user y drops
    rows = [("x", "p", 5, 1), ("x", "q", 5, 2), ("x", "r", 5, 3), ("y", "p", 5, 1), ("y", "r", 5, 2),
            ("y", "q", 1, 3), ("z", "q", 5, 1), ("z", "s", 5, 2), ("w", "p", 5, 1), ("w", "r", 5, 2)]
    cfg = {"rating_threshold": 3, "min_user_inter": 2, "min_item_inter": 2,
           "split": {"mode": "user_entry", "ratios": [1, 0, 0]}}
    d = build_interactions(frame(rows), None, cfg, seed=0)
    kept = sorted((d.user_tokens[u], d.item_tokens[i]) for u, i in zip(d.user.tolist(), d.item.tolist()))
    assert kept == [("w", "p"), ("w", "r"), ("x", "p"), ("x", "r"), ("y", "p"), ("y", "r")]


def test_user_entry_counts_round_as_recbole():
    # RecBole: valid = int(0.1 n), test = int(0.1 n); a part with 0 < r*n < 1 gets one row
    user = np.repeat(np.arange(1, 5), [10, 5, 3, 1])
    codes = split_codes(user, np.arange(user.size, dtype=float), "user_entry", [0.8, 0.1, 0.1], "time", 0)
    per = {u: np.bincount(codes[user == u], minlength=3).tolist() for u in range(1, 5)}
    assert per == {1: [8, 1, 1], 2: [3, 1, 1], 3: [1, 1, 1], 4: [1, 0, 0]}
    # with time order the test rows are each user's latest
    assert codes[user == 1].tolist() == [0] * 8 + [VALID, TEST]


def test_user_entry_random_order_is_seeded_and_per_user():
    user = np.repeat(np.arange(1, 201), 10)
    a = split_codes(user, np.zeros(user.size), "user_entry", [0.8, 0.1, 0.1], "random", 3)
    b = split_codes(user, np.zeros(user.size), "user_entry", [0.8, 0.1, 0.1], "random", 3)
    c = split_codes(user, np.zeros(user.size), "user_entry", [0.8, 0.1, 0.1], "random", 4)
    assert (a == b).all() and not (a == c).all()
    assert all(np.bincount(a[user == u], minlength=3).tolist() == [8, 1, 1] for u in (1, 50, 200))
    assert (a.reshape(200, 10) == TEST).argmax(1).std() > 0  # not always the last position


def test_loo_time_entry_and_user_modes():
    user = np.repeat([1, 2, 3], [5, 2, 1])
    t = np.arange(8, dtype=float)
    loo = split_codes(user, t, "loo", [0.8, 0.1, 0.1], "time", 0)
    assert loo.tolist() == [0, 0, 0, VALID, TEST, 0, TEST, 0]
    glob = split_codes(user, t[::-1].copy(), "time", [0.5, 0.25, 0.25], "time", 0)
    # global time order: the 2 latest rows (smallest index here, times reversed) are test
    assert glob.tolist() == [TEST, TEST, VALID, VALID, 0, 0, 0, 0]
    ent = split_codes(np.repeat(np.arange(1, 101), 10), np.zeros(1000), "entry", [0.8, 0.1, 0.1], "random", 0)
    assert np.bincount(ent).tolist() == [800, 100, 100]
    usr = split_codes(np.repeat(np.arange(1, 11), 10), np.zeros(100), "user", [0.6, 0.2, 0.2], "random", 0,
                      holdout=0.3)
    per_user = usr.reshape(10, 10)
    roles = [set(r.tolist()) for r in per_user]
    assert sum(r == {TRAIN} for r in roles) == 6
    assert sum(r == {HISTORY, VALID} for r in roles) == 2 and sum(r == {HISTORY, TEST} for r in roles) == 2
    held = per_user[[r != {TRAIN} for r in roles]]
    assert ((held != HISTORY).sum(1) == 3).all() and (held[:, -3:] != HISTORY).all()


@pytest.mark.parametrize("bad, msg", [
    ({"mode": "leave_one_out"}, "unknown split mode 'leave_one_out'.*loo"),
    ({"mode": "entry", "ratios": [0.8, 0.3]}, "three non-negative numbers"),
])
def test_bad_split_config(bad, msg):
    with pytest.raises(ValueError, match=msg):
        split_codes(np.array([1, 1]), np.zeros(2), bad["mode"], bad.get("ratios", [0.8, 0.1, 0.1]), "random", 0)


def test_cache_second_load_does_not_parse(tmp_path, monkeypatch):
    from recstudio_edge.data import datamodule, readers

    cfg = {"name": "synthetic", "format": "auto", "generator": {"num_users": 50, "num_items": 40,
                                                                 "mean_per_user": 10, "min_per_user": 4},
           "split": {"mode": "loo", "ratios": [0.8, 0.1, 0.1]}}
    first = datamodule.load_interactions(tmp_path, cfg, seed=1)
    calls = []
    real = readers.read_dataset
    monkeypatch.setattr(readers, "read_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = datamodule.load_interactions(tmp_path, cfg, seed=1)
    assert calls == [] and torch.equal(first.split, second.split) and first.item_tokens == second.item_tokens
    # a config that shapes the data differently misses the cache
    datamodule.load_interactions(tmp_path, {**cfg, "split": {"mode": "user_entry", "ratios": [0.8, 0.1, 0.1]}}, 1)
    assert calls == [1]
    # so does a changed input file
    inter = tmp_path / "synthetic" / "synthetic.inter"
    inter.write_text(inter.read_text() + "1\t1\t5\t2000000000\n")
    datamodule.load_interactions(tmp_path, cfg, seed=1)
    assert calls == [1, 1]
    assert len(list((tmp_path / ".cache").glob("*.pt"))) == 3
