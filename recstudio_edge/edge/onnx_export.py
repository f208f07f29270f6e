"""ONNX export of a model's on-device part, verified before it is kept.

``export_onnx(module, example_inputs, input_names, path, dynamic_axes)``:

1. ``torch.onnx.export`` (the dynamo exporter; if it cannot trace the module, the TorchScript
   exporter) into a temporary file beside ``path``, weights embedded (one self-contained file);
2. ``onnx.checker.check_model`` on it;
3. onnxruntime against PyTorch on random valid inputs for every combination of two sizes of
   each dynamic axis (e.g. two batch sizes x two sequence lengths); the largest absolute
   difference over all outputs is recorded and must be ``<= tol`` (default 1e-4);
4. only then renamed to ``path``. Anything failing leaves no file at ``path`` and raises
   ``OnnxExportError``.

Random inputs: ``make_inputs(sizes)`` when given (``sizes``: {axis name: size}, e.g. a model's
``example_inputs(batch, length)``); otherwise each input is redrawn like its example (integer
tensors uniformly in the example's [min, max], so id ranges stay valid; float tensors with the
example's mean and standard deviation), with the dynamic axes resized.

``export_edge_models(model, out_dir)``: the generic path for any model with an on-device part:
it reads the model's ``edge_parts()`` (``recstudio_edge.edge.protocol``) and nothing else, and
writes one file per device variant (``edge.onnx``, or ``edge_<variant>.onnx`` for a model with
several, e.g. one per PINRec group), each exported by ``export_part`` on the part's own valid
example inputs with its JSON sidecar (``edge_<variant>.json``: input names, dtypes, shapes with
the dynamic axes named, value ranges and vocabulary sizes, axis limits, the rows the file serves,
config hash, export time, parity checks, the file's sha256; docs/edge.md), and returns
``{variant: export_onnx's dict}``. ``edge.bundle.export_run`` adds the int8 copies, the split
halves and ``export.json``: it is what ``--task=export`` and the ``OnnxExport`` callback call, so
there is one export path.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import time
import warnings
from contextlib import redirect_stdout
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..progress import progress
from ..utils import atomic_write_text
from .protocol import EdgeProtocolError, Part, edge_parts_of

log = logging.getLogger("recstudio_edge")
from .runtime import SIDECAR_FORMAT, file_sha256  # noqa: E402  (one definition, shared with the runtime)


class OnnxExportError(RuntimeError):
    pass


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(float16)": "float16"}


def _as_dict(example_inputs, input_names: Sequence[str]) -> Dict[str, torch.Tensor]:
    if isinstance(example_inputs, Mapping):
        missing = [n for n in input_names if n not in example_inputs]
        if missing:
            raise OnnxExportError(f"example_inputs lack {missing} (have {list(example_inputs)})")
        return {n: example_inputs[n] for n in input_names}
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if len(example_inputs) != len(input_names):
        raise OnnxExportError(f"{len(example_inputs)} example inputs for {len(input_names)} input names")
    return dict(zip(input_names, example_inputs))


def axis_sizes(examples: Dict[str, torch.Tensor], dynamic_axes: Mapping[str, Mapping[int, str]]) -> Dict[str, List[int]]:
    """Two sizes per named dynamic axis: batch-like axes (axis 0) the example size and a larger
    one; other axes (sequence) the example size and a shorter one (never longer: models may cap
    their length)."""
    sizes: Dict[str, List[int]] = {}
    for name, axes in dynamic_axes.items():
        if name not in examples:
            continue
        for ax, axis_name in dict(axes).items():
            n = int(examples[name].shape[int(ax)])
            if axis_name in sizes:
                continue
            sizes[axis_name] = [n, n + 3] if int(ax) == 0 else [n, max(1, n // 2)]
    return sizes


def random_like(examples: Dict[str, torch.Tensor], dynamic_axes: Mapping[str, Mapping[int, str]],
                sizes: Dict[str, int], generator: torch.Generator) -> Dict[str, torch.Tensor]:
    out = {}
    for name, ex in examples.items():
        shape = list(ex.shape)
        for ax, axis_name in dict(dynamic_axes.get(name, {})).items():
            shape[int(ax)] = sizes[axis_name]
        if ex.dtype == torch.bool:
            out[name] = torch.rand(shape, generator=generator) < 0.5
        elif not ex.is_floating_point():
            lo, hi = (int(ex.min()), int(ex.max())) if ex.numel() else (0, 1)
            out[name] = torch.randint(lo, hi + 1, shape, generator=generator, dtype=ex.dtype)
        else:
            x = ex.float()
            mu, sd = (float(x.mean()), float(x.std()) if x.numel() > 1 else 1.0) if x.numel() else (0.0, 1.0)
            out[name] = (torch.randn(shape, generator=generator) * (sd or 1.0) + mu).to(ex.dtype)
    return out


def _summary(e: Exception) -> str:
    """The exporter's own exception summary when it has one, else the first lines."""
    text = str(e)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
    return " ".join(text.split())[:400]


