"""GGCN's graph format (GraphSAGE files): read, write, generate, convert, and train from it
(``data.format: ggcn``).

Files of one dataset, all named ``<prefix>-...`` in one folder (GraphSAGE / PPI layout)::

    <prefix>-G.json         networkx node-link graph: {"nodes": [{"id": 7, "val": false, "test": false}, ...],
                            "links": [{"source": 7, "target": 9}, ...]}; undirected; several graphs
                            (PPI) are the graph's connected components, an optional node key "graph"
                            names the graph a node belongs to
    <prefix>-id_map.json    {"<node id>": row index 0..N-1}: the row of the node in the feature matrix
    <prefix>-class_map.json {"<node id>": [0, 1, 0, ...] (multi-label, C entries) | class index (single label)}
    <prefix>-feats.npy      optional float [N, F] features, row = id_map index (identity features without it)
    <prefix>-walks.txt      optional (GraphSAGE's random walks): not read

Stages are the nodes' flags: ``test: true`` -> test, ``val: true`` -> valid, neither -> train. The
graph is read with networkx (``node_link_graph``) after every node, link, id and class has been
checked; a malformed or inconsistent file is a ``DataError`` naming the file and the node or edge at
fault (``ppi-G.json: field 'links[17]': edge 3 -> 99: node 99 is not among the graph's nodes``).
``write_graphsage`` writes the files, each to a temporary name renamed when complete.

In memory a dataset is a ``Graph``: every graph as one disjoint union, ``x [N, F]``, ``y [N, C]`` (0/1
floats), ``edge_index [2, E]`` (both directions, no self loops), ``stage [N]`` (0 train, 1 valid,
2 test), ``graph [N]``, ``node_id [N]`` (the id a prediction is written with) and ``names`` (the
files' node ids). Its normalised adjacency ``A_hat = D^-1/2 (A + I) D^-1/2`` is computed once on the
whole graph (``Graph.normalized()``, torch_geometric's ``gcn_norm``).

Batches (``GraphSource``, what ``RecDataModule`` serves to GGCN): the rows of a stage are its nodes;
a batch of rows is ``node_id [B]``, ``label [B, C]``, ``target [B]`` (the rows' positions in the
batch's nodes) and the graph they need, ``x [n, F]``, ``edge_index [2, e]``, ``edge_weight [e]``: by
default (``data.hops: 0``) the whole connected components holding the rows (the full graph, the
cloud's view), with ``data.hops: k`` their k-hop neighbourhood; weights are always the full graph's
``A_hat``, so a k-hop batch with k >= the model's layers gives the rows exactly the full graph's
outputs. ``ego_batch`` builds the device's view instead: one k-hop ego graph per node, disjoint,
normalised with the full graph's weights (``norm="full"``, sent by the cloud) or on the ego graph
alone (``norm="ego"``, what a device computes from what it holds).

Sources:

- ``open_source(folder, cfg)``: the files of ``folder`` (``data.prefix``: the prefix, found when the
  folder holds one ``*-G.json``);
- ``from_interactions(data, cfg, seed)``: a graph of an interaction dataset (``-d=ml-1m-graph``):
  the items (movies) are nodes, two movies share an edge when at least ``data.graph.min_common``
  users rated both, each node keeping its ``data.graph.top_k`` strongest links (kept when either
  end keeps it), strength = cosine over raters (``co-raters / sqrt(raters_i raters_j)``,
  ``data.graph.rank: cosine``; ``count``: co-raters, which links every movie to the blockbusters:
  on ml-100k 64% of cosine edges join movies sharing a genre, 53% by count; on ml-1m 90%, and the
  vote of a test movie's training neighbours' genres reaches test micro-F1 0.72); labels are the
  item's genres (``.item`` column ``genre`` / ``class``, or the synthetic ``category``;
  ``data.graph.label_attr`` names another), multi-label; features: release year (standardised, and
  its decade one-hot), log popularity and mean rating (standardised) and, with
  ``data.graph.rater_features`` (default), who rates it: the share of its raters of each gender,
  age group and occupation (``.user`` columns; a numeric age: the raters' mean) and, with
  ``data.graph.label_features`` (default), what its neighbours with training labels say (the
  share of them carrying each genre, and their number: ``label_features``; a node's own label
  never enters its features);
  stages drawn per node with ``data.graph.split`` ratios (seeded);
- ``generate(...)``: PPI-like data with planted structure: several graphs, nodes in communities
  (stochastic block model with a heavy-tailed degree propensity), each community with its own
  label profile (C multi-label classes, a few labels flipped); a node's features show its community
  only faintly, its neighbourhood shows it clearly, so a graph model beats a feature-only one;
  ``test_degree`` gives the test graphs another degree distribution (a shift);
- ``write_sample(out)``: ``out/sample-ggcn/`` (``generate`` at a few KB per file).

Command line::

    python -m recstudio_edge.data.formats.ggcn convert -d ml-1m-graph --data_dir DIR --out OUT [--prefix ml-1m]
        [--min_common 10] [--top_k 10] [--rank cosine|count] [--seed 2024]
    python -m recstudio_edge.data.formats.ggcn generate --out OUT [--graphs 12] [--nodes 120] [--classes 12]
        [--features 16] [--degree 6] [--test_degree D] [--seed 0]
    python -m recstudio_edge.data.formats.ggcn check FOLDER_OR_PREFIX
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from .fields import command_line, run_command

KINDS, HOLDS = ("graph",), "graph (GraphSAGE)"  # the data kind these files serve, and what they hold
STAGES = ("train", "valid", "test")
SUFFIXES = {"graph": "-G.json", "id_map": "-id_map.json", "class_map": "-class_map.json", "feats": "-feats.npy"}
# graph building from interactions (data.graph: ...); the same defaults as configs/model/GGCN.yaml
GRAPH_DEFAULTS = {"min_common": 5, "top_k": 10, "rank": "cosine", "split": [0.6, 0.2, 0.2], "label_attr": None,
                  "rater_features": True, "label_features": True}
RATER_ATTRS = ("gender", "age", "occupation")  # user columns summarised over a movie's raters
LABEL_ATTRS = ("genre", "class", "category")


# ---- the graph in memory -------------------------------------------------------------------------
@dataclass
class Graph:
    """Every graph of a dataset as one disjoint union (see the module docstring)."""

    x: torch.Tensor                 # [N, F] float32
    y: torch.Tensor                 # [N, C] float32 0/1
    edge_index: torch.Tensor        # [2, E] long, both directions, no self loops
    stage: torch.Tensor             # [N] long: 0 train, 1 valid, 2 test
    graph: torch.Tensor             # [N] long: graph of each node
    node_id: torch.Tensor           # [N] long: the id written with a prediction
    names: List[str] = field(default_factory=list)      # the files' node ids (id_map keys), row order
    classes: List[str] = field(default_factory=list)    # class names (genres) when known
    _norm: Optional[tuple] = field(default=None, repr=False)
    _comp: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.y.shape[1])

    def normalized(self) -> tuple:
        """``(edge_index [2, E + N], edge_weight)`` of ``A_hat = D^-1/2 (A + I) D^-1/2`` on the whole graph."""
        if self._norm is None:
            self._norm = gcn_normalize(self.edge_index, self.num_nodes)
        return self._norm

    def components(self) -> torch.Tensor:
        """Connected component of each node ``[N]``."""
        if self._comp is None:
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components

            n = self.num_nodes
            ei = self.edge_index.numpy()
            a = coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(n, n))
            self._comp = torch.from_numpy(connected_components(a, directed=False)[1].astype(np.int64))
        return self._comp

    def stage_nodes(self, stage: str) -> torch.Tensor:
        return torch.nonzero(self.stage == STAGES.index(stage)).flatten()

    def subset(self, keep: torch.Tensor) -> "Graph":
        """The graph induced on the nodes ``keep`` (bool [N]), ids and stages kept."""
        new = torch.full((self.num_nodes,), -1, dtype=torch.long)
        new[keep] = torch.arange(int(keep.sum()))
        e = keep[self.edge_index[0]] & keep[self.edge_index[1]]
        return Graph(self.x[keep], self.y[keep], new[self.edge_index[:, e]], self.stage[keep], self.graph[keep],
                     self.node_id[keep], [n for n, k in zip(self.names, keep.tolist()) if k], list(self.classes))


def gcn_normalize(edge_index: torch.Tensor, num_nodes: int, edge_weight: Optional[torch.Tensor] = None) -> tuple:
    """``(edge_index with self loops, weights)`` of ``D^-1/2 (A + I) D^-1/2`` (torch_geometric's ``gcn_norm``)."""
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    ei, w = gcn_norm(edge_index, edge_weight, num_nodes, improved=False, add_self_loops=True)
    return ei, w.float()


def undirected(edges: np.ndarray, n: int) -> torch.Tensor:
    """``[2, E]`` both directions, no self loops, no duplicates, sorted, from pairs ``[2, M]``."""
    e = np.asarray(edges, dtype=np.int64).reshape(2, -1)
    e = e[:, e[0] != e[1]]
    both = np.concatenate([e, e[::-1]], axis=1)
    key = np.unique(both[0] * n + both[1])
    return torch.from_numpy(np.stack([key // n, key % n]))


# ---- batches ---------------------------------------------------------------------------------------
def batch_of(g: Graph, nodes: torch.Tensor, hops: int = 0) -> Dict[str, torch.Tensor]:
    """The batch of target ``nodes``: their components (``hops`` 0) or k-hop neighbourhood, with the
    full graph's normalised weights (module docstring)."""
    ei, w = g.normalized()
    nodes = torch.as_tensor(nodes, dtype=torch.long)
    if int(hops) > 0:
        from torch_geometric.utils import k_hop_subgraph

        subset, sub_ei, mapping, emask = k_hop_subgraph(nodes, int(hops), ei, relabel_nodes=True,
                                                        num_nodes=g.num_nodes)
        sub_w = w[emask]
    else:
        comp = g.components()
        keep = torch.isin(comp, comp[nodes])
        subset = torch.nonzero(keep).flatten()
        new = torch.full((g.num_nodes,), -1, dtype=torch.long)
        new[subset] = torch.arange(subset.numel())
        emask = keep[ei[0]] & keep[ei[1]]
        sub_ei, sub_w, mapping = new[ei[:, emask]], w[emask], new[nodes]
    return {"node_id": g.node_id[nodes], "label": g.y[nodes], "target": mapping, "x": g.x[subset],
            "edge_index": sub_ei, "edge_weight": sub_w}


def ego_batch(g: Graph, nodes: Sequence[int], k: int, norm: str = "full", chunk: int = 256) -> Dict[str, torch.Tensor]:
    """One k-hop ego graph per node of ``nodes`` (the nodes within ``k`` hops and every edge among
    them), disjoint, as one batch (``target``: each centre): what a device holds for a node.
    ``norm="full"``: the full graph's ``A_hat`` weights (sent by the cloud), ``"ego"``: ``A_hat`` of the
    ego graph alone (computed on the device). Vectorised over ``chunk`` nodes at a time (a
    breadth-first search of all of them at once on the sparse adjacency)."""
    if norm not in ("full", "ego"):
        raise ValueError(f"norm must be 'full' or 'ego', got {norm!r}")
    idx = torch.as_tensor(nodes, dtype=torch.long).flatten()
    if idx.numel() > chunk:
        parts = [ego_batch(g, idx[s:s + chunk], k, norm, chunk) for s in range(0, idx.numel(), chunk)]
        out, offset = {key: [] for key in parts[0]}, 0
        for b in parts:
            for key in ("node_id", "label", "x", "edge_weight"):
                out[key].append(b[key])
            out["target"].append(b["target"] + offset)
            out["edge_index"].append(b["edge_index"] + offset)
            offset += b["x"].shape[0]
        return {key: torch.cat(v, 1 if key == "edge_index" else 0) for key, v in out.items()}
    ei, w = g.normalized()
    n, t = g.num_nodes, idx.numel()
    adj = torch.sparse_coo_tensor(ei, torch.ones(ei.shape[1]), (n, n), check_invariants=True).coalesce()
    reach = torch.zeros(t, n, dtype=torch.bool)
    reach[torch.arange(t), idx] = True
    for _ in range(int(k)):
        reach = reach | (torch.sparse.mm(adj, reach.t().float()).t() > 0)
    pos = torch.cumsum(reach.flatten().long(), 0) - 1  # (centre, node) -> its row in the batch
    _, node_v = torch.nonzero(reach, as_tuple=True)
    te, e = torch.nonzero(reach[:, ei[0]] & reach[:, ei[1]], as_tuple=True)  # edges inside each ego graph
    src, dst = pos[te * n + ei[0, e]], pos[te * n + ei[1, e]]
    if norm == "full":
        sub_ei, sub_w = torch.stack([src, dst]), w[e]
    else:  # the disjoint union's own degrees are each ego graph's
        plain = src != dst
        sub_ei, sub_w = gcn_normalize(torch.stack([src[plain], dst[plain]]), int(node_v.numel()))
    return {"node_id": g.node_id[idx], "label": g.y[idx], "target": pos[torch.arange(t) * n + idx],
            "x": g.x[node_v], "edge_index": sub_ei, "edge_weight": sub_w}


# ---- reading ---------------------------------------------------------------------------------------
def prefix_of(path: str | os.PathLike) -> Path:
    """``folder/ppi`` from ``folder`` (holding one ``*-G.json``), ``folder/ppi`` or ``folder/ppi-G.json``."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*" + SUFFIXES["graph"]))
        if len(found) != 1:
            raise DataError(str(p), message=(f"no *{SUFFIXES['graph']} file (a GraphSAGE graph)" if not found else
                                             f"several graphs ({', '.join(f.name for f in found)}): set data.prefix"))
        return p / found[0].name[: -len(SUFFIXES["graph"])]
    name = p.name
    for suf in SUFFIXES.values():
        if name.endswith(suf):
            return p.with_name(name[: -len(suf)])
    return p


def _load_json(path: Path):
    if not path.is_file():
        raise DataError(str(path), message="file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(str(path), e.lineno, None, f"not valid JSON: {e.msg} (column {e.colno})") from None


def _flag(v, path, where, key) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if v in (0, 1):
        return bool(v)
    raise DataError(str(path), None, where, f"'{key}' must be true or false, got {v!r}")


def read_graphsage(prefix: str | os.PathLike, feats: Optional[bool] = None) -> Graph:
    """Read ``<prefix>-G.json``, ``-id_map.json``, ``-class_map.json`` and (when present, or when
    ``feats`` is True) ``-feats.npy``; errors name the file and the node or edge at fault."""
    import networkx as nx

    prefix = prefix_of(prefix)
    gpath, ipath, cpath, fpath = (Path(f"{prefix}{SUFFIXES[k]}") for k in ("graph", "id_map", "class_map", "feats"))
    data = _load_json(gpath)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise DataError(str(gpath), message="expected a networkx node-link graph: an object with a 'nodes' list")
    links_key = "links" if "links" in data else "edges"
    links = data.get(links_key, [])
    if not isinstance(links, list):
        raise DataError(str(gpath), None, links_key, "expected a list of {source, target} objects")
    ids: Dict[str, int] = {}
    for i, node in enumerate(data["nodes"]):
        if not isinstance(node, dict) or "id" not in node:
            raise DataError(str(gpath), None, f"nodes[{i}]", f"a node is an object with an 'id', got {node!r:.60}")
        key = str(node["id"])
        if key in ids:
            raise DataError(str(gpath), None, f"nodes[{i}]", f"node {key} appears twice (first at nodes[{ids[key]}])")
        ids[key] = i
        for flag in ("val", "test"):
            _flag(node.get(flag), gpath, f"nodes[{i}]", flag)
        if _flag(node.get("val"), gpath, f"nodes[{i}]", "val") and _flag(node.get("test"), gpath, f"nodes[{i}]", "test"):
            raise DataError(str(gpath), None, f"nodes[{i}]", f"node {key} is flagged both val and test")
    if not ids:
        raise DataError(str(gpath), message="the graph has no nodes")
    for k, link in enumerate(links):
        if not isinstance(link, dict) or "source" not in link or "target" not in link:
            raise DataError(str(gpath), None, f"{links_key}[{k}]", f"an edge is an object with 'source' and 'target', "
                                                                   f"got {link!r:.60}")
        for end in ("source", "target"):
            if str(link[end]) not in ids:
                raise DataError(str(gpath), None, f"{links_key}[{k}]",
                                f"edge {link['source']} -> {link['target']}: node {link[end]} is not among the "
                                f"graph's nodes")
    G = nx.node_link_graph(data, directed=False, multigraph=False, edges=links_key)
    # id map: every node, indices 0..N-1 once each
    id_map = _load_json(ipath)
    if not isinstance(id_map, dict):
        raise DataError(str(ipath), message="expected an object {node id: row index}")
    n = len(ids)
    rows = np.full(n, -1, dtype=np.int64)  # node (file order) -> row
    for key, i in ids.items():
        if key not in id_map:
            raise DataError(str(ipath), None, f"node {key}", "the graph's node has no row index")
        r = id_map[key]
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < n:
            raise DataError(str(ipath), None, f"node {key}", f"row index must be an integer in 0..{n - 1}, got {r!r}")
        rows[i] = r
    if len(set(rows.tolist())) != n:
        dup = next(r for r in rows.tolist() if (rows == r).sum() > 1)
        who = [k for k, i in ids.items() if rows[i] == dup][:2]
        raise DataError(str(ipath), None, f"node {who[1]}", f"row index {dup} is also node {who[0]}'s")
    extra = [k for k in id_map if k not in ids]
    if extra:
        raise DataError(str(ipath), None, f"node {extra[0]}", "not a node of the graph")
    # classes
    class_map = _load_json(cpath)
    if not isinstance(class_map, dict):
        raise DataError(str(cpath), message="expected an object {node id: class list | class index}")
    width, multi = None, None
    for key in ids:
        if key not in class_map:
            raise DataError(str(cpath), None, f"node {key}", "the node has no class")
        c = class_map[key]
        is_list = isinstance(c, list)
        if multi is None:
            multi = is_list
        if is_list != multi:
            raise DataError(str(cpath), None, f"node {key}", "mixes class lists and class indices")
        if is_list:
            if width is None:
                width = len(c)
            if len(c) != width or not all(isinstance(v, (int, float)) and v in (0, 1) for v in c):
                raise DataError(str(cpath), None, f"node {key}",
                                f"expected a list of {width} zeros and ones, got {c!r:.80}")
        elif isinstance(c, bool) or not isinstance(c, int) or c < 0:
            raise DataError(str(cpath), None, f"node {key}", f"expected a class index >= 0, got {c!r}")
    if multi:
        y = np.zeros((n, width or 0), dtype=np.float32)
        for key, i in ids.items():
            y[rows[i]] = class_map[key]
    else:
        cls = np.array([class_map[k] for k in ids], dtype=np.int64)
        y = np.zeros((n, int(cls.max()) + 1), dtype=np.float32)
        y[rows[np.arange(n)], cls] = 1.0
    # features
    if fpath.is_file() or feats:
        if not fpath.is_file():
            raise DataError(str(fpath), message="file not found")
        try:
            x = np.load(fpath, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(str(fpath), message=f"not a numpy array file: {e}") from None
        if x.ndim != 2 or x.shape[0] != n:
            raise DataError(str(fpath), message=f"{x.shape[0] if x.ndim else 0} feature rows (shape {tuple(x.shape)}) "
                                                f"for {n} nodes in {ipath.name}: expected [{n}, F]")
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(str(fpath), message=f"features must be numbers, got dtype {x.dtype}")
        x = x.astype(np.float32)
        bad = np.argwhere(~np.isfinite(x))
        if bad.size:
            r = int(bad[0][0])
            key = next(k for k, i in ids.items() if rows[i] == r)
            raise DataError(str(fpath), None, f"node {key}", f"feature {int(bad[0][1])} is {x[r, bad[0][1]]}")
    else:
        x = np.eye(n, dtype=np.float32)
    # stages, graphs, edges by row
    stage = np.zeros(n, dtype=np.int64)
    graph = np.zeros(n, dtype=np.int64)
    names = [""] * n
    for key, i in ids.items():
        attrs = G.nodes[data["nodes"][i]["id"]]
        stage[rows[i]] = 2 if attrs.get("test") else (1 if attrs.get("val") else 0)
        graph[rows[i]] = int(attrs.get("graph", 0) or 0)
        names[rows[i]] = key
    edges = np.array([[rows[ids[str(a)]], rows[ids[str(b)]]] for a, b in G.edges()], dtype=np.int64).reshape(-1, 2).T
    classes = [str(c) for c in data.get("graph", {}).get("classes", [])] if isinstance(data.get("graph"), dict) else []
    return Graph(torch.from_numpy(x), torch.from_numpy(y), undirected(edges, n), torch.from_numpy(stage),
                 torch.from_numpy(graph), torch.arange(n), names, classes if len(classes) == y.shape[1] else [])


# ---- writing ---------------------------------------------------------------------------------------
def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_graphsage(prefix: str | os.PathLike, g: Graph, feats: bool = True) -> Path:
    """Write ``g`` as ``<prefix>-G.json``, ``-id_map.json``, ``-class_map.json`` (class lists) and,
    with ``feats``, ``-feats.npy``; each file to a temporary name, renamed when complete. Node ids
    are ``g.names`` (row numbers when it has none)."""
    import io

    import networkx as nx

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    names = g.names or [str(i) for i in range(g.num_nodes)]
    key = [int(s) if s.isdigit() and (s == "0" or not s.startswith("0")) else s for s in names]
    G = nx.Graph()
    if g.classes:
        G.graph["classes"] = list(g.classes)
    multi_graph = bool((g.graph != 0).any())
    for i in range(g.num_nodes):
        attrs = {"val": bool(g.stage[i] == 1), "test": bool(g.stage[i] == 2)}
        if multi_graph:
            attrs["graph"] = int(g.graph[i])
        G.add_node(key[i], **attrs)
    e = g.edge_index
    e = e[:, e[0] < e[1]]
    G.add_edges_from((key[a], key[b]) for a, b in e.t().tolist())
    dump = lambda obj: json.dumps(obj, separators=(",", ":")).encode()  # noqa: E731
    _write_bytes(Path(f"{prefix}{SUFFIXES['graph']}"), dump(nx.node_link_data(G, edges="links")))
    _write_bytes(Path(f"{prefix}{SUFFIXES['id_map']}"), dump({n: i for i, n in enumerate(names)}))
    y = g.y.round().to(torch.int64).tolist()
    _write_bytes(Path(f"{prefix}{SUFFIXES['class_map']}"), dump({n: y[i] for i, n in enumerate(names)}))
    if feats:
        buf = io.BytesIO()
        np.save(buf, g.x.numpy().astype(np.float32), allow_pickle=False)
        _write_bytes(Path(f"{prefix}{SUFFIXES['feats']}"), buf.getvalue())
    return prefix


# ---- generated data --------------------------------------------------------------------------------
def generate(graphs: int = 12, nodes: int = 120, classes: int = 12, features: int = 16, communities: int = 4,
             degree: float = 6.0, test_degree: Optional[float] = None, tail: float = 2.5, signal: float = 0.6,
             flip: float = 0.03, val_graphs: int = 1, test_graphs: int = 2, seed: int = 0) -> Graph:
    """PPI-like multi-graph multi-label data with planted structure (module docstring): ``graphs``
    graphs of ``nodes`` nodes, the last ``test_graphs`` for testing, the ``val_graphs`` before them
    for validation. Edges: a stochastic block model (90% of a node's expected degree inside its
    community) with Chung-Lu degree propensities drawn from a Pareto law (``tail``), mean
    ``degree`` (``test_degree`` for the test graphs). A node's features: its community's mean times
    ``signal`` plus standard normal noise; its labels: its community's profile with ``flip`` of
    them flipped."""
    if graphs < 1 + val_graphs + test_graphs:
        raise ValueError(f"generate: {graphs} graphs leave no training graph ({val_graphs} valid, {test_graphs} test)")
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((communities, features))
    profile = (rng.random((communities, classes)) < 0.35).astype(np.float32)
    for c in range(communities):  # every community holds at least one label of its own
        profile[c, rng.integers(classes)] = 1.0
    xs, ys, edges, stages, gids, offset = [], [], [], [], [], 0
    for gi in range(graphs):
        st = 2 if gi >= graphs - test_graphs else (1 if gi >= graphs - test_graphs - val_graphs else 0)
        deg = float(test_degree if (st == 2 and test_degree is not None) else degree)
        z = rng.integers(communities, size=nodes)
        theta = (rng.pareto(tail, size=nodes) + 1.0)
        theta = theta / theta.mean()
        same = z[:, None] == z[None, :]
        share = np.bincount(z, minlength=communities)[z] / nodes  # the node's community's share of the graph
        p_in = 0.9 * deg / np.maximum(share * nodes, 1.0)
        p_out = 0.1 * deg / np.maximum((1 - share) * nodes, 1.0)
        p = np.where(same, p_in[:, None], p_out[:, None]) * theta[:, None] * theta[None, :]
        upper = np.triu(rng.random((nodes, nodes)) < np.minimum(p, 1.0), 1)
        a, b = np.nonzero(upper)
        edges.append(np.stack([a, b]) + offset)
        xs.append(means[z] * signal + rng.standard_normal((nodes, features)))
        y = profile[z].copy()
        flips = rng.random(y.shape) < flip
        y[flips] = 1.0 - y[flips]
        ys.append(y)
        stages.append(np.full(nodes, st))
        gids.append(np.full(nodes, gi))
        offset += nodes
    n = offset
    return Graph(torch.from_numpy(np.concatenate(xs).astype(np.float32)).round(decimals=3),
                 torch.from_numpy(np.concatenate(ys)), undirected(np.concatenate(edges, 1), n),
                 torch.from_numpy(np.concatenate(stages)), torch.from_numpy(np.concatenate(gids)), torch.arange(n),
                 [str(i) for i in range(n)], [f"c{c}" for c in range(classes)])


SAMPLE = dict(graphs=5, nodes=16, classes=6, features=8, degree=4.0, val_graphs=1, test_graphs=1, seed=2024)


def write_sample(out: str | os.PathLike) -> Path:
    """``out/sample-ggcn/``: ``generate(**SAMPLE)`` as GraphSAGE files ``sample-ggcn-*`` (a few KB each)."""
    d = Path(out) / "sample-ggcn"
    d.mkdir(parents=True, exist_ok=True)
    write_graphsage(d / "sample-ggcn", generate(**SAMPLE))
    return d


# ---- a graph of an interaction dataset -------------------------------------------------------------------
def graph_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``data.graph`` over ``GRAPH_DEFAULTS``."""
    out = dict(GRAPH_DEFAULTS)
    out.update({k: v for k, v in dict(cfg.get("graph") or {}).items() if v is not None})
    unknown = set(out) - set(GRAPH_DEFAULTS)
    if unknown:
        raise ValueError(f"data.graph: unknown keys {sorted(unknown)} (known: {sorted(GRAPH_DEFAULTS)})")
    ratios = [float(r) for r in out["split"]]
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"data.graph.split: three non-negative ratios train/valid/test, got {out['split']}")
    out["split"] = ratios
    if out["rank"] not in ("cosine", "count"):
        raise ValueError(f"data.graph.rank: cosine or count, got {out['rank']!r}")
    return out


def _year(text: str) -> float:
    try:
        return float(str(text).strip()[:4])
    except ValueError:
        return float("nan")


def label_features(edges: np.ndarray, y: np.ndarray, known: np.ndarray) -> List[np.ndarray]:
    """What a node's neighbours with known (training) labels say: the share of them carrying each
    label ``[N, C]`` and their number (log, standardised) ``[N, 1]``. A node's own label never enters
    its features (the graph has no self loops), so training and evaluation nodes see the same kind of
    input. GCNII propagates features, not labels: on MovieLens' item graph the features alone say
    little about a genre, and the neighbours' genres say most of it."""
    from scipy.sparse import csr_matrix

    n = y.shape[0]
    a = csr_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(n, n))
    k = known.astype(np.float64)
    count = a @ k
    share = (a @ (y * k[:, None])) / np.maximum(count, 1)[:, None]
    c = np.log1p(count)
    return [share, ((c - c.mean()) / (c.std() or 1.0))[:, None]]


def build_item_graph(data, cfg: Dict[str, Any], seed: int = 0) -> Graph:
    """Movies as nodes (``from_interactions``, module docstring)."""
    from scipy.sparse import csr_matrix

    gc = graph_config(cfg)
    n_items = int(data.num_items) - 1  # node i = item id i + 1
    if n_items < 3:
        raise DataError(None, message=f"a graph of items needs at least 3 items, the data has {n_items}")
    attrs = dict(getattr(data, "item_attrs", {}) or {})
    label_attr = gc["label_attr"] or next((a for a in LABEL_ATTRS if a in attrs), None)
    if label_attr is None or label_attr not in attrs:
        raise DataError(None, field=str(label_attr or "genre"),
                        message=f"the items carry no label column (item columns: {sorted(attrs) or 'none'}); "
                                f"set data.graph.label_attr to one of them")
    users, items = data.user.numpy(), data.item.numpy() - 1
    m = csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(int(data.num_users), n_items))
    m.data[:] = 1.0  # several ratings of one pair count once
    m.sum_duplicates()
    m.data[:] = 1.0
    co = (m.T @ m).tocoo()
    keep = (co.row != co.col) & (co.data >= int(gc["min_common"]))
    r, c, v = co.row[keep], co.col[keep], co.data[keep]
    if gc["rank"] == "cosine":  # co-raters over sqrt(raters_i * raters_j): similar taste, not just popular
        n_r = np.asarray(m.sum(0)).ravel()
        v = v / np.sqrt(n_r[r] * n_r[c])
    # top-k per node (strongest co-rating first, ties by the other node's index), kept if either end keeps it
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    start = np.searchsorted(r, np.arange(n_items))
    rank = np.arange(r.size) - start[r]
    k = rank < int(gc["top_k"])
    edges = undirected(np.stack([r[k], c[k]]), n_items)
    # labels
    tokens = [str(t).split() for t in attrs[label_attr][1:]]
    classes = sorted({t for ts in tokens for t in ts})
    if not classes:
        raise DataError(None, field=label_attr, message="no item has a label")
    cid = {t: i for i, t in enumerate(classes)}
    y = np.zeros((n_items, len(classes)), dtype=np.float32)
    for i, ts in enumerate(tokens):
        for t in ts:
            y[i, cid[t]] = 1.0
    # features: year (z, decade one-hot), log popularity (z), mean rating (z)
    pop = np.bincount(items, minlength=n_items).astype(np.float64)
    cols = []

    def z(a):
        a = np.asarray(a, dtype=np.float64)
        ok = np.isfinite(a)
        if not ok.any():
            return np.zeros_like(a)
        mu, sd = a[ok].mean(), a[ok].std() or 1.0
        return np.where(ok, (a - mu) / sd, 0.0)

    if "release_year" in attrs:
        year = np.array([_year(t) for t in attrs["release_year"][1:]])
        cols.append(z(year)[:, None])
        dec = np.where(np.isfinite(year), np.floor(np.nan_to_num(year) / 10) * 10, -1)
        decs = sorted(set(dec.tolist()) - {-1})
        cols.append((dec[:, None] == np.array(decs)[None, :]).astype(np.float64) if decs else np.zeros((n_items, 0)))
    cols.append(z(np.log1p(pop))[:, None])
    if getattr(data, "rating", None) is not None:
        s = np.bincount(items, weights=data.rating.numpy().astype(np.float64), minlength=n_items)
        cols.append(z(np.where(pop > 0, s / np.maximum(pop, 1), np.nan))[:, None])
    if gc["rater_features"]:  # who rates the movie: the share of its raters in each gender / age / occupation
        uattrs = dict(getattr(data, "user_attrs", {}) or {})
        for col in (c for c in RATER_ATTRS if c in uattrs):
            toks = [str(t) for t in uattrs[col]]
            vocab = sorted({t for t in toks[1:] if t})
            if not vocab or len(vocab) > 30:
                vals = np.array([float(t) if t.replace(".", "", 1).isdigit() else np.nan for t in toks])
                if np.isfinite(vals).any():  # a number (ml-100k's age): the raters' mean
                    mean = (m.T @ np.nan_to_num(vals)) / np.maximum(m.T @ np.isfinite(vals).astype(np.float64), 1)
                    cols.append(z(np.where(pop > 0, mean, np.nan))[:, None])
                continue
            code = {t: i for i, t in enumerate(vocab)}
            rows_u = [u for u, t in enumerate(toks) if t in code]
            h = csr_matrix((np.ones(len(rows_u)), (rows_u, [code[toks[u]] for u in rows_u])),
                           shape=(int(data.num_users), len(vocab)))
            cols.append(np.asarray((m.T @ h).todense()) / np.maximum(pop, 1)[:, None])
    # stages per node
    ratios = np.array(gc["split"]) / sum(gc["split"])
    perm = np.random.default_rng(seed).permutation(n_items)
    n_tr, n_va = int(round(ratios[0] * n_items)), int(round(ratios[1] * n_items))
    stage = np.zeros(n_items, dtype=np.int64)
    stage[perm[n_tr:n_tr + n_va]] = 1
    stage[perm[n_tr + n_va:]] = 2
    if gc["label_features"]:
        cols += label_features(edges.numpy(), y, stage == 0)
    x = np.concatenate(cols, axis=1).astype(np.float32)
    names = [str(t) for t in data.item_tokens[1:]]
    return Graph(torch.from_numpy(x), torch.from_numpy(y), edges, torch.from_numpy(stage),
                 torch.zeros(n_items, dtype=torch.long), torch.arange(1, n_items + 1), names, classes)


# ---- the graph as a data source of RecDataModule ----------------------------------------------------------
class GraphSource:
    """A ``Graph`` served as ``RecDataModule``'s source (the ``graph`` data kind; module docstring)."""

    def __init__(self, g: Graph, hops: int = 0, paths: Optional[Dict[str, Path]] = None, where: str = ""):
        self.g, self.hops, self.paths, self.where = g, int(hops), dict(paths or {}), where
        if self.hops < 0:
            raise ValueError(f"data.hops must be >= 0 (0: whole components), got {hops}")
        self.num_users, self.num_items, self.group_num = 0, int(g.node_id.max()) + 1, 0
        counts = {s: int((g.stage == i).sum()) for i, s in enumerate(STAGES)}
        self.stats = {"nodes": float(g.num_nodes), "edges": float(g.edge_index.shape[1] // 2),
                      "components": float(int(g.components().max()) + 1), "features": float(g.x.shape[1]),
                      "classes": float(g.num_classes), **{f"{s}_nodes": float(c) for s, c in counts.items()},
                      "mean_degree": float(g.edge_index.shape[1] / max(g.num_nodes, 1)),
                      "label_rate": float(g.y.mean()) if g.y.numel() else 0.0}
        if counts["train"] == 0:
            raise DataError(where or None, message="no training node (every node is flagged val or test)")

    def stages(self) -> set:
        return {s for i, s in enumerate(STAGES) if bool((self.g.stage == i).any())}

    def model_args(self) -> Dict[str, Any]:
        return {"num_features": int(self.g.x.shape[1]), "num_classes": int(self.g.num_classes)}

    def item_counts(self) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)

    def train_keys(self) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)

    def _dataset(self, kind: str, stage: str):
        from ..dataset import BatchDataset

        if kind not in KINDS:
            raise DataError(self.where or None, message=f"data.format=ggcn holds a graph; this model trains on "
                                                        f"'{kind}' data")
        rows = self.g.stage_nodes(stage)
        if rows.numel() == 0:
            raise DataError(self.where or None, message=f"no {stage} node in the graph")
        return BatchDataset(rows.numel(), lambda idx: batch_of(self.g, rows[idx], self.hops))

    def read_input(self, path):
        """``--task=infer --input=<prefix>-G.json``: every node of other GraphSAGE files (a new graph),
        scored on its own graph; its features must be this data's."""
        from ..dataset import BatchDataset

        g = read_graphsage(path)
        if g.x.shape[1] != self.g.x.shape[1]:
            raise DataError(str(prefix_of(path)) + SUFFIXES["feats"],
                            message=f"{g.x.shape[1]} features per node; the model was trained on {self.g.x.shape[1]}")
        return BatchDataset(g.num_nodes, lambda idx: batch_of(g, idx, self.hops))

    def train(self, kind: str):
        return self._dataset(kind, "train")

    def eval(self, kind: str, stage: str):
        return self._dataset(kind, stage)


