"""The runtime distribution (``runtime/``): its wheel holds only the torch-free modules, and installed
alone into a folder it serves an exported model in a process where torch and Lightning cannot be
imported, under the same import path as the full package."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import torch

from tests.edge.conftest import TORCH_BLOCK, device
from tests.test_packaging import copy_checkout, outside, pip

SERVE = TORCH_BLOCK + r'''
import numpy as np
import recstudio_edge
import recstudio_edge.edge.runtime as rt
from recstudio_edge.edge.split import decode, make_codec
p = rt.EdgePredictor(sys.argv[1])
out = p.predict({"item_id": np.array([1, 2, 39]), "seq": np.array([[0, 0, 3], [4, 5, 6], [0, 7, 8]])})
try:
    p.predict({"item_id": np.array([1]), "seq": np.array([[0, 0, 999]])})
    bad = None
except rt.EdgeInputError as e:
    bad = str(e)
x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
assert np.abs(decode(make_codec("int8").encode(x)) - x).max() < 0.01
try:
    import recstudio_edge.config
    full = True
except ImportError:
    full = False
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "lightning"))
print(json.dumps({"out": out.tolist(), "heavy": heavy, "file": rt.__file__, "path": list(recstudio_edge.__path__),
                  "bad": bad, "full": full}))
'''


def test_runtime_wheel_installs_alone_and_serves_without_torch(exported, tmp_path):
    model, reports = exported
    src = copy_checkout(tmp_path / "src", ["runtime", "recstudio_edge"])
    pip("wheel", "-w", str(tmp_path / "wheels"), str(src / "runtime"), cwd=tmp_path)
    (whl,) = (tmp_path / "wheels").glob("recstudio_edge_runtime-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    code = sorted(n for n in names if ".dist-info/" not in n)
    assert code == [f"recstudio_edge/edge/{m}.py" for m in ("__init__", "quantize", "runtime", "split")]
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = sorted(ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:"))
    assert requires == ['numpy>=1.26', 'onnx>=1.16; extra == "quantize"', "onnxruntime>=1.18"]
    target = tmp_path / "device"
    pip("install", "--target", str(target), str(whl), cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = outside(SERVE, target, work, reports["0"]["path"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["heavy"] == [] and res["full"] is False  # only the runtime is there
    assert res["file"] == str(target / "recstudio_edge" / "edge" / "runtime.py")
    assert res["path"] == [str(target / "recstudio_edge")]
    assert "seq" in res["bad"] and "999" in res["bad"]
    with torch.no_grad():
        want = device(model, "0").module(torch.tensor([1, 2, 39]), torch.tensor([[0, 0, 3], [4, 5, 6], [0, 7, 8]]))
    np.testing.assert_allclose(res["out"], want.numpy(), atol=1e-5)
