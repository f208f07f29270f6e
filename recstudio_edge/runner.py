"""The tasks behind the command line: train, test, infer, export (``TASKS``, name -> function).

``_prepare`` builds what every task starts from (the data module and the model from the merged
config, the run folder with its ``config.yaml``), then the task runs Lightning's ``Trainer`` or
the exporter and writes its outputs into the run folder. Nothing here assumes a device: the
Trainer picks it.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from .checkpoint import load_weights
from .config import ConfigError, dump
from .data.datamodule import RecDataModule
from .utils import atomic_write_text

log = logging.getLogger("recstudio_edge")
RUN_DIR_ENV = "RECSTUDIO_EDGE_RUN_DIR"


# ---- run folder and logging -----------------------------------------------------------------
def make_run_dir(cfg: Dict[str, Any]) -> Path:
    """``<output_dir>/<Model>/<dataset>/<timestamp>/``; DDP children reuse their parent's folder."""
    env = os.environ.get(RUN_DIR_ENV)
    if env:
        return Path(env)
    base = Path(cfg["output_dir"]) / cfg["model_name"] / cfg["data"]["name"]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = base / stamp
    n = 1
    while run.exists():
        n += 1
        run = base / f"{stamp}-{n}"
    run.mkdir(parents=True)
    os.environ[RUN_DIR_ENV] = str(run.resolve())  # inherited by DDP worker processes
    return run


QUIET_WARNINGS = (r".*Checkpoint directory .* exists and is not empty.*", r".*number of training batches.*",
                  r".*Experiment logs directory .* exists.*", r".*does not have many workers.*")


def quiet_lightning_leafspec() -> None:
    """Silence the one FutureWarning recent torch (2.13 here) raises when Lightning's own
    ``lightning/pytorch/utilities/_pytree.py`` builds a ``LeafSpec()`` (its ``_tree_flatten``,
    used to move every batch and logged value): torch deprecated the class (``is_leaf()`` is the
    new test) but still builds it exactly as before, so the warning is harmless, says nothing about
    our code and cannot be fixed from here (Lightning 2.6 still does it). Matched by message and
    module, so the same warning from anywhere else still shows."""
    import warnings

    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")


def setup_logging(run_dir: Path, mode: str) -> None:
    import warnings

    quiet_lightning_leafspec()
    for pattern in QUIET_WARNINGS:  # Lightning's advice that does not apply to our loaders and folders
        warnings.filterwarnings("ignore", message=pattern)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_recstudio_edge", False):
            root.removeHandler(h)
    fh = logging.FileHandler(run_dir / "run.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh._recstudio_edge = True
    root.addHandler(fh)
    sh = logging.StreamHandler()
    sh.setFormatter(logging.Formatter("%(message)s"))
    sh.setLevel(logging.WARNING)  # what the user should see is printed by say()
    sh._recstudio_edge = True
    log.addHandler(sh) if not any(getattr(h, "_recstudio_edge", False) for h in log.handlers) else None
    log.propagate = True
    log.setLevel(logging.INFO)
    # Lightning's start-up chatter (GPU available, tips) goes to run.log, not the terminal
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.INFO)
        for h in list(lg.handlers):
            h.setLevel(logging.INFO if mode == "detail" else logging.WARNING)


