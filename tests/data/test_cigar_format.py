"""CIGAR's 29-column format: round trips, configurable columns, named-line errors, the committed
sample, and the rows built from interactions (labels, histories by time, cosine neighbours)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recstudio_edge.data.errors import DataError
from recstudio_edge.data.formats import cigar

ROOT = Path(__file__).resolve().parents[2]


def _rows(**kw):
    return cigar.generate(**{**cigar.GENERATOR, "num_users": 12, "num_items": 20, "rows_per_user": 3,
                             "history": 4, "num_neighbors": 5, **kw})["rows"]


def _same(a: cigar.Samples, b: cigar.Samples):
    for k in ("user_id", "user_feat", "item_feat", "seq_feat", "seq_len", "neighbors", "label"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_write_read_round_trip_is_exact(tmp_path):
    s = cigar.pack(_rows(), max_seq_len=100, max_neighbors=10)
    p = cigar.write_samples(tmp_path / "train.txt", s)
    lines = p.read_text().splitlines()
    assert len(lines) == len(s) and all(len(ln.split("\t")) == 29 for ln in lines)
    back = cigar.read_samples(p)
    _same(s, back)
    # ids shift by one both ways: raw 0 is a real id (1) in the tensors, not padding
    assert int(back.user_id.min()) == 1 and lines[0].split("\t")[0] == str(int(s.user_id[0]) - 1)
    cigar.write_samples(tmp_path / "again.txt", back)
    assert (tmp_path / "again.txt").read_bytes() == p.read_bytes()
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary name was renamed


def test_a_custom_column_layout_round_trips(tmp_path):
    cfg = {"column_len": 16, "uid_graph_label_col_id": "15,3,0", "user_fea_col_id": "1,2,4,5,6,7,8,9",
           "item_fea_col_id": [10, 11, 12, 13, 14], "seq_col_id": "14,13,12,11,10"}
    with pytest.raises(ValueError, match="named twice"):
        cigar.Layout.from_config(cfg)
    cfg["seq_col_id"] = "16,17,18,19,20"
    with pytest.raises(ValueError, match="outside data.column_len=16"):
        cigar.Layout.from_config(cfg)
    cfg["column_len"] = 21
    s = cigar.pack(_rows(), 100, 10)
    p = cigar.write_samples(tmp_path / "x.txt", s, cfg)
    first = p.read_text().splitlines()[0].split("\t")
    assert len(first) == 21 and first[15] == str(int(s.user_id[0]) - 1) and first[0] in ("0", "1")
    _same(s, cigar.read_samples(p, cfg))
    with pytest.raises(DataError, match=r"x.txt:1: expected 29 tab-separated columns, got 21"):
        cigar.read_samples(p)  # the default layout does not read it


def test_sequences_keep_the_last_and_neighbours_the_first(tmp_path):
    row = (4, [0] * 8, [7, 1, 2, 3, 4], [[10, 11, 12, 13]] * 5, [9, 8, 7, 6], 1)
    s = cigar.pack([row], max_seq_len=3, max_neighbors=2)
    assert s.seq_feat[0, 0].tolist() == [12, 13, 14] and int(s.seq_len[0]) == 3  # last 3, + 1
    assert s.neighbors[0].tolist() == [10, 9]  # first 2, + 1
    short = cigar.pack([(*row[:3], [[5]] * 5, [], 0)], 4, 3)
    assert short.seq_feat[0, 2].tolist() == [0, 0, 0, 6] and short.neighbors[0].tolist() == [0, 0, 0]
    p = cigar.write_samples(tmp_path / "t.txt", short)
    assert p.read_text().split("\t")[9] == ""  # no neighbours: an empty list


@pytest.mark.parametrize("col,text,want", [
    (None, "1\t2", r"bad.txt:2: expected 29 tab-separated columns, got 2"),
    (3, "x", r"bad.txt:2: field 'user feature \(column 3\)': expected a non-negative integer, got 'x'"),
    (21, "-4", r"bad.txt:2: field 'item feature \(column 21\)': expected a non-negative integer"),
    (9, "3,a", r"bad.txt:2: field 'neighbor_ids \(column 9\)': entry 2 is not a non-negative integer: 'a'"),
    (14, "1,2,3", r"bad.txt:2: field 'sequence \(column 13\)': the 5 sequences differ in length"),
    (28, "2", r"bad.txt:2: field 'label \(column 28\)': expected 0 or 1, got '2'"),
    (0, "", r"bad.txt:2: field 'user_id \(column 0\)'"),
])
def test_malformed_rows_name_file_line_and_field(tmp_path, col, text, want):
    good = cigar.format_lines(cigar.pack(_rows()[:2], 100, 10).batch(torch.arange(2)), cigar.Layout.from_config({}))
    bad = text if col is None else "\t".join(text if i == col else c for i, c in enumerate(good[1].split("\t")))
    p = tmp_path / "bad.txt"
    p.write_text(good[0] + "\n" + bad + "\n")
    with pytest.raises(DataError, match=want):
        cigar.read_samples(p)
    skipped = cigar.read_samples(p, on_bad_line="skip")
    assert len(skipped) == 1 and skipped.skipped == 1


def test_nothing_half_written_and_missing_files(tmp_path):
    s = cigar.pack(_rows(), 100, 10)
    batch = s.batch(torch.arange(len(s)))
    del batch["label"]
    with pytest.raises(KeyError):
        cigar.write_samples(tmp_path / "out.txt", batch)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="file not found"):
        cigar.read_samples(tmp_path / "none.txt")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt: no samples"):
        cigar.read_samples(tmp_path / "empty.txt")


def test_the_committed_sample_reads_as_a_source():
    from recstudio_edge.config import CONFIG_DIR, load_yaml

    cfg = load_yaml(CONFIG_DIR / "data" / "sample-cigar.yaml")["data"]
    src = cigar.open_source(ROOT / "datasets" / "sample-cigar", cfg)
    assert src.stages() == {"train", "valid", "test"}
    b = src.eval("cigar", "test")[torch.arange(4)]
    assert b["user_feat"].shape == (4, 8) and b["item_feat"].shape == (4, 5) and b["seq_feat"].shape[:2] == (4, 5)
    args = src.model_args()
    assert len(args["user_vocab"]) == 8 and len(args["item_vocab"]) == 5 and args["num_neighbors"] == 10
    with pytest.raises(DataError, match="'cigar' data kind; this model trains on 'ctr'"):
        src.train("ctr")
    # --task=infer --input: an id the training data never had is an error naming the line
    lines = (ROOT / "datasets" / "sample-cigar" / "test.txt").read_text().splitlines()
    cols = lines[1].split("\t")
    cols[20] = "999"
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "in.txt"
        p.write_text(lines[0] + "\n" + "\t".join(cols) + "\n")
        with pytest.raises(DataError, match=r"in.txt:2: field 'item feature 1': id 999 is outside"):
            src.read_input(p)


def test_neighbours_are_the_most_similar_users_by_cosine():
    rng = np.random.default_rng(0)
    n_users, n_items = 30, 25
    lists = [sorted(rng.choice(n_items - 1, rng.integers(1, 8), replace=False) + 1) for _ in range(n_users)]
    lists[5] = []  # a user without training items: no neighbours, nobody's neighbour
    lists[7] = list(lists[8])  # identical to 8: the most similar
    ptr = torch.tensor(np.cumsum([0, 0] + [len(x) for x in lists]))
    items = torch.tensor([i for x in lists for i in x], dtype=torch.long)
    nb = cigar.neighbours(ptr, items, n_items, k=4, chunk=7)
    dense = np.zeros((n_users + 1, n_items))
    for u, x in enumerate(lists, start=1):
        dense[u, x] = 1
    norm = np.linalg.norm(dense, axis=1, keepdims=True)
    cos = (dense / np.maximum(norm, 1e-12)) @ (dense / np.maximum(norm, 1e-12)).T
    np.fill_diagonal(cos, 0)
    for u in range(1, n_users + 1):
        want = sorted((v for v in range(1, n_users + 1) if cos[u, v] > 1e-9), key=lambda v: (-round(cos[u, v], 6), v))[:4]
        assert nb[u][nb[u] != 0].tolist() == want, u
    assert nb[6].tolist() == [0, 0, 0, 0] and 6 not in nb.flatten().tolist()
    assert int(nb[8][0]) == 9 and int(nb[9][0]) == 8


def test_rows_from_interactions_label_history_and_features(tmp_path):
    from recstudio_edge.data.loading import load_interactions
    from recstudio_edge.data.preprocess import TRAIN, VALID

    cfg = {"name": "synthetic", "format": "auto", "cache": False, "max_seq_len": 6,
           "generator": {"num_users": 40, "num_items": 30, "mean_per_user": 12, "min_per_user": 6},
           "split": {"mode": "user_entry", "ratios": [0.8, 0.1, 0.1], "order": "time"}}
    data = load_interactions(tmp_path, cfg, 0, False)
    src = cigar.from_interactions(data, {**cfg, "sampled_negatives": False}, 0)
    tr = src.train("cigar")
    b = tr[torch.arange(len(tr))]
    mask = data.split == TRAIN
    assert len(tr) == int(mask.sum())
    assert torch.equal(b["label"], (data.rating[mask] >= 4).float())  # label = rating >= 4
    # a training row's history: the user's earlier training items (the last 6), oldest first
    r = 5
    u = int(b["user_id"][r])
    mine = torch.nonzero(mask & (data.user == u)).flatten()
    k = int(torch.nonzero(mine == torch.nonzero(mask).flatten()[r]).flatten()[0])
    want = data.item[mine[:k]][-6:].tolist()
    got = b["seq_feat"][r, 0]
    assert got[got != 0].tolist() == want and int(b["seq_len"][r]) == len(want)
    # a valid row's history: every training item of its user (the last 6)
    v = src.eval("cigar", "valid")[torch.arange(3)]
    u = int(v["user_id"][0])
    hist = data.item[mask & (data.user == u)][-6:].tolist()
    assert v["seq_feat"][0, 0][v["seq_feat"][0, 0] != 0].tolist() == hist
    assert len(src.eval("cigar", "valid")) == int((data.split == VALID).sum())
    # the synthetic data has no .user file: hashed user buckets; item genre = its category token
    assert b["user_feat"].shape[1] == 4 and int(b["user_feat"].min()) >= 1
    assert int(b["item_feat"][:, 1].max()) <= len(set(data.item_attrs["category"][1:]))
    # data.sampled_negatives (the default of the format): never-touched items join as unclicked rows
    with_neg = cigar.from_interactions(data, {**cfg, "neg_per_pos": 1, "eval_neg_per_pos": 2}, 0)
    assert len(with_neg.eval("cigar", "valid")) == 3 * len(src.eval("cigar", "valid"))


def test_user_and_item_attributes_become_features():
    attrs = {"age": ["", "18", "25", "18"], "gender": ["", "F", "M", "M"], "occupation": ["", "3", "3", "7"],
             "zip_code": ["", "48067", "48111", "90210"]}
    data = SimpleNamespace(num_users=4, user_attrs=attrs, num_items=3,
                           item_attrs={"genre": ["", "Comedy Drama", "Drama"], "release_year": ["", "1995", "1995"]},
                           item_counts=lambda m: torch.tensor([0, 5, 1]))
    uf = cigar.user_features(data)
    assert uf[1:].tolist() == [[1, 1, 1, 1], [2, 2, 1, 1], [1, 2, 2, 2]]  # zip prefix "48" shared, "90" not
    assert uf[0].tolist() == [0, 0, 0, 0]
    itf = cigar.item_features(data, None)
    assert itf.tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 1]]  # first genre: Comedy, Drama
    data.user_attrs = {}
    hashed = cigar.user_features(data)
    assert hashed.shape == (4, 4) and int(hashed[1:].min()) >= 1 and int(hashed.max()) <= cigar.HASH_BUCKETS
