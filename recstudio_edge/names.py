"""Name matching for error messages: ``did you mean ...?``.

Every lookup by name (models, losses, config keys, tasks, exporters, ...) reports an unknown
name with the closest known ones. This module imports nothing of the package, so any module
may use it.
"""
from __future__ import annotations

import difflib
from typing import Iterable, List


def closest(name: str, candidates: Iterable[str], n: int = 3) -> List[str]:
    """The candidates closest to ``name`` (case-insensitive), best first."""
    cands = list(candidates)
    lower = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.5)
    return [lower[h] for h in hits]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ``did you mean ...?`` phrase, or the list of known names when nothing is close."""
    cands = sorted(candidates)
    near = closest(name, cands)
    if near:
        return "did you mean " + " or ".join(repr(c) for c in near) + "?"
    return "known: " + ", ".join(cands)