def say(msg: str) -> None:
    """Print on the global-zero process only (DDP workers stay quiet)."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print(msg, flush=True)
    log.info(msg)


# ---- building ----------------------------------------------------------------------------------
def resolve_val_metric(cfg: Dict[str, Any], model_cls) -> str:
    vm = str(cfg["eval"]["val_metric"]).lower()
    if vm == "auto":
        vm = model_cls.default_val_metric
    if model_cls.eval_kind == "ranking":
        known = [f"{m}@{k}" for m in cfg["eval"]["metrics"] for k in cfg["eval"]["topk"]]
    elif model_cls.eval_kind == "pointwise":
        known = ["auc", "gauc", "logloss"]
    else:  # a model's own evaluation (Recommender.new_accumulator): the metrics it declares
        known = list(model_cls.metric_keys)
    if vm not in known:
        from .names import did_you_mean

        raise ConfigError(f"eval.val_metric {vm!r} is not computed for {model_cls.__name__}: "
                          f"{did_you_mean(vm, known)}")
    return vm


def build_datamodule(cfg: Dict[str, Any], model_cls) -> RecDataModule:
    """The data module of ``cfg["data"]`` for the model's data kind (interaction data, or with
    ``data.format: pinrec`` the sample files ``<data_dir>/<name>/{train,valid,test}.txt``), set up."""
    dm = RecDataModule(cfg["data"], cfg["data_dir"], model_cls.data_kind, batch_size=cfg["train"]["batch_size"],
                       eval_batch_size=cfg["eval"]["batch_size"], seed=int(cfg["seed"]),
                       num_workers=cfg["train"]["num_workers"], steps_per_call=cfg["train"]["steps_per_call"],
                       data_format=getattr(model_cls, "data_format", None))
    dm.prepare_data()
    dm.setup()
    return dm


def build_model(cfg: Dict[str, Any], model_cls, dm: RecDataModule):
    kwargs = dict(cfg.get("model") or {})
    facts = getattr(dm, "model_args", None)  # num_users, num_items and a source's facts (num_cates ...)
    kwargs.update(facts() if callable(facts) else {"num_users": dm.num_users, "num_items": dm.num_items})
    kwargs.update(lr=cfg["train"]["lr"],
                  weight_decay=cfg["train"]["weight_decay"], optimizer=cfg["train"]["optimizer"],
                  **{k: cfg["train"][k] for k in ("scheduler", "warmup", "min_lr") if k in cfg["train"]},
                  topk=list(cfg["eval"]["topk"]), metrics=list(cfg["eval"]["metrics"]),
                  mask_history=cfg["eval"]["mask_history"], max_seq_len=cfg["data"]["max_seq_len"])
    from .registry import constructor_params

    params = constructor_params(model_cls)
    kwargs = {k: v for k, v in kwargs.items() if k in params or k in ("num_users", "num_items")}
    return model_cls(**kwargs)


def apply_threads(threads) -> int:
    """``threads``: torch's intra-op threads for this run. ``auto`` keeps torch's default (one per
    core, or ``OMP_NUM_THREADS``): the fastest on a quiet machine (docs/speed.md). Returns the count;
    in use, with a hint when the machine is already busy: OpenMP threads spin while they wait, and
    on cores other processes hold every small parallel region waits for a descheduled thread."""
    if threads != "auto":
        torch.set_num_threads(int(threads))
    n = torch.get_num_threads()
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on every platform
        load = 0.0
    if n > 1 and threads == "auto" and load > cores - 0.5:
        say(f"torch threads: {n}, and the machine is busy (load {load:.1f} on {cores} cores): on shared "
            f"cores spinning threads can run many times slower; --threads=1 avoids it")
    return n


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively: the ``avx512_bf16`` or ``amx_bf16`` flag of
    ``/proc/cpuinfo`` (Linux); elsewhere torch's CPU capability ``AVX512*``."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return str(torch.backends.cpu.get_cpu_capability()).upper().startswith("AVX512")


def resolve_precision(precision, accelerator: str = "auto") -> str:
    """``trainer.precision``, with ``bf16-auto`` resolved: ``bf16-mixed`` where the run's device has
    native bfloat16 (a CUDA GPU that supports it; a CPU with AVX512-BF16 / AMX), else ``32-true``.
    bf16 matmuls run ~4x faster than float32 on such a CPU (an MLP of DeepFM's size, one thread), and
    emulated ones are slower than float32, hence the check."""
    if str(precision) != "bf16-auto":
        return precision
    acc = str(accelerator or "auto").lower()
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if acc in ("auto", "cpu"):
        return "bf16-mixed" if cpu_has_bf16() else "32-true"
    return "32-true"


def build_trainer(cfg: Dict[str, Any], run_dir: Path, val_metric: str, mode_minmax: str, epochs: int,
                  with_checkpoints: bool = True, extra_callbacks=()):
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from .callbacks.metrics_table import MetricsTable
    from .callbacks.report import RunCSVLogger

    callbacks = list(extra_callbacks)
    monitor = f"valid/{val_metric}"
    ckpt_cb = None
    if with_checkpoints:
        ckpt_cb = ModelCheckpoint(dirpath=run_dir, filename="best", monitor=monitor, mode=mode_minmax,
                                  save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
        # last.ckpt after every epoch, whether or not it improved (Lightning's save_last only
        # refreshes it when a best checkpoint is written): this is what --resume continues from
        last_cb = ModelCheckpoint(dirpath=run_dir, filename="last", monitor=None, save_top_k=1,
                                  enable_version_counter=False)
        callbacks += [ckpt_cb, last_cb]
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode_minmax, patience=int(cfg["eval"]["patience"]),
                                       check_on_train_epoch_end=False))
    # the bars redraw with carriage returns: only on a terminal; elsewhere (a file, a pipe, CI) and
    # whenever the bar is off, MetricsTable prints one line per epoch instead
    tty = bool(getattr(sys.stdout, "isatty", lambda: False)())
    bar = bool((cfg.get("trainer") or {}).get("enable_progress_bar", cfg["mode"] == "light" and tty))
    callbacks.append(MetricsTable(monitor, detail=cfg["mode"] == "detail", lines=not bar))
    if bar:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar(refresh_rate=10))
    tr = dict(cfg.get("trainer") or {})
    tr["precision"] = resolve_precision(tr.get("precision", "32-true"), tr.get("accelerator", "auto"))
    tr.setdefault("enable_progress_bar", bar)
    tr.setdefault("enable_model_summary", cfg["mode"] == "detail")
    tr.setdefault("check_val_every_n_epoch", int(cfg["eval"]["every_n_epochs"]))
    tr.setdefault("num_sanity_val_steps", 0)
    tr.setdefault("log_every_n_steps", 50)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, default_root_dir=str(run_dir),
                         logger=RunCSVLogger(str(run_dir), name="", version="logs"),  # kept across --resume
                         use_distributed_sampler=False, **tr)
    return trainer, ckpt_cb


def find_resume(cfg: Dict[str, Any]) -> Optional[Path]:
    res = cfg.get("resume")
    if res in (None, False):
        return None
    if res is True or str(res).lower() == "true":
        base = Path(cfg["output_dir"]) / cfg["model_name"] / cfg["data"]["name"]
        runs = sorted(p for p in base.glob("*/last.ckpt")) if base.exists() else []
        if not runs:
            raise ConfigError(f"--resume: no last.ckpt under {base}")
        return runs[-1]
    p = Path(str(res))
    p = p / "last.ckpt" if p.is_dir() else p
    if not p.exists():
        raise ConfigError(f"--resume: {p} does not exist")
    return p


# ---- tasks --------------------------------------------------------------------------------------
def run_task(cfg: Dict[str, Any], model_cls, task: str, extra_callbacks=()) -> Dict[str, Any]:
    """Run ``task``; ``extra_callbacks`` are added to the training Trainer (e.g. NNI reporting)."""
    inherited = RUN_DIR_ENV in os.environ  # a DDP worker: its launcher owns the variable
    try:
        return _run_task(cfg, model_cls, task, extra_callbacks)
    finally:
        if not inherited:
            os.environ.pop(RUN_DIR_ENV, None)  # the next run in this process gets its own folder
            _close_run_log()  # and its run.log: a later command does not append to this one


def _close_run_log() -> None:
    """Detach and close the run.log handlers ``setup_logging`` added to the root logger."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_recstudio_edge", False)]:
        root.removeHandler(h)
        h.close()


