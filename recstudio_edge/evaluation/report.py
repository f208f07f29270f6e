"""The run report: PNG plots and ``report.md`` next to ``metrics.json`` (docs/configuration.md, run folder).

A training run (``report_train``) writes

- ``curves.png``: the training loss and every validation metric per epoch (a panel per metric
  name with a line per cutoff, ``recall@10``, ``recall@20``; a metric's per-group values,
  ``auc_g0`` ..., are thin lines in its panel; the validation metric's panel first), read from
  ``logs/metrics.csv`` (the epochs ``0 .. epochs - 1`` of the fit; the rows after them are the
  end-of-run validation of the best checkpoint and the test). The best epoch (the one the
  validation metric chose) is marked in every panel, and so is every epoch event the callbacks
  marked (``recstudio_edge/callbacks/report.py``: ``epoch_events``; PINRec's stage switch, memory
  updates), as a dashed line at the start of its epoch;
- ``groups.png``, for a model with per-group metrics (``auc_g{k}``): the per-group AUC and GAUC
  on the validation rows, with the tail and head means (``evaluation/groups.py``), of the trunk
  against the final model. The trunk is the best validation epoch before the stage switch
  (an event labelled ``STAGE_SWITCH``); the final model is the best checkpoint (metrics.json's
  ``valid``). A run without a stage switch has no separate trunk: the chart shows the final model
  alone.

A test run (``report_test``) writes ``topk.png``: every ranking metric at each cutoff
``k = 1 .. max(eval.topk)`` of the test pass (pointwise models have none).

``report.md`` links the plots with config.yaml and holds the final table (metric rows, @k columns;
per-group figures with groups as rows). Plots are drawn with matplotlib's Agg canvas (no display,
no global backend change). Each function returns the data its plots are drawn from.
"""
from __future__ import annotations

import csv
import logging
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .groups import group_count, group_mean

log = logging.getLogger("recstudio_edge")

STAGE_SWITCH = "stage switch"  # the event label that separates the trunk from the final model
_GROUP = re.compile(r"^(?P<base>.+)_g(?P<g>\d+)$")
_AT = re.compile(r"^(?P<name>[^@]+)@(?P<k>\d+)$")

__all__ = ["STAGE_SWITCH", "read_history", "best_epoch", "plot_curves", "plot_groups", "plot_topk",
           "metrics_markdown", "report_train", "report_test", "safely"]


# ---- data ---------------------------------------------------------------------------------------
def _num(x: Any) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v


def read_history(csv_path: Path, epochs: Optional[int] = None) -> Dict[str, Any]:
    """Per-epoch figures of ``logs/metrics.csv``: ``{"loss": {epoch: train loss}, "valid": {metric:
    {epoch: value}}}`` for the epochs ``< epochs`` (all when ``None``); a later row of an epoch wins."""
    loss: Dict[int, float] = {}
    valid: Dict[str, Dict[int, float]] = {}
    path = Path(csv_path)
    if path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                e = _num(row.get("epoch"))
                if e is None or (epochs is not None and int(e) >= epochs):
                    continue
                e = int(e)
                for key, val in row.items():
                    v = _num(val) if val not in ("", None) else None
                    if v is None or key is None:
                        continue
                    if key == "train/loss_epoch":
                        loss[e] = v
                    elif key.startswith("valid/"):
                        valid.setdefault(key[len("valid/"):], {})[e] = v
    return {"loss": dict(sorted(loss.items())), "valid": {k: dict(sorted(v.items())) for k, v in valid.items()}}


def best_epoch(series: Mapping[int, float], mode: str = "max", before: Optional[int] = None) -> Optional[int]:
    """The epoch of the best finite value (``mode`` max or min; the first of ties), among epochs ``< before``."""
    items = [(e, v) for e, v in series.items() if (before is None or e < before) and math.isfinite(v)]
    if not items:
        return None
    pick = max if mode == "max" else min
    best = pick(v for _, v in items)
    return min(e for e, v in items if v == best)


