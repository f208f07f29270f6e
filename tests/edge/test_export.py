"""ONNX export: one verified file per PINRec group (trunk + that group's plugins) with named
inputs, dynamic batch and sequence axes and a sidecar; onnxruntime against PyTorch; the generic
exporter on a plain module; nothing is left behind when verification fails."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import torch
from torch import nn

from recstudio_edge.edge import OnnxExportError, export_edge_models, export_onnx
from tests.edge.conftest import examples, small_pinrec


# SASRec goes through the default exporter (dynamo; TorchScript's graph of it has a bool EyeLike
# that onnxruntime cannot run); DIN and GRU4Rec through TorchScript (dynamo cannot convert
# nn.GRU with a symbolic length). A dynamo export costs ~5 s of CPU, a TorchScript one 0.1 s: the
# default (dynamo) path of the DIN trunk and of DIN itself is covered by the sweep
# (tests/model/test_sweep.py::test_edge_part_exports_and_serves_without_torch). Per-group files
# are checked on the `exported` fixture (two groups), to keep the edge suite short.
@pytest.mark.parametrize("trunk,exporter", [("DIN", "torchscript"), ("SASRec", "auto"), ("GRU4Rec", "torchscript")])
def test_verified_onnx_with_dynamic_axes(tmp_path, trunk, exporter):
    model = small_pinrec(trunk, groups=1)
    reports = export_edge_models(model, tmp_path, exporter=exporter)
    r = reports["0"]
    assert r["exporter"] == ("dynamo" if exporter == "auto" else "torchscript"), r["fallback_reason"]
    _check_group_files(model, reports, tmp_path, 1)


def test_one_file_per_group_with_its_own_plugins(exported):
    from pathlib import Path

    model, reports = exported
    _check_group_files(model, reports, Path(reports["0"]["path"]).parent, 2)


def _check_group_files(model, reports, folder, groups):
    import onnxruntime as ort

    assert sorted(reports) == [str(g) for g in range(groups)]
    outs = []
    for g in range(groups):
        r = reports[str(g)]
        assert r["max_abs_diff"] <= 1e-4 and len(r["checks"]) == 4  # 2 batch sizes x 2 sequence lengths
        assert {c["sizes"]["batch"] for c in r["checks"]} == {4, 7} and {c["sizes"]["seq"] for c in r["checks"]} == {12, 6}
        assert r["inputs"] == ["item_id", "seq"] and r["outputs"] == ["probability"]  # the batch's field names
        # sizes never seen at export: batch 9, length 5, against the model's own routed scoring
        ex = examples(model, 9, 5)
        sess = ort.InferenceSession(r["path"], providers=["CPUExecutionProvider"])
        (p,) = sess.run(None, {k: v.numpy() for k, v in ex.items()})
        with torch.no_grad():
            want = torch.sigmoid(model.logits(ex["item_id"], ex["seq"], torch.full((9,), g)))
        np.testing.assert_allclose(p, want.numpy(), atol=1e-5)
        outs.append(p)
    if groups > 1:
        assert np.abs(outs[0] - outs[1]).max() > 1e-4  # each file carries its own group's plugins
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"edge_{g}.onnx" for g in range(groups)] + [f"edge_{g}.json" for g in range(groups)])


def test_sidecar_describes_inputs_ranges_config_and_parity(exported):
    model, reports = exported
    r = reports["1"]
    side = json.loads(open(r["sidecar"]).read())
    assert side["format"] == "recstudio_edge.onnx/1" and side["model"] == "PINRec" and side["variant"] == "1"
    assert side["onnx"] == "edge_1.onnx"
    assert side["sha256"] == hashlib.sha256(open(r["path"], "rb").read()).hexdigest()
    assert side["inputs"] == [
        {"name": "item_id", "dtype": "int64", "shape": ["batch"], "range": [1, 39], "vocab_size": 40},
        {"name": "seq", "dtype": "int64", "shape": ["batch", "seq"], "range": [0, 39], "vocab_size": 40}]
    assert side["outputs"] == [{"name": "probability", "dtype": "float32", "shape": ["batch"]}]
    assert side["axes"] == {"batch": None, "seq": 12} and side["vocab"]["num_items"] == 40
    cfg = {"seed": 1, "model": {"x": 1}}
    assert side["config_source"] == "run config"
    assert side["config_hash"] == hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    stamp = datetime.fromisoformat(side["exported_at"])
    assert timedelta(0) <= datetime.now(timezone.utc) - stamp < timedelta(hours=2)
    assert side["parity"]["tolerance"] == 1e-4 and 0 <= side["parity"]["max_abs_diff"] <= 1e-4
    assert {c["sizes"]["batch"] for c in side["parity"]["checks"]} == {4, 7}


def test_config_hash_follows_the_config(tmp_path):
    from recstudio_edge.edge.onnx_export import config_hash

    model = small_pinrec(groups=1)
    a = config_hash({"lr": 0.1}, model)["config_hash"]
    assert a == config_hash({"lr": 0.1}, model)["config_hash"] != config_hash({"lr": 0.2}, model)["config_hash"]
    own = config_hash(None, model)
    assert own["config_source"] == "model" and own["config_hash"] != config_hash(None, small_pinrec(groups=2))["config_hash"]


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 1)

    def forward(self, ids, x):
        return self.lin(self.emb(ids) + x).squeeze(-1)


def test_generic_export_and_failure_leaves_nothing(tmp_path):
    m = TwoInputs().eval()
    ex = (torch.tensor([1, 9, 3]), torch.randn(3, 4))
    axes = {"ids": {0: "batch"}, "x": {0: "batch"}, "out": {0: "batch"}}
    r = export_onnx(m, ex, ["ids", "x"], tmp_path / "m.onnx", axes, output_names=["out"], exporter="torchscript")
    assert r["max_abs_diff"] <= 1e-4 and [c["sizes"] for c in r["checks"]] == [{"batch": 3}, {"batch": 6}]
    assert (tmp_path / "m.onnx").exists()
    with pytest.raises(OnnxExportError, match="differs from PyTorch"):
        export_onnx(m, ex, ["ids", "x"], tmp_path / "never.onnx", axes, output_names=["out"], tol=-1.0,
                    exporter="torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no partial or temporary file


def test_model_export_failure_leaves_no_file_or_sidecar(tmp_path):
    with pytest.raises(OnnxExportError, match=r"differs from PyTorch by .* > -1"):
        export_edge_models(small_pinrec(groups=1), tmp_path, tol=-1.0, exporter="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_a_model_without_an_edge_part_is_refused(tmp_path):
    from recstudio_edge.model import create_model

    with pytest.raises(OnnxExportError, match="BPR has no on-device part"):
        export_edge_models(create_model("BPR", num_users=5, num_items=30), tmp_path)


def test_unknown_exporter_names_the_known_ones(tmp_path):
    with pytest.raises(OnnxExportError, match="unknown exporter 'torchscrip'.*'torchscript'"):
        export_edge_models(small_pinrec(groups=1), tmp_path, exporter="torchscrip")
