"""int8 dynamic quantisation of an exported edge model, and what it costs in accuracy.

``quantize_file("edge_0.onnx")`` runs onnxruntime's ``quantize_dynamic`` (int8 weights of
``MatMul`` and of ``Gather``, i.e. the embedding tables, which are most of a recommender's
bytes; activations quantised on the fly) into ``edge_0.int8.onnx`` (temporary name, then
renamed) and writes its sidecar ``edge_0.int8.json``: the float sidecar with the new file's
name, size and hash and a ``quantized`` entry. The runtime serves it like any export.

``auc_of(predictor, batches)`` and ``quantization_report(float_path, int8_path, batches)``
measure the accuracy delta on labelled rows (``batches``: numpy dicts with the model's inputs
and ``label``): AUC of each, their difference, the largest probability difference, and both
sizes. Numpy and onnxruntime only, like the runtime.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping

import numpy as np

from .runtime import EdgePredictor, load_sidecar


def quantize_file(path: str | Path, out: str | Path | None = None) -> Dict[str, Any]:
    """Quantise ``path`` (an exported ``.onnx`` with sidecar) to int8; return
    ``{path, sidecar, bytes, float_bytes, ratio}``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, side = load_sidecar(path)
    out = Path(out) if out is not None else src.with_name(src.stem + ".int8.onnx")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.onnx")
    try:
        # it advises (logging.warning on the root logger) to run its shape-inference pre-processing,
        # which takes seconds and changes nothing for MatMul/Gather weights; a handler of our own
        # keeps that call from installing logging.basicConfig's stderr handler for the process
        root, quiet = logging.getLogger(), logging.NullHandler()
        root.addHandler(quiet)
        try:
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
        finally:
            root.removeHandler(quiet)
        data = tmp.read_bytes()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    qside = dict(side)
    qside.update(onnx=out.name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                 quantized={"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8",
                            "source": src.name, "source_sha256": side.get("sha256")})
    side_out = out.with_suffix(".json")
    tmp_side = side_out.with_name(f".{side_out.name}.tmp{os.getpid()}")
    tmp_side.write_text(json.dumps(qside, indent=1))
    os.replace(tmp_side, side_out)
    float_bytes = src.stat().st_size
    return {"path": str(out), "sidecar": str(side_out), "bytes": len(data), "float_bytes": float_bytes,
            "ratio": round(len(data) / float_bytes, 4)}


def auc_score(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC, ties counted half (the zoo's definition); NaN without both classes."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0.5
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def predictions(predictor: EdgePredictor, batches: Iterable[Mapping[str, np.ndarray]]):
    """``(probabilities, labels)`` over every row of ``batches``."""
    probs, labels = [], []
    for b in batches:
        probs.append(predictor.predict(b, ignore_extra=True))
        labels.append(np.asarray(b["label"]))
    return np.concatenate(probs), np.concatenate(labels)


def quantization_report(float_path: str | Path, int8_path: str | Path,
                        batches: Iterable[Mapping[str, np.ndarray]]) -> Dict[str, Any]:
    """AUC of the float and int8 files on the same labelled rows, the delta, sizes."""
    batches = list(batches)
    pf, labels = predictions(EdgePredictor(float_path), batches)
    pq, _ = predictions(EdgePredictor(int8_path), batches)
    af, aq = auc_score(pf, labels), auc_score(pq, labels)
    return {"rows": int(len(labels)), "auc_float": af, "auc_int8": aq, "auc_delta": aq - af,
            "max_abs_prob_diff": float(np.max(np.abs(pf - pq))) if len(pf) else 0.0,
            "float_bytes": Path(float_path).stat().st_size, "int8_bytes": Path(int8_path).stat().st_size}


__all__ = ["quantize_file", "quantization_report", "auc_score", "predictions"]
