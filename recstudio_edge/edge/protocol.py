"""The edge-cloud protocol: how a model declares what runs on the device and what stays on the cloud.

A model with an on-device part writes one method, ``edge_parts() -> EdgeParts``; export, parity
checks, the torch-free runtime's sidecars, split inference, the model sweep and ``bench/edge.py``
read this and nothing else (none of them knows a model's name, fields or keys).

- ``TensorSpec``: one named input or output. Names are batch field names (``item_id``, ``seq``,
  ``group_id``, ...), so a batch, an exported graph and a checkpoint's signature speak one
  vocabulary. ``shape`` entries that are strings are dynamic axes (``"batch"``, ``"seq"``);
  ``low`` / ``high`` bound integer values (inclusive); ``padding`` is the value that left-pads a
  history along its last axis (allowed besides ``low..high``).
- ``Part``: a plain ``nn.Module`` with its input and output specs. ``module(*inputs)`` takes the
  tensors in ``inputs`` order. ``rows`` says which input rows a variant serves (``{"group_id": 3}``:
  the rows of group 3; ``{}``: every row), so a router (the runtime, ``--backend=onnx`` inference,
  the int8 accuracy check) needs no knowledge of the model. ``axis_limits`` caps a dynamic axis
  (``{"seq": max_seq_len}``: trained up to that length).
- ``EdgeParts``: ``device`` maps a variant name to its ``Part`` (a model with one device model names
  it ``"edge"``; PINRec names one per user group); ``cloud`` is the cloud-side model, when there is
  one (PINRec: the routed all-groups network; ECRec: the memory writer), or ``None`` when the device
  part is the whole model.

Helpers ``ids``, ``history``, ``dense`` and ``probability`` build the specs shared across the zoo
from a vocabulary size, so models do not copy input descriptions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Protocol, Tuple, Union, runtime_checkable

import torch
from torch import nn

Dim = Union[int, str]
DTYPES = {"int64": torch.long, "int32": torch.int32, "float32": torch.float32, "bool": torch.bool}


class EdgeProtocolError(TypeError):
    """A model without an on-device part, or a malformed declaration of one."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str = "int64"
    shape: Tuple[Dim, ...] = ("batch",)
    low: Optional[int] = None
    high: Optional[int] = None
    padding: Optional[int] = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise EdgeProtocolError(f"input {self.name!r}: dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if (self.low is None) != (self.high is None) or (self.low is not None and self.low > self.high):
            raise EdgeProtocolError(f"input {self.name!r}: low/high must both be set, low <= high "
                                    f"(got {self.low}, {self.high})")

    @property
    def value_range(self) -> Optional[Tuple[int, int]]:
        """Every value an input may hold, padding included (what the runtime checks)."""
        if self.low is None:
            return None
        lo = self.low if self.padding is None else min(self.low, self.padding)
        hi = self.high if self.padding is None else max(self.high, self.padding)
        return int(lo), int(hi)

    def axes(self) -> Dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def example(self, sizes: Mapping[str, int], generator: torch.Generator) -> torch.Tensor:
        """A valid random tensor at these axis sizes: integers uniform in ``low..high``; a history
        left-padded with ``padding`` to a random length per row (the first row full); floats N(0, 1)."""
        try:
            shape = [int(sizes[d]) if isinstance(d, str) else int(d) for d in self.shape]
        except KeyError as e:
            raise EdgeProtocolError(f"input {self.name!r}: no size given for axis {e.args[0]!r}") from None
        dtype = DTYPES[self.dtype]
        if dtype == torch.bool:
            return torch.rand(shape, generator=generator) < 0.5
        if not dtype.is_floating_point:
            lo, hi = (self.low, self.high) if self.low is not None else (0, 1)
            x = torch.randint(int(lo), int(hi) + 1, shape, generator=generator, dtype=dtype)
            if self.padding is not None and len(shape) >= 2 and shape[-1] > 0:
                L = shape[-1]
                rows = x.reshape(-1, L)
                n = torch.randint(0, L + 1, (rows.shape[0],), generator=generator)
                n[0] = L  # one full row
                pad = torch.arange(L).unsqueeze(0) < (L - n).unsqueeze(1)
                x = rows.masked_fill(pad, int(self.padding)).reshape(shape)
            return x
        return torch.randn(shape, generator=generator).to(dtype)


def ids(name: str, vocab: int) -> TensorSpec:
    """``int64 [batch]`` ids in ``1..vocab-1`` (0 is padding)."""
    return TensorSpec(name, "int64", ("batch",), 1, int(vocab) - 1)


def history(name: str, vocab: int, axis: str = "seq") -> TensorSpec:
    """``int64 [batch, seq]`` ids in ``1..vocab-1``, oldest first, left-padded with 0."""
    return TensorSpec(name, "int64", ("batch", axis), 1, int(vocab) - 1, padding=0)


def dense(name: str, dim: int) -> TensorSpec:
    """``float32 [batch, dim]``."""
    return TensorSpec(name, "float32", ("batch", int(dim)))


def probability(name: str = "probability") -> TensorSpec:
    """``float32 [batch]`` click probability."""
    return TensorSpec(name, "float32", ("batch",))


@dataclass
class Part:
    module: nn.Module
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    rows: Mapping[str, int] = field(default_factory=dict)
    axis_limits: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.inputs, self.outputs = tuple(self.inputs), tuple(self.outputs)
        names = [s.name for s in (*self.inputs, *self.outputs)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise EdgeProtocolError(f"part names {dup} twice (inputs and outputs need distinct names)")
        if not self.inputs or not self.outputs:
            raise EdgeProtocolError("a part needs at least one input and one output")

    @property
    def input_names(self) -> list:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list:
        return [s.name for s in self.outputs]

    def axis_names(self) -> list:
        seen = []
        for s in (*self.inputs, *self.outputs):
            for d in s.shape:
                if isinstance(d, str) and d not in seen:
                    seen.append(d)
        return seen

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        """``{name: {axis index: axis name}}`` for every input and output with a dynamic axis."""
        return {s.name: s.axes() for s in (*self.inputs, *self.outputs) if s.axes()}

    def sizes(self, batch: int = 4, sizes: Optional[Mapping[str, int]] = None) -> Dict[str, int]:
        """Axis sizes for examples: ``batch``, every other axis at its limit (or 8), then ``sizes``."""
        out = {a: int(self.axis_limits.get(a, 8)) for a in self.axis_names()}
        out["batch"] = int(batch)
        out.update({k: int(v) for k, v in (sizes or {}).items() if v is not None})
        return out

    def example_inputs(self, batch: int = 4, sizes: Optional[Mapping[str, int]] = None,
                       seed: int = 0) -> Dict[str, torch.Tensor]:
        """Valid inputs ``{name: tensor}`` in ``inputs`` order (see ``TensorSpec.example``), rows
        this variant serves (``rows`` fields set to their value)."""
        g = torch.Generator().manual_seed(int(seed))
        at = self.sizes(batch, sizes)
        out = {}
        for s in self.inputs:
            x = s.example(at, g)
            if s.name in self.rows:
                x = torch.full_like(x, int(self.rows[s.name]))
            out[s.name] = x
        return out

    def __call__(self, feed: Mapping[str, torch.Tensor]):
        """Run the module on a batch dict (extra keys ignored)."""
        return self.module(*(feed[n] for n in self.input_names))


@dataclass
class EdgeParts:
    device: Mapping[str, Part]
    cloud: Optional[Part] = None

    def __post_init__(self):
        if not self.device:
            raise EdgeProtocolError("EdgeParts.device is empty: declare at least one device model")
        self.device = dict(self.device)
        for name in self.device:
            if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
                raise EdgeProtocolError(f"device variant name {name!r}: a non-empty string usable in a file name")

    @property
    def variants(self) -> list:
        return list(self.device)

    def first(self) -> Tuple[str, Part]:
        name = next(iter(self.device))
        return name, self.device[name]


@runtime_checkable
class EdgeCloud(Protocol):
    """What a model with an on-device part offers: ``edge_parts()``."""

    def edge_parts(self) -> EdgeParts: ...


def has_edge_part(model_or_cls) -> bool:
    return callable(getattr(model_or_cls, "edge_parts", None))


def edge_parts_of(model) -> EdgeParts:
    """``model.edge_parts()``, or an ``EdgeProtocolError`` that says the model has none."""
    if not has_edge_part(model):
        raise EdgeProtocolError(f"{type(model).__name__} has no on-device part (it defines no edge_parts(); "
                                f"docs/edge.md, docs/extending.md)")
    parts = model.edge_parts()
    if not isinstance(parts, EdgeParts):
        raise EdgeProtocolError(f"{type(model).__name__}.edge_parts() returned {type(parts).__name__}, not EdgeParts")
    return parts


def select_rows(part: Part, feed: Mapping[str, object]):
    """Boolean mask of the rows of ``feed`` (numpy or torch arrays) that ``part`` serves, or ``None``
    when it serves every row. A field of ``rows`` absent from ``feed`` is an ``EdgeProtocolError``."""
    mask = None
    for key, value in part.rows.items():
        if key not in feed:
            raise EdgeProtocolError(f"the device models serve rows by {key!r} but the rows carry no {key!r}")
        m = feed[key] == value
        mask = m if mask is None else (mask & m)
    return mask


__all__ = ["TensorSpec", "Part", "EdgeParts", "EdgeCloud", "EdgeProtocolError", "ids", "history", "dense",
           "probability", "has_edge_part", "edge_parts_of", "select_rows", "DTYPES"]
