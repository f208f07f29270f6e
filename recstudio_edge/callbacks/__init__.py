"""Callbacks: optional behaviour of a run (how training runs, not what the model is).

``training_callbacks(cfg, model, run_dir)`` gives the callbacks a training run's config asks for,
in order: each entry of ``FROM_CONFIG`` is ``"module:function"`` taking ``(cfg, model, run_dir)``
and returning a callback or None (the model offers no hook it needs, or the config turns it off).
A new callback that a config key switches on is one entry here.
"""
from __future__ import annotations

import importlib

from .metrics_table import MetricsTable
from .onnx_export import OnnxExport

FROM_CONFIG = (
    "recstudio_edge.callbacks.plugin_stage:plugin_stage_from_config",  # PINRec's stage switch
    "recstudio_edge.callbacks.memory_update:memory_update_from_config",  # memory_update: (ECRec's memory refresh)
    "recstudio_edge.callbacks.onnx_export:export_after_fit",  # export.after_fit
    "recstudio_edge.callbacks.stream_position:stream_position_from_config",  # data.stream: the reader's position
    "recstudio_edge.callbacks.auc_stop:auc_stop_from_config",  # auc_stop.threshold (MLPerf's AUC target)
)


def training_callbacks(cfg, model, run_dir) -> list:
    """The callbacks of ``FROM_CONFIG`` that apply to this run (the module docstring)."""
    out = []
    for spec in FROM_CONFIG:
        module, _, name = spec.partition(":")
        cb = getattr(importlib.import_module(module), name)(cfg, model, run_dir)
        if cb is not None:
            out.append(cb)
    return out


__all__ = ["MetricsTable", "OnnxExport", "training_callbacks", "FROM_CONFIG"]
