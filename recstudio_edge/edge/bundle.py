"""What ``--task=export`` and the ``OnnxExport`` callback write: one bundle of files per run.

``export_run(model, out_dir)``: every device variant of the model's ``edge_parts()``, exported
and verified (``onnx_export.export_edge_models``); with ``quantize``, an int8 copy of each
(``quantize``) with its size and its AUC on the labelled test rows each file serves; with
``split``, each device model cut at that stage into ``device.onnx`` + ``cloud.onnx``
(``split.export_split``); and ``export.json`` with every report. Kept apart from
``onnx_export`` and ``split`` because it uses both.

The set is written into a temporary folder ``out_dir/.export-*`` and moved into place only when
every file of it has been written and verified; ``manifest.json`` (``runtime.MANIFEST``), written
last in each folder of the set, lists every file with its sha256. A set without it is incomplete
(the export was killed, or failed), and the runtime checks each sidecar against it: an edited
sidecar (say, a widened id range) is refused.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch

from ..progress import progress
from ..utils import atomic_write_text
from .onnx_export import export_edge_models
from .protocol import EdgeProtocolError, edge_parts_of, select_rows
from .runtime import MANIFEST, file_sha256, manifest
from .split import export_split, split_parts

log = logging.getLogger("recstudio_edge")


def labelled_batches(datamodule, stage: str = "test", batch_size: int = 4096):
    """The datamodule's ``stage`` rows as numpy dicts (for the quantisation delta); ``[]`` when it
    has none or they carry no ``label`` (ranking data)."""
    if datamodule is None or not callable(getattr(datamodule, "eval_dataset", None)):
        return []
    try:
        ds = datamodule.eval_dataset(stage)
    except Exception:  # noqa: BLE001 - e.g. sample files without a test file: no delta, said in the report
        return []
    out = []
    for s in range(0, len(ds), batch_size):
        b = ds[torch.arange(s, min(s + batch_size, len(ds)))]
        if "label" not in b:
            return []
        out.append({k: v.cpu().numpy() for k, v in b.items() if isinstance(v, torch.Tensor)})
    return out


def export_run(model, out_dir: str | os.PathLike, tol: float = 1e-4, exporter: str = "auto",
               config: Optional[Mapping[str, Any]] = None, quantize: bool = False, datamodule=None,
               split: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    """What ``--task=export`` and the ``OnnxExport`` callback do: ``export_edge_models``; with
    ``quantize``, an int8 copy of each file (``recstudio_edge.edge.quantize``) with its size and,
    on the datamodule's labelled test rows (the rows each file serves, by its ``rows``), the AUC of
    both; with ``split`` (a stage name), each variant also cut there into ``device.onnx`` and
    ``cloud.onnx`` (in ``split_<variant>/`` when the model has several) (``edge.split.export_split``, verified like a whole export); then
    ``export.json`` with every report, in ``out_dir``."""
    parts = edge_parts_of(model)
    if split:  # a stage that does not exist fails before anything is written
        for part in parts.device.values():
            split_parts(part, split)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".export-*"):  # what a killed export left
        shutil.rmtree(stale, ignore_errors=True)
    for old in [out_dir / MANIFEST, *out_dir.glob(f"split_*/{MANIFEST}")]:
        old.unlink(missing_ok=True)  # the previous set is no longer marked complete while this one is written
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        reports = _export_into(model, parts, stage, tol, exporter, config, quantize, datamodule, split)
        reports = _moved(reports, str(stage), str(out_dir))
        written = sorted(p for p in stage.rglob("*") if p.is_file())
        for p in written:
            dest = out_dir / p.relative_to(stage)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, dest)
        atomic_write_text(out_dir / "export.json", json.dumps(reports, indent=1, default=str))
        folders: Dict[Path, Dict[str, str]] = {}
        for p in [*(out_dir / p.relative_to(stage) for p in written), out_dir / "export.json"]:
            folders.setdefault(p.parent, {})[p.name] = file_sha256(p)
        for folder, files in folders.items():  # last: the mark of a complete set
            atomic_write_text(folder / MANIFEST, json.dumps(manifest(files), indent=1))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return reports


def _moved(obj, old: str, new: str):
    """``obj`` with every path under ``old`` renamed to ``new``."""
    if isinstance(obj, dict):
        return {k: _moved(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_moved(v, old, new) for v in obj]
    if isinstance(obj, str) and obj.startswith(old):
        return new + obj[len(old):]
    return obj


def _export_into(model, parts, out_dir: Path, tol, exporter, config, quantize, datamodule, split):
    reports = export_edge_models(model, out_dir, tol=tol, exporter=exporter, config=config)
    if quantize:
        from .quantize import quantization_report, quantize_file

        batches = labelled_batches(datamodule)
        for name, r in progress(reports.items(), total=len(reports), desc="int8", unit="variant"):
            part = parts.device[name]
            q = quantize_file(r["path"])
            mine = batches
            if part.rows and batches:  # the rows this file serves
                try:
                    mine = [{k: v[select_rows(part, b)] for k, v in b.items()} for b in batches]
                except EdgeProtocolError:
                    mine = []
                mine = [b for b in mine if len(b["label"])]
                q["rows_of"] = ", ".join(f"{k}={v}" for k, v in part.rows.items())
            if mine:
                q.update(quantization_report(r["path"], q["path"], mine))
                log.info("%s int8: %d -> %d bytes, AUC %.4f -> %.4f (delta %+.4f) on %d test rows", name,
                         q["float_bytes"], q["bytes"], q["auc_float"], q["auc_int8"], q["auc_delta"], q["rows"])
            else:
                q["accuracy"] = "not measured: no labelled (pointwise) test rows" + \
                    (f" with {q['rows_of']}" if q.get("rows_of") else "")
            r["int8"] = q
    if split:
        for name, r in progress(reports.items(), total=len(reports), desc="split", unit="variant"):
            folder = Path(out_dir) if len(reports) == 1 else Path(out_dir) / f"split_{name}"
            r["split"] = export_split(model, split, folder, variant=name, tol=tol, exporter=exporter, config=config)
    return reports


__all__ = ["export_run", "labelled_batches"]
