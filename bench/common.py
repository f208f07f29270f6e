"""Shared helpers of the benchmark scripts: machine line, child processes with their own peak
memory, the RecBole (peer) runner, our worker, tables.

Every measured run is a separate child process, so its peak RSS (``ru_maxrss`` from
``os.wait4`` of that child) is its own high-water mark and nothing is shared between runs.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def _env_path(name: str, default: Path) -> Path:
    """``$name`` if set and not empty (``~`` expanded, made absolute: the peer runs in another
    working directory; symlinks kept, a venv's python is one), else ``default``."""
    value = os.environ.get(name)
    return Path(os.path.abspath(Path(value).expanduser())) if value else default


def default_bench_data() -> Path:
    """``$XDG_CACHE_HOME/recstudio_edge/bench``, ``~/.cache/recstudio_edge/bench`` without it."""
    return _env_path("XDG_CACHE_HOME", Path.home() / ".cache") / "recstudio_edge" / "bench"


# Set-up outside the repo (``python bench/setup.py``; see bench/README.md), each path overridable
# by its environment variable:
#   BENCH_DATA   data, RecBole configs, logs and our run folders (default: default_bench_data());
#   PEER_PY      the python of the RecBole 1.2.1 venv (default <BENCH_DATA>/peer-venv/bin/python);
#   PEER_RUNNER  the peer's runner (default: bench/peer/run_peer.py of this checkout).
BENCH_DATA = _env_path("BENCH_DATA", default_bench_data())
PEER_PY = _env_path("PEER_PY", BENCH_DATA / "peer-venv" / "bin" / "python")
PEER_DIR = REPO / "bench" / "peer"            # run_peer.py, compat.py, configs/ (templates, data paths relative)
PEER_RUNNER = _env_path("PEER_RUNNER", PEER_DIR / "run_peer.py")
PEER_TEMPLATES = PEER_DIR / "configs"
PEER_CONFIGS = BENCH_DATA / "peer_configs"
PEER_DATA = BENCH_DATA / "data"              # RecBole integer-id .inter files (data_path of the configs)
OURS_DATA = BENCH_DATA / "ours"              # <OURS_DATA>/ml-1m/ml-1m.inter -> real atomic ml-1m
ML1M_ATOMIC = BENCH_DATA / "ml-1m-atomic"
ML100K_ATOMIC = BENCH_DATA / "ml-100k-atomic"
RUNS_DIR = BENCH_DATA / "runs"               # our run folders (outside the repo)

# Dataset name -> (our data_dir, what it is). RecBole reads PEER_DATA/<name>/<name>.inter.
OUR_DATA_DIRS = {
    "synth-1m": (PEER_DATA, "same file as RecBole's (integer ids)"),
    "ml-1m": (OURS_DATA, "real ml-1m atomic (user tokens 1m_<id>, items keyed by title, CRLF)"),
}


# ---- environment ---------------------------------------------------------------------------------
def ensure_ours_data() -> None:
    """``<OURS_DATA>/ml-1m/ml-1m.inter`` as a symlink to the real atomic file (never copied)."""
    target = ML1M_ATOMIC / "ml-1m.inter"
    if not target.exists():
        raise SystemExit(f"error: {target} not found: run `python bench/setup.py --bench-data {BENCH_DATA}` "
                         "(see bench/README.md)")
    folder = OURS_DATA / "ml-1m"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "ml-1m.inter"
    if not link.exists():
        if link.is_symlink():  # dangling: BENCH_DATA was moved
            link.unlink()
        link.symlink_to(target)


def setup_missing(need_peer: bool = True, quick: bool = False) -> List[str]:
    """The set-up files a benchmark needs that are not there (``quick``: the ml-100k set only)."""
    need = [PEER_DATA / "ml-100k" / "ml-100k.inter"] if quick else \
        [PEER_DATA / "synth-1m" / "synth-1m.inter", ML1M_ATOMIC / "ml-1m.inter"]
    if need_peer:
        need += [PEER_PY, PEER_RUNNER, PEER_CONFIGS / "bpr.yaml"]
    return [str(p) for p in need if not p.exists()]


def check_setup(need_peer: bool = True, quick: bool = False) -> None:
    """Exit with one line naming what is missing and the command that makes it."""
    missing = setup_missing(need_peer, quick)
    if missing:
        raise SystemExit(f"error: benchmark set-up incomplete, missing {', '.join(missing)}: run "
                         f"`python bench/setup.py --bench-data {BENCH_DATA}` (paths move with BENCH_DATA, "
                         "PEER_PY, PEER_RUNNER; see bench/README.md)")
    if not quick:
        ensure_ours_data()


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def loadavg() -> List[float]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return []


def code_state() -> Dict[str, Any]:
    """The recstudio_edge code a run uses: HEAD and the files under recstudio_edge/ and configs/
    that differ from it (the package is edited while benchmarks run)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    return {"head": git("rev-parse", "--short", "HEAD"),
            "dirty": [ln for ln in git("status", "--porcelain", "--", "recstudio_edge", "configs").splitlines() if ln]}


def machine() -> Dict[str, Any]:
    import lightning
    import torch

    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    peer_torch = None
    try:
        peer_torch = subprocess.run([str(PEER_PY), "-c", "import torch, recbole; print(torch.__version__, "
                                     "recbole.__version__, torch.get_num_threads())"],
                                    capture_output=True, text=True, timeout=120).stdout.strip()
    except Exception:  # noqa: BLE001 - the peer is optional for --quick without it
        pass
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "lightning": lightning.__version__, "python": platform.python_version(), "gpu": gpu,
            "peer_torch_recbole_threads": peer_torch, "loadavg_at_start": loadavg(), "code": code_state()}


def machine_line(m: Dict[str, Any]) -> str:
    return (f"{m['date']} | CPU: {m['cpu']} x {m['cores']} cores | torch threads {m['torch_threads']} | "
            f"torch {m['torch']} | lightning {m['lightning']} | python {m['python']} | GPU: {m['gpu']} | "
            f"peer (torch, recbole, threads): {m['peer_torch_recbole_threads']} | "
            f"load avg at start {m['loadavg_at_start']} | recstudio_edge at {m['code']['head']}"
            + (f" + {len(m['code']['dirty'])} uncommitted file(s)" if m['code']['dirty'] else ""))


# ---- child processes ----------------------------------------------------------------------------
def thread_env(threads: int, passive: bool = False) -> Dict[str, str]:
    """Environment that pins torch's intra-op threads (OpenMP/MKL) for a child, peer or ours."""
    env = {"OMP_NUM_THREADS": str(int(threads)), "MKL_NUM_THREADS": str(int(threads))}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def run_child(cmd: Sequence[str], log_path: Path, timeout: float, cwd: Optional[Path] = None,
              env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run ``cmd`` with stdout+stderr to ``log_path``; kill its process group after ``timeout`` s.

    Returns ``{rc, wall_s, maxrss_mb, timed_out, load_before, load_after}``; ``maxrss_mb`` is
    the child's own peak RSS (``wait4`` rusage of that child, including what it waited for).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    load_before = loadavg()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(map(str, cmd)) + "\n")
        log.flush()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=full_env, start_new_session=True)
        timed_out = False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() - t0 > timeout:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group of the child we started
                except ProcessLookupError:
                    pass
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 2),
            "maxrss_mb": round(ru.ru_maxrss / 1024, 1), "timed_out": timed_out,
            "load_before": load_before, "load_after": loadavg(), "log": str(log_path)}


