"""``--mode=tune``: an NNI experiment over the model's search space, through NNI's Python API.

The experiment folder is ``<output_dir>/<Model>/<dataset>/tune-<timestamp>/``:

- ``trials/<trial id>/``: each trial's run folder (config, checkpoints, metrics, ``nni_trial.json``);
- ``nni/``: NNI's own working directory (manager and tuner logs, each trial's stdout/stderr);
- ``trials.json`` and ``trials.txt``: every trial (parameters, final metric, duration, status);
- ``best_config.yaml``: the best trial's full config (``python run.py --config=best_config.yaml``);
- ``best_test/``: the best trial's checkpoint evaluated on the test split.

The manager (a node process shipped inside the ``nni`` wheel) is always stopped, also on
Ctrl-C, ``--max_duration`` and errors; trial processes left behind are ended too.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import shlex
import signal
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..config import ConfigError, dump
from ..progress import progress
from ..utils import atomic_write_text
from .space import format_params, search_space

ROOT = Path(__file__).resolve().parents[2]
RUN_PY = ROOT / "run.py"
# a checkout's trials run its run.py; an installed package (no run.py beside it) runs the same entry
RUN_ENTRY = [str(RUN_PY)] if RUN_PY.is_file() else ["-c", "from recstudio_edge.cli import main; main()"]
BIND_JS = Path(__file__).resolve().parent / "bind_host.js"
HOST_ENV = "RECSTUDIO_EDGE_NNI_HOST"
TUNERS = {"tpe": "TPE", "random": "Random", "anneal": "Anneal", "evolution": "Evolution",
          "gridsearch": "GridSearch"}
WILDCARD_HOSTS = {"0.0.0.0", "::", "*", "all"}
TERMINAL = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# ---- options -----------------------------------------------------------------------------------
def parse_duration(value: Any) -> Optional[int]:
    """``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` -> seconds; ``None``/``0`` -> no limit."""
    if value in (None, "", 0, "0", "null", "none", False):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value).lower())
        if not m:
            raise ConfigError(f"--max_duration={value!r}: use seconds or a number with s, m, h or d (30m, 2h)")
        secs = float(m.group(1)) * UNITS[m.group(2) or "s"]
    if secs <= 0:
        return None
    return max(1, int(math.ceil(secs)))


def check_host(host: Any) -> Optional[str]:
    """The address the web UI binds to; ``None`` means every interface (NNI's own behaviour)."""
    h = str(host or "127.0.0.1").strip().lower()
    if h in WILDCARD_HOSTS:
        return None
    if h == "localhost":
        return "127.0.0.1"
    if re.fullmatch(r"127(\.\d{1,3}){3}", h):
        return h
    raise ConfigError(f"--host={host}: the NNI web UI can bind to a loopback address (default 127.0.0.1) or to "
                      f"every interface (0.0.0.0). NNI's own tuner and clients reach the manager at localhost, "
                      f"so another single address would cut them off; to reach the UI from another machine use "
                      f"--host=0.0.0.0 behind a firewall, or an SSH tunnel to 127.0.0.1")


def positive_int(cfg: Dict[str, Any], key: str) -> int:
    v = cfg["nni"].get(key)
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"--{key}={v!r}: expected a positive integer") from None
    if n < 1 or (isinstance(v, float) and not float(v).is_integer()):
        raise ConfigError(f"--{key}={v!r}: expected a positive integer")
    return n


def tuner_name(value: Any) -> str:
    key = str(value or "TPE").replace("_", "").replace("-", "").lower()
    if key not in TUNERS:
        from ..names import did_you_mean

        raise ConfigError(f"--tuner={value}: {did_you_mean(str(value), TUNERS.values())}")
    return TUNERS[key]


def trial_command(argv: List[str], trials_dir: Path) -> str:
    """``python run.py <the tune command's arguments> --mode=trial --output_dir=<trials>``
    (later ``--key=value`` wins in ``parse_argv``, so the appended ones replace the originals)."""
    cmd = [sys.executable, *RUN_ENTRY, *argv, "--mode=trial", f"--output_dir={trials_dir}"]
    return shlex.join(cmd)


def make_experiment_dir(cfg: Dict[str, Any]) -> Path:
    base = Path(cfg["output_dir"]) / cfg["model_name"] / cfg["data"]["name"]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = base / f"tune-{stamp}", 1
    while True:
        try:
            path.mkdir(parents=True)
            return path.resolve()
        except FileExistsError:
            n += 1
            path = base / f"tune-{stamp}-{n}"


# ---- the manager: bind address, start, stop, leftovers -------------------------------------------
@contextlib.contextmanager
def manager_environment(host: Optional[str]):
    """Environment the manager inherits while it starts: the bind-address preload (see bind_host.js)."""
    saved = {k: os.environ.get(k) for k in (HOST_ENV, "NODE_OPTIONS")}
    try:
        if host is not None:
            os.environ[HOST_ENV] = host
            prev = os.environ.get("NODE_OPTIONS", "")
            os.environ["NODE_OPTIONS"] = f'{prev} --require "{BIND_JS}"'.strip()
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def listening_addresses(pid: int, port: int) -> List[str]:
    """The addresses process ``pid`` listens on at ``port`` (empty if unknown)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        conns = proc.net_connections(kind="tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    except (psutil.Error, OSError):
        return []
    return sorted({c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port})


def experiment_processes(exp_id: str, nni_dir: Path, exclude: Tuple[int, ...] = ()) -> List[Any]:
    """Processes that belong to this experiment: trials (NNI_EXP_ID in their environment), the tuner
    and the manager (the experiment id or NNI folder on their command line)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] in exclude or p.info["pid"] == os.getpid():
            continue
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if exp_id in cmd or str(nni_dir) in cmd or p.environ().get("NNI_EXP_ID") == exp_id:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def end_processes(procs: List[Any], timeout: float = 5.0) -> int:
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return len(procs)


def stop_experiment(exp, nni_dir: Path) -> None:
    """Stop the manager (which cancels running trials), then end anything of ours still running.
    A second Ctrl-C while stopping falls through to ending the processes directly."""
    from ..runner import say

    exp_id = exp.id
    proc = getattr(exp, "_proc", None)
    try:
        exp.stop()
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt included: go on cleaning up
        say(f"nni: stopping the experiment failed ({type(e).__name__}: {e}); ending its processes")
        p = _psutil_process(proc.pid) if proc is not None else None
        if p is not None:
            end_processes([p])
    left = experiment_processes(exp_id, nni_dir)
    if left:
        n = end_processes(left)
        say(f"nni: ended {n} leftover process(es) of experiment {exp_id}")


def _psutil_process(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


class _DropPortalURLs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Web portal URLs" not in record.getMessage()


def quiet_nni_logging() -> None:
    """NNI lists every interface's address as a web portal URL, whatever the bind address: drop
    that line (we print the address that works)."""
    lg = logging.getLogger("nni.experiment")
    if not any(isinstance(f, _DropPortalURLs) for f in lg.filters):
        lg.addFilter(_DropPortalURLs())


class _StartFailed(Exception):
    pass


@contextlib.contextmanager
def termination_as_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt while the experiment runs, so that a killed or
    hung-up tune command still stops the manager (which runs in its own process group)."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    saved = {}
    try:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                saved[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---- results ------------------------------------------------------------------------------------
def _job_field(job: Any, name: str, default: Any = None) -> Any:
    return job.get(name, default) if isinstance(job, dict) else getattr(job, name, default)


def _loads(text: Any) -> Any:
    val = text
    for _ in range(2):  # NNI stores metric data JSON-encoded twice
        if isinstance(val, str):
            try:
                val = json.loads(val)
            except ValueError:
                break
    return val


def collect_trials(exp, trials_dir: Path, nni_dir: Path) -> List[Dict[str, Any]]:
    """Every trial the manager knows: id, status, parameters, final result, duration, folders, error."""
    from nni.experiment import rest

    jobs = rest.get(exp.port, "/trial-jobs", exp.url_prefix)
    now_ms = time.time() * 1000
    rows = []
    for job in jobs:
        tid = _job_field(job, "trialJobId")
        hp = _job_field(job, "hyperParameters") or []
        params = {}
        if hp:
            hp0 = _loads(hp[0]) if isinstance(hp[0], str) else hp[0]
            params = (hp0 or {}).get("parameters", {}) if isinstance(hp0, dict) else {}
        final = None
        for m in _job_field(job, "finalMetricData") or []:
            final = _loads(m.get("data") if isinstance(m, dict) else getattr(m, "data", None))
        if isinstance(final, (int, float)):
            final = {"default": float(final)}
        start, end = _job_field(job, "startTime"), _job_field(job, "endTime")
        duration = ((end or now_ms) - start) / 1000 if start else None
        nni_trial_dir = nni_trial_folder(nni_dir / exp.id, tid)
        rows.append({"trial_id": tid, "sequence": _job_field(job, "sequenceId"),
                     "status": _job_field(job, "status"), "parameters": params, "final": final,
                     "metric": (final or {}).get("default"), "duration": duration,
                     "run_dir": str(trials_dir / tid), "nni_dir": str(nni_trial_dir),
                     "error": None})
    for row in rows:
        if row["status"] == "FAILED":
            row["error"] = last_error_line(stderr_file(Path(row["nni_dir"])))
    rows.sort(key=lambda r: (r["sequence"] if r["sequence"] is not None else 1 << 30))
    return rows


def nni_trial_folder(exp_folder: Path, trial_id: str) -> Path:
    """Where NNI keeps a trial's stdout/stderr: ``environments/local-env/trials/<id>`` for NNI 3's
    local training service, ``trials/<id>`` for the legacy one."""
    for cand in (exp_folder / "environments" / "local-env" / "trials" / trial_id, exp_folder / "trials" / trial_id):
        if cand.is_dir():
            return cand
    found = sorted(exp_folder.glob(f"**/trials/{trial_id}"))
    return found[0] if found else exp_folder / "environments" / "local-env" / "trials" / trial_id


def stderr_file(folder: Path) -> Path:
    for name in ("trial.stderr", "stderr"):
        if (folder / name).exists():
            return folder / name
    return folder / "trial.stderr"


def last_error_line(stderr: Path) -> Optional[str]:
    try:
        lines = [ln.strip() for ln in stderr.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for ln in reversed(lines):  # the exception line, not a progress bar or a warning
        if re.match(r"^(error:|[A-Za-z_.]*(Error|Exception)\b)", ln, flags=re.IGNORECASE):
            return ln[:300]
    return lines[-1][:300] if lines else None


def sort_trials(rows: List[Dict[str, Any]], maximize: bool) -> List[Dict[str, Any]]:
    def key(r):
        m = r["metric"]
        ok = r["status"] == "SUCCEEDED" and isinstance(m, (int, float)) and math.isfinite(m)
        return (0 if ok else 1, -(m if maximize else -m) if ok else 0.0, r["sequence"] or 0)

    return sorted(rows, key=key)


def format_table(rows: List[Dict[str, Any]], metric: str) -> str:
    keys: List[str] = []
    for r in rows:
        for k in r["parameters"]:
            if k not in keys:
                keys.append(k)

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    head = ["rank", "trial", "status", metric, "seconds", *keys]
    body = []
    for i, r in enumerate(rows, 1):
        ok = r["status"] == "SUCCEEDED" and r["metric"] is not None
        body.append([str(i) if ok else "-", r["trial_id"], r["status"],
                     f"{r['metric']:.4f}" if ok else "-",
                     f"{r['duration']:.1f}" if r["duration"] is not None else "-",
                     *[cell(r["parameters"].get(k)) for k in keys]])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['trial_id']} {r['status']}: {r['error']}  (log: {stderr_file(Path(r['nni_dir']))})")
    return "\n".join(lines)


def best_config(cfg: Dict[str, Any], params: Dict[str, Any], model_cls) -> Dict[str, Any]:
    """The tune command's config with the best parameters applied, as a plain training run."""
    from .space import apply_params

    out = apply_params(cfg, params, model_cls)
    out["mode"] = "light"
    out["task"] = "train"
    out["ckpt"] = None
    out["resume"] = None
    return out


# ---- the experiment -----------------------------------------------------------------------------
def maximizes(val_metric: str) -> bool:
    """Whether a larger ``val_metric`` is better (every metric but logloss)."""
    return val_metric != "logloss"


def _run(exp, port: int, host: Optional[str], cfg: Dict[str, Any], val_metric: str, max_trials: int,
         max_duration: Optional[int], exp_dir: Path, t0: float) -> Tuple[str, List[Dict[str, Any]]]:
    """Start the manager, poll until the experiment ends or runs out of time; the trials as rows."""
    from ..runner import say

    trials_dir, nni_dir = exp_dir / "trials", exp_dir / "nni"
    with manager_environment(host):
        try:
            exp.start(port)
        except Exception as e:  # noqa: BLE001 - NNI raises plain exceptions
            log_file = nni_dir / exp.id / "log" / "nnimanager.log"
            print(f"error: the NNI manager did not start: {e} (see {log_file})", file=sys.stderr)
            raise _StartFailed() from e
    bound = listening_addresses(exp._proc.pid, port) if getattr(exp, "_proc", None) else []
    say(f"nni: experiment {exp.id}, web UI http://{host or '127.0.0.1'}:{port} "
        f"(bound to {host or '0.0.0.0, every interface'}); folder {exp_dir}")
    if host is not None and bound and any(not a.startswith("127.") for a in bound):
        say(f"nni: warning: the manager listens on {', '.join(bound)}, not only {host}")
    rows: List[Dict[str, Any]] = []
    seen: Dict[str, str] = {}
    bar = progress(total=max_trials, desc="nni trials", unit="trial")
    try:
        return _poll(exp, cfg, val_metric, max_trials, max_duration, trials_dir, nni_dir, t0, rows, seen, bar)
    finally:
        bar.close()


def _poll(exp, cfg, val_metric, max_trials, max_duration, trials_dir, nni_dir, t0, rows, seen, bar):
    """``_run``'s polling loop; ``bar`` advances once per finished trial: trial n of N, best so far."""
    from ..runner import say

    maximize = maximizes(val_metric)
    best: Optional[float] = None
    while True:
        try:
            status = exp.get_status()
        except Exception as e:  # noqa: BLE001 - the manager is gone
            say(f"nni: the manager stopped answering ({e})")
            return "ERROR", rows
        with contextlib.suppress(Exception):
            rows = collect_trials(exp, trials_dir, nni_dir)
            for r in rows:
                if r["status"] in TERMINAL and seen.get(r["trial_id"]) != r["status"]:
                    seen[r["trial_id"]] = r["status"]
                    m = f" {val_metric}={r['metric']:.4f}" if r["metric"] is not None else ""
                    dur = f" ({r['duration']:.1f}s)" if r["duration"] is not None else ""
                    err = f": {r['error']}" if r["error"] else ""
                    say(f"trial {len(seen)}/{max_trials} {r['trial_id']} {r['status']}{m}{dur} "
                        f"{format_params(r['parameters'])}{err}")
                    if r["metric"] is not None and r["status"] == "SUCCEEDED":
                        v = float(r["metric"])
                        best = v if best is None or (v > best if maximize else v < best) else best
                    bar.update(1)
                    if best is not None:
                        bar.set_postfix_str(f"best {val_metric}={best:.4f}")
        if status in ("DONE", "STOPPED", "ERROR"):
            ended = status
            break
        if max_duration and time.monotonic() - t0 > max_duration:
            say(f"nni: --max_duration={cfg['nni'].get('max_duration')} reached: stopping the experiment")
            ended = "MAX_DURATION"
            break
        time.sleep(1.0)
    with contextlib.suppress(Exception):
        rows = collect_trials(exp, trials_dir, nni_dir)
    return ended, rows


def tune(cfg: Dict[str, Any], model_cls, argv: List[str]) -> Dict[str, Any]:
    from ..runner import RUN_DIR_ENV, build_datamodule, resolve_val_metric, run_task, say

    if str(cfg["task"]).lower() != "train":
        raise ConfigError(f"--mode=tune trains models: --task={cfg['task']} cannot be tuned")
    space, source = search_space(cfg, model_cls)  # errors here come before anything starts
    tuner = tuner_name(cfg["nni"].get("tuner"))
    max_trials = positive_int(cfg, "max_trials")
    concurrency = positive_int(cfg, "trial_concurrency")
    port = positive_int(cfg, "port")
    max_duration = parse_duration(cfg["nni"].get("max_duration"))
    host = check_host(cfg["nni"].get("host"))
    val_metric = resolve_val_metric(cfg, model_cls)
    maximize = maximizes(val_metric)

    if port_in_use(port):
        raise ConfigError(f"--port={port} is in use (another NNI experiment or web server?): pass a free one, "
                          f"e.g. --port={port + 1}")
    os.environ.pop(RUN_DIR_ENV, None)  # trials must not inherit a run folder
    exp_dir = make_experiment_dir(cfg)
    trials_dir, nni_dir = exp_dir / "trials", exp_dir / "nni"
    trials_dir.mkdir()
    goal = f"{'maximise' if maximize else 'minimise'} valid {val_metric}"
    limit = f", at most {max_duration}s" if max_duration else ""
    say(f"tune {model_cls.registry_name} on {cfg['data']['name']}: {tuner}, {max_trials} trials "
        f"({concurrency} at a time){limit}, {goal}")
    say(f"search space ({source}):")
    for k, spec in space.items():
        say(f"  {k}: {spec['_type']} {spec['_value']}")
    # the data once, here: errors surface before the experiment and trials share the cache
    build_datamodule(cfg, model_cls)

    try:
        from nni.experiment import Experiment
    except ImportError as e:  # pragma: no cover - nni is in requirements.txt
        raise ConfigError(f"--mode=tune needs NNI: pip install -r requirements.txt ({e})") from None
    quiet_nni_logging()
    exp = Experiment("local")
    c = exp.config
    c.experiment_name = f"{model_cls.registry_name}-{cfg['data']['name']}"
    c.experiment_working_directory = str(nni_dir)
    c.trial_command = trial_command(argv, trials_dir)
    c.trial_code_directory = os.getcwd()  # relative paths in the command mean what they meant here
    c.search_space = space
    c.tuner.name = tuner
    args: Dict[str, Any] = {}
    if tuner != "GridSearch":
        args["optimize_mode"] = "maximize" if maximize else "minimize"
    if tuner in ("TPE", "Random"):
        args["seed"] = int(cfg["seed"])
    if tuner == "Evolution":
        args["population_size"] = max(2, min(32, max_trials // 2))
    c.tuner.class_args = args
    c.max_trial_number = max_trials
    c.trial_concurrency = concurrency
    if max_duration:
        c.max_experiment_duration = f"{max_duration}s"
    c.training_service.platform = "local"

    rows: List[Dict[str, Any]] = []
    interrupted = False
    ended = "DONE"
    t0 = time.monotonic()
    with termination_as_interrupt():
        try:
            ended, rows = _run(exp, port, host, cfg, val_metric, max_trials, max_duration, exp_dir, t0)
        except _StartFailed:
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            interrupted, ended = True, "INTERRUPTED"
            say("nni: interrupted: stopping the experiment")
            with contextlib.suppress(BaseException):
                rows = collect_trials(exp, trials_dir, nni_dir) if exp.port else rows
        finally:
            stop_experiment(exp, nni_dir)
    for r in rows:  # trials the stop cancelled
        if r["status"] in ("RUNNING", "WAITING", "UNKNOWN"):
            r["status"] = "CANCELED"

    rows = sort_trials(rows, maximize)
    table = format_table(rows, val_metric)
    atomic_write_text(exp_dir / "trials.json", json.dumps(
        {"experiment_id": exp.id, "ended": ended, "val_metric": val_metric, "tuner": tuner,
         "search_space": space, "trials": rows}, indent=1))
    atomic_write_text(exp_dir / "trials.txt", table + "\n")
    how = {"DONE": "done", "MAX_DURATION": "stopped by --max_duration", "INTERRUPTED": "interrupted",
           "ERROR": f"ended with an error (see {nni_dir / exp.id / 'log' / 'nnimanager.log'})", "STOPPED": "stopped"}.get(ended, ended)
    say(f"\n{len(rows)} trial(s), experiment {how} after {time.monotonic() - t0:.0f}s:")
    say(table)

    result: Dict[str, Any] = {"run_dir": str(exp_dir), "experiment_dir": str(exp_dir), "experiment_id": exp.id,
                              "ended": ended, "val_metric": val_metric, "trials": rows, "best": None}
    best = next((r for r in rows if r["status"] == "SUCCEEDED" and r["metric"] is not None), None)
    if best is None:
        say("no trial succeeded: no best configuration")
        if interrupted:
            raise SystemExit(130)
        print(f"error: no trial succeeded (see {exp_dir / 'trials.txt'} and the trials' stderr)", file=sys.stderr)
        raise SystemExit(1)
    bcfg = best_config(cfg, best["parameters"], model_cls)
    best_path = exp_dir / "best_config.yaml"
    atomic_write_text(best_path, f"# best of NNI experiment {exp.id}: trial {best['trial_id']}, valid "
                                 f"{val_metric}={best['metric']:.6f}\n# {format_params(best['parameters'])}\n"
                                 f"# python run.py --config={best_path}\n" + dump(bcfg))
    say(f"best trial {best['trial_id']}: valid {val_metric}={best['metric']:.4f}  {format_params(best['parameters'])}")
    say(f"best config: {best_path}")
    result.update(best=best, best_config=str(best_path))
    ckpt = Path(best["run_dir"]) / "best.ckpt"
    if interrupted:
        raise SystemExit(130)
    if ckpt.exists():
        test_cfg = copy.deepcopy(bcfg)
        test_cfg.update(task="test", ckpt=str(ckpt))
        test_cfg.setdefault("trainer", {})
        test_cfg["trainer"] = dict(test_cfg["trainer"] or {}, enable_progress_bar=False)
        test_dir = exp_dir / "best_test"
        test_dir.mkdir(exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(test_dir)
        try:
            say("best trial on the test split:")
            res = run_task(test_cfg, model_cls, "test")
        finally:
            os.environ.pop(RUN_DIR_ENV, None)
        result["test"] = res.get("test", {})
    else:
        say(f"nni: the best trial's checkpoint {ckpt} is missing: no test evaluation")
    return result
