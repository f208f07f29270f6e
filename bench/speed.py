#!/usr/bin/env python
"""Speed of recstudio_edge against RecBole 1.2.1, measured back to back in one sitting.

usage: python bench/speed.py [--quick] [--threads N] [--passive] [--only parse,bpr,seq] [--bpr-data synth-1m,ml-1m]

Rows (ours vs RecBole, ratio):
  parse + split of 1M interactions (synth-1m, real ml-1m): cold (cache off) and from our cache;
      RecBole's figure is load_s + split_s of its BPR run on the same data;
  BPR training: samples/s and s/epoch (training only: first batch to last batch of each
      epoch, validation and start-up excluded; median over epochs), 5 epochs on each side;
  full-sort evaluation of all validation users (median seconds per validation pass);
  peak RSS of each process (its own ru_maxrss);
  SASRec / GRU4Rec seconds per epoch on real ml-1m (ours: full epochs; RecBole:
      PEER_MAX_BATCHES batches, epoch time extrapolated by run_peer.py).
Every run is a fresh child process; JSON and logs go to bench/results/speed-<stamp>/.
--quick: ml-100k only, 1 SASRec epoch against 2 RecBole batches (about a minute and a half).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OURS_DATA, PEER_DATA, check_setup, machine, machine_line, md_table, median,  # noqa: E402
                    new_results_dir, ratio, run_ours, run_peer, thread_env)

TARGETS = {"parse_cold_s": 3.0, "parse_cached_s": 0.5, "bpr_speedup": 3.0, "eval_speedup": 5.0}


def parse_rows(name, data_dir, reps, out, env, log):
    """Our load_interactions cold (cache off) and cached, ``reps`` fresh processes each."""
    base = {"task": "parse", "model": "BPR", "dataset": name, "data_dir": str(data_dir),
            "threads": env["OMP_NUM_THREADS"]}
    cold, cached, rss_cold, rss_cached, setup = [], [], [], [], []
    for i in range(reps):
        r = run_ours({**base, "use_cache": False}, f"parse_cold_{name}_{i}", out, 300, env)
        log(f"  ours parse cold {name} #{i}: {r.get('load_s')}")
        if r.get("load_s") is not None:
            cold.append(r["load_s"])
            setup.append(r["setup_s"])
        rss_cold.append(r["proc"]["maxrss_mb"])
    run_ours({**base, "use_cache": True}, f"parse_prime_{name}", out, 300, env)  # writes the cache if absent
    for i in range(reps):
        r = run_ours({**base, "use_cache": True}, f"parse_cached_{name}_{i}", out, 300, env)
        log(f"  ours parse cached {name} #{i}: {r.get('load_s')}")
        if r.get("load_s") is not None:
            cached.append(r["load_s"])
        rss_cached.append(r["proc"]["maxrss_mb"])
    return {"cold_s": cold, "cached_s": cached, "setup_s": setup, "cold_rss_mb": rss_cold, "cached_rss_mb": rss_cached}


def train_summary(r):
    """Per-epoch training figures of one of our worker runs."""
    eps = r.get("epochs") or []
    s_ep = median([e["train_s"] for e in eps])
    samples = median([e["samples"] for e in eps])
    targets = median([e["targets"] for e in eps])
    valid = median([e.get("valid_s") for e in eps if e.get("valid_s") is not None])
    return {"s_per_epoch": s_ep, "samples_per_epoch": samples, "targets_per_epoch": targets,
            "samples_per_s": (samples / s_ep) if s_ep else None, "targets_per_s": (targets / s_ep) if s_ep else None,
            "valid_eval_s": valid, "epochs": len(eps), "rss_mb": r["proc"]["maxrss_mb"],
            "train_s_each": [e["train_s"] for e in eps], "valid_s_each": [e.get("valid_s") for e in eps],
            "test": (r.get("result") or {}).get("test", {}), "rc": r["proc"]["rc"]}


def peer_summary(p):
    if not p.get("samples_per_s"):
        return {"rc": p["proc"]["rc"], "rss_mb": p["proc"]["maxrss_mb"], "failed": True}
    return {"s_per_epoch": p["s_per_full_epoch_est"], "s_per_epoch_measured": p.get("train_s_per_epoch_measured"),
            "samples_per_s": p["samples_per_s"], "samples_per_epoch": p["train_samples_per_epoch"],
            "valid_eval_s": median(p.get("valid_eval_s") or []), "load_s": p["load_s"], "split_s": p["split_s"],
            "rss_mb": p["proc"]["maxrss_mb"], "epochs_equivalent": p.get("epochs_equivalent"),
            "max_batches": p.get("max_batches_per_epoch"), "torch_threads": p.get("torch_threads"),
            "test": p.get("test"), "rc": p["proc"]["rc"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny settings on ml-100k (about a minute)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on BOTH sides (default 1)")
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE on both sides")
    ap.add_argument("--only", default="parse,bpr,seq", help="comma list of parse,bpr,seq")
    ap.add_argument("--bpr-data", default="synth-1m,ml-1m",
                    help="comma list of the BPR (and parse) datasets, synth-1m,ml-1m (default both)")
    ap.add_argument("--reps", type=int, default=None, help="fresh processes per parse measurement (default 3; quick 1)")
    ap.add_argument("--seq-peer-batches", type=int, default=None, help="RecBole batches for SASRec/GRU4Rec (default 20)")
    ap.add_argument("--seq-epochs", type=int, default=None, help="our full epochs for SASRec/GRU4Rec (default 2)")
    a = ap.parse_args(argv)
    check_setup(quick=a.quick)
    only = set(a.only.split(","))
    out = new_results_dir("speed", a.quick)
    env = thread_env(a.threads, a.passive)
    t_suite = time.perf_counter()
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    m = machine()
    m["bench_threads"] = a.threads
    m["omp_wait_policy"] = "PASSIVE" if a.passive else "default"
    log("machine: " + machine_line(m) + f" | benchmark threads (both sides): {a.threads}, "
        f"OMP_WAIT_POLICY {m['omp_wait_policy']}")
    if a.quick:
        datasets = [("ml-100k", PEER_DATA)]
        reps, bpr_epochs = a.reps or 1, 5
        seq_runs = [("SASRec", "SASRec", {})]
        seq_epochs, peer_batches, seq_ds, seq_dir = a.seq_epochs or 1, a.seq_peer_batches or 2, "ml-100k", PEER_DATA
    else:
        wanted = [d.strip() for d in a.bpr_data.split(",") if d.strip()]
        datasets = [(n, d) for n, d in (("synth-1m", PEER_DATA), ("ml-1m", OURS_DATA)) if n in wanted]
        if not datasets:
            ap.error(f"--bpr-data {a.bpr_data!r}: name synth-1m and/or ml-1m")
        reps, bpr_epochs = a.reps or 3, 5
        # SASRec twice: our default (L=200) and L=50 (RecBole's MAX_ITEM_LIST_LENGTH) with eval batch 512
        seq_runs = [("SASRec", "SASRec", {}),
                    ("SASRec-L50", "SASRec", {"data.max_seq_len": 50, "eval.batch_size": 512}),
                    ("GRU4Rec", "GRU4Rec", {})]
        seq_epochs, peer_batches, seq_ds, seq_dir = a.seq_epochs or 2, a.seq_peer_batches or 20, "ml-1m", OURS_DATA
    res = {"machine": m, "args": vars(a), "targets": TARGETS, "parse": {}, "bpr": {}, "seq": {}}

    for name, ddir in datasets:
        if "parse" in only:
            log(f"[parse] {name}")
            res["parse"].setdefault(name, {})["ours"] = parse_rows(name, ddir, reps, out, env, log)
        if "parse" in only or "bpr" in only:
            log(f"[bpr] {name}: ours {bpr_epochs} epochs")
            spec = {"task": "train", "model": "BPR", "dataset": name, "data_dir": str(ddir), "epochs": bpr_epochs,
                    "threads": a.threads, "overrides": {"eval.val_metric": "ndcg@10"}}
            r = run_ours(spec, f"bpr_{name}", out, 900, env)
            res["bpr"].setdefault(name, {})["ours"] = train_summary(r)
            log(f"  ours: {res['bpr'][name]['ours']['s_per_epoch']} s/epoch, rc {r['proc']['rc']}")
            log(f"[bpr] {name}: RecBole 5 epochs")
            p = run_peer("BPR", name, "bpr.yaml", f"bpr_{name}", out, 900, env_extra=env)
            res["bpr"][name]["peer"] = peer_summary(p)
            res["parse"].setdefault(name, {})["peer"] = {"load_s": p.get("load_s"), "split_s": p.get("split_s"),
                                                         "total_s": (p.get("load_s") or 0) + (p.get("split_s") or 0)
                                                         if p.get("load_s") is not None else None}
            log(f"  RecBole: {res['bpr'][name]['peer'].get('s_per_epoch')} s/epoch, rc {p['proc']['rc']}")
        (out / "speed.json").write_text(json.dumps(res, indent=1, default=float))

    if "seq" in only:
        peers = {}
        for label, model, over in seq_runs:
            log(f"[seq] {label} {seq_ds}: ours {seq_epochs} full epochs")
            spec = {"task": "train", "model": model, "dataset": seq_ds, "data_dir": str(seq_dir), "epochs": seq_epochs,
                    "threads": a.threads, "overrides": over}
            r = run_ours(spec, f"{label.lower()}_{seq_ds}", out, 1200, env)
            o = train_summary(r)
            o["max_seq_len"] = (r.get("config") or {}).get("data", {}).get("max_seq_len")
            o["batch_size"] = (r.get("config") or {}).get("train", {}).get("batch_size")
            o["eval_batch_size"] = (r.get("config") or {}).get("eval", {}).get("batch_size")
            res["seq"].setdefault(label, {})["ours"] = o
            res["seq"][label]["model"] = model
            log(f"  ours: {o['s_per_epoch']} s/epoch, rc {r['proc']['rc']}")
            if model not in peers:
                log(f"[seq] {model} {seq_ds}: RecBole {peer_batches} batches")
                p = run_peer(model, seq_ds, f"{model.lower()}.yaml", f"{model.lower()}_{seq_ds}", out, 1200,
                             max_batches=peer_batches, env_extra=env)
                peers[model] = peer_summary(p)
                log(f"  RecBole: {peers[model].get('s_per_epoch')} s/epoch (extrapolated), rc {p['proc']['rc']}")
            res["seq"][label]["peer"] = peers[model]
            (out / "speed.json").write_text(json.dumps(res, indent=1, default=float))

    res["suite_wall_s"] = time.perf_counter() - t_suite
    report = render(res, seq_ds)
    (out / "speed.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "speed.md").write_text(report)
    print()
    print(report)
    print(f"\nresults: {out}")
    return res


def render(res, seq_ds):
    m = res["machine"]
    out = [f"Machine: {machine_line(m)} | benchmark threads (both sides): {m['bench_threads']}, "
           f"OMP_WAIT_POLICY {m['omp_wait_policy']}", ""]
    rows = []
    for name, d in res["parse"].items():
        ours, peer = d.get("ours"), d.get("peer") or {}
        if not ours:
            continue
        if not ours["cold_s"] or not ours["cached_s"]:  # the worker failed (e.g. no data): its log says why
            rows.append([f"parse+split {name}", "failed (see ours_parse_*.log)", "-", "-", "-"])
            continue
        cold, cached = min(ours["cold_s"] or [float("nan")]), min(ours["cached_s"] or [float("nan")])
        pt = peer.get("total_s")
        rows.append([f"parse+split {name}, cold (cache off)", f"{cold:.2f} s (runs: {', '.join(f'{x:.2f}' for x in ours['cold_s'])})",
                     f"{pt:.2f} s (load {peer['load_s']:.2f} + split {peer['split_s']:.2f})" if pt else "-",
                     f"{ratio(pt, cold):.1f}x" if pt else "-", f"< {TARGETS['parse_cold_s']} s: "
                     + ("met" if cold < TARGETS["parse_cold_s"] else "MISSED")])
        rows.append([f"parse+split {name}, from cache", f"{cached:.3f} s (runs: {', '.join(f'{x:.3f}' for x in ours['cached_s'])})",
                     f"{pt:.2f} s" if pt else "-", f"{ratio(pt, cached):.0f}x" if pt else "-",
                     f"< {TARGETS['parse_cached_s']} s: " + ("met" if cached < TARGETS["parse_cached_s"] else "MISSED")])
        rows.append([f"data module set-up {name} (after parse)", f"{median(ours['setup_s']):.2f} s", "(in split above)", "-", "-"])
    if rows:
        out += ["Parse + split (ours: load_interactions in a fresh process, best of the runs; "
                "RecBole: load_s + split_s of its BPR run)", ""]
        out.append(md_table(["row", "ours", "RecBole 1.2.1", "RecBole / ours", "target"], rows))
        out.append("")
    rows = []
    for name, d in res["bpr"].items():
        o, p = d.get("ours") or {}, d.get("peer") or {}
        if not o or p.get("failed") or not o.get("s_per_epoch"):
            rows.append([f"BPR {name}", "failed" if not o.get("s_per_epoch") else "-", "failed" if p.get("failed") else "-",
                         "-", "-"])
            continue
        sp = ratio(o["samples_per_s"], p["samples_per_s"])
        rows.append([f"BPR {name}: samples/s", f"{o['samples_per_s']:,.0f}", f"{p['samples_per_s']:,.0f}",
                     f"{sp:.1f}x", f">= {TARGETS['bpr_speedup']}x: " + ("met" if sp >= TARGETS["bpr_speedup"] else "MISSED")])
        rows.append([f"BPR {name}: s/epoch (median)", f"{o['s_per_epoch']:.2f}", f"{p['s_per_epoch']:.2f}",
                     f"{ratio(p['s_per_epoch'], o['s_per_epoch']):.1f}x", "-"])
        ev = ratio(p["valid_eval_s"], o["valid_eval_s"])
        rows.append([f"BPR {name}: full-sort valid eval, all users (s, median)", f"{o['valid_eval_s']:.2f}",
                     f"{p['valid_eval_s']:.2f}", f"{ev:.1f}x",
                     f">= {TARGETS['eval_speedup']}x: " + ("met" if ev >= TARGETS["eval_speedup"] else "MISSED")])
        rows.append([f"BPR {name}: peak RSS (MB, whole process)", f"{o['rss_mb']:,.0f}", f"{p['rss_mb']:,.0f}",
                     f"{ratio(p['rss_mb'], o['rss_mb']):.1f}x", "-"])
        rows.append([f"BPR {name}: test ndcg@10 / recall@10 after the epochs", f"{o['test'].get('ndcg@10', float('nan')):.4f} / "
                     f"{o['test'].get('recall@10', float('nan')):.4f}", f"{(p.get('test') or {}).get('ndcg@10', float('nan')):.4f} / "
                     f"{(p.get('test') or {}).get('recall@10', float('nan')):.4f}", "-", "(sanity)"])
    if rows:
        out += ["BPR (embed 64, batch 2048, Adam lr 0.001, 1 uniform negative, RO 0.8/0.1/0.1, 5 epochs; "
                "ours: training time per epoch from a Lightning callback, RecBole: run_peer.py's epoch timer)", ""]
        out.append(md_table(["row", "ours", "RecBole 1.2.1", "ours faster by", "target"], rows))
        out.append("")
    rows = []
    for model, d in res["seq"].items():
        o, p = d.get("ours") or {}, d.get("peer") or {}
        if not o.get("s_per_epoch") or p.get("failed"):
            rows.append([f"{model} {seq_ds}", "failed" if not o.get("s_per_epoch") else "-",
                         "failed" if p.get("failed") else "-", "-", "-"])
            continue
        rows.append([f"{model} {seq_ds}: s/epoch", f"{o['s_per_epoch']:.1f} (full epochs, L={o.get('max_seq_len')}, "
                     f"{o['samples_per_epoch']:.0f} sequences, batch {o.get('batch_size')}, eval batch {o.get('eval_batch_size')})",
                     f"{p['s_per_epoch']:,.0f} (extrapolated from {p.get('max_batches')} batches, L=50)",
                     f"{ratio(p['s_per_epoch'], o['s_per_epoch']):.1f}x", "-"])
        rows.append([f"{model} {seq_ds}: next-item targets trained/s", f"{o['targets_per_s']:,.0f} "
                     f"({o['targets_per_epoch']:,.0f} per epoch)", f"{p['samples_per_s']:,.0f} "
                     f"({p['samples_per_epoch']:,} per epoch)", f"{ratio(o['targets_per_s'], p['samples_per_s']):.1f}x", "-"])
        rows.append([f"{model} {seq_ds}: full-sort valid eval (s)", f"{o['valid_eval_s']:.2f}", f"{p['valid_eval_s']:.2f}",
                     f"{ratio(p['valid_eval_s'], o['valid_eval_s']):.2f}x", "-"])
        rows.append([f"{model} {seq_ds}: peak RSS (MB)", f"{o['rss_mb']:,.0f}", f"{p['rss_mb']:,.0f}",
                     f"{ratio(p['rss_mb'], o['rss_mb']):.1f}x", "-"])
    if rows:
        out += ["Sequential models (ours: one sequence per user, every position predicts its next item; "
                "RecBole: one sample per prefix; both full-softmax CE, leave-one-out)", ""]
        out.append(md_table(["row", "ours", "RecBole 1.2.1", "ours faster by", "target"], rows))
        out.append("")
    out.append(f"Suite wall time: {res.get('suite_wall_s', 0) / 60:.1f} min")
    return "\n".join(out)


if __name__ == "__main__":
    main()
