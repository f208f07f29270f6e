"""``OnnxExport``: export a model's on-device part when training ends (docs/edge.md).

Any model with an on-device part (``edge_parts()``, ``recstudio_edge.edge.protocol``) works. At ``on_fit_end`` (global zero
only) the callback loads the best checkpoint's weights when a ``ModelCheckpoint`` kept one
(else the weights as they are), exports through the same function as ``--task=export``
(``recstudio_edge.edge.bundle.export_run``: named inputs, dynamic axes, sidecar, parity
check against PyTorch, optional int8 copy) into ``dirpath`` (default: the trainer's
``default_root_dir``), puts the model's own weights back, and keeps the reports in
``self.reports``. A parity failure raises: training that cannot produce a faithful device
model fails loudly. ``python run.py ... --export.after_fit=true`` adds it to a training run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import lightning.pytorch as pl
import torch


class OnnxExport(pl.Callback):
    def __init__(self, dirpath: Optional[str] = None, tolerance: float = 1e-4, exporter: str = "auto",
                 quantize: bool = False, config: Optional[Mapping[str, Any]] = None, use_best: bool = True,
                 split: Optional[str] = None):
        super().__init__()
        self.dirpath, self.tolerance, self.exporter = dirpath, float(tolerance), exporter
        self.quantize, self.config, self.use_best, self.split = bool(quantize), config, bool(use_best), split
        self.reports: Dict[str, Dict[str, Any]] = {}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], run_dir) -> "OnnxExport":
        ex = cfg["export"]
        return cls(str(run_dir), float(ex["tolerance"]), str(ex["exporter"]), bool(ex["quantize"]), config=cfg,
                   split=ex.get("split") or None)

    def setup(self, trainer, pl_module, stage: str) -> None:
        from ..edge.protocol import has_edge_part

        if not has_edge_part(pl_module):
            raise ValueError(f"OnnxExport: {type(pl_module).__name__} has no on-device part (it defines no "
                             f"edge_parts()); export.after_fit needs one")

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from ..edge.bundle import export_run

        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "") if self.use_best else ""
        saved = None
        if ckpt and Path(ckpt).exists():
            saved = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            pl_module.load_state_dict(state.get("state_dict", state))
        try:
            self.reports = export_run(pl_module, self.dirpath or trainer.default_root_dir, tol=self.tolerance,
                                      exporter=self.exporter, config=self.config, quantize=self.quantize,
                                      datamodule=getattr(trainer, "datamodule", None), split=self.split)
        finally:
            if saved is not None:
                pl_module.load_state_dict(saved)


__all__ = ["OnnxExport"]


def export_after_fit(cfg: Mapping[str, Any], model, run_dir) -> Optional["OnnxExport"]:
    """``export.after_fit: true``: the ``OnnxExport`` of the run folder, else None."""
    return OnnxExport.from_config(cfg, run_dir) if (cfg.get("export") or {}).get("after_fit") else None

