"""Seed formats: one module per format (``pinrec``, ``ecrec``, ...), each able to read its files,
write them, and build the same samples from plain interactions (any atomic dataset).

A format module ``formats/<name>.py`` offers two constructors of a *source*, the object
``RecDataModule`` serves batches from:

- ``open_source(folder: Path, cfg: dict) -> source``: the format's files in ``folder``
  (``data.format: <name>``, e.g. ``-d=sample-pinrec``); ``cfg`` is the merged ``data:`` config;
- ``from_interactions(data: Interactions, cfg: dict, seed: int) -> source``: the same samples
  built from an interaction dataset (``-d=ml-1m`` for a model whose class declares
  ``data_format = "<name>"``), with the interactions' ``user_attrs`` / ``item_attrs`` as features.

A format module may also set ``KINDS`` (the data kinds its files serve, checked before anything
is read) and ``HOLDS`` (what they hold, for that error: ``"CTR"``).

A source has:

- ``num_users``, ``num_items`` (ints, padding included), ``group_num`` (0 when the rows carry no
  ``group_id``), ``stats`` (``{name: number}``, printed when the data is ready);
- ``paths``: ``{stage: Path}`` of the files it read (empty when built from interactions) and
  ``stages()``: the stages it can serve (``{"train", "valid", "test"}`` or fewer);
- ``item_counts()`` / ``train_keys()`` (what ``wiring.connect`` hands to ``model.on_data``;
  empty tensors when the notion does not apply);
- ``model_args()``: the data's facts a model's constructor takes by name (``num_cates``,
  ``num_classes``, feature vocabulary sizes ...), beyond ``num_users`` / ``num_items``;
- ``train(kind)`` / ``eval(kind, stage)``: ``BatchDataset`` s (``data/dataset.py``) of batches
  with the zoo's field names; a kind the format cannot serve is a ``DataError`` that says so;
- optionally ``read_input(path) -> BatchDataset`` (``--task=infer --input=<file in the format>``).

``--task=infer`` on a source scores its test rows (or ``--input``) with the model's ``forward``
and writes ``predictions.tsv`` (``recstudio_edge.infer.infer_source``).
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Optional


def format_module(name: Optional[str]) -> Optional[ModuleType]:
    """The module of seed format ``name`` when one exists here and offers ``open_source``, else None
    (``auto``, ``atomic``, ``csv`` ... are interaction formats the readers handle)."""
    if not name or not str(name).isidentifier() or str(name).startswith("_"):
        return None
    if importlib.util.find_spec(f"{__name__}.{name}") is None:
        return None
    mod = importlib.import_module(f"{__name__}.{name}")
    return mod if callable(getattr(mod, "open_source", None)) else None


def source_formats() -> list:
    """Names of the seed formats (modules of this folder with ``open_source``)."""
    import pkgutil

    return sorted(m.name for m in pkgutil.iter_modules(__path__) if format_module(m.name) is not None)


__all__ = ["format_module", "source_formats"]
