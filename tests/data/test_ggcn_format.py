"""GGCN's GraphSAGE files: round trip, the errors that name the file and the node or edge at fault,
the item graph of interactions, and the batches (components, k hops, ego graphs)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recstudio_edge.data.errors import DataError
from recstudio_edge.data.formats import ggcn
from recstudio_edge.data.preprocess import Interactions

SMALL = dict(graphs=5, nodes=12, classes=4, features=3, degree=3.0, val_graphs=1, test_graphs=2, seed=3)


@pytest.fixture()
def files(tmp_path):
    g = ggcn.generate(**SMALL)
    return g, ggcn.write_graphsage(tmp_path / "toy", g)


def test_round_trip_and_the_stages_come_from_the_files(files, tmp_path):
    g, prefix = files
    h = ggcn.read_graphsage(tmp_path)  # the folder's one *-G.json
    for name in ("x", "y", "edge_index", "stage", "graph"):
        assert torch.equal(getattr(h, name), getattr(g, name)), name
    assert h.names == g.names and h.classes == g.classes
    # one validation graph because the files say so (the release hard-coded two)
    assert set(h.graph[h.stage == 1].tolist()) == {2} and sorted(set(h.graph[h.stage == 2].tolist())) == [3, 4]
    assert not list(tmp_path.glob(".*tmp*"))  # written to temporary names, renamed
    # without -feats.npy: identity features; single-label class indices: one-hot
    Path(f"{prefix}-feats.npy").unlink()
    cm = json.loads(Path(f"{prefix}-class_map.json").read_text())
    Path(f"{prefix}-class_map.json").write_text(json.dumps({k: int(np.argmax(v)) for k, v in cm.items()}))
    h = ggcn.read_graphsage(prefix)
    assert torch.equal(h.x, torch.eye(g.num_nodes)) and torch.equal(h.y.sum(1), torch.ones(g.num_nodes))


def _edit(path, fn):
    data = json.loads(Path(path).read_text())
    fn(data)
    Path(path).write_text(json.dumps(data))


def test_errors_name_the_file_and_the_node_or_edge(files):
    g, prefix = files
    G, ids, cls, feats = (f"{prefix}{s}" for s in ("-G.json", "-id_map.json", "-class_map.json", "-feats.npy"))
    _edit(G, lambda d: d["links"].append({"source": 0, "target": 999}))
    with pytest.raises(DataError) as e:
        ggcn.read_graphsage(prefix)
    assert e.value.path == G and e.value.field == f"links[{len(json.loads(Path(G).read_text())['links']) - 1}]"
    assert "node 999 is not among the graph's nodes" in str(e.value)
    _edit(G, lambda d: d["links"].pop())
    _edit(cls, lambda d: d.pop("5"))
    with pytest.raises(DataError, match="the node has no class") as e:
        ggcn.read_graphsage(prefix)
    assert e.value.path == cls and e.value.field == "node 5"
    _edit(cls, lambda d: d.update({"5": [0, 1]}))
    with pytest.raises(DataError, match="expected a list of 4 zeros and ones") as e:
        ggcn.read_graphsage(prefix)
    _edit(cls, lambda d: d.update({"5": [0, 1, 0, 0]}))
    _edit(ids, lambda d: d.pop("7"))
    with pytest.raises(DataError, match="has no row index") as e:
        ggcn.read_graphsage(prefix)
    assert e.value.path == ids and e.value.field == "node 7"
    _edit(ids, lambda d: d.update({"7": 7}))
    np.save(feats, np.zeros((g.num_nodes - 1, 3), dtype=np.float32))
    with pytest.raises(DataError, match=f"{g.num_nodes - 1} feature rows .* for {g.num_nodes} nodes") as e:
        ggcn.read_graphsage(prefix)
    assert e.value.path == feats
    np.save(feats, g.x.numpy())
    _edit(G, lambda d: d["nodes"][3].update(val=True, test=True))
    with pytest.raises(DataError, match="flagged both val and test") as e:
        ggcn.read_graphsage(prefix)
    assert e.value.field == "nodes[3]"
    Path(G).write_text('{"nodes": [\n{"id": 0},\n]}')
    with pytest.raises(DataError, match="not valid JSON") as e:
        ggcn.read_graphsage(prefix)
    assert e.value.line == 3


def _interactions(pairs, genres, years):
    users = torch.tensor([u for u, _ in pairs])
    items = torch.tensor([i for _, i in pairs])
    n_items = len(genres) + 1
    return Interactions(num_users=int(users.max()) + 1, num_items=n_items, user=users, item=items,
                        time=torch.zeros(len(pairs), dtype=torch.float64), split=torch.zeros(len(pairs), dtype=torch.uint8),
                        user_tokens=["[PAD]"] + [f"u{u}" for u in range(1, int(users.max()) + 1)],
                        item_tokens=["[PAD]"] + [f"m{i}" for i in range(1, n_items)],
                        rating=torch.full((len(pairs),), 4.0),
                        item_attrs={"genre": [""] + genres, "release_year": [""] + years})


def test_the_item_graph_of_interactions():
    # movies 1, 2, 3 co-rated by users 1-3; movie 4 by users 1, 4 only with 1; movie 5 by nobody else
    pairs = [(u, i) for u in (1, 2, 3) for i in (1, 2, 3)] + [(1, 4), (4, 4), (4, 5)]
    data = _interactions(pairs, ["Comedy", "Comedy Drama", "Drama", "Horror", "Drama"],
                         ["1990", "1995", "2001", "1999", ""])
    g = ggcn.build_item_graph(data, {"graph": {"min_common": 2, "top_k": 5, "split": [0.6, 0.2, 0.2]}}, seed=0)
    assert g.num_nodes == 5 and g.classes == ["Comedy", "Drama", "Horror"]
    assert g.edge_index.t().tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]  # node = movie id - 1
    assert g.y.tolist()[1] == [1.0, 1.0, 0.0] and g.node_id.tolist() == [1, 2, 3, 4, 5]
    assert torch.bincount(g.stage, minlength=3).tolist() == [3, 1, 1]
    # year z, decades 1990 / 2000 one-hot, log popularity, mean rating; the training neighbours' genre shares
    # (3 genres) and their number
    assert g.x.shape == (5, 1 + 2 + 1 + 1 + 3 + 1)
    known = [j for j in (1, 2) if int(g.stage[j]) == 0]  # node 0's neighbours with training labels
    want = g.y[known].mean(0) if known else torch.zeros(3)
    torch.testing.assert_close(g.x[0, 5:8], want)
    assert g.x[3, 5:8].tolist() == g.x[4, 5:8].tolist() == [0.0, 0.0, 0.0]  # no edges: nothing known around them
    # a node's own label never enters its features: another genre for movie 1 leaves its row as it was
    other = ggcn.build_item_graph(_interactions(pairs, ["Horror", "Comedy Drama", "Drama", "Horror", "Drama"],
                                                ["1990", "1995", "2001", "1999", ""]),
                                  {"graph": {"min_common": 2, "top_k": 5, "split": [0.6, 0.2, 0.2]}}, seed=0)
    assert torch.equal(other.x[0], g.x[0])
    plain = ggcn.build_item_graph(data, {"graph": {"min_common": 2, "top_k": 5, "label_features": False}}, seed=0)
    assert plain.x.shape == (5, 5)
    low = ggcn.build_item_graph(data, {"graph": {"min_common": 1, "top_k": 1, "rank": "count"}}, seed=0)
    # top-1 per node by co-raters, kept when either end keeps it: 1-2 (3 users), 2-1, 3-1 (ties by index), 4-1, 5-4
    assert {tuple(e) for e in low.edge_index.t().tolist() if e[0] < e[1]} == {(0, 1), (0, 2), (0, 3), (3, 4)}
    # by cosine: movie 4 (raters 1, 4) is closer to movie 5 (rater 4: 1 / sqrt(2)) than to movie 1 (1 / sqrt(6))
    cos = ggcn.build_item_graph(data, {"graph": {"min_common": 1, "top_k": 1}}, seed=0)
    assert {tuple(e) for e in cos.edge_index.t().tolist() if e[0] < e[1]} == {(0, 1), (0, 2), (3, 4)}
    with pytest.raises(DataError, match="no label column"):
        ggcn.build_item_graph(data, {"graph": {"label_attr": "mood"}})


def test_batches_carry_the_graph_with_the_full_graphs_weights(files):
    g, prefix = files
    src = ggcn.open_source(prefix.parent, {})
    assert src.model_args() == {"num_features": 3, "num_classes": 4} and src.stages() == {"train", "valid", "test"}
    ds = src.eval("graph", "test")
    b = ds[torch.arange(len(ds))]
    assert torch.equal(b["node_id"], g.stage_nodes("test")) and b["label"].shape == (24, 4)
    assert torch.equal(b["x"][b["target"]], g.x[g.stage_nodes("test")])
    ei, w = g.normalized()
    full = {(a, c): x for (a, c), x in zip(ei.t().tolist(), w.tolist())}
    ids = torch.nonzero(torch.isin(g.components(), g.components()[b["node_id"]])).flatten()
    for (a, c), x in zip(b["edge_index"].t().tolist(), b["edge_weight"].tolist()):
        assert full[(int(ids[a]), int(ids[c]))] == x
    one = ggcn.batch_of(g, torch.tensor([0]), hops=1)
    nbrs = set(g.edge_index[1][g.edge_index[0] == 0].tolist()) | {0}
    assert one["x"].shape[0] == len(nbrs)
    with pytest.raises(DataError, match="holds a graph; this model trains on 'ctr'"):
        src.train("ctr")
    new = src.read_input(prefix)  # --task=infer --input: every node of a graph file
    assert len(new) == g.num_nodes and torch.equal(new[torch.arange(3)]["node_id"], torch.arange(3))


def test_ego_graphs_and_their_own_normalisation():
    # a path 0-1-2-3: node 0's 1-hop ego graph is {0, 1}
    g = ggcn.Graph(torch.eye(4), torch.zeros(4, 1), ggcn.undirected(np.array([[0, 1, 2], [1, 2, 3]]), 4),
                   torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.arange(4))
    full = ggcn.ego_batch(g, [0, 2], 1, "full")
    ego = ggcn.ego_batch(g, [0, 2], 1, "ego")
    assert full["x"].shape[0] == 2 + 3 and full["target"].tolist() == [0, 3]
    w = {tuple(e): x for e, x in zip(full["edge_index"].t().tolist(), full["edge_weight"].tolist())}
    assert w[(1, 0)] == pytest.approx(1 / (2 ** 0.5 * 3 ** 0.5))  # degrees in the full graph: 2 and 3 (self loops)
    w = {tuple(e): x for e, x in zip(ego["edge_index"].t().tolist(), ego["edge_weight"].tolist())}
    assert w[(1, 0)] == pytest.approx(1 / 2)  # in the ego graph {0, 1}: both 2


def test_the_sample_and_the_command_line(tmp_path, capsys):
    assert ggcn.main(["generate", "--out", str(tmp_path), "--graphs", "4", "--nodes", "10", "--classes", "3"]) == 0
    assert ggcn.main(["check", str(tmp_path / "gen")]) == 0
    assert "nodes 40" in capsys.readouterr().out
    Path(tmp_path / "gen-id_map.json").write_text("{}")
    assert ggcn.main(["check", str(tmp_path / "gen")]) == 2
    assert "gen-id_map.json: field 'node 0': the graph's node has no row index" in capsys.readouterr().err
    d = ggcn.write_sample(tmp_path)
    assert all(f.stat().st_size < 8192 for f in d.iterdir()) and ggcn.read_graphsage(d).num_nodes == 80


def test_the_converter_writes_the_item_graph_of_a_dataset(tmp_path, capsys):
    import shutil

    root = Path(__file__).resolve().parents[2] / "datasets"
    shutil.copytree(root / "sample-atomic", tmp_path / "data" / "sample-atomic")
    assert ggcn.main(["convert", "-d", "sample-atomic", "--data_dir", str(tmp_path / "data"), "--out",
                      str(tmp_path / "out"), "--min_common", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    g = ggcn.read_graphsage(tmp_path / "out" / "sample-atomic")
    from recstudio_edge.data.loading import load_interactions

    cfg = ggcn._data_config("sample-atomic", {"min_common": 1})
    want = ggcn.build_item_graph(load_interactions(tmp_path / "data", cfg, 2024, False), cfg, 2024)
    assert torch.equal(g.edge_index, want.edge_index) and torch.equal(g.y, want.y) and torch.equal(g.x, want.x)
    assert g.names == want.names and torch.equal(g.stage, want.stage)