class _Quiet:
    """Silence the exporters' progress prints and info/warning logs (kept: errors)."""

    NAMES = ("torch.onnx", "torch.export", "onnxscript", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")

    def __enter__(self):
        self.levels = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.ERROR)
        self.out = redirect_stdout(io.StringIO())
        self.out.__enter__()
        self.warn = warnings.catch_warnings()
        self.warn.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        self.warn.__exit__(*exc)
        self.out.__exit__(*exc)
        for n, lvl in self.levels.items():
            logging.getLogger(n).setLevel(lvl)
        return False


EXPORTERS = ("auto", "dynamo", "torchscript")


def _takes_varargs(module) -> bool:
    import inspect

    try:
        return any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False


def _torch_export(module, args, input_names, output_names, tmp: Path, dynamic_axes, opset: Optional[int],
                  exporter: str = "auto"):
    """``auto``: the dynamo exporter first, the TorchScript exporter when dynamo cannot convert
    the module (e.g. ``nn.GRU`` with a symbolic length); ``dynamo`` / ``torchscript``: that one
    only (TorchScript is about 50x faster to export small models: the tests use it).
    Returns ``(exporter used, why dynamo was not)``."""
    if exporter not in EXPORTERS:
        from ..names import did_you_mean

        raise OnnxExportError(f"unknown exporter {exporter!r}: {did_you_mean(exporter, EXPORTERS)}")
    errors = []
    for dynamo in {"auto": (True, False), "dynamo": (True,), "torchscript": (False,)}[exporter]:
        kw = dict(input_names=list(input_names), output_names=list(output_names), dynamic_axes=dict(dynamic_axes),
                  dynamo=dynamo)
        if opset is not None:
            kw["opset_version"] = opset
        if dynamo:
            kw.update(external_data=False, optimize=True)
            if _takes_varargs(module):  # e.g. EdgeStages.forward(*inputs): no parameter names to match
                from torch.export import Dim

                kw.pop("dynamic_axes")
                kw["dynamic_shapes"] = (tuple({int(a): Dim.AUTO for a in dynamic_axes.get(n, {})} or None
                                              for n in input_names),)
        try:
            with _Quiet():
                torch.onnx.export(module, args, str(tmp), **kw)
            return ("dynamo" if dynamo else "torchscript"), (errors[0] if errors else None)
        except Exception as e:  # noqa: BLE001 - try the other exporter, report both if both fail
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {_summary(e)}")
            if tmp.exists():
                tmp.unlink()
    raise OnnxExportError("torch.onnx.export failed:\n" + "\n".join(errors))