def open_source(folder, cfg: Dict[str, Any]) -> GraphSource:
    """``data.format: ggcn``: the GraphSAGE files of ``folder`` (``data.prefix``, ``data.hops``)."""
    folder = Path(folder)
    prefix = prefix_of(folder / cfg["prefix"] if cfg.get("prefix") else folder)
    g = read_graphsage(prefix)
    return GraphSource(g, int(cfg.get("hops") or 0), {"graph": Path(f"{prefix}{SUFFIXES['graph']}")}, str(folder))


def from_interactions(data, cfg: Dict[str, Any], seed: int = 0) -> GraphSource:
    """The item graph of an interaction dataset (``data.graph``, ``data.hops``; module docstring)."""
    return GraphSource(build_item_graph(data, cfg, seed), int(cfg.get("hops") or 0), where=str(cfg.get("name", "")))


# ---- command line --------------------------------------------------------------------------------------
def convert(data_cfg: Dict[str, Any], data_dir, out_prefix, seed: int = 2024) -> Dict[str, Any]:
    """Write the item graph of a dataset (``data_cfg``: a merged ``data:`` config) as GraphSAGE files."""
    from ..loading import load_interactions

    data = load_interactions(Path(data_dir), dict(data_cfg), seed, data_cfg.get("cache", True))
    g = build_item_graph(data, data_cfg, seed)
    p = write_graphsage(out_prefix, g)
    return {"prefix": str(p), "nodes": g.num_nodes, "edges": int(g.edge_index.shape[1] // 2),
            "classes": g.num_classes, "features": int(g.x.shape[1])}


def _data_config(dataset: Optional[str], overrides: Dict[str, Any]) -> Dict[str, Any]:
    from ...config import CONFIG_DIR, find_named_config, load_yaml, merge

    cfg = load_yaml(CONFIG_DIR / "base.yaml")["data"]
    cfg = merge(cfg, {"graph": dict(GRAPH_DEFAULTS)})
    if dataset:
        dpath = find_named_config("data", dataset)
        if dpath is not None:
            cfg = merge(cfg, load_yaml(dpath).get("data") or {})
        else:
            cfg["name"] = dataset
    cfg["graph"] = {**cfg.get("graph", {}), **{k: v for k, v in overrides.items() if v is not None}}
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap, sub, c = command_line("ggcn", "GGCN's GraphSAGE graph files: convert a dataset, generate, or check.",
                              "write a dataset's item graph (movies co-rated) as GraphSAGE files", "ml-100k-graph")
    c.add_argument("--prefix", help="file prefix (default: the dataset's name)")
    c.add_argument("--min_common", type=int)
    c.add_argument("--top_k", type=int)
    c.add_argument("--rank", choices=("cosine", "count"))
    g = sub.add_parser("generate", help="write PPI-like generated graphs as GraphSAGE files")
    g.add_argument("--out", required=True)
    g.add_argument("--prefix", default="gen")
    for name, typ, default in (("graphs", int, 12), ("nodes", int, 120), ("classes", int, 12), ("features", int, 16),
                               ("degree", float, 6.0), ("test_degree", float, None), ("seed", int, 0)):
        g.add_argument(f"--{name}", type=typ, default=default)
    k = sub.add_parser("check", help="read GraphSAGE files and print their sizes (errors name file and node/edge)")
    k.add_argument("prefix")
    args = ap.parse_args(argv)

    def work():
        if args.cmd == "convert":
            cfg = _data_config(args.dataset, {"min_common": args.min_common, "top_k": args.top_k, "rank": args.rank})
            out = Path(args.out) / (args.prefix or str(cfg["name"]))
            res = convert(cfg, args.data_dir, out, args.seed)
            print(f"wrote {res['prefix']}-*: {res['nodes']} nodes, {res['edges']} edges, {res['classes']} classes, "
                  f"{res['features']} features")
        elif args.cmd == "generate":
            gr = generate(graphs=args.graphs, nodes=args.nodes, classes=args.classes, features=args.features,
                          degree=args.degree, test_degree=args.test_degree, seed=args.seed)
            p = write_graphsage(Path(args.out) / args.prefix, gr)
            print(f"wrote {p}-*: {gr.num_nodes} nodes in {args.graphs} graphs, {gr.edge_index.shape[1] // 2} edges")
        else:
            gr = read_graphsage(args.prefix)
            src = GraphSource(gr)
            print(", ".join(f"{k} {v:g}" for k, v in src.stats.items()))

    return run_command(work)


if __name__ == "__main__":
    raise SystemExit(main())
