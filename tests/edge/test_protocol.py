"""The edge-cloud protocol: specs make valid inputs, declarations are checked, every model with an
on-device part declares it through ``edge_parts()`` alone, and the runtime routes rows by the
rows each file's sidecar names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from recstudio_edge.edge.protocol import (EdgeParts, EdgeProtocolError, Part, TensorSpec, edge_parts_of, history, ids,
                                          probability, select_rows)


def test_examples_are_valid_ids_with_left_padding_and_one_full_row():
    part = Part(nn.Identity(), [ids("item_id", 30), history("seq", 30)], [probability()], axis_limits={"seq": 9})
    ex = part.example_inputs(64)
    assert ex["item_id"].shape == (64,) and ex["seq"].shape == (64, 9) and ex["seq"].dtype == torch.long
    assert int(ex["item_id"].min()) >= 1 and int(ex["item_id"].max()) <= 29
    seq = ex["seq"]
    real = seq != 0
    assert bool(real[0].all())  # the first row is a full history
    # left padding: once a row has a real item, every later position is real
    assert bool((real.long().cummax(dim=1).values == real.long()).all())
    assert int(seq[real].min()) >= 1 and int(seq.max()) <= 29 and bool((~real).any())
    assert part.example_inputs(3, {"seq": 4})["seq"].shape == (3, 4)
    torch.testing.assert_close(part.example_inputs(5), part.example_inputs(5))  # seeded
    assert part.dynamic_axes() == {"item_id": {0: "batch"}, "seq": {0: "batch", 1: "seq"}, "probability": {0: "batch"}}
    # the value range the runtime checks counts the padding id
    assert history("seq", 30).value_range == (0, 29) and ids("item_id", 30).value_range == (1, 29)


def test_a_part_serving_some_rows_sets_them_in_its_examples_and_selects_them():
    group = TensorSpec("group_id", low=0, high=4)
    part = Part(nn.Identity(), [ids("item_id", 10), group], [probability()], rows={"group_id": 3})
    assert (part.example_inputs(6)["group_id"] == 3).all()
    feed = {"item_id": np.arange(1, 6), "group_id": np.array([3, 1, 3, 0, 4])}
    assert select_rows(part, feed).tolist() == [True, False, True, False, False]
    with pytest.raises(EdgeProtocolError, match="serve rows by 'group_id' but the rows carry no 'group_id'"):
        select_rows(part, {"item_id": np.arange(3)})


@pytest.mark.parametrize("build,message", [
    (lambda: TensorSpec("x", dtype="float64"), "dtype 'float64' is not one of"),
    (lambda: TensorSpec("x", low=3, high=1), "low/high must both be set, low <= high"),
    (lambda: TensorSpec("x", low=3), "low/high must both be set"),
    (lambda: Part(nn.Identity(), [ids("x", 3)], [TensorSpec("x", "float32")]), r"part names \['x'\] twice"),
    (lambda: EdgeParts({}), "EdgeParts.device is empty"),
    (lambda: EdgeParts({"a/b": Part(nn.Identity(), [ids("x", 3)], [probability()])}), "usable in a file name"),
    (lambda: TensorSpec("seq", shape=("batch", "seq")).example({"batch": 2}, torch.Generator()),
     "input 'seq': no size given for axis 'seq'"),
])
def test_malformed_declarations_are_refused_with_what_is_wrong(build, message):
    with pytest.raises(EdgeProtocolError, match=message):
        build()


def test_edge_parts_of_refuses_models_without_a_device_part():
    from recstudio_edge.model import create_model

    with pytest.raises(EdgeProtocolError, match=r"BPR has no on-device part \(it defines no edge_parts\(\)"):
        edge_parts_of(create_model("BPR", num_users=5, num_items=30))

    class Wrong:
        def edge_parts(self):
            return {"edge": None}

    with pytest.raises(EdgeProtocolError, match="returned dict, not EdgeParts"):
        edge_parts_of(Wrong())


def test_every_edge_model_declares_runnable_parts_through_the_protocol_alone(tmp_path):
    """For each registered model with ``edge_parts``: every device part runs on its own example
    inputs and gives one output of the declared shape; a cloud part, when declared, runs too. Each
    model is built from the facts of a small generated dataset in its own data format (as the
    runner builds it: ``dm.model_args()``), since some need them (CIGAR's feature vocabularies)."""
    from recstudio_edge.data.datamodule import RecDataModule
    from recstudio_edge.edge.protocol import has_edge_part
    from recstudio_edge.model import create_model, get_model_class, list_models
    from tests.model.test_sweep import DATA

    names = [m for m in list_models() if has_edge_part(get_model_class(m))]
    assert {"DIN", "PINRec"} <= set(names)
    facts = {}
    for name in names:
        cls = get_model_class(name)
        key = (cls.data_kind, getattr(cls, "data_format", None))
        if key not in facts:
            dm = RecDataModule(DATA, tmp_path, cls.data_kind, data_format=key[1], seed=1)
            dm.setup()
            facts[key] = dm.model_args()
        torch.manual_seed(0)
        model = create_model(name, **facts[key], max_seq_len=7).eval()
        parts = edge_parts_of(model)
        for variant, part in [*parts.device.items(), *([("cloud", parts.cloud)] if parts.cloud else [])]:
            with torch.no_grad():
                out = part(part.example_inputs(5))
            outs = out if isinstance(out, (tuple, list)) else (out,)  # a part may declare several outputs
            assert len(outs) == len(part.outputs), (name, variant)
            for spec, t in zip(part.outputs, outs):
                assert isinstance(t, torch.Tensor) and t.shape[0] == 5, (name, variant, spec.name)
                assert [d for d in spec.shape if isinstance(d, int)] == list(t.shape[1:]), (name, variant, spec.name)
            if variant != "cloud":
                assert not part.module.training and all(p.device.type == "cpu" for p in part.module.parameters())


def test_the_router_sends_each_row_to_the_file_that_serves_it(exported, tmp_path):
    from recstudio_edge.edge.runtime import EdgeInputError, EdgePredictor, EdgeRouter

    model, reports = exported
    folder = Path(reports["0"]["path"]).parent
    router = EdgeRouter.from_folder(folder)
    assert router.rows == [{"group_id": 0}, {"group_id": 1}] and router.input_names == ["item_id", "seq"]
    rng = np.random.default_rng(0)
    feed = {"item_id": rng.integers(1, 40, 11), "seq": rng.integers(0, 40, (11, 6)),
            "group_id": np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1])}
    got = router.predict(feed)
    one = {g: EdgePredictor(folder / f"edge_{g}.onnx").predict({k: feed[k] for k in ("item_id", "seq")}) for g in (0, 1)}
    want = np.where(feed["group_id"] == 1, one[1], one[0])
    np.testing.assert_allclose(got, want, atol=1e-7)
    assert np.abs(one[0] - one[1]).max() > 1e-4  # the routing matters
    with pytest.raises(EdgeInputError, match=r"row 2 \(group_id=5\) is served by no file"):
        router.predict({**feed, "group_id": np.array([1, 0, 5, 1, 1, 0, 1, 0, 0, 0, 1])})
    with pytest.raises(EdgeInputError, match="serve rows by 'group_id' but the batch has no 'group_id'"):
        router.predict({k: feed[k] for k in ("item_id", "seq")})


def test_the_edge_machinery_knows_no_model_field_or_key():
    """Export, bundle, split, quantisation and runtime read ``edge_parts()`` only: their code
    (docstrings and comments aside) names no model, no batch field and no model key. (The
    protocol itself declares the zoo's shared vocabulary, e.g. ``history``'s ``seq`` axis.)"""
    import ast

    banned = {"pinrec", "din", "sasrec", "gru4rec", "group_id", "item_id", "seq", "group_num", "embed_dim",
              "edge_model", "edge_variants", "plugins"}
    root = Path(__file__).resolve().parents[2] / "recstudio_edge" / "edge"
    hits = []
    for name in ("onnx_export.py", "bundle.py", "split.py", "runtime.py", "quantize.py"):
        tree = ast.parse((root / name).read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            words = []
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                words = [w.strip(".,:;()[]{}'\"").lower() for w in node.value.split()]
            elif isinstance(node, ast.Name):
                words = [node.id.lower()]
            elif isinstance(node, ast.Attribute):
                words = [node.attr.lower()]
            elif isinstance(node, ast.arg):
                words = [node.arg.lower()]
            hits += [f"{name}:{node.lineno}: {w}" for w in words if w in banned]
    assert not hits, hits
