"""CIGAR ablation: PNN, CIGAR_WO_PN, CIGAR_WO_CDGNN, CIGAR on the same split, N seeds.

    python bench/cigar.py --data_dir ~/.cache/recstudio_edge/data --threads 1      # ml-1m, 3 seeds, the YAMLs' epoch
    python bench/cigar.py --data_dir DIR --seeds 2024 --train_batches 200 --append runs.json   # one seed, a budget
    python bench/cigar.py --table runs.json                                          # the table of what runs.json holds
    python bench/cigar.py --quick                                                    # generated rows, 1 seed (smoke check)

Every run is the command line's own train task (``recstudio_edge.cli.main``: best checkpoint on valid
AUC, then the test split) with the variant's YAML (the release's defaults) and the options given;
the four variants of a seed see the same split and the same training rows in the same order (the
seed orders the batches). ``--train_batches`` caps the training batches of each epoch
(``trainer.limit_train_batches``), the same cap for every variant. ``--append FILE`` adds the runs
to a JSON file (several invocations, e.g. one per seed, make one table); ``--table FILE`` prints
the table of a file. Printed: test AUC / GAUC / logloss per variant (mean and standard deviation
over seeds, and per seed), each variant's AUC minus PNN's, the two checks of the issue
(CIGAR >= CIGAR_WO_PN, CIGAR_WO_CDGNN >= PNN), and the machine (CPU model and cores, torch, load).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

VARIANTS = ("PNN", "CIGAR_WO_PN", "CIGAR_WO_CDGNN", "CIGAR")
METRICS = ("auc", "gauc", "logloss")


def machine() -> dict:
    import torch
    from common import code_state, cpu_model, loadavg  # bench/common.py

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "gpu": gpu,
            "loadavg_at_start": loadavg(), "code": code_state().get("head", "")}


def machine_line(m: dict) -> str:
    return (f"CPU: {m['cpu']} x {m['cores']} cores | torch threads {m['torch_threads']} | torch {m['torch']} | "
            f"python {m['python']} | GPU: {m['gpu']} | load avg at start {m['loadavg_at_start']} | "
            f"recstudio_edge at {m['code']}")


def run_one(variant: str, seed: int, args) -> dict:
    from recstudio_edge.cli import main

    argv = [f"-m={variant}", f"-d={args.dataset}", f"--data_dir={args.data_dir}", f"--output_dir={args.output_dir}",
            f"--seed={seed}", "--trainer.enable_progress_bar=false"]
    if args.epochs:
        argv.append(f"--epochs={args.epochs}")
    if args.train_batches:
        argv.append(f"--trainer.limit_train_batches={args.train_batches}")
    argv += list(args.extra or [])
    t0 = time.time()
    res = main(argv)
    return {"variant": variant, "seed": seed, "seconds": round(time.time() - t0, 1),
            "test": {k: float(res["test"][k]) for k in METRICS},
            "run": os.path.relpath(res["run_dir"], args.output_dir) if "run_dir" in res else "",
            "options": {"dataset": args.dataset, "epochs": args.epochs, "train_batches": args.train_batches,
                        "extra": list(args.extra or [])}}


def table(runs: list, machines: list) -> str:
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| variant | " + " | ".join(f"test {k} (mean ± sd)" for k in METRICS) + " | AUC - PNN | AUC per seed |",
             "|---|" + "---|" * (len(METRICS) + 2)]
    mean = {}
    for v, rs in by.items():
        if not rs:
            continue
        cells = []
        for k in METRICS:
            vals = [r["test"][k] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
        mean[v] = statistics.mean(r["test"]["auc"] for r in rs)
        per_seed = ", ".join(f"{s}: {next((r['test']['auc'] for r in rs if r['seed'] == s), float('nan')):.4f}"
                             for s in seeds)
        delta = f"{mean[v] - mean['PNN']:+.4f}" if "PNN" in mean else "n/a"
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {delta} | {per_seed} |")
    out = "\n".join(lines)
    for a, b in (("CIGAR", "CIGAR_WO_PN"), ("CIGAR_WO_CDGNN", "PNN")):
        if a in mean and b in mean:
            d = mean[a] - mean[b]
            out += f"\n{a} >= {b} on mean test AUC: {'yes' if d >= 0 else 'no'} ({d:+.4f})"
    opts = sorted({json.dumps(r.get("options", {}), sort_keys=True) for r in runs})
    out += "\nruns: " + "; ".join(opts) + "; seconds per run: " + ", ".join(
        f"{v} {statistics.mean(r['seconds'] for r in rs):.0f}" for v, rs in by.items() if rs)
    for m in machines:
        out += "\nmachine: " + machine_line(m)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-d", "--dataset", default="ml-1m")
    ap.add_argument("--data_dir", default=str(Path("~/.cache/recstudio_edge/data").expanduser()))
    ap.add_argument("--output_dir", default="outputs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the variant's YAML)")
    ap.add_argument("--train_batches", type=int, default=None, help="cap on training batches per epoch")
    ap.add_argument("--append", default=None, help="JSON file the runs are added to")
    ap.add_argument("--table", default=None, help="print the table of this JSON file and stop")
    ap.add_argument("--quick", action="store_true", help="the committed generated sample, 1 seed, 3 epochs")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (1 is several times faster than 2 on a shared 2-core machine)")
    ap.add_argument("extra", nargs="*", help="further --key=value options for every run (after --)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(table(saved["runs"], saved["machines"]))
        return 0
    if args.quick:
        args.dataset, args.data_dir, args.seeds, args.epochs = "sample-cigar", str(REPO / "datasets"), args.seeds[:1], 3
    m = machine()
    runs = []
    for seed in args.seeds:
        for v in args.variants:
            r = run_one(v, seed, args)
            print(f"{v} seed {seed}: " + ", ".join(f"{k} {r['test'][k]:.4f}" for k in METRICS)
                  + f" ({r['seconds']:.0f} s)", flush=True)
            runs.append(r)
    machines = [m]
    if args.append:
        path = Path(args.append)
        saved = json.loads(path.read_text()) if path.exists() else {"runs": [], "machines": []}
        saved["runs"] += runs
        saved["machines"] += machines
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(saved, indent=1))
        os.replace(tmp, path)
        runs, machines = saved["runs"], saved["machines"]
    print(table(runs, machines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
