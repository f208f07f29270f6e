"""One progress-bar helper for the long steps that are not Lightning epochs (data building and
caching, sample construction, ANN index builds, export verification, NNI trials).

``progress(iterable, total=..., desc=...)`` is ``tqdm`` drawn on stderr, and quiet (disabled: no
output, almost no cost) when stderr is not a terminal or under pytest. ``RECSTUDIO_EDGE_PROGRESS=1``
forces the bars on, ``=0`` off. A bar advances once per step (a file, a stage, a chunk, a
variant, a trial), never once per row.

``stages(desc, names)``: a bar over named stages (``with stages("data", ["read", "build"]) as
step: step("read"); ...``), for work made of a few vectorised steps.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterable, Iterator, Optional, Sequence

ENV = "RECSTUDIO_EDGE_PROGRESS"

__all__ = ["ENV", "enabled", "progress", "stages"]


def enabled() -> bool:
    """Whether bars are drawn: ``RECSTUDIO_EDGE_PROGRESS`` (1 / 0) if set, else a terminal outside pytest."""
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    if "PYTEST_CURRENT_TEST" in os.environ:
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
             unit: str = "step", **kwargs):
    """A ``tqdm`` bar (``leave=False``, on stderr), disabled when ``enabled()`` is false."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled(), file=sys.stderr, **kwargs)


@contextlib.contextmanager
def stages(desc: str, names: Sequence[str]) -> Iterator:
    """A bar over the named stages; the yielded ``step(name)`` shows ``name`` and advances after the
    previous stage (the bar is complete when the block ends)."""
    bar = progress(total=len(names), desc=desc)
    state = {"started": False}

    def step(name: str) -> None:
        if state["started"]:
            bar.update(1)
        state["started"] = True
        bar.set_postfix_str(name, refresh=True)

    try:
        yield step
        if state["started"]:
            bar.update(1)
            bar.refresh()
    finally:
        bar.close()