def run_peer(model: str, dataset: str, config, tag: str, out_dir: Path, timeout: float,
             max_batches: Optional[int] = None, anomaly: bool = False,
             env_extra: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """RecBole 1.2.1 via PEER_PY and PEER_RUNNER (run_peer.py), cwd BENCH_DATA (its ./log lands there).

    ``config``: a file name in PEER_CONFIGS or a path."""
    out_json = out_dir / f"peer_{tag}.json"
    env = dict(env_extra or {})
    env["PEER_ANOMALY"] = "1" if anomaly else "0"
    if max_batches:
        env["PEER_MAX_BATCHES"] = str(int(max_batches))
    env["PYTHONPATH"] = ""  # the peer venv must not see our checkout
    cfg_path = Path(config) if Path(config).is_absolute() else PEER_CONFIGS / config
    cmd = [PEER_PY, PEER_RUNNER, model, dataset, cfg_path, out_json]
    if out_json.exists():
        out_json.unlink()
    proc = run_child(cmd, out_dir / f"peer_{tag}.log", timeout, cwd=BENCH_DATA, env=env)
    res = json.loads(out_json.read_text()) if out_json.exists() else {}
    return {"proc": proc, **res}


def run_ours(spec: Dict[str, Any], tag: str, out_dir: Path, timeout: float,
             env_extra: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Our side via bench/ours_worker.py in a fresh process (its own peak RSS)."""
    spec_path = out_dir / f"ours_{tag}.spec.json"
    out_json = out_dir / f"ours_{tag}.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    for old in (out_json, Path(str(out_json) + ".partial")):
        if old.exists():
            old.unlink()
    cmd = [sys.executable, REPO / "bench" / "ours_worker.py", spec_path, out_json]
    env = dict(env_extra or {})
    env["PYTHONPATH"] = str(REPO)
    code = code_state()
    proc = run_child(cmd, out_dir / f"ours_{tag}.log", timeout, cwd=REPO, env=env)
    proc["code"] = code
    res = json.loads(out_json.read_text()) if out_json.exists() else {}
    partial = Path(str(out_json) + ".partial")
    if not res and partial.exists():  # killed at its time limit: what it recorded per epoch
        res = json.loads(partial.read_text())
    return {"proc": proc, **res}


def new_results_dir(script: str, quick: bool) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    d = RESULTS / f"{script}{'-quick' if quick else ''}-{stamp}"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---- formatting ----------------------------------------------------------------------------------
def fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != x:  # NaN
            return "-"
        if abs(x) >= 1e5:
            return f"{x / 1e3:,.0f}k"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |")
    return "\n".join(out)


def median(xs: Sequence[float]) -> Optional[float]:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


# ---- pictures ------------------------------------------------------------------------------------
def save_plot(path: Path, series: Sequence[Dict[str, Any]], *, xlabel: str, ylabel: str, title: str,
              logx: bool = False, logy: bool = False, note: Optional[str] = None) -> Optional[Path]:
    """A line/point chart as a PNG beside a results table (matplotlib, no display needed).

    ``series``: dicts with ``label``, ``x``, ``y`` (equal-length lists) and optionally ``labels``
    (a text per point, written beside it), ``line`` (False: points only), ``marker``. Points whose x
    or y is None/NaN are left out. Returns the path, or None (with a line saying so) when
    matplotlib is not installed: the .md table is the result, the PNG its picture."""
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend
    except ImportError:
        print(f"no PNG {Path(path).name}: matplotlib is not installed (pip install matplotlib)", flush=True)
        return None
    fig = Figure(figsize=(7.5, 4.8), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for s in series:
        pts = [(x, y, t) for x, y, t in zip(s["x"], s["y"], s.get("labels") or [None] * len(s["x"]))
               if x is not None and y is not None and x == x and y == y]
        if not pts:
            continue
        xs, ys, texts = zip(*pts)
        ax.plot(xs, ys, marker=s.get("marker", "o"), linestyle="-" if s.get("line", True) else "none",
                label=s["label"])
        for x, y, t in zip(xs, ys, texts):
            if t:
                ax.annotate(str(t), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if any(s.get("label") for s in series):
        ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    path = Path(path)
    fig.savefig(path)
    print(f"wrote {path}", flush=True)
    return path
