"""docs/extending.md, "A new edge-cloud model": the ``edge-cloud-example`` block defines a model
with a device part and a cloud part in one file; with no edit anywhere else it trains through the
command line, ``--task=export`` writes its verified ``edge.onnx`` with a sidecar, and the torch-free
runtime serves the test rows, from the cloud part's profiles, with PyTorch's probabilities."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.edge.conftest import TORCH_BLOCK
from tests.test_docs import DOCS, QUIET, TINY, marked_blocks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def edge_cloud_model():
    from recstudio_edge.model import list_models
    from recstudio_edge.registry import MODELS

    list_models()
    before = set(MODELS.names())
    code = marked_blocks(DOCS / "extending.md")["edge-cloud-example"][1]
    namespace = {"__name__": "docs_extending_edge_cloud_example"}
    exec(compile(code, "docs/extending.md[edge-cloud-example]", "exec"), namespace)
    added = sorted(set(MODELS.names()) - before)
    yield added
    for name in added:  # the registry has no public unregister
        MODELS._table.pop(name.lower(), None)


def test_edge_cloud_example_trains_exports_and_serves_without_torch(edge_cloud_model, tmp_path):
    from recstudio_edge.checkpoint import load_weights
    from recstudio_edge.cli import main
    from recstudio_edge.edge.runtime import EdgePredictor
    from recstudio_edge.runner import RUN_DIR_ENV, build_datamodule, build_model
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class

    assert edge_cloud_model == ["ProfileCTR"]
    common = [f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", QUIET, *TINY]

    def cli(*args):
        os.environ.pop(RUN_DIR_ENV, None)
        try:
            return main([*common, *args])
        finally:
            os.environ.pop(RUN_DIR_ENV, None)

    res = cli("-m=ProfileCTR", "--epochs=4", "--lr=0.01", "--train.batch_size=256")
    assert math.isfinite(res["test"]["logloss"]) and res["test"]["auc"] > 0.55, res["test"]
    ckpt = Path(res["run_dir"]) / "best.ckpt"
    exp = cli("--task=export", f"--ckpt={ckpt}", "--export.exporter=torchscript")
    out = Path(exp["run_dir"])
    assert sorted(exp["export"]) == ["edge"] and exp["export"]["edge"]["max_abs_diff"] <= 1e-4
    side = json.loads((out / "edge.json").read_text())
    assert [i["name"] for i in side["inputs"]] == ["item_id", "profile"]
    assert side["inputs"][1]["shape"] == ["batch", 16] and side["rows"] == {}

    # the test rows: the cloud part computes each row's profile, the device file scores it
    cls = get_model_class("ProfileCTR")
    cfg = build_config("ProfileCTR", None, str(Path(res["run_dir"]) / "config.yaml"), {}, cls)
    dm = build_datamodule(cfg, cls)
    model = build_model(cfg, cls, dm)
    load_weights(model, ckpt)
    model.eval()
    parts = model.edge_parts()
    batch = dm.eval_dataset("test")[torch.arange(64)]
    with torch.no_grad():
        profile = parts.cloud(batch)
        want = model(batch)
    feed = {"item_id": batch["item_id"].numpy(), "profile": profile.numpy()}
    got = EdgePredictor(out / "edge.onnx").predict(feed)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    # and served where torch cannot be imported (the device side of the example)
    np.savez(tmp_path / "feed.npz", **feed)
    code = TORCH_BLOCK + (
        "import numpy as np\n"
        "from recstudio_edge.edge.runtime import EdgePredictor\n"
        "feed = dict(np.load(sys.argv[2]))\n"
        "np.save(sys.argv[3], EdgePredictor(sys.argv[1]).predict(feed))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out / "edge.onnx"), str(tmp_path / "feed.npz"),
                           str(tmp_path / "got.npy")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), want.numpy(), atol=1e-5)
