"""int8 dynamic quantisation: a smaller file that the runtime serves, with its AUC delta and size."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from tests.edge.conftest import device, examples
from recstudio_edge.edge.quantize import auc_score, quantization_report, quantize_file
from recstudio_edge.edge.runtime import EdgePredictor


def test_auc_score_counts_ties_half():
    assert auc_score([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auc_score([0.5, 0.5], [0, 1]) == 0.5
    assert np.isnan(auc_score([0.1, 0.2], [1, 1]))


def test_quantized_copy_is_smaller_served_and_reports_its_delta(exported, tmp_path):
    model, reports = exported
    src = Path(reports["0"]["path"])
    q = quantize_file(src, tmp_path / "edge_0.int8.onnx")
    assert q["bytes"] < q["float_bytes"] and q["ratio"] < 0.9
    side = json.loads(Path(q["sidecar"]).read_text())
    assert side["quantized"]["weight_type"] == "int8" and side["quantized"]["source"] == "edge_0.onnx"
    assert side["sha256"] == hashlib.sha256(Path(q["path"]).read_bytes()).hexdigest()
    assert side["inputs"] == json.loads(src.with_suffix(".json").read_text())["inputs"]  # same checks apply
    # labelled rows: clicks drawn from the float model's own probabilities
    ex = {k: v.numpy() for k, v in examples(model, 400, 12).items()}
    with torch.no_grad():
        p = device(model, "0").module(*(torch.from_numpy(v) for v in ex.values())).numpy()
    labels = (np.random.default_rng(0).random(400) < p).astype(np.float32)
    batches = [{k: v[s:s + 100] for k, v in {**ex, "label": labels}.items()} for s in range(0, 400, 100)]
    rep = quantization_report(src, q["path"], batches)
    assert rep["rows"] == 400 and rep["auc_float"] == auc_score(p, labels) > 0.5
    assert rep["auc_delta"] == rep["auc_int8"] - rep["auc_float"] and abs(rep["auc_delta"]) < 0.02
    assert 0.0 < rep["max_abs_prob_diff"] < 0.05  # int8 changes the output, a little
    assert EdgePredictor(q["path"]).predict({k: v[:3] for k, v in ex.items()}).shape == (3,)
