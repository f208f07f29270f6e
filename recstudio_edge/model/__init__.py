"""Models and the parts they are built from.

Models are found automatically: ``list_models``, ``create_model`` and ``get_model_class`` first
import every module of every model family folder (each subpackage of this package --
``general``, ``sequential``, ``ctr``, ``edge``, or a new one -- except ``layers``, which holds
building blocks), and each model registers itself with ``@register_model``
(``recstudio_edge.registry``). A new model is one file in a family folder and nothing else.

Importing this package registers the losses, scorers and samplers, not the models.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, List, Type

from ..registry import MODELS
from . import loss, sampler, scorer  # noqa: F401  (register losses, samplers, scorers)
from .base import Recommender
from .towers import ItemTower, TowerFree, TwoTower

NOT_FAMILIES = ("layers",)  # subpackages that hold no models
_found = False


def family_packages() -> List[str]:
    """The dotted names of the model family folders, sorted."""
    return sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)
                  if m.ispkg and m.name not in NOT_FAMILIES and not m.name.startswith("_"))


def discover() -> List[str]:
    """Import every module of every family folder (once) so that its models register themselves.

    Returns the dotted names of the modules imported on this call (empty after the first).
    """
    global _found
    if _found:
        return []
    imported = []
    for family in family_packages():
        pkg = importlib.import_module(family)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=family + "."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            importlib.import_module(info.name)
            imported.append(info.name)
    _found = True
    return imported


def list_models() -> List[str]:
    """The names of every registered model (the zoo and any model registered so far), sorted."""
    discover()
    return MODELS.names()


def get_model_class(name: str) -> Type:
    """The model class registered as ``name`` (case-insensitive); a ``KeyError`` names the closest."""
    discover()
    return MODELS.get(name)


def create_model(name: str, **kwargs: Any):
    """``get_model_class(name)(**kwargs)``; an unknown keyword is a ``TypeError`` naming the closest."""
    discover()
    return MODELS.create(name, **kwargs)


__all__ = ["Recommender", "TowerFree", "ItemTower", "TwoTower", "list_models", "get_model_class", "create_model",
           "discover", "family_packages"]
