"""NNI hyper-parameter tuning: ``python run.py -m=<Model> -d=<dataset> --mode=tune``.

- ``tune(cfg, model_cls, argv)``: the experiment (``--mode=tune``, see ``experiment.py``);
- ``trial(cfg, model_cls, argv)``: one trial inside it, or standalone (``--mode=trial``, ``trial.py``);
- ``space.py``: search spaces (model ``tune:`` sections, ``--search_space``, the default space).

``nni`` is imported only when an experiment or a trial runs, never by importing this package.
"""
from .experiment import tune
from .space import apply_params, default_space, resolve_space, search_space
from .trial import trial

__all__ = ["tune", "trial", "search_space", "resolve_space", "default_space", "apply_params"]
