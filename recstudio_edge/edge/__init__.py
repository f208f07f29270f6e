"""The on-device side (docs/edge.md).

- ``protocol``: how a model declares its device and cloud parts (``edge_parts()``: ``TensorSpec``,
  ``Part``, ``EdgeParts``); everything below reads only that (needs torch);
- ``onnx_export``: ONNX export of a model's edge part with a JSON sidecar, verified against
  PyTorch with onnxruntime (needs torch);
- ``bundle``: ``export_run``, what ``--task=export`` writes (every variant, int8, split halves);
- ``runtime``: ``EdgePredictor``, serving an exported file with numpy and onnxruntime only, and
  ``EdgeRouter``, a model's several files served as one by the rows each serves;
- ``quantize``: int8 dynamic quantisation of an exported file (onnxruntime only);
- ``split``: split inference: codecs, the bandwidth-aware controller, a simulated link
  (numpy / onnxruntime), and cutting a model at a named layer (needs torch);
- ``modules``: ``EdgeStages``, the chain of named stages edge models are built from (torch).

This package imports nothing itself, so that ``recstudio_edge.edge.runtime`` loads on a device
without torch; the export names below are imported on first use.
"""
from __future__ import annotations

_LAZY = {"export_onnx": "onnx_export", "export_edge_models": "onnx_export", "OnnxExportError": "onnx_export",
         "EdgePredictor": "runtime", "EdgeRouter": "runtime", "EdgeInputError": "runtime",
         "export_run": "bundle", "edge_parts_of": "protocol", "EdgeParts": "protocol", "Part": "protocol"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