def export_onnx(module: torch.nn.Module, example_inputs, input_names: Sequence[str], path: str | os.PathLike,
                dynamic_axes: Optional[Mapping[str, Mapping[int, str]]] = None,
                output_names: Sequence[str] = ("output",), tol: float = 1e-4, opset: Optional[int] = None,
                make_inputs: Optional[Callable[[Dict[str, int]], Any]] = None, seed: int = 0,
                exporter: str = "auto") -> Dict[str, Any]:
    """Export ``module(*inputs)`` to ``path``, check it, verify it against PyTorch; return a report
    ``{path, exporter, opset, inputs, outputs, dynamic_axes, checks: [{sizes, max_abs_diff}],
    max_abs_diff, seconds}``. See the module docstring."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    input_names = list(input_names)
    dynamic_axes = {k: dict(v) for k, v in (dynamic_axes or {}).items()}
    examples = {k: v.detach().cpu() for k, v in _as_dict(example_inputs, input_names).items()}
    module = module.cpu().eval()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with torch.no_grad():
            exporter, fallback = _torch_export(module, tuple(examples[n] for n in input_names), input_names, output_names,
                                               tmp, dynamic_axes, opset, exporter)
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model, full_check=True)
        opset_used = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        feed_names = [i.name for i in sess.get_inputs()]
        if sorted(feed_names) != sorted(input_names):
            raise OnnxExportError(f"the ONNX graph takes inputs {feed_names}, expected {input_names}")
        sizes = axis_sizes(examples, dynamic_axes)
        names = list(sizes)
        combos = [dict(zip(names, c)) for c in itertools.product(*(sizes[n] for n in names))] or [{}]
        g = torch.Generator().manual_seed(seed)
        checks = []
        for combo in progress(combos, desc=f"verify {Path(path).name}", unit="size"):
            if make_inputs is not None:
                inputs = _as_dict(make_inputs(combo), input_names)
            else:
                inputs = random_like(examples, dynamic_axes, combo, g)
            with torch.no_grad():
                ref = module(*(inputs[n] for n in input_names))
            refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
            got = sess.run(None, {n: inputs[n].numpy() for n in input_names})
            if len(got) != len(refs):
                raise OnnxExportError(f"onnxruntime returned {len(got)} outputs, PyTorch {len(refs)}")
            diff = 0.0
            for r, o in zip(refs, got):
                r = r.detach().cpu().numpy()
                if r.shape != o.shape:
                    raise OnnxExportError(f"sizes {combo}: output shape {o.shape} in onnxruntime, {r.shape} in PyTorch")
                diff = max(diff, float(np.max(np.abs(r.astype(np.float64) - o.astype(np.float64)))) if r.size else 0.0)
            checks.append({"sizes": combo, "max_abs_diff": diff})
        out_specs = [{"name": o.name, "dtype": _ORT_TYPES.get(o.type, o.type),
                      "shape": [d if isinstance(d, int) else str(d) for d in (o.shape or [])]}
                     for o in sess.get_outputs()]
        for spec, axes in zip(out_specs, (dynamic_axes.get(o["name"], {}) for o in out_specs)):
            for ax, axis_name in axes.items():  # the exporter's own symbol names -> ours
                if int(ax) < len(spec["shape"]):
                    spec["shape"][int(ax)] = axis_name
        in_specs = [{"name": n, "dtype": str(examples[n].numpy().dtype),
                     "shape": [dynamic_axes.get(n, {}).get(i, int(d)) for i, d in enumerate(examples[n].shape)]}
                    for n in input_names]
        max_diff = max(c["max_abs_diff"] for c in checks)
        if not max_diff <= tol:
            raise OnnxExportError(f"onnxruntime differs from PyTorch by {max_diff:.3g} > {tol:g} ({checks})")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    report = {"path": str(path), "exporter": exporter, "fallback_reason": fallback, "opset": opset_used, "inputs": input_names,
              "outputs": list(output_names), "input_specs": in_specs, "output_specs": out_specs, "dynamic_axes": {k: {int(a): n for a, n in v.items()}
                                                              for k, v in dynamic_axes.items()},
              "checks": checks, "max_abs_diff": max_diff, "tolerance": tol, "bytes": path.stat().st_size,
              "seconds": round(time.perf_counter() - t0, 3)}
    log.info("exported %s (%s exporter, opset %s): max abs diff vs PyTorch %.3g over %d input sizes",
             path, exporter, opset_used, max_diff, len(checks))
    return report


def config_hash(config: Optional[Mapping[str, Any]] = None, model=None) -> Dict[str, str]:
    """``{"config_hash": sha256 hex, "config_source": "run config" | "model"}``: of the run's merged
    config when given, else of what defines the model's shapes (class, sizes, parameter shapes)."""
    if config is not None:
        text, source = json.dumps(config, sort_keys=True, default=str), "run config"
    else:
        desc = {"class": type(model).__name__,
                # the sizes every Recommender has; the rest of a model's shape is in its parameter shapes
                **{k: getattr(model, k) for k in ("num_users", "num_items", "max_seq_len")
                   if isinstance(getattr(model, k, None), (int, float, str))},
                "params": {k: list(v.shape) for k, v in model.state_dict().items()}}
        text, source = json.dumps(desc, sort_keys=True, default=str), "model"
    return {"config_hash": hashlib.sha256(text.encode()).hexdigest(), "config_source": source}


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``edge_0.onnx`` -> ``edge_0.json``."""
    p = Path(onnx_path)
    return p.with_suffix(".json")


def onnx_name(variant: str) -> str:
    """File name of a device variant: ``edge.onnx`` for a model's single device model, else ``edge_<variant>.onnx``."""
    return "edge.onnx" if variant == "edge" else f"edge_{variant}.onnx"


