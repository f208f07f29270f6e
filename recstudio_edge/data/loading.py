"""Find (generate, download) a dataset, parse it once and cache it: its ``Interactions``.

Cache: ``<data_dir>/.cache/<name>-<hash>.pt`` where the hash covers every input file's name,
size and modification time and the ``data:`` config keys that shape the result (filters,
split, seed). A second run with the same inputs loads the tensors (``weights_only=True``)
instead of parsing. Files are written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict

import torch

from ..progress import stages
from .preprocess import Interactions, build_interactions

log = logging.getLogger(__name__)

# data: keys that change the built tensors (the reader keys matter through the files and these)
SHAPING_KEYS = ("format", "fields", "sep", "header", "files", "generator", "rating_threshold",
                "min_user_inter", "min_item_inter", "split", "on_bad_line")
CACHE_VERSION = 2  # 2: Interactions carry user_attrs / item_attrs


def _fingerprint(folder: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def locate(data_dir: Path, cfg: Dict[str, Any]) -> Path:
    """The folder holding the dataset's files: generated, local, or downloaded."""
    name = cfg["name"]
    folder = data_dir / name
    if cfg.get("format") == "synthetic" or (name.startswith("synthetic") and cfg.get("format") in ("auto", None)):
        from .synthetic import VERSION, write_atomic

        params = dict(cfg.get("generator") or {})
        stamp = folder / ".generator.json"
        want = json.dumps({"version": VERSION, "params": params}, sort_keys=True)
        if not (folder / f"{name}.inter").exists() or not stamp.exists() or stamp.read_text() != want:
            write_atomic(folder, name, **params)
            tmp = stamp.with_suffix(".tmp")
            tmp.write_text(want)
            os.replace(tmp, stamp)
        return folder
    from .catalog import ensure_dataset

    return Path(ensure_dataset(name, data_dir, cfg))


def load_interactions(data_dir: Path, cfg: Dict[str, Any], seed: int, use_cache: bool = True) -> Interactions:
    """Parse + filter + split, or load the same from the cache."""
    data_dir = Path(data_dir)
    folder = locate(data_dir, cfg)
    shaping = {k: cfg.get(k) for k in SHAPING_KEYS}
    key = json.dumps({"v": CACHE_VERSION, "name": cfg["name"], "files": _fingerprint(folder),
                      "cfg": shaping, "seed": seed}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = data_dir / ".cache" / f"{cfg['name']}-{digest}.pt"
    if use_cache and cache.exists():
        t = time.perf_counter()
        with stages(f"data {cfg['name']}", ["load cache"]) as step:
            step("load cache")
            state = torch.load(cache, weights_only=True)
        log.info("loaded %s from cache %s in %.2fs", cfg["name"], cache, time.perf_counter() - t)
        return Interactions.from_state(state)
    from .readers import read_dataset

    t = time.perf_counter()
    spec = dict(cfg)
    if spec.get("format") == "synthetic" or spec.get("format") in ("auto", None):
        spec["format"] = "atomic" if (folder / f"{cfg['name']}.inter").exists() else spec.get("format", "auto")
    with stages(f"data {cfg['name']}", ["read", "filter + split", *(["cache"] if use_cache else [])]) as step:
        step("read")
        raw = read_dataset(data_dir, spec)
        t_read = time.perf_counter() - t
        step("filter + split")
        data = build_interactions(raw.inter, raw.item, cfg, seed, source=str(folder), user_table=raw.user)
        data.stats.update(read_seconds=t_read, build_seconds=time.perf_counter() - t - t_read,
                          skipped_lines=float(getattr(raw, "skipped", 0)))
        if use_cache:
            step("cache")
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            torch.save(data.to_state(), tmp)
            os.replace(tmp, cache)
    return data
