"""Callbacks: optional behaviour of a run (how training runs, not what the model is)."""
from .metrics_table import MetricsTable

__all__ = ["MetricsTable"]
