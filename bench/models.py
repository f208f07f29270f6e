#!/usr/bin/env python
"""Every ranking model on real MovieLens-1M under a training-time budget: one table of test
recall@10 / ndcg@10, epochs and seconds per epoch, with Pop (same split) as the baseline.

usage: python bench/models.py [--models NCF,EASE,...] [--budget 180] [--split ro|loo]
                              [--threads 1] [--max-epochs 1000] [--set key=value ...]

Each model runs the command line's own train task (``runner.run_task``, as ``python run.py -m=M
-d=ml-1m`` does, with the model's configs/model/<M>.yaml) in a fresh process through
bench/ours_worker.py, which stops training at the first epoch end past ``--budget`` seconds
(training + validation; early stopping on valid recall@10 may stop it sooner). The best-validation
checkpoint is tested: full-sort test metrics, the user's known items masked. Closed-form models
(EASE, ItemKNN, Pop) fit once (epochs 0). s/epoch is the median training time of an epoch
(first batch start to last batch end: validation excluded).

Splits: ``ro`` = random 0.8/0.1/0.1 per user (the default ``user_entry``), for the general
models; ``loo`` = leave-one-out by time, for the sequential ones. Pop always runs first, on the
same split. ``--set key=value`` adds a config override to every model (e.g. ``--set
eval.patience=5``). Data: <BENCH_DATA>/ours/ml-1m/ml-1m.inter (see bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OURS_DATA, RUNS_DIR, machine, machine_line, md_table, median,  # noqa: E402
                    new_results_dir, run_ours, thread_env)

SPLITS = {"ro": {"data.split.mode": "user_entry"}, "loo": {"data.split.mode": "loo"}}


def ranking_models():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from recstudio_edge.model import get_model_class, list_models

    return [m for m in list_models() if get_model_class(m).eval_kind == "ranking"]


def summarize(name, res, proc):
    r = res.get("result") or {}
    test = r.get("test") or {}
    epochs = res.get("epochs") or []
    per_epoch = median([e.get("train_s") for e in epochs])
    return {"model": name, "recall@10": test.get("recall@10"), "ndcg@10": test.get("ndcg@10"),
            "epochs": r.get("epochs", len(epochs)) if r else len(epochs), "s_per_epoch": per_epoch,
            "train_s": r.get("train_seconds"), "wall_s": proc.get("wall_s"), "rc": proc.get("rc"),
            "timed_out": proc.get("timed_out"), "maxrss_mb": proc.get("maxrss_mb"), "log": proc.get("log")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=None, help="comma list (default: every registered ranking model)")
    ap.add_argument("--budget", type=float, default=180.0, help="training seconds per model (default 180)")
    ap.add_argument("--split", choices=sorted(SPLITS), default="ro")
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    ap.add_argument("--max-epochs", type=int, default=1000, help="epoch cap; the budget usually stops first")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every model")
    a = ap.parse_args(argv)
    if not (OURS_DATA / a.dataset / f"{a.dataset}.inter").exists():
        raise SystemExit(f"error: missing {OURS_DATA / a.dataset / (a.dataset + '.inter')}: run "
                         "`python bench/setup.py` (see bench/README.md)")
    known = ranking_models()
    models = [m.strip() for m in a.models.split(",") if m.strip()] if a.models else [m for m in known if m != "Pop"]
    lower = {m.lower(): m for m in known}
    bad = [m for m in models if m.lower() not in lower]
    if bad:
        raise SystemExit(f"not ranking models: {bad}; known: {', '.join(known)}")
    models = ["Pop"] + [lower[m.lower()] for m in models if m.lower() != "pop"]
    overrides = dict(SPLITS[a.split])
    for kv in a.set:
        k, _, v = kv.partition("=")
        overrides[k] = v
    out = new_results_dir("models", False)
    m = machine()
    print("machine: " + machine_line(m) + f" | threads per run: {a.threads}", flush=True)
    print(f"{a.dataset}, split {a.split}, budget {a.budget:.0f} s per model, overrides {overrides}", flush=True)
    rows = []
    for name in models:
        spec = {"task": "train", "model": name, "dataset": a.dataset, "data_dir": str(OURS_DATA),
                "output_dir": str(RUNS_DIR), "threads": a.threads, "epochs": a.max_epochs,
                "time_budget_s": a.budget, "overrides": overrides}
        t = time.perf_counter()
        res = run_ours(spec, f"{name}-{a.split}", out, timeout=a.budget * 2 + 900, env_extra=thread_env(a.threads))
        row = summarize(name, res, res.get("proc") or {})
        rows.append(row)
        print(f"{name}: recall@10={row['recall@10']} ndcg@10={row['ndcg@10']} epochs={row['epochs']} "
              f"s/epoch={row['s_per_epoch']} ({time.perf_counter() - t:.0f} s, rc {row['rc']})", flush=True)
    pop = rows[0]["recall@10"]
    table = md_table(
        ["model", "recall@10", "ndcg@10", "x Pop (recall@10)", "epochs", "s/epoch", "train s", "peak MB"],
        [[r["model"], f"{r['recall@10']:.4f}" if r["recall@10"] is not None else "failed (see log)",
          f"{r['ndcg@10']:.4f}" if r["ndcg@10"] is not None else "-",
          (r["recall@10"] / pop) if r["recall@10"] is not None and pop else None,
          str(r["epochs"]), r["s_per_epoch"], r["train_s"], r["maxrss_mb"]] for r in rows])
    text = (f"machine: {machine_line(m)} | threads per run: {a.threads}\n\n{a.dataset}, split {a.split}, "
            f"budget {a.budget:.0f} s of training per model\n\n{table}\n")
    (out / "table.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"machine": m, "args": vars(a), "rows": rows}, indent=1, default=str))
    print("\n" + text + f"\nresults: {out}", flush=True)
    return rows


if __name__ == "__main__":
    main()
