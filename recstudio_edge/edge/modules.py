"""Building blocks of on-device models: a chain of named stages that can be cut at any of them.

``EdgeStages(features=..., classifier=..., output=...)`` is an ``nn.Sequential`` whose first
stage takes the model's named inputs (``forward(*inputs)``) and every later stage one tensor.
Nested ``nn.Sequential`` stages (an ``MLP``) are cut points too, by dotted name
(``classifier.2``). ``stage_names()`` lists the cut points; ``split(name)`` returns
``(device, cloud)``: the stages before ``name`` and the stages from ``name`` on, so that
``cloud(device(*inputs)) == self(*inputs)`` exactly (same modules, same order). This is how a
model is cut at a named layer for split inference (``recstudio_edge.edge.split``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Tuple

import torch
from torch import nn


class Probability(nn.Module):
    """Logits ``[B, 1]`` (or ``[B]``) -> probability ``[B]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.reshape(x.shape[0]))


def _flatten(module: nn.Module, prefix: str = "") -> List[Tuple[str, nn.Module]]:
    out: List[Tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, nn.Sequential) and len(child):
            out.extend(_flatten(child, full + "."))
        else:
            out.append((full, child))
    return out


class _Chain(nn.Module):
    """Stages applied in order; the first receives every input."""

    def __init__(self, stages: List[Tuple[str, nn.Module]]):
        super().__init__()
        self.names = [n for n, _ in stages]
        self.stages = nn.ModuleList(m for _, m in stages)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = self.stages[0](*inputs)
        for stage in self.stages[1:]:
            x = stage(x)
        return x


class EdgeStages(nn.Sequential):
    """A chain of named stages (see the module docstring)."""

    def __init__(self, **stages: nn.Module):
        super().__init__(OrderedDict(stages))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        mods = list(self)
        x = mods[0](*inputs)
        for m in mods[1:]:
            x = m(x)
        return x

    def stage_names(self) -> List[str]:
        """Every name the chain can be cut at (the first stage excluded: nothing would run on the device)."""
        return [n for n, _ in _flatten(self)][1:]

    def split(self, layer: str) -> Tuple[nn.Module, nn.Module]:
        """``(device, cloud)``: the stages before ``layer`` and those from ``layer`` on. A nested
        chain's own name cuts before its first layer (``classifier`` = ``classifier.0``)."""
        flat = _flatten(self)
        names = [n for n, _ in flat]
        hit = [i for i, n in enumerate(names) if n == layer or n.startswith(layer + ".")]
        if not hit or hit[0] == 0:
            from difflib import get_close_matches

            groups = sorted({n.split(".")[0] for n in names[1:] if "." in n})
            near = get_close_matches(layer, groups + names[1:], n=3, cutoff=0.4)
            raise ValueError(f"cannot cut at {layer!r}: the cut points are {names[1:]}"
                             + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""))
        i = hit[0]
        return _Chain(flat[:i]).eval(), _Chain(flat[i:]).eval()


__all__ = ["EdgeStages", "Probability"]
