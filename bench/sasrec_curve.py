#!/usr/bin/env python
"""SASRec on real MovieLens-1M (leave-one-out, full sort): where a training step's time goes, and
test ndcg@10 against training seconds, before and after the speed work of issue 14, in one sitting.

usage: python bench/sasrec_curve.py [--variants before,after] [--budget S] [--epochs N] [--threads N]
                                    [--peer-batches N] [--breakdown-only] [--no-breakdown]
                                    [--variant NAME='{"key": value, ...}']

1. Breakdown (a child process per variant, no Lightning): the mean milliseconds of the parts of a
   training step over 24 batches of one epoch's order: the loader (building the batch), the
   stack's forward (``query_all``), the loss forward (full softmax), the backward, the optimiser
   step; and the seconds per epoch they add up to (the batches of the epoch times the mean).
2. Curves (``bench/ours_worker.py``, the command line's own train task, one fresh process per
   variant): training seconds and test ndcg@10 after every epoch (test probes, their time
   excluded from every figure), training stopped at the first epoch end past ``--budget``
   seconds (training + validation, probes excluded). Reported: s/epoch (training only, median),
   validation s, ndcg@10 at 10 and 30 minutes of training, the training seconds to reach
   ndcg@10 0.15 and 0.182 (SASRec+'s 0.1821), and every probe.
3. RecBole 1.2.1's SASRec (its shipped config, L=50, batch 2048; ``bench/peer/run_peer.py``) for
   ``--peer-batches`` batches (a partial epoch; ~5 s per batch on these cores): one point, its
   training seconds and test ndcg@10. ``--peer-batches 0`` leaves it out.

Variants: ``before`` is the configuration of the issue's figures (float32, plain softmax over the
[M, N] logits, every batch padded to L=200, constant lr); ``after`` is configs/model/SASRec.yaml
as it stands; ``--variant NAME='{json overrides}'`` adds others (config keys as on the command
line), e.g. ``--variant lr3='{"train.lr": 0.003}'``.
Writes sasrec_curve.json / .md (and sasrec_curve.png with matplotlib) under bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OURS_DATA, REPO, check_setup, fmt, machine, machine_line, md_table, median,  # noqa: E402
                    new_results_dir, run_child, run_ours, run_peer, save_plot, thread_env)

SASREC_PLUS = 0.1821  # Klenitskiy & Vasilev, RecSys 2023, ml-1m NDCG@10 (bench/quality.py)
TARGETS = (0.15, 0.182)
# the configuration the issue's figures were measured with (before 2026-12-01's speed work)
BEFORE = {"trainer.precision": "32-true", "data.length_buckets": 0, "model.loss_args": {"fused": False},
          "model.position_weighted": False, "train.scheduler": "none", "train.lr": 0.002, "train.batch_size": 128}
VARIANTS = {"before": BEFORE, "after": {}}


# ---- 1. breakdown (child process) -----------------------------------------------------------
def breakdown_child(spec_path: str, out_path: str) -> None:
    import contextlib
    import random

    import torch

    sys.path.insert(0, str(REPO))
    from recstudio_edge import runner
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class
    from recstudio_edge.wiring import connect

    spec = json.load(open(spec_path))
    torch.set_num_threads(int(spec["threads"]))
    over = {"data_dir": spec["data_dir"]}
    over.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in spec["overrides"].items()})
    cls = get_model_class("SASRec")
    cfg = build_config("SASRec", "ml-1m", None, over, cls)
    dm = runner.build_datamodule(cfg, cls)
    over_model = {k: v for k, v in cfg.items()}
    model = runner.build_model(over_model, cls, dm)
    connect(model, dm)
    model.scheduler = "none"  # the breakdown steps the optimiser outside a Trainer (the schedule costs nothing)
    opt = model.configure_optimizers()
    precision = runner.resolve_precision(cfg["trainer"].get("precision", "32-true"), "cpu")
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision.startswith("bf16") \
        else contextlib.nullcontext
    loader = dm.train_dataloader()
    t = time.perf_counter()
    batches = list(loader)
    load_s = time.perf_counter() - t
    random.Random(0).shuffle(batches)
    n = min(24, len(batches) - 2)
    parts = {"stack_fwd": 0.0, "loss_fwd": 0.0, "backward": 0.0, "optimizer": 0.0}
    model.train()
    for i, b in enumerate(batches[:n + 2]):
        t0 = time.perf_counter()
        with amp():
            h = model.query_all(b)
            t1 = time.perf_counter()
            keep = b["target_seq"] > 0
            loss = model.tower_loss(h[keep], b["target_seq"][keep])
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i >= 2:  # the first two warm the allocator and the kernels
            for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[k] += dt
    ms = {k: v / n * 1e3 for k, v in parts.items()}
    ms["loader"] = load_s / len(batches) * 1e3
    cols = [b["seq"].size(1) for b in batches]
    json.dump({"ms": ms, "batches": len(batches), "precision": precision, "torch_threads": torch.get_num_threads(),
               "s_per_epoch": sum(ms.values()) * len(batches) / 1e3, "mean_columns": sum(cols) / len(cols),
               "targets_per_batch": float(sum(int((b["target_seq"] > 0).sum()) for b in batches) / len(batches))},
              open(out_path, "w"), indent=1)


def run_breakdown(name, over, out, env, threads):
    spec = out / f"breakdown_{name}.spec.json"
    res = out / f"breakdown_{name}.json"
    spec.write_text(json.dumps({"overrides": over, "data_dir": str(OURS_DATA), "threads": threads}))
    e = dict(env)
    e["PYTHONPATH"] = str(REPO)
    proc = run_child([sys.executable, __file__, "--breakdown-child", spec, res], out / f"breakdown_{name}.log",
                     900, cwd=REPO, env=e)
    return {"proc": proc, **(json.loads(res.read_text()) if res.exists() else {})}


# ---- 2. curves ------------------------------------------------------------------------------
def at_time(probes, seconds):
    """The last probe at or before ``seconds`` of training."""
    best = None
    for p in probes:
        if p["train_s_cum"] <= seconds + 1e-6:
            best = p
    return best


def first_reach(probes, value):
    for p in probes:
        if p["test"].get("ndcg@10", -1) >= value:
            return p
    return None


def summarize(r):
    eps = r.get("epochs") or []
    probes = [p for p in (r.get("probes") or []) if p["where"].endswith("-end")]
    s = {"s_per_epoch": median([e["train_s"] for e in eps]), "valid_s": median([e.get("valid_s") for e in eps]),
         "epochs": len(eps), "train_s": sum(e["train_s"] for e in eps),
         "best": max((p["test"].get("ndcg@10", 0) for p in probes), default=None)}
    for sec in (600, 1800):
        p = at_time(probes, sec)
        s[f"ndcg_at_{sec}"] = p["test"]["ndcg@10"] if p else None
    for v in TARGETS:
        p = first_reach(probes, v)
        s[f"reach_{v}"] = (p["train_s_cum"], p["epoch"]) if p else None
    s["final_test"] = ((r.get("result") or {}).get("test") or {}).get("ndcg@10")
    return s


def render(res):
    m = res["machine"]
    out = [f"Machine: {machine_line(m)} | benchmark threads: {res['args']['threads']}", ""]
    if res.get("breakdown"):
        out += ["### Where a training step goes (ms per batch, mean of 24; no Lightning)", ""]
        rows = []
        for name, b in res["breakdown"].items():
            ms = b.get("ms") or {}
            rows.append([name, b.get("precision", "-"), fmt(b.get("mean_columns"), 0), fmt(ms.get("loader"), 1),
                         fmt(ms.get("stack_fwd"), 1), fmt(ms.get("loss_fwd"), 1), fmt(ms.get("backward"), 1),
                         fmt(ms.get("optimizer"), 1), fmt(sum(ms.values()) if ms else None, 1),
                         fmt(b.get("s_per_epoch"), 1)])
        out += [md_table(["variant", "precision", "columns/batch", "loader", "stack fwd", "loss fwd", "backward",
                          "optimizer", "step", "s/epoch (sum)"], rows), ""]
    if res.get("curves"):
        out += ["### Test ndcg@10 against training seconds (probes excluded)", ""]
        rows = []
        for name, r in res["curves"].items():
            s = r["summary"]
            reach = [f"{s[f'reach_{v}'][0]:.0f} s (ep {s[f'reach_{v}'][1] + 1})" if s[f"reach_{v}"] else "not reached"
                     for v in TARGETS]
            rows.append([name, fmt(s["s_per_epoch"], 1), fmt(s["valid_s"], 1), s["epochs"], fmt(s["train_s"], 0),
                         fmt(s["ndcg_at_600"], 4), fmt(s["ndcg_at_1800"], 4), *reach, fmt(s["best"], 4),
                         fmt(s["final_test"], 4)])
        out += [md_table(["variant", "s/epoch", "valid s", "epochs", "train s", "ndcg@10 at 600 s", "at 1800 s",
                          "to 0.15", "to 0.182", "best probe", "test (best valid ckpt)"], rows), ""]
        for name, r in res["curves"].items():
            probes = [p for p in (r.get("probes") or []) if p["where"].endswith("-end")]
            out += [f"{name}: overrides {json.dumps(r['overrides'])}", "",
                    "epoch | train s | ndcg@10", "---|---|---"]
            out += [f"{p['epoch'] + 1} | {p['train_s_cum']:.0f} | {p['test']['ndcg@10']:.4f}" for p in probes]
            out.append("")
    if res.get("peer"):
        p = res["peer"]
        t = sum(p.get("train_s_per_epoch_measured") or [0])
        nd = (p.get("test") or {}).get("ndcg@10")
        out += ["### RecBole 1.2.1 SASRec (shipped config: L=50, batch 2048, CE)", "",
                f"{p.get('batches_trained')} batches ({fmt(p.get('epochs_equivalent'), 2)} epoch) in {t:.0f} s of "
                f"training: test ndcg@10 {fmt(nd, 4)}; s/epoch (extrapolated) {fmt(p.get('s_per_full_epoch_est'), 0)}"]
        for name, r in (res.get("curves") or {}).items():
            ours = at_time([q for q in (r.get("probes") or []) if q["where"].endswith("-end")], t)
            if ours and nd:
                out.append(f"- ours ({name}) at the same training seconds: ndcg@10 {ours['test']['ndcg@10']:.4f} "
                           f"({ours['test']['ndcg@10'] / nd:.1f}x RecBole's); s/epoch ratio RecBole/ours "
                           f"{(p.get('s_per_full_epoch_est') or 0) / (r['summary']['s_per_epoch'] or 1):.0f}x")
        out.append("")
    return "\n".join(out)


def plot(path, res):
    series = []
    for name, r in (res.get("curves") or {}).items():
        probes = [p for p in (r.get("probes") or []) if p["where"].endswith("-end")]
        series.append({"label": f"ours, {name}", "x": [p["train_s_cum"] for p in probes],
                       "y": [p["test"]["ndcg@10"] for p in probes], "marker": "."})
    p = res.get("peer")
    if p and (p.get("test") or {}).get("ndcg@10") is not None:
        series.append({"label": "RecBole 1.2.1", "x": [sum(p.get("train_s_per_epoch_measured") or [0])],
                       "y": [p["test"]["ndcg@10"]], "line": False, "marker": "s"})
    if series:
        series.append({"label": "SASRec+ reference 0.1821", "x": [1, 3600], "y": [SASREC_PLUS] * 2, "marker": ""})
        save_plot(path, series, xlabel="training seconds (probes and validation excluded)",
                  ylabel="test ndcg@10 (full sort)", title="SASRec on ml-1m: test ndcg@10 against training time")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--curves", default=None, help="variants with a curve (default: --variants); the rest get the breakdown only")
    ap.add_argument("--variant", action="append", default=[], help="NAME='{json overrides}' (repeatable)")
    ap.add_argument("--budget", type=float, default=1800.0, help="training budget per variant, s (default 1800)")
    ap.add_argument("--budgets", default="", help="per variant: name=S,name=S (overrides --budget)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the config's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peer-batches", type=int, default=0, help="RecBole SASRec batches (0: none; ~5 s each)")
    ap.add_argument("--breakdown-only", action="store_true")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--no-curves", action="store_true")
    ap.add_argument("--breakdown-last", action="store_true", help="the breakdown after the curves and RecBole")
    ap.add_argument("--every", type=int, default=1, help="validate (and probe) every N epochs (eval.every_n_epochs)")
    ap.add_argument("--breakdown-child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.breakdown_child:
        return breakdown_child(*a.breakdown_child)
    check_setup(need_peer=a.peer_batches > 0)
    variants = dict(VARIANTS)
    for v in a.variant:
        name, js = v.split("=", 1)
        variants[name] = json.loads(js)
    names = [n for n in a.variants.split(",") if n]
    budgets = {k: float(v) for k, v in (x.split("=") for x in a.budgets.split(",") if x)}
    out = new_results_dir("sasrec_curve", False)
    env = thread_env(a.threads)
    m = machine()
    print("machine: " + machine_line(m), flush=True)
    res = {"machine": m, "args": vars(a), "breakdown": {}, "curves": {}, "peer": None}

    def save():
        (out / "sasrec_curve.json").write_text(json.dumps(res, indent=1, default=float))

    def breakdown():
        for name in names:
            res["breakdown"][name] = b = run_breakdown(name, variants[name], out, env, a.threads)
            print(f"[breakdown {name}] {json.dumps(b.get('ms'))} s/epoch {b.get('s_per_epoch')}", flush=True)
            save()

    if not a.no_breakdown and not a.breakdown_last:
        breakdown()
    if not a.breakdown_only and not a.no_curves:
        for name in (a.curves.split(",") if a.curves else names):
            budget = budgets.get(name, a.budget)
            spec = {"task": "train", "model": "SASRec", "dataset": "ml-1m", "data_dir": str(OURS_DATA),
                    "threads": a.threads, "probe_test": True, "probe_every": 0, "time_budget_s": budget,
                    "epochs": a.epochs or 400,
                    "overrides": {"eval.patience": 1000, "eval.every_n_epochs": a.every, **variants[name]}}
            if a.epochs is None:
                spec.pop("epochs")
            r = run_ours(spec, name, out, budget * 1.6 + 600, env)
            r["overrides"] = variants[name]
            r["summary"] = summarize(r)
            res["curves"][name] = r
            print(f"[curve {name}] rc {r['proc']['rc']} {json.dumps(r['summary'])}", flush=True)
            save()
    if a.peer_batches and not a.breakdown_only:
        res["peer"] = run_peer("SASRec", "ml-1m", "sasrec.yaml", "sasrec", out, a.peer_batches * 12 + 900,
                               max_batches=a.peer_batches, env_extra=env)
        print(f"[RecBole] {res['peer'].get('batches_trained')} batches, test {res['peer'].get('test')}", flush=True)
        save()
    if not a.no_breakdown and a.breakdown_last:
        breakdown()
    report = render(res)
    (out / "sasrec_curve.md").write_text(report)
    plot(out / "sasrec_curve.png", res)
    print("\n" + report + f"\nresults: {out}", flush=True)
    return res


if __name__ == "__main__":
    main()
