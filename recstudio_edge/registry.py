"""Registries: one name -> class table per kind of plug-in (models, losses, scorers, samplers).

timm's pattern: a decorator registers a class under its name, ``create(name, **kwargs)``
binds keyword arguments to the constructor's signature so that a typo fails loudly with
the closest known name, and ``names()`` feeds the parametrised tests.
Names are matched case-insensitively (``-m=sasrec`` finds ``SASRec``).

This module imports no model: a model registers itself when its file is imported, and
``recstudio_edge.model`` (``list_models``, ``create_model``, ``get_model_class``) imports every
model file first. The name matching lives in ``recstudio_edge.names``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Type

from .names import did_you_mean


class Registry:
    """A case-insensitive table of named classes."""

    def __init__(self, kind: str):
        self.kind = kind
        self._table: Dict[str, Type] = {}

    def register(self, cls: Optional[Type] = None, *, name: Optional[str] = None) -> Callable:
        def add(c: Type) -> Type:
            key = name or c.__name__
            if key.lower() in self._table and self._table[key.lower()] is not c:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            c.registry_name = key
            self._table[key.lower()] = c
            return c

        return add(cls) if cls is not None else add

    def get(self, name: str) -> Type:
        try:
            return self._table[name.lower()]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}: {did_you_mean(name, self.names())}") from None

    def names(self) -> List[str]:
        return sorted(c.registry_name for c in self._table.values())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._table

    def create(self, name: str, **kwargs: Any):
        cls = self.get(name)
        check_kwargs(cls, kwargs, what=f"{self.kind} {cls.registry_name}")
        return cls(**kwargs)


def constructor_params(cls: Type) -> Dict[str, inspect.Parameter]:
    """Named parameters of ``cls.__init__`` and of every base ``__init__`` reached through ``**kwargs``."""
    params: Dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        has_var_kw = False
        for p in list(sig.parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                has_var_kw = True
            elif p.kind is not p.VAR_POSITIONAL and p.name not in params:
                params[p.name] = p
        if not has_var_kw:
            break
    return params


def check_kwargs(cls: Type, kwargs: Dict[str, Any], what: str) -> None:
    """Raise a ``TypeError`` naming the closest parameter for every key ``cls`` does not take."""
    known = constructor_params(cls)
    for key in kwargs:
        if key not in known:
            raise TypeError(f"{what} has no parameter {key!r}: {did_you_mean(key, known)}")


MODELS = Registry("model")
LOSSES = Registry("loss")
SCORERS = Registry("scorer")
SAMPLERS = Registry("sampler")

register_model = MODELS.register
register_loss = LOSSES.register
register_scorer = SCORERS.register
register_sampler = SAMPLERS.register