def build_sidecar(model, report: Mapping[str, Any], part: Part, variant: Optional[str] = None,
                  config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The JSON that travels with an ONNX file: everything the torch-free runtime checks inputs
    against (names, dtypes, shapes with named axes, value ranges, axis limits) and routes by
    (``rows``: the rows this file serves, ``{}`` = every row)."""
    path = Path(report["path"])
    specs = {s.name: s for s in part.inputs}
    inputs = []
    for s in report["input_specs"]:
        spec = specs.get(s["name"])
        r = list(spec.value_range) if spec is not None and spec.value_range else None
        inputs.append({**s, "range": r, "vocab_size": (r[1] + 1) if r else None})
    limits = {a: (int(part.axis_limits[a]) if a in part.axis_limits else None)
              for a in sorted({d for s in (*part.inputs, *part.outputs) for d in s.shape if isinstance(d, str)})}
    return {"format": SIDECAR_FORMAT, "model": type(model).__name__, "variant": variant, "onnx": path.name,
            "sha256": file_sha256(path), "bytes": report["bytes"],
            "inputs": inputs, "outputs": report["output_specs"], "axes": limits,
            "rows": {k: int(v) for k, v in part.rows.items()},
            "vocab": {k: int(getattr(model, k)) for k in ("num_items", "num_users")
                      if isinstance(getattr(model, k, None), int)},
            **config_hash(config, model),
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "exporter": report["exporter"], "opset": report["opset"], "torch": torch.__version__,
            "parity": {"max_abs_diff": report["max_abs_diff"], "tolerance": report["tolerance"],
                       "checks": report["checks"]}}


def export_part(part: Part, path: str | os.PathLike, tol: float = 1e-4, exporter: str = "auto", model=None,
                variant: Optional[str] = None, config: Optional[Mapping[str, Any]] = None,
                extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Export one ``Part`` (``edge.protocol``) with ``export_onnx`` on its own valid example inputs
    (every size combination of its dynamic axes), then write its sidecar (plus ``extra`` keys);
    returns export_onnx's report with ``"sidecar"``."""
    r = export_onnx(part.module, part.example_inputs(), part.input_names, path, part.dynamic_axes(),
                    output_names=part.output_names, tol=tol,
                    make_inputs=lambda sizes: part.example_inputs(sizes.get("batch", 4), sizes), exporter=exporter)
    side = build_sidecar(model, r, part, variant, config)
    side.update(extra or {})
    r["sidecar"] = str(atomic_write_text(sidecar_path(r["path"]), json.dumps(side, indent=1)))
    return r


def device_variants(model, variants: Optional[Sequence[str]] = None):
    """``(model.edge_parts(), the variant names asked for)`` (every variant by default); an
    ``OnnxExportError`` for a model with no on-device part or a variant it does not have."""
    try:
        parts = edge_parts_of(model)
    except EdgeProtocolError as e:
        raise OnnxExportError(str(e)) from None
    names = parts.variants if variants is None else [str(v) for v in variants]
    unknown = [v for v in names if v not in parts.device]
    if unknown:
        from ..names import did_you_mean

        raise OnnxExportError(f"{type(model).__name__} has no device variant {unknown[0]!r}: "
                              f"{did_you_mean(unknown[0], parts.variants)}")
    return parts, names


def export_edge_models(model, out_dir: str | os.PathLike, tol: float = 1e-4, exporter: str = "auto",
                       config: Optional[Mapping[str, Any]] = None, variants: Optional[Sequence[str]] = None
                       ) -> Dict[str, Dict[str, Any]]:
    """Export every device variant of ``model`` (its ``edge_parts()``; or the given ``variants``)
    into ``out_dir``: ``onnx_name(variant)`` each with its sidecar; returns ``{variant: report}``."""
    parts, names = device_variants(model, variants)
    out_dir = Path(out_dir)
    return {v: export_part(parts.device[v], out_dir / onnx_name(v), tol, exporter, model, v, config)
            for v in progress(names, desc="export", unit="variant")}


__all__ = ["export_onnx", "export_edge_models", "export_part", "device_variants", "OnnxExportError", "axis_sizes", "random_like",
           "build_sidecar", "sidecar_path", "onnx_name", "config_hash", "EXPORTERS", "SIDECAR_FORMAT"]
