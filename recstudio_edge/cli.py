"""Command line: ``python run.py -m=<Model> -d=<dataset> [--key=value ...]``.

Tasks: ``train`` (fit, pick the best checkpoint on the validation metric, test it),
``test`` and ``infer`` (from ``--ckpt``). Every run writes one folder
``<output_dir>/<Model>/<dataset>/<timestamp>/`` with the merged config, the best and last
checkpoints, ``metrics.json`` and ``run.log``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .config import CONFIG_DIR, ConfigError, build_config, load_yaml
from .data.errors import DataError
from .model import get_model_class, list_models
from .names import did_you_mean
from .runner import TASKS  # task name -> the function that runs it

USAGE = """usage: python run.py [-m=MODEL] [-d=DATASET] [--config=my.yaml] [--task=train|test|infer|export]
                     [--mode=light|detail|tune] [--epochs=N] [--data_dir=DIR] [--output_dir=DIR]
                     [--ckpt=PATH] [--backend=torch|onnx] [--resume[=RUN_DIR]] [--section.key=value ...]

  -m, --model     model name, case-insensitive (default BPR); models: {models}
  -d, --dataset   dataset name (default: the generated 'synthetic' set); configured: {datasets}
  --key=value     any config key, dotted (--train.lr=0.01, --trainer.strategy=ddp) or a unique
                  leaf name (--lr=0.01); values are YAML (--topk=[5,10])
"""
BACKENDS = ("torch", "onnx")  # --task=infer: PyTorch from the checkpoint, or the exported edge model in onnxruntime
EXPORTERS = ("auto", "dynamo", "torchscript")  # export.exporter (recstudio_edge.edge.onnx_export.EXPORTERS)
PLANNED_TASKS = {"tune": "NNI hyper-parameter search is a mode, not a task: use --mode=tune"}


class UsageError(ValueError):
    pass


def parse_argv(argv: List[str]) -> Tuple[Dict[str, Optional[str]], Dict[str, str]]:
    """Split argv into the three structural options and ``--key=value`` overrides."""
    main: Dict[str, Optional[str]] = {"model": None, "dataset": None, "config": None}
    alias = {"-m": "model", "--model": "model", "-d": "dataset", "--dataset": "dataset", "--config": "config"}
    over: Dict[str, str] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("-h", "--help"):
            print(usage())
            raise SystemExit(0)
        if not tok.startswith("-"):
            raise UsageError(f"unexpected argument {tok!r} (options look like --key=value)")
        key, eq, val = tok.partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                val = argv[i + 1]
                i += 1
            elif key in alias:
                raise UsageError(f"{key} needs a value")
            else:
                val = "true"  # a bare flag, e.g. --resume
        if key in alias:
            main[alias[key]] = val
        elif key.startswith("--"):
            over[key[2:]] = val
        else:
            raise UsageError(f"unknown option {key!r}: short options are -m and -d")
        i += 1
    return main, over


def usage() -> str:
    datasets = sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))
    return USAGE.format(models=", ".join(list_models()), datasets=", ".join(["synthetic", *datasets]))


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except (UsageError, ConfigError, DataError, KeyError, TypeError, ValueError) as e:
        if os.environ.get("RECSTUDIO_EDGE_DEBUG"):
            raise
        from .data.errors import printable

        msg = printable(e.args[0] if isinstance(e, KeyError) and e.args else str(e), 2000)
        print(f"error: {msg}" + ("" if isinstance(e, (UsageError, ConfigError, DataError)) else
                                 " (RECSTUDIO_EDGE_DEBUG=1 shows the traceback)"), file=sys.stderr)
        raise SystemExit(2)


def entry() -> None:
    """The ``recstudio-edge`` console command (pyproject.toml): ``main()`` exactly as ``python run.py``
    calls it; the run's result dict is not handed to ``sys.exit`` as an exit status."""
    main()


def _main(argv: List[str]) -> Dict[str, Any]:
    opts, over = parse_argv(argv)
    ckpt = over.get("ckpt")
    config_file = opts["config"]
    run_cfg = None
    if ckpt and config_file is None:  # test / infer: the run's own config is the base
        cand = Path(ckpt).parent / "config.yaml"
        if cand.exists():
            run_cfg = load_yaml(cand)
            config_file = str(cand)
    model_name = opts["model"] or over.pop("model_name", None) or (run_cfg or {}).get("model_name") or \
        (load_yaml(Path(config_file)).get("model_name") if config_file else None) or "BPR"
    model_cls = get_model_class(model_name)
    theirs = (run_cfg or {}).get("model_name")
    if theirs and opts["model"] and str(theirs).lower() != model_cls.registry_name.lower():
        raise ConfigError(f"--ckpt={ckpt} is a checkpoint of {theirs} (its run's {config_file}), not of "
                          f"{model_cls.registry_name}: drop -m (or use -m={theirs}), or pass a "
                          f"{model_cls.registry_name} checkpoint")
    dataset = opts["dataset"] or ((run_cfg or {}).get("data") or {}).get("name")
    cfg = build_config(model_cls.registry_name, dataset, config_file, over, model_cls)
    task = str(cfg["task"]).lower()
    if task in PLANNED_TASKS:
        raise UsageError(f"--task={task} ({PLANNED_TASKS[task]}) is not available in this version; "
                         f"tasks: {', '.join(TASKS)}")
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}: {did_you_mean(task, TASKS)}")
    backend = str(cfg.get("backend") or "torch").lower()
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: {did_you_mean(backend, BACKENDS)}")
    if backend != "torch" and task != "infer":
        raise UsageError(f"--backend={backend} applies to --task=infer only (got --task={task})")
    cfg["backend"] = backend
    exporter = str((cfg.get("export") or {}).get("exporter", "auto")).lower()
    if exporter not in EXPORTERS:
        raise UsageError(f"unknown export.exporter {exporter!r}: {did_you_mean(exporter, EXPORTERS)}")
    if cfg["mode"] in ("tune", "trial"):  # NNI: the experiment, or one trial inside it
        from . import tune

        return getattr(tune, cfg["mode"])(cfg, model_cls, argv)
    if cfg["mode"] not in ("light", "detail"):
        raise UsageError(f"unknown mode {cfg['mode']!r}: light, detail or tune")
    from .runner import run_task

    return run_task(cfg, model_cls, task)
