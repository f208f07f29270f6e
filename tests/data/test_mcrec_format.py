"""MCRec's tab formats (CRec, ORec, controller rows): round trips, the release's files, errors naming
file:line:field, nothing half-written; the source built from interactions (requests by time)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recstudio_edge.data.errors import DataError
from recstudio_edge.data.formats import mcrec

ROOT = Path(__file__).resolve().parents[2]


def _rows(n=5, L=6):
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(1, 30, (n, L), generator=g)
    seq[0, :3] = 0  # a short history, left-padded
    sess = seq.clone()
    sess[:, -2:] = 0
    sess = torch.roll(sess, 2, dims=1)  # the session's history: the same items but the latest two
    return {"seq": seq, "session_seq": sess, "item_id": torch.randint(1, 30, (n,), generator=g),
            "label": torch.tensor([1.0, 0, 1, 0, 1])[:n], "prior_score": torch.tensor([0.37, 0.5, 0.012345, 0.99, 0.0])[:n],
            "request": torch.tensor([0, 0, 1, 1, 2])[:n], "choice": torch.tensor([0, 1, 2, 1, 0])[:n]}


@pytest.mark.parametrize("kind", ["crec", "orec", "controller"])
def test_each_format_round_trips(tmp_path, kind):
    rows = _rows()
    p = mcrec.write_rows(tmp_path / f"{kind}.tsv", kind, rows, max_seq_len=6)
    back = mcrec.read_rows(p, kind, 6)
    torch.testing.assert_close(back["seq"], rows["seq"])
    if kind == "controller":
        assert back["choice"].tolist() == rows["choice"].tolist() and "replay_loss" not in back
        assert len(p.read_text().splitlines()[0].split("\t")) == 2  # the release's two fields
        losses = torch.tensor([[0.5, 0.25, 0.125], [1.0, 2.0, 0.0], [0.3, 0.3, 0.3], [0.7, 0.1, 0.2], [0.0, 0.0, 0.0]])
        p2 = mcrec.write_rows(tmp_path / "with_losses.tsv", kind, {**rows, "replay_loss": losses}, max_seq_len=6)
        torch.testing.assert_close(mcrec.read_rows(p2, kind, 6)["replay_loss"], losses)
        return
    assert back["item_id"].tolist() == rows["item_id"].tolist() and back["label"].tolist() == rows["label"].tolist()
    torch.testing.assert_close(back["session_seq"], rows["session_seq"])
    assert back["request"].tolist() == rows["request"].tolist()
    if kind == "orec":  # the prior stays a float (the release cast it to an integer: all 0)
        torch.testing.assert_close(back["prior_score"], rows["prior_score"], rtol=1e-5, atol=0)
        assert 0 < float(back["prior_score"][0]) < 1
    again = mcrec.write_rows(tmp_path / f"{kind}2.tsv", kind, back, max_seq_len=6)
    assert again.read_bytes() == p.read_bytes()


def test_release_rows_read_any_padding_and_keep_the_latest(tmp_path):
    p = tmp_path / "orec.tsv"
    hist50 = ",".join(["0"] * 47 + ["4", "5", "6"])
    p.write_text(f"{hist50}\t7\t0.25\t1\n" "1,2,3,4,5,0,0\t8\t0.75\t0\n" "\t9\t0.5\t0\n")
    r = mcrec.read_rows(p, "orec", 4)
    assert r["seq"].tolist() == [[0, 4, 5, 6], [2, 3, 4, 5], [0, 0, 0, 0]] and r["seq_len"].tolist() == [3, 4, 0]
    # release rows carry no session history or request: the history itself, one request per row
    assert torch.equal(r["session_seq"], r["seq"]) and r["request"].tolist() == [0, 1, 2]
    assert r["prior_score"].tolist() == [0.25, 0.75, 0.5]
    w = mcrec.write_rows(tmp_path / "out.tsv", "crec", {"seq": r["seq"], "item_id": r["item_id"], "label": r["label"]},
                         max_seq_len=50)
    first = w.read_text().splitlines()[0].split("\t")
    assert len(first) == 3 and first[0].split(",") == ["0"] * 47 + ["4", "5", "6"]  # 50 long, 0-padded


@pytest.mark.parametrize("kind,line,field,needle", [
    ("crec", "1,2\t0\t1", "cand", "integer >= 1"),
    ("crec", "1,2\t3\tyes", "label", "0 or 1"),
    ("crec", "1,x\t3\t1", "hist_seq", "item 2"),
    ("crec", "1,2\t3", None, "expected 3"),
    ("crec", "1,2\t3\t1\t1,2\tq", "request", "integer"),
    ("orec", "1,2\t3\t1.5\t1", "prior_score", "[0, 1]"),
    ("orec", "1,2\t3\tabc\t1", "prior_score", "number"),
    ("controller", "1,2\t3", "choice", "0..2"),
    ("controller", "1,2\t1\t0.5\t-1\t0.2", "loss_1", "log-loss >= 0"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, kind, line, field, needle):
    p = tmp_path / "f.tsv"
    good = {"crec": "1,2\t3\t1", "orec": "1,2\t3\t0.5\t1", "controller": "1,2\t0"}[kind]
    p.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(DataError) as e:
        mcrec.read_rows(p, kind, 5)
    assert e.value.line == 3 and e.value.field == field and needle in str(e.value)
    assert str(e.value).startswith(f"{p}:3:")


def test_a_failed_write_leaves_nothing(tmp_path):
    rows = _rows()
    del rows["label"]
    with pytest.raises(KeyError):
        mcrec.write_rows(tmp_path / "x.tsv", "crec", rows)
    assert list(tmp_path.iterdir()) == []


def test_sessions_start_after_a_gap_and_are_cut_every_n_items():
    ptr = torch.tensor([0, 0, 6, 8])  # user 1: 6 items, user 2: 2 items
    t = torch.tensor([0., 10, 20, 5000, 5010, 5020, 0, 10], dtype=torch.float64)
    assert mcrec.session_starts(ptr, t, gap=100, max_items=10).tolist() == [0, 0, 0, 3, 3, 3, 6, 6]
    assert mcrec.session_starts(ptr, t, gap=100, max_items=2).tolist() == [0, 0, 2, 3, 3, 5, 6, 6]


def test_requests_from_interactions_by_time(tmp_path):
    from recstudio_edge.config import CONFIG_DIR, load_yaml, merge
    from recstudio_edge.data.loading import load_interactions
    from recstudio_edge.data.preprocess import VALID

    mcrec.write_atomic(tmp_path, "gen", num_users=30)
    cfg = merge(load_yaml(CONFIG_DIR / "base.yaml")["data"],
                {"split": {"mode": "user_entry", "ratios": [0.7, 0.15, 0.15], "order": "time"}, "max_seq_len": 12,
                 "exposures": 2, "eval_neg_per_pos": 1})
    cfg.update(name="gen", format="auto", cache=False)
    data = load_interactions(tmp_path, cfg, 0, False)
    src = mcrec.from_interactions(data, cfg, 0)
    st = src.stage_rows("valid")
    r = st.rows
    local, first = torch.unique_consecutive(r["request"], return_inverse=True)
    assert st.num_requests == local.numel() and r["request"].tolist() == sorted(r["request"].tolist())
    counts = torch.bincount(first)
    assert counts.max() <= 4 and bool(((r["label"] == 1).sum() * 2) == r["label"].numel())  # <= K positives + 1 neg each
    ptr, items = data.user_ptr(torch.ones_like(data.split, dtype=torch.bool))
    vmask = data.split == VALID
    for q in range(3):  # a request's history: every item of the user before its first exposure by time
        rows = torch.nonzero(first == q).flatten()
        u = int(r["user_id"][rows[0]])
        mine = items[ptr[u]:ptr[u + 1]]
        pos = r["item_id"][rows][r["label"][rows] == 1]
        in_valid = vmask[ptr[u]:ptr[u + 1]]
        at = int(torch.nonzero((mine == pos[0]) & in_valid).min())  # the request's first exposure
        h = r["seq"][rows[0]]
        assert h[h != 0].tolist() == mine[:at].tolist()[-12:]
        s = r["session_seq"][rows[0]]  # the session's history: the user's items before some earlier point
        s = s[s != 0].tolist()
        assert any(mine[:k].tolist()[-12:] == s for k in range(at + 1))
    neg = r["label"] == 0
    known = set((data.user * data.num_items + data.item).tolist())
    assert not any(k in known for k in (r["user_id"][neg] * data.num_items + r["item_id"][neg]).tolist())
    b = src.train("ctr")[torch.arange(8)]
    assert {"item_id", "seq", "session_seq", "label", "user_id"} <= set(b)


def test_the_committed_sample_reads_back():
    src = mcrec.open_source(ROOT / "datasets" / "sample-mcrec", {"max_seq_len": 8})
    assert src.stages() == {"train", "valid", "test"} and src.orec_train is not None
    assert 0 < float(src.orec_train["prior_score"].min()) < float(src.orec_train["prior_score"].max()) < 1
    test = src.stage_rows("test")
    assert test.num_requests >= 5 and 0 < float(test.rows["label"].mean()) < 1
