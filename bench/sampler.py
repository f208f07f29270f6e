"""Sampler benchmark: (1) negatives per second of each sampler at 100k items, (2) the accuracy
BPR-MF reaches on real MovieLens-1M with sampled softmax (log-Q corrected) under each sampler,
against the full softmax, with its training time.

(1) ``--items`` (100k) item vectors x 64 dims from a Zipf-sized Gaussian mixture (trained-like),
training counts Zipf-distributed; a batch of 2048 queries near the same components, 64
negatives each (``sampler(pos, 64, query=q)``), timed over repeated batches after a warm-up;
the index rebuild (``update``, k-means in torch) of the dynamic samplers is timed apart. One
thread. For scale: the full softmax's logits for the same batch (``q @ V.T``) are timed too.

(2) ``python run.py -m=BPR -d=ml-1m`` in a fresh process per sampler (``bench/ours_worker.py``,
one thread), ``model.loss=sampled_softmax`` with ``model.negative_count`` negatives, or
``model.loss=softmax`` (full): same seed, split (BPR's: user_entry 0.8/0.1/0.1), lr, batch,
epochs cap and time budget for every run; the best-validation checkpoint is tested (full sort,
history masked).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/sampler.py            # ~25 min
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/sampler.py --quick    # speed only
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import (OURS_DATA, ensure_ours_data, machine, machine_line, md_table,  # noqa: E402
                          new_results_dir, run_ours, thread_env)

SAMPLERS = ["uniform", "popularity", "midx_uni", "midx_pop", "cluster_uni", "cluster_pop"]


@torch.no_grad()
def speed(items: int, dim: int, batch: int, num_neg: int, clusters: int, seconds: float):
    from bench.ann import mixture
    from recstudio_edge.registry import SAMPLERS as REG
    import recstudio_edge.model  # noqa: F401

    v, q = mixture(items, batch, dim, components=500, seed=1)
    v = torch.cat([torch.zeros(1, dim), v]) * 0.3  # padding row; trained-like scale
    q = q * 0.3
    g = torch.Generator().manual_seed(2)
    counts = torch.cat([torch.zeros(1), (1e4 / torch.arange(1, items + 1).float()).floor()[torch.randperm(items, generator=g)]])
    pos = torch.randint(1, items + 1, (batch,), generator=g)
    rows = []
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < seconds:
        logits = q @ v[1:].T
        n += 1
    full_s = (time.perf_counter() - t) / n
    del logits
    for name in SAMPLERS:
        kw = {"num_clusters": clusters} if "_" in name else {}
        s = REG.create(name, num_items=items + 1, **kw)
        s.prepare(counts)
        build = None
        if s.dynamic:
            t = time.perf_counter()
            s.update(v, metric="ip")
            build = time.perf_counter() - t
        s(pos, num_neg, query=q)  # warm-up
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < seconds:
            s(pos, num_neg, query=q)
            n += 1
        per = (time.perf_counter() - t) / n
        rows.append({"sampler": name, "batch_s": per, "neg_per_s": batch * num_neg / per, "build_s": build})
        print(f"  {name}: {batch * num_neg / per / 1e6:.2f} M negatives/s"
              + (f", index rebuild {build:.2f} s" if build is not None else ""), flush=True)
    return rows, full_s


def accuracy(out: Path, args):
    ensure_ours_data()
    base = {"task": "train", "model": "BPR", "dataset": "ml-1m", "data_dir": str(OURS_DATA), "threads": 1,
            "epochs": args.epochs, "time_budget_s": args.budget}
    common = {"train.lr": str(args.lr), "train.batch_size": "2048", "eval.patience": "5"}
    runs = [("full softmax", {**common, "model.loss": "softmax"})]
    for name in SAMPLERS:
        runs.append((name, {**common, "model.loss": "sampled_softmax", "model.sampler": name,
                            "model.negative_count": str(args.negatives),
                            "model.sampler_args": json.dumps({"exclude_seen": False})}))
    if args.only:
        keep = {x.strip() for x in args.only.split(",")}
        runs = [r for r in runs if r[0] in keep]
    results = []
    for tag, over in runs:
        t = time.perf_counter()
        r = run_ours({**base, "overrides": over}, tag.replace(" ", "_"), out, timeout=args.budget + 600,
                     env_extra=thread_env(1))
        res = r.get("result") or {}
        eps = r.get("epochs") or []
        train_s = sum(e.get("train_s", 0.0) for e in eps)
        row = {"run": tag, "test": res.get("test", {}), "valid": res.get("valid", {}), "epochs": len(eps),
               "train_s": train_s, "s_per_epoch": train_s / len(eps) if eps else None,
               "wall_s": time.perf_counter() - t, "rc": r["proc"]["rc"], "log": r["proc"]["log"]}
        results.append(row)
        print(f"  {tag}: recall@10 {row['test'].get('recall@10', float('nan')):.4f} "
              f"ndcg@10 {row['test'].get('ndcg@10', float('nan')):.4f}, {len(eps)} epochs, "
              f"{row['s_per_epoch'] or float('nan'):.1f} s/epoch (rc {row['rc']})", flush=True)
        (out / "accuracy.json").write_text(json.dumps(results, indent=1, default=float))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--negatives", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing window per sampler")
    ap.add_argument("--epochs", type=int, default=30, help="ml-1m: epochs cap per run")
    ap.add_argument("--budget", type=float, default=180, help="ml-1m: seconds of training per run")
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--quick", action="store_true", help="speed table only")
    ap.add_argument("--only", default=None, help="accuracy runs to do, comma-separated (e.g. 'midx_uni,full softmax'); "
                                                 "skips the speed table")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    m = machine()
    print(machine_line(m), flush=True)
    out = new_results_dir("sampler", args.quick)
    print(f"negatives per second, {args.items:,} items x {args.dim} dims, batch {args.batch} x {args.negatives} "
          f"negatives, K={args.clusters}:", flush=True)
    if args.only:
        rows, full_s = [], float("nan")
    else:
        rows, full_s = speed(args.items, args.dim, args.batch, args.negatives, args.clusters, args.seconds)
    t1 = md_table(["sampler", "M negatives / s", "ms / batch", "index rebuild s (per epoch)"],
                  [[r["sampler"], f"{r['neg_per_s'] / 1e6:.2f}", f"{1e3 * r['batch_s']:.1f}",
                    "-" if r["build_s"] is None else f"{r['build_s']:.2f}"] for r in rows])
    note1 = (f"{args.items:,} items x {args.dim} dims, {args.batch} queries x {args.negatives} negatives per batch, "
             f"num_clusters {args.clusters} (MIDX: {args.clusters}^2 cells), 1 thread. For scale: the full "
             f"softmax's logits for the same batch take {1e3 * full_s:.0f} ms.")
    report = [machine_line(m), "", note1, "", t1]
    raw = {"machine": m, "args": vars(args), "speed": rows, "full_logits_s": full_s}
    if not args.quick:
        print(f"accuracy on ml-1m (BPR, {args.negatives} negatives, lr {args.lr}, <= {args.epochs} epochs, "
              f"<= {args.budget:.0f} s training each):", flush=True)
        acc = accuracy(out, args)
        raw["accuracy"] = acc
        t2 = md_table(["loss / sampler", "recall@10", "ndcg@10", "recall@20", "epochs", "s / epoch", "train s"],
                      [[r["run"], f"{r['test'].get('recall@10', float('nan')):.4f}",
                        f"{r['test'].get('ndcg@10', float('nan')):.4f}",
                        f"{r['test'].get('recall@20', float('nan')):.4f}", str(r["epochs"]),
                        "-" if r["s_per_epoch"] is None else f"{r['s_per_epoch']:.0f}", f"{r['train_s']:.0f}"]
                       for r in acc])
        note2 = (f"BPR-MF (embed 64) on real MovieLens-1M (user_entry 0.8/0.1/0.1 split, history masked, best "
                 f"validation recall@10 checkpoint tested), Adam lr {args.lr}, batch 2048, up to {args.epochs} epochs "
                 f"or {args.budget:.0f} s of training, patience 5; sampled softmax with {args.negatives} negatives "
                 f"and log-Q correction, num_clusters 32.")
        report += ["", note2, "", t2]
    text = "\n".join(report) + "\n"
    print("\n" + text)
    (out / "sampler.json").write_text(json.dumps(raw, indent=1, default=float))
    (out / "table.md").write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
