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

``export_edge_models(model, out_dir)``: the generic path for any model with an on-device part
(``edge_model(variant)``, ``example_inputs()``, optionally ``edge_dynamic_axes()`` and
``edge_variants()``, e.g. one variant per PINRec group): one file per variant
(``edge.onnx`` or ``edge_<variant>.onnx``) and a report ``{variant: export_onnx's dict}``.
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

log = logging.getLogger("recstudio_edge")


class OnnxExportError(RuntimeError):
    pass


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


def _torch_export(module, args, input_names, output_names, tmp: Path, dynamic_axes, opset: Optional[int]):
    """Dynamo exporter first; the TorchScript exporter when dynamo cannot convert the module
    (e.g. ``nn.GRU`` with a symbolic length). Returns ``(exporter used, why dynamo was not)``."""
    errors = []
    for dynamo in (True, False):
        kw = dict(input_names=list(input_names), output_names=list(output_names), dynamic_axes=dict(dynamic_axes),
                  dynamo=dynamo)
        if opset is not None:
            kw["opset_version"] = opset
        if dynamo:
            kw.update(external_data=False, optimize=True)
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
                make_inputs: Optional[Callable[[Dict[str, int]], Any]] = None, seed: int = 0) -> Dict[str, Any]:
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
                                     tmp, dynamic_axes, opset)
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
        for combo in combos:
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
        max_diff = max(c["max_abs_diff"] for c in checks)
        if not max_diff <= tol:
            raise OnnxExportError(f"onnxruntime differs from PyTorch by {max_diff:.3g} > {tol:g} ({checks})")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    report = {"path": str(path), "exporter": exporter, "fallback_reason": fallback, "opset": opset_used, "inputs": input_names,
              "outputs": list(output_names), "dynamic_axes": {k: {int(a): n for a, n in v.items()}
                                                              for k, v in dynamic_axes.items()},
              "checks": checks, "max_abs_diff": max_diff, "tolerance": tol, "bytes": path.stat().st_size,
              "seconds": round(time.perf_counter() - t0, 3)}
    log.info("exported %s (%s exporter, opset %s): max abs diff vs PyTorch %.3g over %d input sizes",
             path, exporter, opset_used, max_diff, len(checks))
    return report


def export_edge_models(model, out_dir: str | os.PathLike, tol: float = 1e-4) -> Dict[str, Dict[str, Any]]:
    """Export every on-device variant of ``model`` (see the module docstring) into ``out_dir``."""
    if not callable(getattr(model, "edge_model", None)) or not callable(getattr(model, "example_inputs", None)):
        raise OnnxExportError(f"{type(model).__name__} has no on-device part (edge_model() and example_inputs())")
    out_dir = Path(out_dir)
    variants = list(model.edge_variants()) if callable(getattr(model, "edge_variants", None)) else [None]
    examples = model.example_inputs()
    names = list(examples) if isinstance(examples, Mapping) else [f"input_{i}" for i in range(len(examples))]
    axes = dict(model.edge_dynamic_axes()) if callable(getattr(model, "edge_dynamic_axes", None)) else \
        {n: {0: "batch"} for n in names}
    outputs = [k for k in axes if k not in names] or ["output"]
    make = None
    if isinstance(examples, Mapping) and {"batch", "seq"} >= {a for v in axes.values() for a in v.values()}:
        def make(sizes):  # the model's own valid inputs at these sizes
            return model.example_inputs(sizes.get("batch", 4), sizes.get("seq"))
    reports = {}
    for v in variants:
        edge = model.edge_model() if v is None else model.edge_model(v)
        fname = "edge.onnx" if v is None else f"edge_{v}.onnx"
        reports[str(v) if v is not None else "edge"] = export_onnx(edge, examples, names, out_dir / fname, axes,
                                                                   output_names=outputs, tol=tol, make_inputs=make)
    return reports


__all__ = ["export_onnx", "export_edge_models", "OnnxExportError", "axis_sizes", "random_like"]