# ---- drawing --------------------------------------------------------------------------------------
def _figure(rows: int, cols: int, w: float = 4.0, h: float = 3.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows), dpi=80)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    else:  # a grid of panels: fixed margins (tight_layout measures every label, a second per figure)
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.94, wspace=0.28, hspace=0.42)
    tmp = path.with_name("." + path.name + ".tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def _panel_of(key: str) -> str:
    """The panel a validation key is drawn in: its metric name (``recall@10`` -> ``recall``, ``auc_g2`` -> ``auc``)."""
    m = _GROUP.match(key)
    key = m["base"] if m else key
    m = _AT.match(key)
    return m["name"] if m else key


def plot_curves(history: Mapping[str, Any], path: Path, val_metric: Optional[str] = None, mode: str = "max",
                events: Sequence[Tuple[int, str]] = ()) -> Dict[str, Any]:
    """``curves.png``: loss and validation metrics per epoch (a panel per metric name, a line per
    cutoff, per-group values as thin lines), the best epoch and the events marked."""
    valid = history.get("valid", {})
    panels: Dict[str, Dict[str, Dict[int, float]]] = {}
    if history.get("loss"):
        panels["train loss"] = {"train loss": history["loss"]}
    own = _panel_of(val_metric) if val_metric in valid else None
    if own is not None:
        panels[own] = {}
    for key in sorted(valid, key=lambda k: (k != val_metric, bool(_GROUP.match(k)))):
        panels.setdefault(_panel_of(key), {})[key] = valid[key]
    best = best_epoch(valid.get(val_metric, {}), mode) if val_metric else None
    data = {"panels": list(panels), "best_epoch": best, "events": list(events), "path": str(path)}
    if not panels:
        return data
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = _figure(rows, cols, w=3.6, h=2.6)
    styles = ["--", "-.", ":"]
    labels = sorted({lab for _, lab in events})
    for i, (title, lines) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, series in lines.items():
            grouped = bool(_GROUP.match(name))
            ax.plot(list(series), list(series.values()), marker=None if grouped else "o", ms=3,
                    lw=0.7 if grouped else (1.8 if name == val_metric else 1.2), alpha=0.6 if grouped else 1.0,
                    label=name)
            if name == val_metric and best is not None and best in series:
                ax.plot([best], [series[best]], marker="*", ms=12, color="tab:red", ls="none",
                        label=f"best epoch {best}")
        if best is not None:
            ax.axvline(best, color="tab:red", lw=0.6, ls=":")
        for e, lab in events:
            ax.axvline(e - 0.5, color="tab:gray", lw=1.0, ls=styles[labels.index(lab) % len(styles)],
                       label=f"{lab} (epoch {e})")
        ax.set_title(title, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if len(lines) > 1 or events or title == own:
            ax.legend(fontsize=6)
    fig.supxlabel("epoch", fontsize=8)
    _save(fig, Path(path), tight=False)
    return data


def plot_groups(runs: Mapping[str, Mapping[str, float]], path: Path, tail: Sequence[int] = (0, 1)) -> Dict[str, Any]:
    """``groups.png``: per-group AUC and GAUC, plus tail / head means, one bar per run in ``runs``
    (``{"trunk": metrics, "final": metrics}`` or the final model alone). Returns the bar heights."""
    n = min(group_count(m, "auc") for m in runs.values()) if runs else 0
    tail = [g for g in tail if g < n]
    head = [n - 1] if n else []
    labels = [f"g{g}" for g in range(n)] + ["tail", "head"]
    bars = {metric: {name: [float(m.get(f"{metric}_g{g}", math.nan)) for g in range(n)]
                     + [group_mean(m, metric, tail), group_mean(m, metric, head)] for name, m in runs.items()}
            for metric in ("auc", "gauc")}
    data = {"groups": n, "labels": labels, "bars": bars, "path": str(path)}
    if not n:
        return data
    fig = _figure(1, 2, w=max(4.0, 0.6 * len(labels) * max(1, len(runs))), h=3.2)
    width = 0.8 / max(1, len(runs))
    for i, metric in enumerate(("auc", "gauc")):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, (name, heights) in enumerate(bars[metric].items()):
            ax.bar([x + (j - (len(runs) - 1) / 2) * width for x in range(len(labels))], heights, width, label=name)
        finite = [v for hs in bars[metric].values() for v in hs if math.isfinite(v)]
        if finite:
            lo, hi = min(finite), max(finite)
            ax.set_ylim(max(0.0, lo - 0.1 * (hi - lo + 1e-3) - 0.02), min(1.0, hi + 0.02))
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_title(f"{metric.upper()} per group (g0 = tail ... g{n - 1} = head)", fontsize=9)
        ax.legend(fontsize=7)
    _save(fig, Path(path))
    return data


def plot_topk(curve: Mapping[str, Sequence[float]], path: Path, cutoffs: Sequence[int] = ()) -> Dict[str, Any]:
    """``topk.png``: every ranking metric against the cutoff k = 1..K (the ``eval.topk`` cutoffs marked)."""
    data = {"curve": {k: list(v) for k, v in curve.items()}, "path": str(path)}
    if not curve:
        return data
    fig = _figure(1, 1, w=5.5, h=3.6)
    ax = fig.add_subplot(1, 1, 1)
    for name, ys in curve.items():
        xs = list(range(1, len(ys) + 1))
        line, = ax.plot(xs, ys, lw=1.4, label=name)
        pts = [k for k in cutoffs if 1 <= k <= len(ys)]
        ax.plot(pts, [ys[k - 1] for k in pts], ls="none", marker="o", ms=4, color=line.get_color())
    ax.set_xlabel("k")
    ax.set_title("test metric@k", fontsize=10)
    ax.legend(fontsize=7)
    _save(fig, Path(path))
    return data


# ---- the markdown ------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def split_metrics(values: Mapping[str, Any]):
    """``(at_k, plain, groups)`` of one metrics dict: ``{name: {k: value}}`` of the ``name@k`` keys,
    ``{key: value}`` of the plain ones, ``{group: {metric: value}}`` of the ``{metric}_g{group}`` ones
    (each in the dict's order). The one reading of the zoo's metric keys for the final tables."""
    at: Dict[str, Dict[int, Any]] = {}
    plain: Dict[str, Any] = {}
    groups: Dict[int, Dict[str, Any]] = {}
    for key, v in values.items():
        if (m := _AT.match(key)):
            at.setdefault(m["name"], {})[int(m["k"])] = v
        elif (m := _GROUP.match(key)):
            groups.setdefault(int(m["g"]), {})[m["base"]] = v
        else:
            plain[key] = v
    return at, plain, groups


def metrics_markdown(values: Mapping[str, Any]) -> str:
    """Markdown tables of one metrics dict: ``name@k`` as metric rows and @k columns, plain metrics
    as one column, per-group metrics (``{metric}_g{k}``) with the groups as rows."""
    at, plain, groups = split_metrics(values)
    out: List[str] = []
    if at:
        ks = sorted({k for row in at.values() for k in row})
        out += ["| metric | " + " | ".join(f"@{k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
        out += [f"| {n} | " + " | ".join(_fmt(row[k]) if k in row else "" for k in ks) + " |" for n, row in at.items()]
    if plain:
        out += ["" if out else None, "| metric | value |", "|---|---|"]
        out += [f"| {k} | {_fmt(v)} |" for k, v in plain.items()]
    if groups:
        cols = sorted({c for row in groups.values() for c in row}, key=lambda c: (c == "rows", c))
        out += ["", "| group | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        out += [f"| g{g} | " + " | ".join(("%d" % float(row[c]) if c == "rows" else _fmt(row[c])) if c in row else ""
                                           for c in cols) + " |" for g, row in sorted(groups.items())]
    return "\n".join(x for x in out if x is not None)


def _write_md(run_dir: Path, title: str, lines: List[str]) -> Path:
    cfg = Path(run_dir) / "config.yaml"
    if cfg.is_file():
        lines += ["", "## Config", "", "[config.yaml](config.yaml)", "", "```yaml", cfg.read_text().rstrip(), "```"]
    path = Path(run_dir) / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text(f"# {title}\n\n" + "\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def _title(run_dir: Path) -> str:
    parts = Path(run_dir).parts
    return " / ".join(parts[-3:]) if len(parts) >= 3 else str(run_dir)


# ---- what the runner calls -----------------------------------------------------------------------------
def report_train(run_dir: Path, metrics: Mapping[str, Any], mode: str = "max",
                 events: Sequence[Tuple[int, str]] = ()) -> Dict[str, Any]:
    """Plots and report.md of a finished training run (``metrics``: what metrics.json holds)."""
    run_dir = Path(run_dir)
    epochs = int(metrics.get("epochs") or 0)
    history = read_history(run_dir / "logs" / "metrics.csv", epochs if epochs > 0 else None)
    val_metric = metrics.get("val_metric")
    out: Dict[str, Any] = {"history": history, "plots": []}
    curves = plot_curves(history, run_dir / "curves.png", val_metric, mode, events)
    out["curves"] = curves
    if curves["panels"]:
        out["plots"].append("curves.png")
    final = dict(metrics.get("valid") or {})
    if group_count(final, "auc"):
        switch = min((e for e, lab in events if lab == STAGE_SWITCH), default=None)
        runs: Dict[str, Mapping[str, float]] = {}
        trunk_epoch = None
        if switch is not None:
            trunk_epoch = best_epoch(history["valid"].get(val_metric, {}), mode, before=switch)
            if trunk_epoch is not None:
                runs[f"trunk (epoch {trunk_epoch})"] = {k: s[trunk_epoch] for k, s in history["valid"].items()
                                                        if trunk_epoch in s}
        runs["final"] = final
        out["groups"] = {**plot_groups(runs, run_dir / "groups.png"), "trunk_epoch": trunk_epoch,
                         "switch_epoch": switch}
        out["plots"].append("groups.png")
    if epochs > 0:
        what = (f"{epochs} epochs in {metrics.get('train_seconds', 0)} s; the validation metric {val_metric} "
                f"chose epoch {curves['best_epoch'] if curves['best_epoch'] is not None else '-'}")
    else:  # closed-form models: one fit, one validation
        what = f"fitted in closed form in {metrics.get('train_seconds', 0)} s; validation metric {val_metric}"
    lines = [what + "".join(f"; {lab} at epoch {e}" for e, lab in events) + ".", ""]
    captions = {"curves.png": "Training loss and validation metrics per epoch",
                "groups.png": "Per-group AUC / GAUC on the validation rows, head vs tail"}
    for p in out["plots"]:
        lines += [f"## {captions[p]}", "", f"![{p}]({p})", ""]
    lines += ["## Final metrics", "", "Validation (best checkpoint):", "", metrics_markdown(final), "",
              "Test:", "", metrics_markdown(metrics.get("test") or {}), "", "All figures: [metrics.json](metrics.json), "
              "per epoch: [logs/metrics.csv](logs/metrics.csv)."]
    out["report"] = str(_write_md(run_dir, _title(run_dir), lines))
    return out


def report_test(run_dir: Path, metrics: Mapping[str, Any], curve: Mapping[str, Sequence[float]],
                cutoffs: Sequence[int] = ()) -> Dict[str, Any]:
    """``topk.png`` (ranking models) and report.md of a ``--task=test`` run."""
    run_dir = Path(run_dir)
    out: Dict[str, Any] = {"plots": []}
    out["topk"] = plot_topk(curve, run_dir / "topk.png", cutoffs)
    lines = [f"test of {metrics.get('ckpt', '')}", ""]
    if curve:
        out["plots"].append("topk.png")
        lines += ["## Test metrics against the cutoff k", "", "![topk.png](topk.png)", ""]
    lines += ["## Final metrics", "", "Test:", "", metrics_markdown(metrics.get("test") or {}), "",
              "All figures: [metrics.json](metrics.json)."]
    out["report"] = str(_write_md(run_dir, _title(run_dir), lines))
    return out


def safely(fn, *args, **kwargs) -> Optional[Dict[str, Any]]:
    """``fn(*args, **kwargs)``, or ``None`` and one warning line when the report cannot be written
    (the run's results are already saved: a report failure must not lose them)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure of the plots is reported, never raised
        log.warning("run report not written (%s: %s)", type(e).__name__, e)
        return None
