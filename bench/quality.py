#!/usr/bin/env python
"""Quality of recstudio_edge against RecBole 1.2.1 on real MovieLens-1M (full-sort test metrics),
both sides on the same split, run back to back in one sitting.

usage: python bench/quality.py [--quick] [--threads N] [--only pop,bpr,bpr_conv,sasrec,gru4rec]
                               [--sasrec-budget S] [--gru4rec-budget S] [--peer-seq-batches N] [--probe-every N]

Experiments (ours | RecBole):
  Pop, RO 0.8/0.1/0.1 and leave-one-out;
  BPR, RO 0.8/0.1/0.1, embed 64, batch 2048, Adam lr 0.001, 1 uniform negative:
      "5ep"  the peer config as shipped (5 epochs) on both sides;
      "conv" both sides to convergence: up to 80 epochs, early stopping after 10 validations
             without a better valid ndcg@10 (RecBole: epochs 80, stopping_step 10);
  SASRec, leave-one-out, full-softmax CE: ours with its default config (L=200, 2 blocks, 1 head,
      dropout 0.2, batch 128 users, lr 0.001, eval batch from configs/model/SASRec.yaml) under a wall-time budget, test ndcg@10 probed during
      the first epoch and after every epoch (probe time excluded from every reported time);
      RecBole with its shipped config (L=50, dropout 0.5, 2 heads, batch 2048) for
      PEER_MAX_BATCHES batches (a partial epoch: a full one is ~40 min on these cores);
  GRU4Rec, leave-one-out, CE: as SASRec (ours L=50, batch 256 users; RecBole L=50, batch 2048).
  bpr_unseen (only with --only bpr_unseen): diagnostic, ours BPR to convergence with its negative
      drawn from the user's unseen training items (patched in the worker process only).
For the sequential models the speed figure is: the time ours needs to reach the test ndcg@10
that RecBole reaches in its budget, against that budget.
--quick: ml-100k, Pop (RO), BPR 5 epochs, SASRec 1 epoch against 2 RecBole batches.
Writes quality.json, quality.md and quality_seq.png (test ndcg@10 against training seconds, ours
along its probes, RecBole's point) to bench/results/quality-<stamp>/.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OURS_DATA, PEER_CONFIGS, PEER_DATA, check_setup, machine, machine_line,  # noqa: E402
                    md_table, new_results_dir, ratio, run_ours, run_peer, save_plot, thread_env)

SASREC_PLUS_ML1M = {"ndcg@10": 0.1821, "hit@10": 0.3152, "best_epoch": 63, "train_s_gpu": 540}
METRICS = ("recall@10", "ndcg@10", "mrr@10", "hit@10")


def first_reach(probes, metric, value):
    """First probe whose test metric is >= value (probes are in time order)."""
    for p in probes or []:
        if p["test"].get(metric, -1) >= value:
            return p
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads on BOTH sides (default 1)")
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE on both sides")
    ap.add_argument("--only", default="pop,bpr,bpr_conv,sasrec,gru4rec")
    ap.add_argument("--sasrec-budget", type=float, default=None, help="our SASRec training budget, s (default 1080)")
    ap.add_argument("--gru4rec-budget", type=float, default=None, help="our GRU4Rec training budget, s (default 420)")
    ap.add_argument("--peer-seq-batches", type=int, default=None, help="RecBole SASRec/GRU4Rec batches (default 80)")
    ap.add_argument("--probe-every", type=int, default=None,
                    help="our test probes every N batches of the first epoch (default SASRec 4, GRU4Rec 2; "
                         "smaller = a finer time-to-quality reading, probe time is excluded either way)")
    a = ap.parse_args(argv)
    check_setup(quick=a.quick)
    only = set(a.only.split(","))
    out = new_results_dir("quality", a.quick)
    env = thread_env(a.threads, a.passive)
    t_suite = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    m = machine()
    m["bench_threads"] = a.threads
    m["omp_wait_policy"] = "PASSIVE" if a.passive else "default"
    log("machine: " + machine_line(m) + f" | benchmark threads (both sides): {a.threads}")
    if a.quick:
        ds, ddir = "ml-100k", PEER_DATA
        only &= {"pop", "bpr", "sasrec"}
        sas_budget, gru_budget, peer_batches, seq_epochs = 1.0, 1.0, a.peer_seq_batches or 2, 1
        probe_every = {"SASRec": 4, "GRU4Rec": 2}
    else:
        ds, ddir = "ml-1m", OURS_DATA
        sas_budget = a.sasrec_budget if a.sasrec_budget is not None else 1080.0
        gru_budget = a.gru4rec_budget if a.gru4rec_budget is not None else 420.0
        peer_batches, seq_epochs = a.peer_seq_batches or 80, 200
        probe_every = {"SASRec": 4, "GRU4Rec": 2}
    if a.probe_every:
        probe_every = {k: int(a.probe_every) for k in probe_every}
    res = {"machine": m, "args": vars(a), "dataset": ds, "runs": {}}
    base = {"task": "train", "dataset": ds, "data_dir": str(ddir), "threads": a.threads}

    def save():
        (out / "quality.json").write_text(json.dumps(res, indent=1, default=float))

    def pair(key, ours_spec, peer_args, ours_timeout, peer_timeout, peer_first=False):
        log(f"[{key}] " + ("RecBole, then ours" if peer_first else "ours, then RecBole"))
        r = {}
        steps = [("peer", peer_args), ("ours", ours_spec)] if peer_first else [("ours", ours_spec), ("peer", peer_args)]
        for side, arg in steps:
            if side == "ours":
                r["ours"] = run_ours(arg, key, out, ours_timeout, env)
                log(f"  ours rc {r['ours']['proc']['rc']} wall {r['ours']['proc']['wall_s']} s "
                    f"test {(r['ours'].get('result') or {}).get('test', {}).get('ndcg@10')}")
            else:
                model, cfg, mb = arg
                r["peer"] = run_peer(model, ds, cfg, key, out, peer_timeout, max_batches=mb, env_extra=env)
                log(f"  RecBole rc {r['peer']['proc']['rc']} wall {r['peer']['proc']['wall_s']} s "
                    f"test {(r['peer'].get('test') or {}).get('ndcg@10')}")
        res["runs"][key] = r
        save()
        return r

    if "pop" in only:
        pair("pop_ro", {**base, "model": "Pop", "overrides": {"eval.val_metric": "ndcg@10"}}, ("Pop", "pop.yaml", None),
             300, 600)
        if not a.quick:
            pair("pop_loo", {**base, "model": "Pop", "overrides": {"eval.val_metric": "ndcg@10",
                                                                   "data.split": {"mode": "loo"}}},
                 ("Pop", "pop_loo.yaml", None), 300, 600)
    if "bpr" in only:
        pair("bpr_5ep", {**base, "model": "BPR", "epochs": 5, "overrides": {"eval.val_metric": "ndcg@10"}},
             ("BPR", "bpr.yaml", None), 600, 900)
    if "bpr_conv" in only:
        cfg = (PEER_CONFIGS / "bpr.yaml").read_text()
        assert "\nepochs: 5\n" in cfg and "\nstopping_step: 10\n" in cfg
        conv = out / "peer_bpr_converged.yaml"
        conv.write_text(cfg.replace("\nepochs: 5\n", "\nepochs: 80   # bench/quality.py: to convergence, "
                                    "early stopping after 10 evaluations without improvement\n"))
        pair("bpr_conv", {**base, "model": "BPR", "epochs": 80, "time_budget_s": 600,
                          "overrides": {"eval.val_metric": "ndcg@10", "eval.patience": 10}},
             ("BPR", str(conv), None), 900, 1200)
    if "bpr_unseen" in only:  # diagnostic, not in the default list: ours only, negatives from unseen items
        log("[bpr_unseen] ours only (diagnostic patch in the worker process)")
        r = run_ours({**base, "model": "BPR", "epochs": 80, "time_budget_s": 600, "patch": "bpr_unseen_negatives",
                      "overrides": {"eval.val_metric": "ndcg@10", "eval.patience": 10}}, "bpr_unseen", out, 900, env)
        log(f"  ours rc {r['proc']['rc']} test {(r.get('result') or {}).get('test', {}).get('ndcg@10')}")
        res["runs"]["bpr_unseen"] = {"ours": r, "peer": {}}
        save()
    for model, budget in (("SASRec", sas_budget), ("GRU4Rec", gru_budget)):
        if model.lower() not in only:
            continue
        over = {}  # the model's own config (SASRec: eval batch 256 since 059b792; the 2026-11-22 sitting used 512)
        spec = {**base, "model": model, "epochs": seq_epochs, "time_budget_s": budget, "probe_test": True,
                "probe_every": probe_every[model], "overrides": over}
        pair(model.lower(), spec, (model, f"{model.lower()}.yaml", peer_batches), budget + 900, 1500, peer_first=True)

    res["suite_wall_s"] = time.perf_counter() - t_suite
    save()
    report = render(res)
    (out / "quality.md").write_text(report)
    plot_seq(out / "quality_seq.png", res)
    print()
    print(report)
    print(f"\nresults: {out}")
    return res


def seq_series(res):
    """Test ndcg@10 against training seconds: ours along its probes (a curve), RecBole after its
    budget (one point), per sequential model run."""
    series = []
    for key, model in (("sasrec", "SASRec"), ("gru4rec", "GRU4Rec")):
        r = res["runs"].get(key)
        if not r:
            continue
        o, p = r.get("ours", {}), r.get("peer", {})
        probes = o.get("probes") or []
        if probes:
            series.append({"label": f"{model}, ours", "x": [pr["train_s_cum"] for pr in probes],
                           "y": [pr["test"].get("ndcg@10") for pr in probes]})
        pt = (p.get("test") or {}).get("ndcg@10")
        if pt is not None:
            series.append({"label": f"{model}, RecBole 1.2.1 ({p.get('epochs_equivalent') or 0:.2f} epoch)",
                           "x": [sum(p.get("train_s_per_epoch_measured") or [0])], "y": [pt], "line": False,
                           "marker": "s"})
    return series


def plot_seq(path, res):
    series = seq_series(res)
    if not series:
        return None
    return save_plot(path, series, xlabel="training seconds (probes and validation excluded; log)",
                     ylabel="test ndcg@10 (full sort)", logx=True,
                     title=f"Sequential models on {res['dataset']}: test ndcg@10 against training time")


def _m(d, k):
    v = (d or {}).get(k)
    return "-" if v is None else f"{v:.4f}"


def render(res):
    m = res["machine"]
    ds = res["dataset"]
    out = [f"Machine: {machine_line(m)} | benchmark threads (both sides): {m['bench_threads']}", ""]
    labels = {"pop_ro": "Pop, RO 0.8/0.1/0.1", "pop_loo": "Pop, leave-one-out",
              "bpr_5ep": "BPR, RO 0.8/0.1/0.1, 5 epochs both (RecBole's shipped config)",
              "bpr_conv": "BPR, RO 0.8/0.1/0.1, both to convergence (<= 80 epochs, patience 10 on valid ndcg@10)",
              "bpr_unseen": "BPR to convergence, ours with negatives drawn from the user's unseen items "
                            "(diagnostic patch, bench/ours_worker.py)",
              "sasrec": "SASRec, leave-one-out, CE", "gru4rec": "GRU4Rec, leave-one-out, CE"}
    rows = []
    for key, r in res["runs"].items():
        o, p = r.get("ours", {}), r.get("peer", {})
        ot, pt = (o.get("result") or {}).get("test", {}), p.get("test") or {}
        if key in ("sasrec", "gru4rec") and not ot and o.get("probes"):
            ot = o["probes"][-1]["test"]  # killed at its limit: last probe
        o_ep = (o.get("result") or {}).get("epochs", len(o.get("epochs") or []))
        p_ep = p.get("epochs_equivalent")
        note = f"ours {o_ep} epochs, RecBole {p_ep:.2f} epochs" if p_ep is not None else ""
        rows.append([f"{labels.get(key, key)} [{note}]", *[_m(ot, k) for k in METRICS], *[_m(pt, k) for k in METRICS]])
    out += [f"Test metrics on {ds} (full sort over all items, known items masked; best-validation checkpoint)", ""]
    out.append(md_table(["experiment", "ours recall@10", "ours ndcg@10", "ours mrr@10", "ours hit@10",
                         "RecBole recall@10", "RecBole ndcg@10", "RecBole mrr@10", "RecBole hit@10"], rows))
    out.append("")
    for key in ("bpr_5ep", "bpr_conv", "bpr_unseen"):
        r = res["runs"].get(key)
        if not r:
            continue
        o, p = r.get("ours", {}), r.get("peer", {})
        ov = [round(e.get("valid", {}).get("ndcg@10", float("nan")), 4) for e in o.get("epochs") or []]
        out.append(f"{key}: ours valid ndcg@10 per epoch {ov}; ours run {o.get('run_task_s', 0):.1f} s "
                   f"(training {o.get('train_s_total', 0):.1f} s), RecBole total {p.get('total_s', 0):.1f} s "
                   f"(training {sum(p.get('train_s_per_epoch_measured') or [0]):.1f} s, "
                   f"{p.get('epochs_run')} epochs)")
    out.append("")
    for key, model in (("sasrec", "SASRec"), ("gru4rec", "GRU4Rec")):
        r = res["runs"].get(key)
        if not r:
            continue
        o, p = r.get("ours", {}), r.get("peer", {})
        pt = (p.get("test") or {}).get("ndcg@10")
        p_train = sum(p.get("train_s_per_epoch_measured") or [0])
        p_valid = sum(p.get("valid_eval_s") or [0])
        out += [f"{model}: test ndcg@10 per epoch (ours; probes during epoch 0, probe time excluded)", ""]
        prow = []
        for pr in o.get("probes") or []:
            prow.append([pr["where"], f"{pr['train_s_cum']:.1f}", f"{pr['elapsed_s']:.1f}", _m(pr["test"], "ndcg@10"),
                         _m(pr["test"], "hit@10")])
        vrow = {f"epoch{e['epoch']}-end": e for e in o.get("epochs") or []}
        for row in prow:
            e = vrow.get(row[0])
            row.append(_m(e.get("valid"), "ndcg@10") if e else "-")
        out.append(md_table(["where", "training s (cum.)", "elapsed s (train + valid, cum.)", "test ndcg@10",
                             "test hit@10", "valid ndcg@10"], prow))
        out.append("")
        if pt is not None:
            reach = first_reach(o.get("probes"), "ndcg@10", pt)
            if reach:
                rt, re_ = reach["train_s_cum"], reach["elapsed_s"]
                out.append(f"{model} time-to-quality: RecBole reaches test ndcg@10 {pt:.4f} after {p_train:.1f} s of "
                           f"training ({p.get('batches_trained')} batches = {p.get('epochs_equivalent', 0):.2f} epoch; "
                           f"+ {p_valid:.1f} s validation). Ours reaches it at {reach['where']} after {rt:.1f} s of "
                           f"training ({re_:.1f} s with validation): {ratio(p_train, rt):.1f}x faster on training time, "
                           f"{ratio(p_train + p_valid, re_):.1f}x with validation (target >= 20x: "
                           f"{'met' if ratio(p_train, rt) >= 20 else 'MISSED'}). Probes are discrete, so this is a lower "
                           f"bound on the ratio.")
            else:
                out.append(f"{model}: ours never reached RecBole's test ndcg@10 {pt:.4f} in its budget.")
        best = max((pr["test"].get("ndcg@10", 0) for pr in o.get("probes") or []), default=None)
        final = ((o.get("result") or {}).get("test") or {}).get("ndcg@10")
        out.append(f"{model}: ours final test ndcg@10 (best-valid checkpoint) {final}, best probe {best}; "
                   f"ours wall {o.get('proc', {}).get('wall_s')} s (probes {o.get('probe_s_total', 0):.0f} s), "
                   f"budget {(o.get('spec') or {}).get('time_budget_s')} s; RecBole wall {p.get('proc', {}).get('wall_s')} s.")
        if model == "SASRec":
            tgt = SASREC_PLUS_ML1M["ndcg@10"]
            out.append(f"SASRec target: ndcg@10 ~{tgt} (SASRec+ on ml-1m, Klenitskiy & Vasilev, RecSys 2023, best epoch "
                       f"{SASREC_PLUS_ML1M['best_epoch']}): " + ("met" if final and final >= 0.9 * tgt else "MISSED"))
        out.append("")
    out.append(f"Suite wall time: {res.get('suite_wall_s', 0) / 60:.1f} min")
    return "\n".join(out)


if __name__ == "__main__":
    main()
