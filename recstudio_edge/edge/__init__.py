"""The on-device side: ONNX export of a model's edge part, verified against PyTorch with onnxruntime."""
from .onnx_export import OnnxExportError, export_edge_models, export_onnx

__all__ = ["export_onnx", "export_edge_models", "OnnxExportError"]
