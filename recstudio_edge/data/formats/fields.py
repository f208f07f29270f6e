"""Parsing helpers the seed formats share: one field of one line, with the ``DataError`` that names
the file, the line and the field; and the data config of a format's command line."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..errors import DataError


def int_field(text: str, path, line: int, name: str, low: int = 0, high: Optional[int] = None) -> int:
    """The integer of one field, in ``low..high``, or ``DataError(path, line, name, ...)``."""
    t = text.strip()
    try:
        v = int(t)
    except ValueError:
        raise DataError(path, line, name, f"expected an integer, got {text!r}") from None
    if v < low or (high is not None and v > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise DataError(path, line, name, f"expected an integer {rng}, got {v}")
    return v


def int_list(text: str, path, line: int, name: str, what: str = "entry") -> List[int]:
    """A comma list of non-negative integers (empty text: ``[]``); a bad entry is named by its
    1-based position (``what`` 2 is not a non-negative integer: 'a')."""
    t = text.strip()
    if not t:
        return []
    out = []
    for k, tok in enumerate(t.split(",")):
        s = tok.strip()
        if not s.isdigit():
            raise DataError(path, line, name, f"{what} {k + 1} is not a non-negative integer: {tok!r}")
        out.append(int(s))
    return out


def cli_data_config(dataset: Optional[str], defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """The data config of a format's ``convert`` command line: ``configs/base.yaml``'s ``data:`` <
    the format's ``defaults`` < ``configs/data/<dataset>.yaml``'s ``data:`` (its ``name`` when it sets
    one, else the file's name; a dataset without a file keeps the name given) < ``overrides`` that
    are not None. No model's config is read."""
    from ...config import CONFIG_DIR, find_named_config, load_yaml, merge

    cfg = merge(load_yaml(CONFIG_DIR / "base.yaml")["data"], dict(defaults))
    if dataset:
        dpath = find_named_config("data", dataset)
        layer = (load_yaml(dpath).get("data") or {}) if dpath is not None else {}
        cfg = merge(cfg, layer)
        cfg["name"] = str(layer.get("name") or (dpath.stem if dpath is not None else dataset))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def command_line(fmt: str, description: str, convert_help: str, default_dataset: str = "synthetic"):
    """The parser of ``python -m recstudio_edge.data.formats.<fmt>``: ``(parser, subparsers, convert)``,
    ``convert`` holding the options every format's converter takes (``-d/--dataset``, ``--data_dir``,
    ``--out``, ``--seed``); the format adds its own options and commands (``check``, ``generate``)."""
    import argparse

    ap = argparse.ArgumentParser(prog=f"python -m recstudio_edge.data.formats.{fmt}", description=description)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help=convert_help)
    c.add_argument("-d", "--dataset", default=default_dataset)
    c.add_argument("--data_dir", default="datasets")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--seed", type=int, default=2024)
    return ap, sub, c


def run_command(fn) -> int:
    """Run a format command line's work ``fn()``: 0, or 2 with ``error: file:line: ...`` on stderr for
    bad input (a ``DataError``)."""
    import sys

    try:
        fn()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