class Run:
    """What every task starts from: the merged config, the data module, the model, the run folder."""

    def __init__(self, cfg, model_cls, task, dm, model, run_dir: Path, val_metric: str, mode: str,
                 resume: Optional[Path]):
        self.cfg, self.model_cls, self.task, self.dm, self.model = cfg, model_cls, task, dm, model
        self.run_dir, self.val_metric, self.mode, self.resume = run_dir, val_metric, mode, resume
        self.router = None  # --backend=onnx with an .onnx --ckpt: its files, opened once by _prepare


def _needs_edge(cfg: Dict[str, Any], task: str) -> bool:
    return task == "export" or (task == "infer" and cfg.get("backend") == "onnx") or \
        (task == "train" and bool((cfg.get("export") or {}).get("after_fit")))


def _prepare(cfg: Dict[str, Any], model_cls, task: str) -> Run:
    import lightning.pytorch as pl

    from .edge.protocol import has_edge_part

    if task != "train" and not cfg.get("ckpt"):
        raise ConfigError(f"--task={task} needs --ckpt=<path to a .ckpt>")
    if task == "train" and cfg.get("ckpt"):  # a training run would ignore it and start afresh
        raise ConfigError("--ckpt is read by --task=test, infer and export; --task=train would start afresh: "
                          "to continue training from a run, use --resume=<run folder>")
    resume = find_resume(cfg) if task == "train" else None
    if resume is not None and not os.environ.get(RUN_DIR_ENV):
        os.environ[RUN_DIR_ENV] = str(resume.parent.resolve())  # continue in the same folder
    pl.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    apply_threads(cfg.get("threads", "auto"))
    # the validation metric steers training only (test and infer may use other cutoffs)
    val_metric = resolve_val_metric(cfg, model_cls) if task == "train" else model_cls.default_val_metric
    if cfg["mode"] == "detail":
        say(dump(cfg))
    t0 = time.perf_counter()
    dm = build_datamodule(cfg, model_cls)
    t_data = time.perf_counter() - t0
    if getattr(dm, "data", None) is not None and getattr(dm, "source", None) is not None:
        say(f"{cfg['data']['name']}: {int(dm.data.stats['interactions'])} interactions -> "
            f"{cfg['data'].get('format') if dm.file_format else model_cls.data_format} samples: "
            + ", ".join(f"{k} {v:g}" for k, v in dm.stats.items()) + f"; data ready in {t_data:.2f}s")
    elif getattr(dm, "data", None) is not None:
        say(f"{cfg['data']['name']}: {dm.num_users - 1} users, {dm.num_items - 1} items, "
            f"{int(dm.data.stats['interactions'])} interactions (train {int(dm.data.stats['train'])}, "
            f"valid {int(dm.data.stats['valid'])}, test {int(dm.data.stats['test'])}); data ready in {t_data:.2f}s")
    else:
        say(f"{cfg['data']['name']}: " + ", ".join(f"{k} {v:g}" for k, v in dm.stats.items())
            + f"; data ready in {t_data:.2f}s")
    _check_sample_files(dm, task, bool(cfg.get("input")))
    model = build_model(cfg, model_cls, dm)
    if task != "train":  # the data checks and facts of training (_train connects again, with its Trainer)
        from .wiring import connect

        connect(model, dm)
    if _needs_edge(cfg, task) and not has_edge_part(model):
        raise ConfigError(f"{model_cls.__name__} has no on-device part (it defines no edge_parts()): "
                          f"nothing to export or serve with onnxruntime (docs/edge.md)")
    router = _check_ckpt(cfg, model, task, resume)  # a checkpoint that does not load changes no folder
    run_dir = make_run_dir(cfg)  # only now: a config that cannot build a model leaves no folder behind
    setup_logging(run_dir, cfg["mode"])
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        atomic_write_text(run_dir / "config.yaml", dump(cfg))
    run = Run(cfg, model_cls, task, dm, model, run_dir, val_metric, model.metric_mode(val_metric), resume)
    run.router = router
    return run


