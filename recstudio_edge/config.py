"""Layered, validated configuration.

Later wins: ``configs/base.yaml`` < ``configs/model/<M>.yaml`` < ``configs/data/<d>.yaml`` <
``--config my.yaml`` < ``--key=value``. Every key must exist in ``base.yaml`` or the model's own
YAML (a key a model's YAML adds, like MCRec's ``mcrec:`` section, is known for that model only; or, under
``model:``, be a parameter of the model's constructor; under ``trainer:``, an argument of
``lightning.Trainer``); an unknown key is an error naming the closest known key. Files are
parsed with ``yaml.safe_load``; command-line values too (so ``--topk=[5,10]`` is a list).
"""
from __future__ import annotations

import copy
import inspect
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import yaml

from .names import did_you_mean
from .registry import constructor_params

# an installed package carries its configs as recstudio_edge/configs (setup.py); a checkout (or an
# editable install) reads the repository's top-level configs/
_PKG_CONFIGS = Path(__file__).resolve().parent / "configs"
CONFIG_DIR = _PKG_CONFIGS if (_PKG_CONFIGS / "base.yaml").is_file() else Path(__file__).resolve().parent.parent / "configs"
# mappings whose keys are free-form (checked by the code that reads them)
OPEN_SECTIONS = {"data.fields", "data.files", "data.generator", "tune"}
# keys the CLI fills in for the model constructor; a model config must not set them
# Trainer arguments the runner sets itself; the message says where they come from instead
RESERVED_TRAINER_KEYS = {"max_epochs": "use --epochs", "callbacks": "set by recstudio_edge",
                         "logger": "set by recstudio_edge (CSV logs in the run folder)",
                         "default_root_dir": "use --output_dir", "use_distributed_sampler":
                         "set by recstudio_edge (batches are sharded by rank in the data module)"}
MANAGED_MODEL_KEYS = {"num_users", "num_items", "lr", "weight_decay", "optimizer", "topk", "metrics",
                      "mask_history", "max_seq_len"}


class ConfigError(ValueError):
    pass


