"""The on-device side (docs/edge.md).

- ``onnx_export``: ONNX export of a model's edge part with a JSON sidecar, verified against
  PyTorch with onnxruntime (needs torch);
- ``runtime``: ``EdgePredictor``, serving an exported file with numpy and onnxruntime only;
- ``quantize``: int8 dynamic quantisation of an exported file (onnxruntime only);
- ``split``: split inference: codecs, the bandwidth-aware controller, a simulated link
  (numpy / onnxruntime), and cutting a model at a named layer (needs torch);
- ``modules``: ``EdgeStages``, the chain of named stages edge models are built from (torch).

This package imports nothing itself, so that ``recstudio_edge.edge.runtime`` loads on a device
without torch; the export names below are imported on first use.
"""
from __future__ import annotations

_LAZY = {"export_onnx": "onnx_export", "export_edge_models": "onnx_export", "OnnxExportError": "onnx_export",
         "EdgePredictor": "runtime", "EdgeInputError": "runtime"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
