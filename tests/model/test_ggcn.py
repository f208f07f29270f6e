"""GGCN: ego-graph inference at k = layers equals full-graph inference, the exported device model
answers for a node from its ego graph alone, and the model learns beyond a feature-only baseline on
generated graphs whose labels depend on the neighbourhood."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstudio_edge.data.formats import ggcn
from recstudio_edge.evaluation.multilabel import multilabel_f1
from recstudio_edge.model.edge.ggcn import GGCN


@pytest.fixture(scope="module")
def graph():
    return ggcn.generate(graphs=8, nodes=50, classes=6, features=8, degree=6.0, seed=1)


def _model(layers=3, **kw):
    torch.manual_seed(0)
    return GGCN(num_features=8, num_classes=6, hidden=16, layers=layers, **kw).eval()


def test_ego_graph_at_k_layers_equals_the_full_graph(graph):
    m = _model(layers=3)
    nodes = graph.stage_nodes("test")[:40]
    with torch.no_grad():
        full = m(ggcn.batch_of(graph, nodes))  # the cloud: whole components, full-graph A_hat
        chunk = m(ggcn.batch_of(graph, nodes[:5]))  # a batch of other rows: the same answers
        exact = m(ggcn.ego_batch(graph, nodes, k=3, norm="full"))
        hop = m(ggcn.batch_of(graph, nodes, hops=3))
        short = m(ggcn.ego_batch(graph, nodes, k=2, norm="full"))
        own = m(ggcn.ego_batch(graph, nodes, k=3, norm="ego"))
    torch.testing.assert_close(chunk, full[:5], atol=1e-6, rtol=0)
    torch.testing.assert_close(exact, full, atol=1e-6, rtol=0)
    torch.testing.assert_close(hop, full, atol=1e-6, rtol=0)
    # fewer hops than layers, or the ego graph's own degrees, are not the full graph's answer
    assert (short - full).abs().max() > 1e-5 and (own - full).abs().max() > 1e-5


def test_the_exported_device_model_answers_from_the_ego_graph(graph, tmp_path):
    from recstudio_edge.edge.onnx_export import export_edge_models
    from recstudio_edge.edge.runtime import EdgeRouter

    m = _model(layers=2)
    (report,) = export_edge_models(m, tmp_path, exporter="torchscript").values()
    assert report["max_abs_diff"] <= 1e-4
    router = EdgeRouter([report["path"]])
    node = int(graph.stage_nodes("test")[7])
    ego = ggcn.ego_batch(graph, [node], k=2, norm="full")  # what the device holds: one node's 2-hop graph
    assert ego["x"].shape[0] < graph.num_nodes
    got = router.predict({k: v.numpy() for k, v in ego.items()})
    with torch.no_grad():
        want = m(ggcn.batch_of(graph, torch.tensor([node])))
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=0)


def _fit(model, forward, train, steps=80):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        model.train()
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(forward(train), train["label"]).backward()
        opt.step()
    return model.eval()


def test_it_learns_beyond_a_feature_only_baseline(graph):
    train, test = ggcn.batch_of(graph, graph.stage_nodes("train")), ggcn.batch_of(graph, graph.stage_nodes("test"))
    torch.manual_seed(0)
    m = GGCN(num_features=8, num_classes=6, hidden=32, layers=4, dropout=0.0)
    _fit(m, m.logits, train)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 6))
    _fit(mlp, lambda b: mlp(b["x"][b["target"]]), train)
    with torch.no_grad():
        gcn = multilabel_f1(m(test), test["label"])
        base = multilabel_f1(torch.sigmoid(mlp(test["x"][test["target"]])), test["label"])
    # planted: a node's features show its community faintly, its neighbours show it clearly
    assert gcn["micro_f1"] > base["micro_f1"] + 0.06 and gcn["micro_f1"] > 0.88, (gcn, base)