def load_yaml(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=Loader)  # safe_load, with 1e-3 a float
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a YAML text file (byte 0x{e.object[e.start]:02x} is not UTF-8)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` / ``5E+2`` as floats (YAML 1.1 wants a dot
    in the mantissa, ``1.0e-3``, and leaves ``1e-3`` a string); everything else as safe_load."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                             re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``[5,10]`` a list, ``1e-3`` a float), else the text."""
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError:
        return text


def set_dotted(cfg: Dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[parts[-1]] = value


def leaves(cfg: Dict[str, Any], prefix: str = "") -> List[str]:
    out = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in OPEN_SECTIONS and v:
            out.extend(leaves(v, key + "."))
        else:
            out.append(key)
    return out


def resolve_key(key: str, known: Iterable[str]) -> str:
    """A command-line key: a full dotted key, or a leaf name that is unique (``--lr`` -> ``train.lr``)."""
    known = list(known)
    if key in known or any(key.startswith(k + ".") for k in known if k in OPEN_SECTIONS or k == "model"
                           or k.startswith("model.") or k.startswith("trainer")):
        return key
    matches = [k for k in known if k.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"--{key} is ambiguous: use one of " + ", ".join("--" + m for m in sorted(matches)))
    return key  # validation reports it with the closest names


def trainer_params() -> Dict[str, inspect.Parameter]:
    from lightning.pytorch import Trainer

    return {n: p for n, p in inspect.signature(Trainer.__init__).parameters.items() if n != "self"}


def validate(cfg: Dict[str, Any], schema: Dict[str, Any], model_cls=None, where: str = "config") -> None:
    """Raise ``ConfigError`` for the first key not in ``schema`` (closest known key named)."""

    def walk(node: Dict[str, Any], ref: Dict[str, Any], prefix: str):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if key == "model" or key == "trainer" or key in OPEN_SECTIONS:
                continue
            if k not in ref:
                cands = [f"{prefix}{c}" for c in ref] + leaves(schema)
                raise ConfigError(f"{where}: unknown key {key!r}: {did_you_mean(key, sorted(set(cands)))}")
            if isinstance(v, dict) and isinstance(ref[k], dict) and ref[k]:
                walk(v, ref[k], key + ".")

    walk(cfg, schema, "")
    tr = cfg.get("trainer") or {}
    if not isinstance(tr, dict):
        raise ConfigError(f"{where}: 'trainer' must be a mapping")
    tparams = trainer_params()
    for k in tr:
        if k in RESERVED_TRAINER_KEYS:
            raise ConfigError(f"{where}: 'trainer.{k}' cannot be set: {RESERVED_TRAINER_KEYS[k]}")
        if k not in tparams:
            raise ConfigError(f"{where}: unknown key 'trainer.{k}' (not an argument of lightning.Trainer): "
                              f"{did_you_mean(k, tparams)}")
    model = cfg.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{where}: 'model' must be a mapping")
    if model_cls is not None:
        params = constructor_params(model_cls)
        for k in model:
            if k in MANAGED_MODEL_KEYS:
                hint = {"lr": "train.lr", "weight_decay": "train.weight_decay", "optimizer": "train.optimizer",
                        "topk": "eval.topk", "metrics": "eval.metrics", "mask_history": "eval.mask_history",
                        "max_seq_len": "data.max_seq_len"}.get(k, "the data")
                raise ConfigError(f"{where}: 'model.{k}' is set from {hint}, not under model:")
            if k not in params:
                raise ConfigError(f"{where}: unknown key 'model.{k}' for {model_cls.__name__}: "
                                  f"{did_you_mean(k, [p for p in params if p not in MANAGED_MODEL_KEYS])}")


def find_named_config(folder: str, name: str) -> Optional[Path]:
    """``configs/<folder>/<name>.yaml``, matched case-insensitively."""
    d = CONFIG_DIR / folder
    if not d.is_dir():
        return None
    for p in d.glob("*.yaml"):
        if p.stem.lower() == name.lower():
            return p
    return None


def config_schema(model: Optional[str] = None) -> Dict[str, Any]:
    """The known keys of a run of ``model``: ``base.yaml`` merged with ``configs/model/<model>.yaml``.
    A model's YAML may bring keys of its own (MCRec's ``mcrec:`` section, ECRec's ``data.edge_len``):
    for runs of that model they are known keys, validated like base.yaml's, for other models not."""
    schema = load_yaml(CONFIG_DIR / "base.yaml")
    mpath = find_named_config("model", model) if model else None
    return merge(schema, load_yaml(mpath)) if mpath is not None else schema


def build_config(model: str, dataset: Optional[str], config_file: Optional[str],
                 overrides: Dict[str, str], model_cls=None) -> Dict[str, Any]:
    """Merge the layers, apply ``overrides`` ({dotted or leaf key: text}), validate, return."""
    schema = config_schema(model)
    layers = []
    mpath = find_named_config("model", model)
    if mpath is not None:
        layers.append(mpath)
    cfg = copy.deepcopy(schema)
    if dataset:
        dpath = find_named_config("data", dataset)
        if dpath is not None:
            layers.append(dpath)
    if config_file:
        layers.append(Path(config_file))
    for path in layers:
        layer = load_yaml(path)
        validate(layer, schema, model_cls, where=str(path))
        cfg = merge(cfg, layer)
    if dataset:  # the data file's own name: when it sets one (ml-1m-graph.yaml reads <data_dir>/ml-1m/), else its stem
        named = (load_yaml(dpath).get("data") or {}).get("name") if dpath is not None else None
        cfg["data"]["name"] = str(named) if named else (dpath.stem if dpath is not None else dataset)
    known = leaves(schema)
    if model_cls is not None:  # --embed_dim=32 means --model.embed_dim=32
        known += [f"model.{p}" for p in constructor_params(model_cls)
                  if p not in MANAGED_MODEL_KEYS and f"model.{p}" not in known]
    cli: Dict[str, Any] = {}
    for key, text in overrides.items():
        full = resolve_key(key, known)  # a digest or URL stays the text typed (YAML would read 0123 as 83)
        set_dotted(cli, full, str(text) if full in STRING_KEYS else parse_value(text))
    validate(cli, schema, model_cls, where="command line")
    cfg = merge(cfg, cli)
    cfg["model_name"] = model_cls.registry_name if model_cls is not None else model
    if cfg["data"].get("name") is None:
        raise ConfigError("no dataset: pass -d=<name>")
    check_values(cfg, model_cls)
    return cfg


# keys whose command-line value is kept as typed, not read as YAML
STRING_KEYS = {"data.sha256", "data.url", "data.archive_root"}
# key -> (kind, least value): checked by check_values; "int" is a whole number, "float" any number
VALUE_RULES = {"epochs": ("int", 1), "seed": ("int", None), "train.batch_size": ("int", 1),
               "eval.batch_size": ("int", 1), "train.num_workers": ("int", 0), "train.steps_per_call": ("int", 1),
               "eval.patience": ("int", 0), "eval.every_n_epochs": ("int", 1), "data.max_seq_len": ("int", 1),
               "data.neg_per_pos": ("int", 1), "data.eval_neg_per_pos": ("int", 0), "data.group_num": ("int", 0),
               "train.lr": ("float", None), "train.weight_decay": ("float", 0)}


def get_dotted(cfg: Dict[str, Any], key: str, default: Any = None) -> Any:
    """``cfg["a"]["b"]`` for ``key="a.b"``, or ``default`` when a level is missing."""
    node: Any = cfg
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


def _check_number(key: str, value: Any, kind: str, least) -> None:
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        what = "a whole number"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok and isinstance(value, str):  # '1e-3': YAML 1.1 reads it as text
            try:
                float(value)
                ok = True
            except ValueError:
                pass
        what = "a number"
    if not ok:
        raise ConfigError(f"{key}: expected {what}{f' >= {least}' if least is not None else ''}, got {value!r}")
    if least is not None and float(value) < least:
        raise ConfigError(f"{key}: expected {what} >= {least}, got {value!r}")


def check_values(cfg: Dict[str, Any], model_cls=None) -> None:
    """Values that cannot work, named by key: counts and sizes below their least value, a fractional
    or non-numeric count, cutoffs below 1, a digest that is not text."""
    closed = bool(getattr(model_cls, "closed_form", False))
    for key, (kind, least) in VALUE_RULES.items():
        value = get_dotted(cfg, key)
        if key == "epochs" and closed:  # closed-form models fit once: epochs 0 (their default) or more
            least = 0
        _check_number(key, value, kind, least)
    if float(get_dotted(cfg, "train.lr")) <= 0:
        raise ConfigError(f"train.lr: expected a number > 0, got {get_dotted(cfg, 'train.lr')!r}")
    topk = get_dotted(cfg, "eval.topk")
    if not isinstance(topk, list) or not topk or any(isinstance(k, bool) or not isinstance(k, int) or k < 1
                                                     for k in topk):
        raise ConfigError(f"eval.topk: expected a list of whole numbers >= 1 (e.g. [10, 20]), got {topk!r}")
    threads = cfg.get("threads", "auto")
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads: expected auto or a whole number >= 1, got {threads!r}")
    sha = get_dotted(cfg, "data.sha256")
    if sha is not None and not isinstance(sha, str):
        raise ConfigError(f"data.sha256: expected the hex digest as text (quote it in YAML: sha256: \"...\"), "
                          f"got the {type(sha).__name__} {sha!r}")


def dump(cfg: Dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
