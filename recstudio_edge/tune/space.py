"""Search spaces: where they come from, how they are checked, how a trial's parameters apply.

A search space maps config keys to NNI distributions::

    train.lr: {_type: loguniform, _value: [0.0001, 0.01]}
    model.embed_dim: {_type: choice, _value: [32, 64, 128]}

Keys are dotted config keys (``train.lr``, ``model.embed_dim``, ``data.max_seq_len``) or a unique
leaf name (``lr``), resolved like command-line keys; nested mappings (``train: {lr: {...}}``) are
flattened. The space comes from ``--search_space=file.yaml`` if given, else from the merged
``tune:`` section (``configs/model/<Model>.yaml``, a ``--config`` file), else a default space.
Nothing here imports NNI: everything is checked before an experiment starts.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..config import (ConfigError, get_dotted, leaves, load_yaml, parse_value, resolve_key, set_dotted,
                      validate)
from ..names import did_you_mean
from ..registry import constructor_params

# NNI's distributions and the length of their ``_value`` list
ARITY = {"choice": None, "randint": 2, "uniform": 2, "quniform": 3, "loguniform": 2, "qloguniform": 3,
         "normal": 2, "qnormal": 3, "lognormal": 2, "qlognormal": 3}
SUPPORTED = ("choice", "loguniform", "uniform", "randint", "quniform", "qloguniform", "normal", "qnormal",
             "lognormal", "qlognormal")


MANAGED = ("num_users", "num_items", "lr", "weight_decay", "optimizer", "topk", "metrics", "mask_history",
           "max_seq_len")


def schema(model_cls=None) -> Dict[str, Any]:
    """The known keys (``config.config_schema``: base.yaml and the model's own YAML keys)."""
    from ..config import config_schema

    return config_schema(getattr(model_cls, "registry_name", None) if model_cls is not None else None)


def known_keys(base: Dict[str, Any], model_cls=None) -> List[str]:
    """Every config key, the model's constructor arguments as ``model.<name>`` included (so a
    leaf name such as ``embed_dim`` resolves to ``model.embed_dim``)."""
    known = leaves(base)
    if model_cls is not None:
        known += [f"model.{p}" for p in constructor_params(model_cls) if p not in MANAGED and f"model.{p}" not in known]
    return known


def flatten_space(space: Dict[str, Any], prefix: str = "", where: str = "search space") -> Dict[str, Dict]:
    """``{a: {b: {_type..}}}`` and ``{a.b: {_type..}}`` -> ``{"a.b": {_type..}}``."""
    if not isinstance(space, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys to {{_type, _value}}, "
                          f"got {type(space).__name__}")
    out: Dict[str, Dict] = {}
    for k, v in space.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and "_type" in v:
            out[key] = dict(v)
        elif isinstance(v, dict) and v:
            out.update(flatten_space(v, key + ".", where))
        else:
            raise ConfigError(f"{where}: {key!r} must be {{_type: <distribution>, _value: [...]}}, got {v!r}")
    return out


def check_distribution(key: str, spec: Dict[str, Any], where: str) -> None:
    extra = set(spec) - {"_type", "_value"}
    if extra:
        raise ConfigError(f"{where}: {key}: unexpected field(s) {sorted(extra)} (only _type and _value)")
    typ, val = spec.get("_type"), spec.get("_value")
    if typ not in ARITY:
        raise ConfigError(f"{where}: {key}: unknown _type {typ!r}: {did_you_mean(str(typ), SUPPORTED)}")
    if not isinstance(val, list) or not val:
        raise ConfigError(f"{where}: {key}: _value must be a non-empty list, got {val!r}")
    if typ == "choice":
        return
    n = ARITY[typ]
    if len(val) != n or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in val):
        shape = "[low, high]" if n == 2 else "[low, high, q]"
        if typ in ("normal", "lognormal"):
            shape = "[mu, sigma]"
        elif typ in ("qnormal", "qlognormal"):
            shape = "[mu, sigma, q]"
        raise ConfigError(f"{where}: {key}: {typ} takes _value {shape} (numbers), got {val!r}")
    if typ in ("randint", "uniform", "quniform", "loguniform", "qloguniform") and not val[0] < val[1]:
        raise ConfigError(f"{where}: {key}: {typ} needs low < high, got {val!r}")
    if typ in ("loguniform", "qloguniform") and val[0] <= 0:
        raise ConfigError(f"{where}: {key}: {typ} needs low > 0, got {val!r}")
    if typ == "randint" and not all(isinstance(x, int) for x in val):
        raise ConfigError(f"{where}: {key}: randint takes integers [low, high), got {val!r}")


