"""Callbacks: optional behaviour of a run (how training runs, not what the model is)."""
from .metrics_table import MetricsTable
from .onnx_export import OnnxExport

__all__ = ["MetricsTable", "OnnxExport"]
