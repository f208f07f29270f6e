"""Split inference, as RTCoInfer does for CNNs: a device part, a compressed tensor over the
network, a cloud part, and a controller that picks the compression per request.

- **Cut.** ``export_split(model, layer, out_dir)`` cuts a device model of the model's
  ``edge_parts()`` (``recstudio_edge.edge.protocol``; its module an ``EdgeStages`` chain,
  ``recstudio_edge.edge.modules``) before the named layer
  (``classifier``, ``classifier.2``, ...) and exports both parts, each verified against PyTorch
  and with a sidecar: ``device.onnx`` (the model's inputs -> ``cut``) and ``cloud.onnx``
  (``cut`` -> the model's outputs); it also checks ``cloud(device(x)) == edge(x)``.
- **Codecs** (numpy only, so they run beside the torch-free runtime): ``encode(x) -> bytes``
  (a self-describing header, then the payload), ``decode(bytes) -> array``. Per row (the last
  axis is the channel axis), with the error each guarantees, ``|decode(encode(x)) - x|``:

  ========  =========================================  ====================================
  codec     payload per row of C float channels         error bound per element
  ========  =========================================  ====================================
  none      4C bytes (float32)                           0
  fp16      2C bytes                                     ``|x| * 2**-11`` (+ ``2**-24`` near 0)
  int8      C + 4 bytes (int8, float32 scale per row)    ``scale / 2``, scale = ``max|row| / 127``
  topk      k (2 + idx) bytes, k = ceil(ratio C)         dropped: ``<=`` the row's k-th largest
            (fp16 values, uint8/uint16 indices)          ``|x|``; kept: fp16's bound
  ========  =========================================  ====================================

  ``codec_bound(codec, x)`` returns that bound for an array; the tests hold every codec to it.
- **Controller.** ``SplitController`` keeps a bandwidth estimate (an EWMA of the measured
  seconds per byte of past transfers, i.e. a harmonic mean of throughputs) and, per request, estimates for every codec
  ``device + encode + bytes / bandwidth + rtt + decode + cloud`` and takes the most accurate
  codec (smallest measured accuracy loss) whose estimate fits the latency budget; if none
  fits, the one with the smallest estimate (and says so).
- **Simulation.** ``BandwidthTrace`` is a piecewise-constant bandwidth over time;
  ``SplitPipeline.infer`` runs device part, controller, codec, the simulated transfer, and the
  cloud part for one request, and reports the measured compute times and the simulated
  transfer time. ``codec_accuracy`` measures each codec's AUC loss against no compression on
  labelled rows.
"""
from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

_MAGIC = b"RE"
_HEADER = struct.Struct("<2sBBI")  # magic, codec id, ndim, k (topk) ; then ndim x uint32 shape
FP16_MAX = 65504.0


