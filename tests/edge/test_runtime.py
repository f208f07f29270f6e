"""The torch-free runtime: serves an export with numpy + onnxruntime, checks inputs against the
sidecar with messages that name the input and what it allows, and imports with torch blocked."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.edge.conftest import TORCH_BLOCK, device, examples
from recstudio_edge.edge.runtime import EdgeInputError, EdgeModelError, EdgePredictor

ROOT = Path(__file__).resolve().parents[2]


def good_batch(model, batch=5, length=7):
    return {k: v.numpy() for k, v in examples(model, batch, length).items()}


def test_predict_matches_pytorch_and_accepts_batch_fields(exported):
    model, reports = exported
    p = EdgePredictor(reports["1"]["path"])
    assert p.input_names == ["item_id", "seq"] and p.output_names == ["probability"]
    b = good_batch(model)
    with torch.no_grad():
        want = device(model, "1").module(torch.from_numpy(b["item_id"]), torch.from_numpy(b["seq"])).numpy()
    np.testing.assert_allclose(p.predict(b), want, atol=1e-5)
    # int32 ids are cast; extra batch fields are dropped on request
    np.testing.assert_allclose(p.predict({"item_id": b["item_id"].astype(np.int32), "seq": b["seq"].astype(np.int32),
                                          "label": np.ones(5), "user_id": np.arange(5)}, ignore_extra=True), want, atol=1e-5)
    # the sidecar path works as well as the .onnx path
    assert EdgePredictor(reports["1"]["sidecar"]).predict(b).shape == (5,)


@pytest.mark.parametrize("change,message", [
    (lambda b: {"target_id": b["item_id"], "seq": b["seq"]}, "missing input 'item_id': the model takes item_id [batch] int64 in [1, 39]"),
    (lambda b: {**b, "target_id": b["item_id"]}, "unknown input 'target_id' (did you mean 'item_id'?)"),
    (lambda b: {**b, "seq": b["seq"][0]}, "input 'seq': expected 2 dimension(s) [batch, seq], got shape (7,)"),
    (lambda b: {**b, "seq": b["seq"][:3]}, "input 'seq': axis 0 ('batch') is 3 but input 'item_id' has 'batch' = 5"),
    (lambda b: {**b, "seq": np.ones((5, 13), np.int64)}, "input 'seq': axis 1 ('seq') is 13, at most 12 allowed"),
    (lambda b: {**b, "seq": np.ones((5, 0), np.int64)}, "input 'seq': axis 1 ('seq') is empty"),
    (lambda b: {**b, "item_id": b["item_id"].astype(np.float32)}, "input 'item_id': expected integer ids (int64), got float32"),
    (lambda b: {**b, "item_id": np.array([1, 2, 40, 3, 4])},
     "input 'item_id': id 40 at index (2,) is out of range: allowed [1, 39] (vocabulary of 40 ids; 0 is padding)"),
    (lambda b: {**b, "item_id": np.array([1, 0, 2, 3, 4])}, "input 'item_id': id 0 at index (1,) is out of range: allowed [1, 39]"),
    (lambda b: {**b, "seq": np.full((5, 7), -1)}, "input 'seq': id -1 at index (0, 0) is out of range: allowed [0, 39]"),
])
def test_bad_inputs_name_the_input_and_what_it_allows(exported, change, message):
    model, reports = exported
    p = EdgePredictor(reports["0"]["path"])
    with pytest.raises(EdgeInputError) as e:
        p.predict(change(good_batch(model)))
    assert message in str(e.value)


def test_a_sidecar_for_another_file_or_none_is_refused(exported, tmp_path):
    model, reports = exported
    src = Path(reports["0"]["path"])
    (tmp_path / "edge_0.onnx").write_bytes(Path(reports["1"]["path"]).read_bytes())  # group 1's graph ...
    (tmp_path / "edge_0.json").write_text(src.with_suffix(".json").read_text())      # ... group 0's sidecar
    with pytest.raises(EdgeModelError, match="sha256 differs from its sidecar"):
        EdgePredictor(tmp_path / "edge_0.onnx")
    (tmp_path / "lone.onnx").write_bytes(src.read_bytes())
    with pytest.raises(EdgeModelError, match="no sidecar next to the ONNX file"):
        EdgePredictor(tmp_path / "lone.onnx")


BLOCKED = TORCH_BLOCK + r'''
import numpy as np
from recstudio_edge.edge.runtime import EdgePredictor
from recstudio_edge.edge.split import decode, make_codec
from recstudio_edge.edge.quantize import quantize_file
p = EdgePredictor(sys.argv[1])
out = p.predict({"item_id": np.array([1, 2, 39]), "seq": np.array([[0, 0, 3], [4, 5, 6], [0, 7, 8]])})
q = quantize_file(sys.argv[1], sys.argv[2])
x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
assert np.abs(decode(make_codec("int8").encode(x)) - x).max() < 0.01
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning"))
print(json.dumps({"out": out.tolist(), "heavy": heavy, "int8_bytes": q["bytes"]}))
'''


def test_runtime_imports_and_serves_with_torch_blocked(exported, tmp_path):
    model, reports = exported
    proc = subprocess.run([sys.executable, "-c", BLOCKED, reports["0"]["path"], str(tmp_path / "q.int8.onnx")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["heavy"] == [] and res["int8_bytes"] > 0
    with torch.no_grad():
        want = device(model, "0").module(torch.tensor([1, 2, 39]), torch.tensor([[0, 0, 3], [4, 5, 6], [0, 7, 8]]))
    np.testing.assert_allclose(res["out"], want.numpy(), atol=1e-5)