def encode_choice(value: Any) -> Any:
    """A list or mapping choice (``model.hidden: [[128, 64], [64, 32]]``) as flow YAML text
    (``"[128, 64]"``); ``apply_params`` reads it back."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return value


def sample_value(spec: Dict[str, Any]) -> Any:
    """One value the distribution can produce (to validate the key it is set on)."""
    val = spec["_value"]
    return val[0] if spec["_type"] in ("choice", "randint") else float(val[0])


def resolve_space(space: Dict[str, Any], model_cls=None, where: str = "search space") -> Dict[str, Dict]:
    """Flatten, resolve leaf names to dotted keys, check the distributions and that every key exists.

    An unknown key is a ``ConfigError`` naming the closest config key.
    """
    base = schema(model_cls)
    known = known_keys(base, model_cls)
    flat = flatten_space(space, where=where)
    out: Dict[str, Dict] = {}
    for key, spec in flat.items():
        full = resolve_key(key, known)
        if full == "tune" or full.startswith("tune.") or full == "nni" or full.startswith("nni.") \
                or full in ("mode", "task", "model_name", "output_dir", "data_dir", "ckpt", "resume", "input"):
            raise ConfigError(f"{where}: {key!r} cannot be tuned (it says how the run is organised, "
                              f"not how the model learns)")
        check_distribution(full, spec, where)
        probe: Dict[str, Any] = {}
        set_dotted(probe, full, sample_value(spec))
        try:
            validate(probe, base, model_cls, where=where)
        except ConfigError as e:
            if full.startswith("model.") and model_cls is not None and "unknown key" in str(e):
                raise ConfigError(f"{where}: unknown key {key!r} for {model_cls.__name__}: "
                                  f"{did_you_mean(full, known)}") from None
            raise
        if full in out:
            raise ConfigError(f"{where}: {key!r} and another entry both set {full!r}")
        if spec["_type"] == "choice":  # NNI's choices are numbers or strings: lists travel as YAML text
            spec = {"_type": "choice", "_value": [encode_choice(v) for v in spec["_value"]]}
        out[full] = spec
    return out


def default_space(model_cls) -> Dict[str, Dict]:
    """Learning rate, weight decay, and the embedding size and dropout where the model has them."""
    params = constructor_params(model_cls)
    space: Dict[str, Dict] = {
        "train.lr": {"_type": "loguniform", "_value": [1e-4, 1e-2]},
        "train.weight_decay": {"_type": "choice", "_value": [0.0, 1e-6, 1e-5, 1e-4]},
    }
    if "embed_dim" in params:
        space["model.embed_dim"] = {"_type": "choice", "_value": [32, 64, 128]}
    if "dropout" in params:
        space["model.dropout"] = {"_type": "uniform", "_value": [0.0, 0.5]}
    return space


def load_space_file(path: str) -> Dict[str, Any]:
    """A YAML (or JSON) file holding the space, at the top level or under ``tune:``."""
    data = load_yaml(Path(path))
    if set(data) == {"tune"} and isinstance(data["tune"], dict):
        data = data["tune"]
    if not data:
        raise ConfigError(f"--search_space={path}: the file holds no search space")
    return data


def search_space(cfg: Dict[str, Any], model_cls) -> Tuple[Dict[str, Dict], str]:
    """The experiment's space and where it came from (``--search_space``, ``tune:`` or default)."""
    if getattr(model_cls, "closed_form", False):
        raise ConfigError(f"{model_cls.registry_name} has nothing to tune: it is computed in closed form "
                          f"(no training, no learning rate, no hyper-parameters)")
    file = (cfg.get("nni") or {}).get("search_space")
    if file:
        raw, source = load_space_file(str(file)), f"--search_space={file}"
    elif cfg.get("tune"):
        raw, source = cfg["tune"], f"the tune: section of configs/model/{model_cls.registry_name}.yaml"
    else:
        raw, source = default_space(model_cls), "the default space"
    return resolve_space(raw, model_cls, where=source), source


def _coerce(current: Any, value: Any) -> Any:
    """NNI gives floats for q-distributions (``64.0``): keep an int key an int; a list or mapping
    key given as text (an encoded choice) is parsed back."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()  # numpy scalars
    if isinstance(current, (list, dict)) and isinstance(value, str):
        return parse_value(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) \
            and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def apply_params(cfg: Dict[str, Any], params: Optional[Dict[str, Any]], model_cls=None) -> Dict[str, Any]:
    """A copy of ``cfg`` with NNI's ``{dotted key: value}`` applied and validated."""
    out = copy.deepcopy(cfg)
    if not params:
        return out
    base = schema(model_cls)
    known = known_keys(base, model_cls)
    layer: Dict[str, Any] = {}
    for key, value in params.items():
        full = resolve_key(str(key), known)
        current = get_dotted(out, full)
        if current is None and full.startswith("model.") and model_cls is not None:
            p = constructor_params(model_cls).get(full.split(".", 1)[1])
            current = p.default if p is not None and p.default is not p.empty else None
        value = _coerce(current, value)
        set_dotted(layer, full, value)
        set_dotted(out, full, value)
    validate(layer, base, model_cls, where="trial parameters")
    return out


def format_params(params: Dict[str, Any]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


__all__ = ["search_space", "resolve_space", "default_space", "apply_params", "load_space_file",
           "flatten_space", "format_params", "get_dotted"]