# ---- codecs -----------------------------------------------------------------------------------------
class Codec:
    """Compresses a float tensor for the network; see the module docstring for each one's bound."""

    name = "codec"
    cid = 0

    def encode(self, x: np.ndarray) -> bytes:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim < 1:
            raise ValueError(f"{self.name}: expected an array with a channel axis, got a scalar")
        if not np.isfinite(x).all():
            raise ValueError(f"{self.name}: the tensor holds inf or NaN")
        rows = x.reshape(-1, x.shape[-1])
        k, payload = self._encode(rows)
        head = _HEADER.pack(_MAGIC, self.cid, x.ndim, k) + struct.pack(f"<{x.ndim}I", *x.shape)
        return head + payload

    def nbytes(self, shape: Sequence[int]) -> int:
        """Size of ``encode(x)`` for an ``x`` of this shape (header included)."""
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return _HEADER.size + 4 * len(shape) + self._payload(rows, int(shape[-1]))

    def _encode(self, rows: np.ndarray) -> Tuple[int, bytes]:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _decode(self, buf: memoryview, rows: int, channels: int, k: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _payload(self, rows: int, channels: int) -> int:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class NoCodec(Codec):
    name, cid = "none", 1

    def _encode(self, rows):
        return 0, rows.tobytes()

    def _decode(self, buf, rows, channels, k):
        return np.frombuffer(buf, dtype=np.float32, count=rows * channels).reshape(rows, channels)

    def _payload(self, rows, channels):
        return 4 * rows * channels


class FP16Codec(Codec):
    name, cid = "fp16", 2

    def _encode(self, rows):
        if rows.size and float(np.abs(rows).max()) > FP16_MAX:
            raise ValueError(f"fp16: |x| up to {float(np.abs(rows).max()):.3g} exceeds the float16 range {FP16_MAX}")
        return 0, rows.astype(np.float16).tobytes()

    def _decode(self, buf, rows, channels, k):
        return np.frombuffer(buf, dtype=np.float16, count=rows * channels).astype(np.float32).reshape(rows, channels)

    def _payload(self, rows, channels):
        return 2 * rows * channels


class Int8RowCodec(Codec):
    """Symmetric int8 with one float32 scale per row."""

    name, cid = "int8", 3

    def _encode(self, rows):
        scale = (np.abs(rows).max(axis=1) / 127.0).astype(np.float32) if rows.size else np.zeros(len(rows), np.float32)
        safe = np.where(scale > 0, scale, np.float32(1.0))
        q = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype(np.int8)
        return 0, scale.tobytes() + q.tobytes()

    def _decode(self, buf, rows, channels, k):
        scale = np.frombuffer(buf, dtype=np.float32, count=rows)
        q = np.frombuffer(buf, dtype=np.int8, count=rows * channels, offset=4 * rows).reshape(rows, channels)
        return q.astype(np.float32) * scale[:, None]

    def _payload(self, rows, channels):
        return rows * (channels + 4)


class TopKCodec(Codec):
    """The ``ceil(ratio * C)`` channels of largest magnitude per row (values as fp16); the rest are 0."""

    name, cid = "topk", 4

    def __init__(self, ratio: float = 0.25):
        if not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"topk: ratio must be in (0, 1], got {ratio}")
        self.ratio = float(ratio)
        self.name = f"topk{self.ratio:g}"

    def k(self, channels: int) -> int:
        return max(1, min(channels, math.ceil(self.ratio * channels)))

    @staticmethod
    def _idx_dtype(channels: int):
        return np.uint8 if channels <= 256 else np.uint16

    def _encode(self, rows):
        c = rows.shape[1]
        k = self.k(c)
        if rows.size and float(np.abs(rows).max()) > FP16_MAX:
            raise ValueError(f"{self.name}: values exceed the float16 range {FP16_MAX}")
        idx = np.argpartition(-np.abs(rows), k - 1, axis=1)[:, :k] if k < c else np.tile(np.arange(c), (len(rows), 1))
        idx = np.sort(idx, axis=1)
        vals = np.take_along_axis(rows, idx, axis=1).astype(np.float16)
        return k, idx.astype(self._idx_dtype(c)).tobytes() + vals.tobytes()

    def _decode(self, buf, rows, channels, k):
        it = self._idx_dtype(channels)
        idx = np.frombuffer(buf, dtype=it, count=rows * k).reshape(rows, k).astype(np.int64)
        vals = np.frombuffer(buf, dtype=np.float16, count=rows * k, offset=rows * k * np.dtype(it).itemsize)
        out = np.zeros((rows, channels), dtype=np.float32)
        np.put_along_axis(out, idx, vals.reshape(rows, k).astype(np.float32), axis=1)
        return out

    def _payload(self, rows, channels):
        k = self.k(channels)
        return rows * k * (2 + np.dtype(self._idx_dtype(channels)).itemsize)


_BY_ID = {c.cid: c for c in (NoCodec, FP16Codec, Int8RowCodec, TopKCodec)}
CODEC_NAMES = ("none", "fp16", "int8", "topk")