def _check_sample_files(dm, task: str, has_input: bool = False) -> None:
    """A seed format's files (``data.format: pinrec`` ...): the stages a task reads (training: valid
    and test, to pick the best epoch and report it; --task=test and infer: test) exist, said before
    anything runs."""
    files = getattr(dm, "source", None)
    if files is None or not getattr(files, "paths", None):
        return
    need = {"train": ("valid", "test"), "test": ("test",), "infer": () if has_input else ("test",)}.get(task, ())
    missing = [s for s in need if s not in files.stages()]
    if missing:
        where = ", ".join(str(files.paths[s]) if s in files.paths else f"{s} (data.files names none)"
                          for s in missing)
        raise ConfigError(f"data.format: {dm.cfg.get('format')}: --task={task} reads the {' and '.join(missing)} sample "
                          f"file{'s' if len(missing) > 1 else ''} beside {files.paths['train'].name}, not found: "
                          f"{where} (write them, or name them in data.files: {{train: ..., valid: ..., test: ...}})")


def _check_ckpt(cfg: Dict[str, Any], model, task: str, resume: Optional[Path]):
    """Load the checkpoint a task starts from into ``model`` (``--resume``'s for training: Lightning
    restores it again with the optimiser state), or open the ``.onnx`` of ``--backend=onnx`` (returned,
    an ``EdgeRouter``; else None), before any folder is made or written: each way it does not fit is
    one error naming the file."""
    if task == "infer" and cfg.get("input"):  # the rows to score are read (and refused) before any folder too
        from .infer import read_input_text

        read_input_text(Path(str(cfg["input"])))
    if resume is not None:
        load_weights(model, resume, what="--resume checkpoint")
    elif task != "train":
        ckpt = Path(str(cfg["ckpt"]))
        if cfg.get("backend") == "onnx" and ckpt.suffix in (".onnx", ".json"):
            from .infer import onnx_router

            return onnx_router(ckpt, model)
        load_weights(model, ckpt)
    return None


