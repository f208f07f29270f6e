"""PINRec head-vs-tail benchmark: three variants side by side, per activity group, N seeds.

    python bench/pinrec.py                                  # ml-1m, 3 seeds, 12 epochs (hours on 2 CPU cores)
    python bench/pinrec.py --seeds 2024 --epochs 4          # one seed, shorter
    python bench/pinrec.py --quick                          # generated data, 1 seed, ~1 min (smoke check)

Variants (same data, seed, trunk and schedule; PluginStage at ``--switch`` epochs, lr / 10 there):

- ``trunk``:   the trunk alone for every epoch (plugins never on; same lr drop at the switch);
- ``plugins``: trunk + per-group plugins from the switch, aggregated group gradients (PINRec);
- ``plain``:   trunk + plugins from the switch, plain (unaggregated) batch-mean gradients.

Each run is the command line's own train task (``runner.run_task``: best checkpoint on valid
AUC, then test) in a fresh child process, whose peak RSS is its own (``wait4``). Reported: test
AUC / GAUC overall and per group (group 0 = least active users), tail (groups ``--tail``,
default 0 and 1) and head (the top group) means, per-seed deltas against ``trunk``, training
seconds per epoch (first batch to last batch; validation excluded) and peak memory, with the
machine. Data: ``--data_dir`` (default ``<BENCH_DATA>/ours_pinrec``, where
``ml-1m/ml-1m.inter`` is a symlink to the real atomic file: nothing is copied into the repo).
Results: ``bench/results/pinrec-<stamp>/`` (``pinrec.json``, ``pinrec.md``, run logs); run folders
(with each run's ``metrics.json``) under ``--output_dir``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from common import BENCH_DATA  # noqa: E402  (bench/common.py: $BENCH_DATA, default ~/.cache/recstudio_edge/bench)

VARIANTS = {
    "trunk": dict(plugins=False, aggregate=False),
    "plugins": dict(plugins=True, aggregate=True),
    "plain": dict(plugins=True, aggregate=False),
}
ATOMIC = {"ml-1m": BENCH_DATA / "ml-1m-atomic" / "ml-1m.inter", "ml-100k": BENCH_DATA / "ml-100k-atomic" / "ml-100k.inter"}
# configs/base.yaml's plugin_stage section (used only while base.yaml does not have it yet)
PLUGIN_STAGE_SCHEMA = {"enabled": True, "stage_switch_epoch": 2, "lr_factor": 0.1, "aggregate": True, "plugins": True}


# ---- the worker: one run in this process ------------------------------------------------------------
def worker(spec_path: str, out_path: str) -> None:
    import lightning.pytorch as pl
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import recstudio_edge.config as config
    import recstudio_edge.runner as runner
    from recstudio_edge.callbacks.plugin_stage import PluginStage
    from recstudio_edge.model.edge.pinrec import PINRec

    spec = json.loads(Path(spec_path).read_text())
    load_yaml = config.load_yaml

    def load_with_section(path):  # until configs/base.yaml carries plugin_stage: (process-local)
        data = load_yaml(path)
        if Path(path).name == "base.yaml" and Path(path).parent == config.CONFIG_DIR:
            data.setdefault("plugin_stage", dict(PLUGIN_STAGE_SCHEMA))
        return data

    config.load_yaml = load_with_section
    over = {"data_dir": spec["data_dir"], "output_dir": spec["output_dir"], "seed": str(spec["seed"]),
            "epochs": str(spec["epochs"]), "trainer.enable_progress_bar": "false",
            "plugin_stage.enabled": "false"}  # the callback is added here, not by the runner
    over.update({k: str(v) for k, v in (spec.get("overrides") or {}).items()})
    cfg = config.build_config("PINRec", spec["dataset"], None, over, PINRec)
    if spec.get("prepare_only"):  # parse + split into the cache, so every measured run starts alike
        runner.build_datamodule(cfg, PINRec)
        Path(out_path).write_text(json.dumps({"prepared": True}))
        return
    stage = PluginStage(stage_switch_epoch=spec["switch"], lr_factor=spec["lr_factor"], **VARIANTS[spec["variant"]])

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.epochs = []

        def on_train_epoch_start(self, trainer, m):
            self.cur = {"epoch": trainer.current_epoch, "plugins": bool(getattr(m, "plugins_enabled", False)),
                        "lr": trainer.optimizers[0].param_groups[0]["lr"], "t0": time.perf_counter(), "batches": 0}

        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
            self.cur["t1"] = time.perf_counter()
            self.cur["batches"] += 1

        def on_train_epoch_end(self, trainer, m):
            c = self.cur
            c["train_s"] = c.pop("t1", c["t0"]) - c.pop("t0")
            c["valid"] = {k: v for k, v in m.last_metrics.get("valid", {}).items() if not k.startswith("rows_")}
            self.epochs.append(c)
            Path(out_path + ".partial").write_text(json.dumps({"epochs": self.epochs}, default=float))

    timer = EpochTimer()
    t0 = time.perf_counter()
    res = runner.run_task(cfg, PINRec, "train", extra_callbacks=[stage, timer])
    out = {"spec": spec, "result": res, "epochs": timer.epochs, "run_s": time.perf_counter() - t0,
           "torch_threads": torch.get_num_threads()}
    Path(out_path).write_text(json.dumps(out, indent=1, default=float))


# ---- the driver -----------------------------------------------------------------------------------------
def machine() -> dict:
    import lightning
    import torch

    from common import cpu_model, loadavg

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": int(os.environ.get("OMP_NUM_THREADS", "1")), "torch": torch.__version__,
            "lightning": lightning.__version__, "python": platform.python_version(), "gpu": gpu,
            "loadavg_at_start": loadavg()}


def ensure_data(dataset: str, data_dir: Path) -> None:
    if dataset in ATOMIC:
        folder = data_dir / dataset
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{dataset}.inter"
        if not link.exists():
            if not ATOMIC[dataset].exists():
                raise SystemExit(f"error: {ATOMIC[dataset]} not found: run `python bench/setup.py` "
                                 "(see bench/README.md)")
            link.symlink_to(ATOMIC[dataset])


def mean_sd(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def cell(xs, nd=4):
    m, s = mean_sd(xs)
    if m is None:
        return "-"
    return f"{m:.{nd}f}" + (f" ± {s:.{nd}f}" if s is not None else "")


def group_mean(metrics: dict, metric: str, groups) -> float:
    vals = [metrics.get(f"{metric}_g{g}", math.nan) for g in groups]
    return sum(vals) / len(vals) if vals else math.nan


def render(runs: dict, group_num: int, tail, head, mach: dict, args) -> str:
    """Markdown: per-group table (mean ± sd over seeds), head-vs-tail deltas, time and memory."""
    names = [v for v in VARIANTS if v in runs]
    lines = [f"# PINRec head vs tail: {args.dataset}, trunk {args.trunk}, {args.epochs} epochs "
             f"(switch at {args.switch}), seeds {args.seeds}", "",
             f"Machine: {mach['date']} | CPU: {mach['cpu']} x {mach['cores']} cores | threads {mach['threads']} | "
             f"torch {mach['torch']} | lightning {mach['lightning']} | GPU: {mach['gpu']} | "
             f"load avg at start {mach['loadavg_at_start']}", "",
             "Test metrics of the best-validation checkpoint (valid AUC). Group 0 = least active users.", ""]
    header = "| metric | " + " | ".join(names) + " |"
    lines += [header, "|" + "---|" * (len(names) + 1)]
    for metric in ("auc", "gauc"):
        keys = [(metric, metric)] + [(f"{metric} g{g}", f"{metric}_g{g}") for g in range(group_num)]
        for label, key in keys:
            lines.append(f"| {label} | " + " | ".join(cell([r["test"].get(key) for r in runs[n]]) for n in names) + " |")
        for label, gs in ((f"{metric} tail {list(tail)}", tail), (f"{metric} head {list(head)}", head)):
            lines.append(f"| {label} | " + " | ".join(cell([group_mean(r["test"], metric, gs) for r in runs[n]])
                                                      for n in names) + " |")
    lines.append("| logloss | " + " | ".join(cell([r["test"].get("logloss") for r in runs[n]]) for n in names) + " |")
    if "trunk" in runs:
        lines += ["", "Per-seed difference against `trunk` (mean ± sd over seeds; > 0 = better than the trunk alone):", "",
                  "| variant | AUC tail | AUC head | GAUC tail | GAUC head | AUC overall |", "|---|---|---|---|---|---|"]
        base = {r["seed"]: r["test"] for r in runs["trunk"]}
        for n in names:
            if n == "trunk":
                continue
            d = {k: [] for k in ("at", "ah", "gt", "gh", "a")}
            for r in runs[n]:
                b = base.get(r["seed"])
                if b is None:
                    continue
                d["at"].append(group_mean(r["test"], "auc", tail) - group_mean(b, "auc", tail))
                d["ah"].append(group_mean(r["test"], "auc", head) - group_mean(b, "auc", head))
                d["gt"].append(group_mean(r["test"], "gauc", tail) - group_mean(b, "gauc", tail))
                d["gh"].append(group_mean(r["test"], "gauc", head) - group_mean(b, "gauc", head))
                d["a"].append(r["test"].get("auc", math.nan) - b.get("auc", math.nan))
            lines.append(f"| {n} | " + " | ".join(cell(d[k]) for k in ("at", "ah", "gt", "gh", "a")) + " |")
    lines += ["", "| variant | s/epoch stage 1 | s/epoch stage 2 | epochs run | best epoch | peak RSS MB |",
              "|---|---|---|---|---|---|"]
    for n in names:
        s1 = [e["train_s"] for r in runs[n] for e in r["epochs"] if e["epoch"] < args.switch]
        s2 = [e["train_s"] for r in runs[n] for e in r["epochs"] if e["epoch"] >= args.switch]
        lines.append(f"| {n} | {cell(s1, 1)} | {cell(s2, 1)} | {cell([len(r['epochs']) for r in runs[n]], 1)} | "
                     f"{cell([r.get('best_epoch') for r in runs[n]], 1)} | {cell([r['maxrss_mb'] for r in runs[n]], 0)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--data_dir", default=str(BENCH_DATA / "ours_pinrec"))
    ap.add_argument("--output_dir", default=str(BENCH_DATA / "runs"))
    ap.add_argument("--seeds", default="2024,2025,2026")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--switch", type=int, default=2)
    ap.add_argument("--lr_factor", type=float, default=0.1)
    ap.add_argument("--variants", default="trunk,plugins,plain")
    ap.add_argument("--trunk", default="DIN", help="DIN | SASRec | GRU4Rec (arch_config trunk)")
    ap.add_argument("--tail", default="0,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per run")
    ap.add_argument("--set", action="append", default=[], help="extra config override key=value (repeatable)")
    ap.add_argument("--quick", action="store_true", help="generated data, 1 seed, 4 epochs")
    ap.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    from common import RESULTS, run_child

    if args.quick:
        args.dataset, args.seeds, args.epochs = "synthetic", "2024", 4
        args.data_dir = str(BENCH_DATA / "ours_pinrec_quick")
    seeds = [int(s) for s in str(args.seeds).split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}: {sorted(VARIANTS)}")
    ensure_data(args.dataset, Path(args.data_dir))
    overrides = dict(s.split("=", 1) for s in args.set)
    if args.trunk != "DIN":
        overrides["model.arch_config"] = json.dumps({"trunk": args.trunk})
    group_num = int(overrides.get("data.group_num", 5))
    tail = [int(g) for g in args.tail.split(",")]
    head = [group_num - 1]
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = RESULTS / f"pinrec{'-quick' if args.quick else ''}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    mach = machine()
    print(f"machine: {mach}", flush=True)
    runs = {v: [] for v in variants}
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    for seed in seeds:  # the parsed dataset is cached first: no measured run pays for parsing
        spec = {"prepare_only": True, "variant": "trunk", "seed": seed, "dataset": args.dataset,
                "data_dir": args.data_dir, "output_dir": args.output_dir, "epochs": args.epochs, "switch": args.switch,
                "lr_factor": args.lr_factor, "overrides": overrides}
        (out_dir / f"prepare-s{seed}.spec.json").write_text(json.dumps(spec))
        run_child([sys.executable, Path(__file__).resolve(), "--worker", out_dir / f"prepare-s{seed}.spec.json",
                   out_dir / f"prepare-s{seed}.json"], out_dir / f"prepare-s{seed}.log", args.timeout, cwd=REPO, env=env)
    for seed in seeds:
        for v in variants:
            tag = f"{v}-s{seed}"
            spec = {"variant": v, "seed": seed, "dataset": args.dataset, "data_dir": args.data_dir,
                    "output_dir": args.output_dir, "epochs": args.epochs, "switch": args.switch,
                    "lr_factor": args.lr_factor, "overrides": overrides}
            spec_path, res_path = out_dir / f"{tag}.spec.json", out_dir / f"{tag}.json"
            spec_path.write_text(json.dumps(spec, indent=1))
            proc = run_child([sys.executable, Path(__file__).resolve(), "--worker", spec_path, res_path],
                             out_dir / f"{tag}.log", args.timeout, cwd=REPO, env=env)
            if res_path.exists():
                res = json.loads(res_path.read_text())
            else:
                partial = Path(str(res_path) + ".partial")
                print(f"{tag}: failed (rc {proc['rc']}, timed out {proc['timed_out']}); see {proc['log']}", flush=True)
                if partial.exists():
                    print(f"  per-epoch figures so far: {partial}", flush=True)
                continue
            test = res["result"].get("test", {})
            valid_auc = [e["valid"].get("auc", -1) for e in res["epochs"]]
            best_epoch = valid_auc.index(max(valid_auc)) if valid_auc else None
            runs[v].append({"seed": seed, "test": test, "epochs": res["epochs"], "maxrss_mb": proc["maxrss_mb"],
                            "wall_s": proc["wall_s"], "run_dir": res["result"].get("run_dir"), "best_epoch": best_epoch})
            print(f"{tag}: test auc {test.get('auc', math.nan):.4f} gauc {test.get('gauc', math.nan):.4f} | tail auc "
                  f"{group_mean(test, 'auc', tail):.4f} head auc {group_mean(test, 'auc', head):.4f} | "
                  f"{statistics.fmean(e['train_s'] for e in res['epochs']):.1f} s/epoch | "
                  f"peak {proc['maxrss_mb']:.0f} MB | {proc['wall_s']:.0f}s", flush=True)
            (out_dir / "pinrec.json").write_text(json.dumps({"machine": mach, "args": vars(args), "runs": runs},
                                                            indent=1, default=float))
    runs = {k: v for k, v in runs.items() if v}
    if not runs:
        print("no run finished", flush=True)
        return 1
    text = render(runs, group_num, tail, head, mach, args)
    (out_dir / "pinrec.md").write_text(text)
    print("\n" + text + f"\nresults: {out_dir}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
