"""``--mode=trial``: one trial of an NNI experiment, or a standalone run of the same code.

Inside an experiment NNI's manager starts ``python run.py <the tune command's args> --mode=trial
--output_dir=<experiment>/trials``; the trial reads its parameters (``nni.get_next_parameter()``:
``{dotted config key: value}``), applies and validates them, trains through ``run_task`` with the
``NNIReport`` callback (the validation metric after every epoch: intermediate results) and
reports the best checkpoint's validation metrics as the final result
(``{"default": <eval.val_metric>, <every other validation metric>...}``). Its run folder is
``<output_dir>/<trial id>/``.

Launched by hand (no manager), NNI runs in standalone mode: no parameters (the configured
values are used), results are only logged, and the run folder is the usual
``<output_dir>/<Model>/<dataset>/<timestamp>/``.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List

from ..config import ConfigError
from ..utils import atomic_write_text
from .space import apply_params, format_params

STANDALONE = "STANDALONE"  # what nni.get_trial_id() / get_experiment_id() say without a manager


def final_result(valid: Dict[str, float], val_metric: str) -> Dict[str, float]:
    """NNI's final result: the validation metric as ``default``, then the other validation metrics."""
    if val_metric not in valid:
        raise RuntimeError(f"the run produced no validation {val_metric} (got {sorted(valid)})")
    out = {"default": float(valid[val_metric])}
    out.update({k: float(v) for k, v in valid.items()})
    return out


def trial(cfg: Dict[str, Any], model_cls, argv: List[str]) -> Dict[str, Any]:
    from ..runner import RUN_DIR_ENV, resolve_val_metric, run_task, say

    with warnings.catch_warnings():  # NNI warns "running trial code without runtime" when standalone
        warnings.filterwarnings("ignore", message=".*without runtime.*", category=RuntimeWarning)
        import nni

        trial_id = nni.get_trial_id()
        experiment_id = nni.get_experiment_id()
        params = nni.get_next_parameter() or {}
    standalone = trial_id == STANDALONE
    if str(cfg["task"]).lower() != "train":
        raise ConfigError(f"--mode=trial trains: --task={cfg['task']} cannot be tuned")
    if getattr(model_cls, "closed_form", False) and not standalone:
        raise ConfigError(f"{model_cls.registry_name} has nothing to tune: it is computed in closed form")
    cfg = apply_params(cfg, params, model_cls)
    val_metric = resolve_val_metric(cfg, model_cls)
    if standalone:
        say("nni: no experiment manager: running the trial standalone with the configured values")
    else:
        run_dir = Path(cfg["output_dir"]) / trial_id
        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
        say(f"nni: experiment {experiment_id}, trial {trial_id}: {format_params(params) or '(no parameters)'}")

    from ..callbacks.nni_report import NNIReport

    reporter = NNIReport(val_metric)
    res = run_task(cfg, model_cls, "train", extra_callbacks=[reporter])
    final = final_result(res.get("valid") or {}, val_metric)
    if not math.isfinite(final["default"]):
        raise RuntimeError(f"validation {val_metric} is {final['default']}: the trial diverged")
    nni.report_final_result(final)
    record = {"experiment_id": experiment_id, "trial_id": trial_id, "parameters": params,
              "val_metric": val_metric, "intermediate": reporter.reported, "final": final}
    atomic_write_text(Path(res["run_dir"]) / "nni_trial.json", json.dumps(record, indent=1))
    say(f"nni: final {val_metric}={final['default']:.4f}")
    return {**res, "nni": record}