def _task_train(run: Run, extra_callbacks=()) -> Dict[str, Any]:
    from .callbacks import training_callbacks

    cfg = run.cfg
    callbacks = [*extra_callbacks, *training_callbacks(cfg, run.model, run.run_dir)]
    return _train(cfg, run.model, run.dm, run.run_dir, run.val_metric, run.mode, run.resume, callbacks)


def _task_test(run: Run, extra_callbacks=()) -> Dict[str, Any]:  # --ckpt loaded by _prepare
    from .callbacks.report import TopkCurve

    curve = TopkCurve()  # metric@k for k = 1..max topk, in the same test pass
    trainer, _ = build_trainer(run.cfg, run.run_dir, run.val_metric, run.mode, epochs=0, with_checkpoints=False,
                               extra_callbacks=[curve])
    trainer.test(run.model, datamodule=run.dm, verbose=False)
    metrics = {"test": run.model.last_metrics.get("test", {}), "ckpt": str(run.cfg["ckpt"])}
    _write_metrics(run.run_dir, metrics)
    say(_format_metrics("test", metrics["test"]))
    _write_groups(run.run_dir, metrics["test"])
    from .evaluation.report import report_test, safely

    safely(report_test, run.run_dir, metrics, curve.curve, getattr(run.model, "topk", ()))  # topk.png + report.md
    say(f"run folder: {_shown(run.run_dir)}")
    return {"run_dir": str(run.run_dir), **metrics}


def _task_export(run: Run, extra_callbacks=()) -> Dict[str, Any]:
    from .edge.bundle import export_run  # --ckpt loaded by _prepare

    ex = run.cfg["export"]
    reports = export_run(run.model, run.run_dir, tol=float(ex["tolerance"]), exporter=str(ex["exporter"]),
                         config=run.cfg, quantize=bool(ex["quantize"]), datamodule=run.dm,
                         split=ex.get("split") or None)
    for name, r in reports.items():
        say(f"{name}: {r.get('path', '')} max abs diff vs PyTorch {r['max_abs_diff']:.2e} ({r['bytes']} bytes)")
        q = r.get("int8")
        if q:
            acc = (f"AUC {q['auc_float']:.4f} -> {q['auc_int8']:.4f} ({q['auc_delta']:+.4f})" if "auc_delta" in q
                   else q.get("accuracy", ""))
            say(f"{name} int8: {q['path']} ({q['bytes']} bytes, {q['ratio']:.2f} of float); {acc}")
        sp = r.get("split")
        if sp:
            say(f"{name} split at {sp['layer']!r}: {sp['device']['path']} -> cut {sp['cut_shape']} -> "
                f"{sp['cloud']['path']} (composed max abs diff {sp['composed_max_abs_diff']:.2e})")
    say(f"run folder: {_shown(run.run_dir)}")
    return {"run_dir": str(run.run_dir), "export": reports}