def make_codec(spec: str | Codec) -> Codec:
    """``"none"``, ``"fp16"``, ``"int8"``, ``"topk"`` (ratio 0.25) or ``"topk:0.5"``."""
    if isinstance(spec, Codec):
        return spec
    name, _, arg = str(spec).lower().partition(":")
    if name.startswith("topk") and not arg and name != "topk":
        name, arg = "topk", name[4:]
    table = {"none": NoCodec, "fp16": FP16Codec, "int8": Int8RowCodec}
    if name == "topk":
        return TopKCodec(float(arg) if arg else 0.25)
    if name not in table:
        import difflib

        near = difflib.get_close_matches(name, CODEC_NAMES, n=1)
        raise ValueError(f"unknown codec {spec!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                         + f"; codecs: {', '.join(CODEC_NAMES)} (topk:<ratio>)")
    return table[name]()


def decode(data: bytes) -> np.ndarray:
    """Any codec's ``encode`` output back to a float32 array (the header names the codec)."""
    buf = memoryview(data)
    if len(buf) < _HEADER.size:
        raise ValueError(f"not a codec message: {len(buf)} bytes")
    magic, cid, ndim, k = _HEADER.unpack_from(buf)
    if magic != _MAGIC or cid not in _BY_ID:
        raise ValueError("not a codec message (bad magic or codec id)")
    shape = struct.unpack_from(f"<{ndim}I", buf, _HEADER.size)
    rows = int(np.prod(shape[:-1])) if ndim > 1 else 1
    codec = _BY_ID[cid]() if cid != TopKCodec.cid else TopKCodec(1.0)
    out = codec._decode(buf[_HEADER.size + 4 * ndim:], rows, int(shape[-1]), k)
    return out.reshape(shape)


def codec_bound(codec: Codec | str, x: np.ndarray) -> np.ndarray:
    """The per-element error bound of ``codec`` on ``x`` (module docstring), for tests and docs."""
    codec = make_codec(codec)
    x = np.asarray(x, dtype=np.float32)
    rows = x.reshape(-1, x.shape[-1])
    half = np.abs(rows) * 2.0 ** -11 + 2.0 ** -24
    if isinstance(codec, NoCodec):
        b = np.zeros_like(rows)
    elif isinstance(codec, FP16Codec):
        b = half
    elif isinstance(codec, Int8RowCodec):
        b = np.broadcast_to((np.abs(rows).max(axis=1) / 127.0 / 2.0 * (1 + 1e-6) + 1e-12)[:, None], rows.shape)
    else:
        k = codec.k(rows.shape[1])
        kth = -np.partition(-np.abs(rows), k - 1, axis=1)[:, k - 1]
        b = np.maximum(kth[:, None], half)
    return np.asarray(b).reshape(x.shape)


# ---- bandwidth and the controller -----------------------------------------------------------------
class BandwidthTrace:
    """Piecewise-constant bandwidth: ``[(start_s, bytes_per_s), ...]`` (sorted; the last holds on)."""

    def __init__(self, points: Sequence[Tuple[float, float]], rtt_ms: float = 0.0):
        pts = sorted((float(t), float(b)) for t, b in points)
        if not pts or pts[0][0] > 0 or any(b <= 0 for _, b in pts):
            raise ValueError("a trace starts at t <= 0 and has positive bandwidths")
        self.points, self.rtt_ms = pts, float(rtt_ms)

    def bandwidth(self, t: float) -> float:
        bw = self.points[0][1]
        for start, b in self.points:
            if start <= t:
                bw = b
        return bw

    def transfer_seconds(self, nbytes: int, start: float) -> float:
        """Time to send ``nbytes`` starting at ``start`` (bandwidth may change during it), plus the RTT."""
        left, t = float(nbytes), float(start)
        while True:
            bw = self.bandwidth(t)
            nxt = [s for s, _ in self.points if s > t]
            span = (nxt[0] - t) if nxt else math.inf
            if left <= bw * span:
                return (t + left / bw - start) + self.rtt_ms / 1000.0
            left -= bw * span
            t = nxt[0]


@dataclass
class CodecProfile:
    """What the controller knows of a codec: its accuracy loss (measured, e.g. AUC drop against
    ``none``) and its encode / decode time per request (ms)."""

    codec: Codec
    accuracy_loss: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0


@dataclass
class Decision:
    codec: Codec
    estimate_ms: float
    fits: bool
    estimates: Dict[str, float] = field(default_factory=dict)
    bandwidth: float = 0.0


class SplitController:
    """Per request: the most accurate codec whose estimated latency fits ``budget_ms``.

    ``estimate = device_ms + encode + nbytes / bandwidth + rtt + decode + cloud_ms``, with the
    bandwidth the inverse of an EWMA (weight ``smoothing`` on the newest) of observed seconds
    per byte (``observe``), starting from ``initial_bandwidth`` (bytes/s)."""

    def __init__(self, profiles: Sequence[CodecProfile], budget_ms: float, device_ms: float = 0.0,
                 cloud_ms: float = 0.0, rtt_ms: float = 0.0, initial_bandwidth: float = 1e6,
                 smoothing: float = 0.5):
        if not profiles:
            raise ValueError("the controller needs at least one codec")
        self.profiles = sorted(profiles, key=lambda p: (p.accuracy_loss, -p.codec.nbytes((1, 64))))
        self.budget_ms, self.device_ms, self.cloud_ms = float(budget_ms), float(device_ms), float(cloud_ms)
        self.rtt_ms, self.bandwidth, self.smoothing = float(rtt_ms), float(initial_bandwidth), float(smoothing)

    def observe(self, nbytes: int, seconds: float) -> None:
        """A finished transfer: ``nbytes`` took ``seconds`` (the RTT taken out). The average is
        taken over seconds per byte (a harmonic mean of throughputs): a drop in bandwidth
        pulls the estimate down faster than a rise pushes it up, so the controller errs on
        the side of the budget."""
        wire = max(seconds - self.rtt_ms / 1000.0, 1e-9)
        inv = (1 - self.smoothing) / self.bandwidth + self.smoothing * wire / max(nbytes, 1)
        self.bandwidth = 1.0 / inv

    def estimate_ms(self, p: CodecProfile, shape: Sequence[int]) -> float:
        return (self.device_ms + p.encode_ms + 1000.0 * p.codec.nbytes(shape) / self.bandwidth + self.rtt_ms
                + p.decode_ms + self.cloud_ms)

    def choose(self, shape: Sequence[int]) -> Decision:
        est = {p.codec.name: self.estimate_ms(p, shape) for p in self.profiles}
        for p in self.profiles:
            if est[p.codec.name] <= self.budget_ms:
                return Decision(p.codec, est[p.codec.name], True, est, self.bandwidth)
        best = min(self.profiles, key=lambda p: est[p.codec.name])
        return Decision(best.codec, est[best.codec.name], False, est, self.bandwidth)


# ---- running a split model ------------------------------------------------------------------------
class SplitPipeline:
    """A device part and a cloud part (``EdgePredictor``s), a controller, and a link."""

    def __init__(self, device, cloud, controller: SplitController, link: BandwidthTrace):
        self.device, self.cloud, self.controller, self.link = device, cloud, controller, link
        self.cut_name = cloud.input_names[0]

    def infer(self, batch: Mapping[str, Any], now_s: float, codec: Optional[str] = None) -> Tuple[np.ndarray, Dict]:
        """One request at simulated time ``now_s``: the output and a record of what happened."""
        t0 = time.perf_counter()
        cut = self.device.predict(batch, ignore_extra=True)
        t1 = time.perf_counter()
        dec = self.controller.choose(cut.shape)
        chosen = make_codec(codec) if codec is not None else dec.codec
        t2 = time.perf_counter()
        msg = chosen.encode(cut)
        t3 = time.perf_counter()
        transfer = self.link.transfer_seconds(len(msg), now_s)
        t4 = time.perf_counter()
        received = decode(msg)
        t5 = time.perf_counter()
        out = self.cloud.predict({self.cut_name: received})
        t6 = time.perf_counter()
        self.controller.observe(len(msg), transfer)
        ms = lambda a, b: (b - a) * 1000.0  # noqa: E731
        rec = {"t": now_s, "codec": chosen.name, "bytes": len(msg), "fits": dec.fits, "estimate_ms": dec.estimate_ms,
               "bandwidth_est": dec.bandwidth, "bandwidth_true": self.link.bandwidth(now_s),
               "device_ms": ms(t0, t1), "encode_ms": ms(t2, t3), "transfer_ms": transfer * 1000.0,
               "decode_ms": ms(t4, t5), "cloud_ms": ms(t5, t6)}
        rec["total_ms"] = rec["device_ms"] + rec["encode_ms"] + rec["transfer_ms"] + rec["decode_ms"] + rec["cloud_ms"]
        return out, rec

    def profile(self, batch: Mapping[str, Any], codecs: Sequence[str], repeats: int = 50) -> Dict[str, float]:
        """Median compute times (ms) of one request: device, cloud, and each codec's encode/decode."""
        cut = self.device.predict(batch, ignore_extra=True)
        med = lambda f: float(np.median([_timed(f) for _ in range(repeats)]))  # noqa: E731
        out = {"device_ms": med(lambda: self.device.predict(batch, ignore_extra=True)),
               "cloud_ms": med(lambda: self.cloud.predict({self.cut_name: cut}))}
        for c in codecs:
            codec = make_codec(c)
            msg = codec.encode(cut)
            out[f"{codec.name}_encode_ms"] = med(lambda: codec.encode(cut))
            out[f"{codec.name}_decode_ms"] = med(lambda: decode(msg))
        return out


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000.0


def codec_accuracy(device, cloud, codecs: Sequence[str], batches: Iterable[Mapping[str, np.ndarray]]
                   ) -> List[Dict[str, Any]]:
    """Per codec, on labelled rows: AUC, its loss against ``none``, the largest and the mean
    probability change against ``none`` (the mean is a steadier accuracy-loss signal for the
    controller than an AUC difference on a few thousand rows), bytes per row. ``device`` / ``cloud``: ``EdgePredictor``s of the two parts."""
    from .quantize import auc_score

    batches = list(batches)
    cuts = [device.predict(b, ignore_extra=True) for b in batches]
    labels = np.concatenate([np.asarray(b["label"]) for b in batches])
    name = cloud.input_names[0]
    ref = np.concatenate([cloud.predict({name: c}) for c in cuts])
    auc_ref = auc_score(ref, labels)
    rows = []
    for spec in codecs:
        codec = make_codec(spec)
        msgs = [codec.encode(c) for c in cuts]
        prob = np.concatenate([cloud.predict({name: decode(m)}) for m in msgs])
        a = auc_score(prob, labels)
        rows.append({"codec": codec.name, "auc": a, "auc_loss": auc_ref - a,
                     "max_abs_prob_diff": float(np.max(np.abs(prob - ref))),
                     "mean_abs_prob_diff": float(np.mean(np.abs(prob - ref))),
                     "bytes_per_row": sum(len(m) for m in msgs) / max(1, len(labels)),
                     "payload_bytes_1row": codec.nbytes((1, cuts[0].shape[-1])),
                     "max_cut_error": max(float(np.max(np.abs(decode(m) - c))) for m, c in zip(msgs, cuts))})
    return rows


# ---- cutting and exporting (torch) ----------------------------------------------------------------
def split_parts(part, layer: str):
    """``(device Part, cloud Part)``: a device ``Part`` (``edge.protocol``) whose module is built from
    named stages (``EdgeStages``) cut before ``layer``. The device half takes the part's inputs and
    returns ``cut``; the cloud half takes ``cut`` and returns the part's outputs. The cut's axes are
    found by running the device half at two sizes of every dynamic axis."""
    import torch

    from .protocol import EdgeProtocolError, Part, TensorSpec

    if not callable(getattr(part.module, "split", None)):
        raise EdgeProtocolError("the device model is not built from named stages "
                                "(recstudio_edge.edge.modules.EdgeStages): it cannot be cut")
    device, cloud = part.module.split(layer)
    small = {a: max(1, n // 2) if a != "batch" else n + 3 for a, n in part.sizes().items()}
    with torch.no_grad():
        cut_a = device(*part.example_inputs().values())
        cut_b = device(*part.example_inputs(small["batch"], small).values())
    if not isinstance(cut_a, torch.Tensor):
        raise EdgeProtocolError(f"the device half ending before {layer!r} returns {type(cut_a).__name__}, "
                                f"not one tensor")
    shape = []
    for ax in range(cut_a.dim()):
        if ax == 0:
            shape.append("batch")
        elif cut_a.shape[ax] != cut_b.shape[ax]:  # follows an input axis: name it after the one it follows
            named = [a for a in part.axis_names() if a != "batch" and part.sizes()[a] == cut_a.shape[ax]]
            shape.append(named[0] if named else f"cut_{ax}")
        else:
            shape.append(int(cut_a.shape[ax]))
    cut = TensorSpec("cut", "float32", tuple(shape))
    limits = dict(part.axis_limits)
    return (Part(device, part.inputs, (cut,), part.rows, limits),
            Part(cloud, (cut,), part.outputs, part.rows, {a: v for a, v in limits.items() if a in shape}))


def export_split(model, layer: str, out_dir: str | Path, variant: Optional[str] = None, tol: float = 1e-4,
                 exporter: str = "auto", config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Cut the device model ``variant`` (default: the first) of ``model.edge_parts()`` before
    ``layer`` and export ``device.onnx`` and ``cloud.onnx`` (each verified, each with its sidecar)
    into ``out_dir``; check that the two composed equal the uncut device model. Returns
    ``{device, cloud, layer, variant, cut_shape, composed_max_abs_diff}``."""
    import torch

    from .onnx_export import OnnxExportError, device_variants, export_part
    from .protocol import EdgeProtocolError

    parts, names = device_variants(model, None if variant is None else [variant])
    variant = names[0]
    part = parts.device[variant]
    try:
        dev_part, cloud_part = split_parts(part, layer)
    except EdgeProtocolError as e:
        raise OnnxExportError(f"{type(model).__name__}: {e}") from None
    out_dir = Path(out_dir)
    dev = export_part(dev_part, out_dir / "device.onnx", tol, exporter, model, variant, config,
                      extra={"split": {"part": "device", "layer": layer}})
    cl = export_part(cloud_part, out_dir / "cloud.onnx", tol, exporter, model, variant, config,
                     extra={"split": {"part": "cloud", "layer": layer}})
    ex = part.example_inputs()
    with torch.no_grad():  # the two parts composed are the uncut model, exactly
        cut = dev_part.module(*ex.values())
        diff = float((cloud_part.module(cut) - part.module(*ex.values())).abs().max())
    if diff > tol:
        raise OnnxExportError(f"cloud(device(x)) differs from the uncut device model by {diff:.3g}")
    return {"device": dev, "cloud": cl, "layer": layer, "variant": variant, "cut_shape": list(cut.shape),
            "composed_max_abs_diff": diff}


__all__ = ["Codec", "NoCodec", "FP16Codec", "Int8RowCodec", "TopKCodec", "make_codec", "decode", "codec_bound",
           "BandwidthTrace", "CodecProfile", "SplitController", "Decision", "SplitPipeline", "codec_accuracy",
           "export_split", "split_parts", "CODEC_NAMES"]