def _task_infer(run: Run, extra_callbacks=()) -> Dict[str, Any]:
    from .infer import infer, infer_onnx, infer_source

    if getattr(run.dm, "source", None) is not None:  # a seed format's rows (ECRec, PINRec files ...)
        out = infer_source(run.cfg, run.model, run.dm, run.run_dir, run.router)
    elif run.cfg.get("backend") == "onnx":  # the onnx backend may be given an .onnx file
        out = infer_onnx(run.cfg, run.model, run.dm, run.run_dir, run.router)
    else:  # --ckpt loaded by _prepare
        out = infer(run.cfg, run.model, run.dm, run.run_dir)
    say(f"wrote {out}")
    return {"run_dir": str(run.run_dir), "output": str(out)}


# task name -> what runs it (the command line's --task takes these names)
TASKS = {"train": _task_train, "test": _task_test, "export": _task_export, "infer": _task_infer}


def model_task(model_cls, task: str):
    """A model's own way of running ``task``, or None (the ``TASKS`` entry runs it). A model class
    may name one per task in ``tasks = {"train": "recstudio_edge.pipelines.mcrec:train"}``: a
    ``module:function`` taking ``(run, extra_callbacks)`` as the ``TASKS`` functions do (MCRec's
    three-model pipeline). Named by text, so that the model module imports nothing of the runner."""
    spec = (getattr(model_cls, "tasks", None) or {}).get(task)
    if spec is None:
        return None
    import importlib

    module, _, name = str(spec).partition(":")
    return getattr(importlib.import_module(module), name)


def _run_task(cfg: Dict[str, Any], model_cls, task: str, extra_callbacks=()) -> Dict[str, Any]:
    if task not in TASKS:
        from .names import did_you_mean

        raise ConfigError(f"unknown task {task!r}: {did_you_mean(task, TASKS)}")
    fresh = not os.environ.get(RUN_DIR_ENV)  # this call makes the run folder (not a resume, not a DDP worker)
    task_fn = model_task(model_cls, task) or TASKS[task]
    run = _prepare(cfg, model_cls, task)
    try:
        return task_fn(run, extra_callbacks)
    except Exception:
        if fresh and run.resume is None:
            _drop_failed_run(run.run_dir, Path(cfg["output_dir"]))
        raise


def _drop_failed_run(run_dir: Path, output_dir: Path) -> None:
    """A task that failed in the folder it just made leaves no folder behind, unless it holds a
    checkpoint (what ``--resume`` continues from); its empty parents under ``output_dir`` go too."""
    import shutil

    if int(os.environ.get("LOCAL_RANK", "0")) != 0 or not run_dir.is_dir() or any(run_dir.glob("*.ckpt")):
        return
    _close_run_log()  # run.log is closed before its folder goes
    shutil.rmtree(run_dir, ignore_errors=True)
    stop = output_dir.resolve()
    for parent in run_dir.resolve().parents:
        if parent == stop or stop not in parent.parents:
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def _write_groups(run_dir: Path, metrics: Dict[str, float]) -> None:
    """Per-group metrics (a model evaluated on rows with ``group_id``): the head-vs-tail table saved
    as ``groups.txt`` next to ``metrics.json`` (printed once, in ``_format_metrics``'s table)."""
    if not any(k.startswith("auc_g") for k in metrics):
        return
    from .evaluation.groups import head_tail_table

    table = head_tail_table(metrics)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        atomic_write_text(run_dir / "groups.txt", table + "\n")  # printed in _format_metrics's table


def _train(cfg, model, dm, run_dir: Path, val_metric: str, mode: str, resume: Optional[Path], extra_callbacks=()):
    epochs = int(cfg["epochs"])
    t0 = time.perf_counter()
    if model.closed_form:
        model.fit_closed_form(dm)
        trainer, _ = build_trainer(cfg, run_dir, val_metric, mode, epochs=0, with_checkpoints=False)
        trainer.validate(model, datamodule=dm, verbose=False)
        trainer.strategy.barrier()
        best = run_dir / "best.ckpt"
        if trainer.is_global_zero:
            tmp = run_dir / ".best.ckpt.tmp"
            torch.save({"state_dict": model.state_dict()}, tmp)
            os.replace(tmp, best)
        best_path, epochs_run = best, 0
    else:
        trainer, ckpt_cb = build_trainer(cfg, run_dir, val_metric, mode, epochs=epochs,
                                         extra_callbacks=extra_callbacks)
        from .wiring import connect

        connect(model, dm, trainer)  # data facts, pipeline negatives, the fast loop (recstudio_edge/wiring.py)
        trainer.fit(model, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True)
        best_path = Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else run_dir / "last.ckpt"
        epochs_run = trainer.current_epoch
    train_s = time.perf_counter() - t0
    best_epoch = load_weights(model, best_path).get("epoch") if best_path.exists() else None
    valid = dict(model.last_metrics.get("valid", {}))
    if not model.closed_form and best_path.exists():  # validation figures of the best checkpoint
        trainer.validate(model, datamodule=dm, verbose=False)
        valid = dict(model.last_metrics.get("valid", {}))
    trainer.test(model, datamodule=dm, verbose=False)
    metrics = {"test": model.last_metrics.get("test", {}), "valid": valid, "val_metric": val_metric,
               "epochs": epochs_run, "train_seconds": round(train_s, 3), "best_ckpt": str(best_path)}
    if trainer.is_global_zero:
        _write_metrics(run_dir, metrics)
        say(_format_metrics(_best_title(val_metric, best_epoch, model.closed_form), valid))
        say(_format_metrics("test", metrics["test"]))
        _write_groups(run_dir, metrics["test"])
        from .callbacks.report import epoch_events
        from .evaluation.report import report_train, safely

        safely(report_train, run_dir, metrics, mode, epoch_events(trainer, model))  # plots + report.md
        say(f"run folder: {_shown(run_dir)}")
    return {"run_dir": str(run_dir), **metrics}


def _write_metrics(run_dir: Path, metrics: Dict[str, Any]) -> None:
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1, sort_keys=False))


def _format_metrics(title: str, values: Dict[str, float]) -> str:
    """The final figures as a text table under ``title``. Ranking metrics (``recall@10`` ...): one
    row per metric, one column per cutoff (``@10 @20``). Pointwise ones (auc, gauc, logloss): one
    column named ``title``, one row per metric; with per-group figures (``auc_g0`` ...) the auc and
    gauc rows are ``evaluation.groups.head_tail_table``'s (a row per group, the tail and head
    means: the table ``groups.txt`` holds), so the groups are printed once, in this table."""
    from .evaluation.groups import group_count, head_tail_table
    from .evaluation.report import split_metrics

    at_k, plain, _ = split_metrics(values)  # per-group entries are the group table's
    lines = []
    if at_k:
        ks = sorted({k for row in at_k.values() for k in row})
        lines.append(title)
        lines.append("".join([f"{'':<16}", *(f"{'@' + str(k):>10}" for k in ks)]))
        for name, row in at_k.items():
            lines.append("".join([f"{name:<16}", *(f"{row[k]:>10.4f}" if k in row else f"{'-':>10}" for k in ks)]))
    column = title.split(" ", 1)[0]  # "valid" / "test"
    width = max(12, len(column) + 2)
    groups = head_tail_table(values, name=column) if group_count(values) else None
    if groups is not None or (plain and not at_k):
        lines.append(title)
    if groups is not None:
        lines.append(groups)
        plain = {k: v for k, v in plain.items() if k not in ("auc", "gauc")}
    elif plain and not at_k:
        lines.append(f"{'':<16}{column:>{width}}")
    if plain and at_k:
        lines.append("".join(f"{k}={v:.4f}  " for k, v in plain.items()).rstrip())
    elif plain:
        lines += [f"{k:<16}{v:>{width}.4f}" for k, v in plain.items()]
    return "\n".join(lines) if lines else f"{title}: (no metrics)"


def _best_title(val_metric: str, epoch: Optional[int], closed_form: bool = False) -> str:
    """``valid (best by recall@10, epoch 7)``: the metric that chose the checkpoint, and its epoch
    (the ``epoch`` the checkpoint holds, counted from 0 as in the per-epoch lines; None when it
    holds none); a closed-form model has no epochs."""
    if closed_form:
        return f"valid ({val_metric}, closed form)"
    return f"valid (best by {val_metric}" + (f", epoch {int(epoch)})" if epoch is not None else ")")


def _shown(path: Path) -> str:
    """A run folder as printed: relative to the working directory when it lies under it, else
    absolute; the same form for a new run and a resumed one (whose folder comes resolved)."""
    p = Path(os.path.abspath(path))
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
