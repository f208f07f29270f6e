#!/usr/bin/env python
"""CTR peers side by side on the same real ml-1m split: our DeepFM / DCNv2, RecBole 1.2.1's DeepFM,
FuxiCTR 2.3's DeepFM / DCNv2; test AUC, log-loss, training samples/s, peak memory, over seeds.

usage: python bench/ctr.py [--seeds 0 1 2] [--epochs 10] [--sides ours,recbole,fuxictr]
                           [--models DeepFM,DCNv2] [--data-dir DIR] [--threads 1] [--timeout 1800]
                           [--export-only] [--lock FILE] [--table RESULTS_DIR]

1. The split, once, from our own source (``-d=ml-1m-ctr``: recstudio_edge/data/formats/ctr.py,
   ``source.tables[stage]``: label = rating >= 4, the earliest 80% of ratings train, the next 10%
   valid, the last 10% test; the user file's age, gender, occupation, zip code and the item file's
   release year and genres), written for the peers to <BENCH_DATA>/ctr/ml-1m-ctr/:
   ``{train,valid,test}.csv`` (FuxiCTR; genres "^"-joined), ``recbole/ml-1m-ctr/ml-1m-ctr.{train,valid,
   test}.inter`` (RecBole's benchmark files; genres a token_seq) and ``features.json``; the rows'
   digest names the set, so every side provably trains and tests on the same rows.
2. Every run is its own child process (bench/common.py:run_child: its own peak RSS, wait4), with
   OMP/MKL threads = --threads (torch intra-op threads follow), seed-major so that each seed's runs
   sit next to each other: ours through the command line's own train task (bench/ours_worker.py),
   RecBole through bench/peer/run_peer.py (its runner: Config -> dataset -> split -> model -> fit ->
   evaluate; started by bench/peer/ctr_recbole.py, which patches RecBole's token_seq remapping for
   pandas 3) in <BENCH_DATA>/peer-venv, FuxiCTR through bench/peer/ctr_fuxictr.py in
   <BENCH_DATA>/fuxictr-venv.
3. The same hyper-parameters on every side: FuxiCTR's DeepFM_default / DCNv2_default (our
   configs/model/DeepFM.yaml and DCNv2.yaml take them): embedding 40, DeepFM MLP [300, 300, 300],
   DCNv2 parallel with 3 full-rank cross layers and MLP [500, 500, 500], no dropout, Adam 1e-3, batch
   10000, early stop after 2 validations without a better AUC, the best checkpoint tested; epochs
   capped at --epochs. What each side does beyond that is its own (FuxiCTR cuts the learning rate x0.1
   on a plateau; RecBole's DeepFM has its own init).

Figures: test AUC and log-loss of the best-validation checkpoint; samples/s = training rows / training
seconds (data loading inside the epoch counted, validation not); s/epoch; peak RSS of the process.
The table gives mean +- standard deviation over seeds and ratios to ours; results (JSON, the table,
logs) go to bench/results/ctr-<stamp>/. Set-up: `python bench/setup.py` (peer venv), and FuxiCTR's venv:

    python -m venv <BENCH_DATA>/fuxictr-venv && <BENCH_DATA>/fuxictr-venv/bin/pip install fuxictr==2.3.10 torch==2.13.0 "polars<2"

The data: real ml-1m in --data-dir (default ~/.cache/recstudio_edge/data, <dir>/ml-1m/ml-1m.inter/.user/.item).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import (BENCH_DATA, PEER_PY, machine, machine_line, md_table,  # noqa: E402
                    new_results_dir, run_child, run_ours, thread_env)

FUXI_PY = Path(os.environ.get("FUXI_PY") or BENCH_DATA / "fuxictr-venv" / "bin" / "python")
FUXI_RUNNER = HERE / "peer" / "ctr_fuxictr.py"
RECBOLE_RUNNER = HERE / "peer" / "ctr_recbole.py"  # run_peer.py plus a pandas-3 patch for token_seq fields
CTR_DIR = BENCH_DATA / "ctr" / "ml-1m-ctr"
DATASET = "ml-1m-ctr"
CATEGORICAL = ["user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year"]
SEQUENCE = {"genre": 6}  # configs/data/ml-1m-ctr.yaml: up to 6 genres, mean of their embeddings
SIDES = {"ours": ("DeepFM", "DCNv2"), "recbole": ("DeepFM",), "fuxictr": ("DeepFM", "DCNv2")}
SIDE_NAME = {"ours": "recstudio_edge", "recbole": "RecBole 1.2.1", "fuxictr": "FuxiCTR 2.3.10"}
HYPER = dict(embed_dim=40, lr=1e-3, batch_size=10000, patience=2)


# ---- 1. the split -------------------------------------------------------------------------------------
def split_tables(data_dir: Path, seed: int = 0):
    """``{stage: pyarrow.Table}`` of ml-1m-ctr as our own runs see it (the lead's CTR source)."""
    from recstudio_edge.config import build_config
    from recstudio_edge.data.datamodule import load_interactions
    from recstudio_edge.data.formats import ctr
    from recstudio_edge.model import get_model_class

    cls = get_model_class("DeepFM")
    cfg = build_config(cls.registry_name, DATASET, None, {"data_dir": str(data_dir)}, cls)
    data = load_interactions(cfg["data_dir"], cfg["data"], seed)
    return ctr.from_interactions(data, cfg["data"], seed).tables


def export_split(data_dir: Path, out: Path = CTR_DIR) -> dict:
    """Write the split for the peers (module docstring, step 1); returns features.json's content."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    t = time.perf_counter()
    tables = split_tables(data_dir)
    cols = CATEGORICAL + list(SEQUENCE)
    missing = [c for c in cols + ["label"] if c not in tables["train"].column_names]
    if missing:
        raise SystemExit(f"error: the ml-1m-ctr tables have no column {missing[0]!r} "
                         f"(they have {tables['train'].column_names})")
    h = hashlib.sha256()
    flat = {}
    for stage in ("train", "valid", "test"):
        tb = tables[stage]
        arrays = {"label": pc.cast(tb["label"], pa.int8())}
        for c in CATEGORICAL:
            arrays[c] = pc.cast(tb[c], pa.string())
        for c, length in SEQUENCE.items():
            lst = tb[c]
            if not pa.types.is_list(lst.type) and not pa.types.is_large_list(lst.type):
                raise SystemExit(f"error: column {c!r} is {lst.type}, a list column expected")
            arrays[c] = pc.binary_join(pc.list_slice(lst, 0, length), "^")
        flat[stage] = pa.table(arrays)
        h.update(stage.encode())
        for name in flat[stage].column_names:
            h.update(name.encode())
            h.update(str(flat[stage][name].to_pylist()).encode())
    digest = h.hexdigest()
    spec = {"digest": digest, "categorical": CATEGORICAL,
            "sequence": [{"name": c, "length": n} for c, n in SEQUENCE.items()],
            "rows": {s: flat[s].num_rows for s in flat},
            "positive_rate": {s: float(pc.mean(pc.cast(flat[s]["label"], pa.float64())).as_py()) for s in flat}}
    old = out / "features.json"
    if old.exists() and json.loads(old.read_text()).get("digest") == digest:
        print(f"split: {out} already holds these rows (digest {digest[:12]})", flush=True)
        return json.loads(old.read_text())
    out.mkdir(parents=True, exist_ok=True)
    rb = out / "recbole" / DATASET
    rb.mkdir(parents=True, exist_ok=True)
    header = {"label": "label:float", **{c: f"{c}:token" for c in CATEGORICAL},
              **{c: f"{c}:token_seq" for c in SEQUENCE}}
    for stage, tb in flat.items():
        tmp = out / f".{stage}.csv.tmp"
        pacsv.write_csv(tb, tmp, pacsv.WriteOptions(quoting_style="needed"))
        tmp.replace(out / f"{stage}.csv")
        # RecBole: tab-separated, typed header, a token_seq separated by spaces (no genre has one)
        rtb = tb
        for c in SEQUENCE:
            rtb = rtb.set_column(rtb.column_names.index(c), c, pc.replace_substring(rtb[c], "^", " "))
        tmp = rb / f".{DATASET}.{stage}.inter.tmp"
        with open(tmp, "wb") as f:  # pyarrow quotes a header always: RecBole reads the quotes as names
            f.write(("\t".join(header[c] for c in rtb.column_names) + "\n").encode())
            pacsv.write_csv(rtb, f, pacsv.WriteOptions(delimiter="\t", quoting_style="none", include_header=False))
        tmp.replace(rb / f"{DATASET}.{stage}.inter")
    old.write_text(json.dumps(spec, indent=1))
    print(f"split: wrote {out} ({spec['rows']}, digest {digest[:12]}) in {time.perf_counter() - t:.1f} s", flush=True)
    return spec


def recbole_config(out: Path, seed: int, epochs: int, work: Path) -> Path:
    """RecBole 1.2.1 config of DeepFM on the benchmark files, the shared hyper-parameters."""
    import yaml

    cfg = {
        "data_path": str(CTR_DIR / "recbole"), "benchmark_filename": ["train", "valid", "test"],
        "field_separator": "\t", "seq_separator": " ",
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LABEL_FIELD": "label",
        "TIME_FIELD": None, "RATING_FIELD": None,
        "load_col": {"inter": ["label"] + CATEGORICAL + list(SEQUENCE)},
        "eval_args": {"order": "TO", "group_by": None, "mode": "labeled"},
        "train_neg_sample_args": None, "metrics": ["AUC", "LogLoss"], "valid_metric": "AUC",
        "embedding_size": HYPER["embed_dim"], "mlp_hidden_size": [300, 300, 300], "dropout_prob": 0.0,
        "learning_rate": HYPER["lr"], "learner": "adam", "weight_decay": 0.0,
        "train_batch_size": HYPER["batch_size"], "eval_batch_size": HYPER["batch_size"],
        "epochs": epochs, "stopping_step": HYPER["patience"], "eval_step": 1,
        "seed": seed, "reproducibility": True, "use_gpu": False, "device": "cpu",
        "checkpoint_dir": str(work / "saved"), "show_progress": False, "log_wandb": False,
        "state": "INFO", "metric_decimal_place": 6,
    }
    path = out / f"recbole_deepfm_seed{seed}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---- 2. runs --------------------------------------------------------------------------------------------
def run_one(side: str, model: str, seed: int, args, out: Path) -> dict:
    """One measured run; with --lock, holding an exclusive flock on that file while it runs."""
    if not args.lock:
        return _run_one(side, model, seed, args, out)
    import fcntl

    with open(args.lock, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _run_one(side, model, seed, args, out)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_one(side: str, model: str, seed: int, args, out: Path) -> dict:
    tag = f"{side}_{model}_seed{seed}"
    env = thread_env(args.threads)
    t0 = time.perf_counter()
    if side == "ours":
        spec = {"task": "train", "model": model, "dataset": DATASET, "data_dir": str(args.data_dir),
                "threads": args.threads, "epochs": args.epochs,
                "overrides": {"seed": seed, "train.batch_size": HYPER["batch_size"], "train.lr": HYPER["lr"],
                              "eval.patience": HYPER["patience"], "model.embed_dim": HYPER["embed_dim"]}}
        r = run_ours(spec, tag, out, args.timeout, env_extra=env)
        eps = r.get("epochs") or []
        train_s = sum(e.get("train_s", 0.0) for e in eps)
        samples = sum(e.get("samples", 0) for e in eps)
        test = _metrics((r.get("result") or {}).get("test") or r.get("result") or {})
        rec = {"samples_per_s": samples / train_s if train_s else None, "epochs_run": len(eps),
               "s_per_epoch": train_s / len(eps) if eps else None, "test": test,
               "maxrss_mb": r["proc"]["maxrss_mb"], "rc": r["proc"]["rc"], "log": r["proc"]["log"],
               "raw": {k: r.get(k) for k in ("result", "data_s", "run_task_s", "vm_hwm_mb")}}
    elif side == "recbole":
        cfg = recbole_config(out, seed, args.epochs, out / "recbole_work")
        out_json = out / f"{tag}.json"
        env.update(PEER_ANOMALY="0", PYTHONPATH="")
        proc = run_child([PEER_PY, RECBOLE_RUNNER, model, DATASET, cfg, out_json], out / f"{tag}.log", args.timeout,
                         cwd=out, env=env)
        r = json.loads(out_json.read_text()) if out_json.exists() else {}
        times = r.get("train_s_per_epoch_measured") or []
        rec = {"samples_per_s": r.get("samples_per_s"), "epochs_run": r.get("epochs_run"),
               "s_per_epoch": sum(times) / len(times) if times else None, "test": _metrics(r.get("test") or {}),
               "maxrss_mb": proc["maxrss_mb"], "rc": proc["rc"], "log": proc["log"],
               "raw": {k: r.get(k) for k in ("best_valid", "n_params", "train_samples_per_epoch", "load_s", "split_s")}}
    else:
        out_json = out / f"{tag}.json"
        env["PYTHONPATH"] = ""
        proc = run_child([FUXI_PY, FUXI_RUNNER, model, CTR_DIR, BENCH_DATA / "ctr" / "fuxictr_work", seed,
                          args.epochs, out_json], out / f"{tag}.log", args.timeout, cwd=out, env=env)
        r = json.loads(out_json.read_text()) if out_json.exists() else {}
        eps = r.get("epochs") or []
        rec = {"samples_per_s": r.get("samples_per_s"), "epochs_run": r.get("epochs_run"),
               "s_per_epoch": r["train_s"] / len(eps) if eps else None, "test": _metrics(r.get("test") or {}),
               "maxrss_mb": proc["maxrss_mb"], "rc": proc["rc"], "log": proc["log"],
               "tree_peak_rss_mb": r.get("tree_peak_rss_mb"),
               "raw": {k: r.get(k) for k in ("best_epoch", "best_valid", "n_params", "build_s", "build_reused")}}
    rec.update(side=side, model=model, seed=seed, wall_s=time.perf_counter() - t0)
    ok = rec["rc"] == 0 and rec["test"].get("auc") is not None
    print(f"{SIDE_NAME[side]:>15} {model:6} seed {seed}: "
          + (f"test AUC {rec['test']['auc']:.4f} logloss {rec['test'].get('logloss') or float('nan'):.4f} | "
             f"{rec['samples_per_s'] or float('nan'):,.0f} samples/s | {rec['epochs_run']} epochs | "
             f"peak {rec['maxrss_mb']:,.0f} MB | {rec['wall_s']:.0f} s" if ok else
             f"FAILED (rc {rec['rc']}; log {rec['log']})"), flush=True)
    return rec


def _metrics(d: dict) -> dict:
    """``{"auc", "logloss"}`` from any side's metric names (auc / AUC / test/auc, logloss / LogLoss)."""
    out = {}
    for k, v in (d or {}).items():
        key = str(k).lower().split("/")[-1]
        if key in ("auc", "logloss") and v is not None:
            out[key] = float(v)
    return out


# ---- 3. the table -------------------------------------------------------------------------------------
def mean_sd(xs):
    xs = [x for x in xs if x is not None and x == x]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def pm(m, sd, nd=4, big=False):
    if m is None:
        return "-"
    if big:
        return f"{m:,.0f} ± {sd:,.0f}"
    return f"{m:.{nd}f} ± {sd:.{nd}f}"


def table(recs) -> str:
    groups = {}
    for r in recs:
        groups.setdefault((r["model"], r["side"]), []).append(r)
    rows = []
    for (model, side), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], list(SIDES).index(kv[0][1]))):
        good = [r for r in rs if r["rc"] == 0 and r["test"].get("auc") is not None]
        auc = mean_sd([r["test"]["auc"] for r in good])
        ll = mean_sd([r["test"].get("logloss") for r in good])
        sps = mean_sd([r["samples_per_s"] for r in good])
        spe = mean_sd([r["s_per_epoch"] for r in good])
        rss = mean_sd([r["maxrss_mb"] for r in good])
        tree = mean_sd([r.get("tree_peak_rss_mb") for r in good])[0]
        ours = groups.get((model, "ours"), [])
        ours_sps = mean_sd([r["samples_per_s"] for r in ours if r["rc"] == 0])[0]
        ours_auc = mean_sd([r["test"].get("auc") for r in ours if r["rc"] == 0])[0]
        ratio = (f"{ours_sps / sps[0]:.2f}x" if side != "ours" and ours_sps and sps[0] else "-")
        dauc = (f"{ours_auc - auc[0]:+.4f}" if side != "ours" and ours_auc is not None and auc[0] is not None else "-")
        rows.append([model, SIDE_NAME[side], f"{len(good)}/{len(rs)}", pm(*auc), pm(*ll), pm(*sps, big=True),
                     pm(*spe, nd=1), ", ".join(str(r["epochs_run"]) for r in good) or "-", pm(*rss, big=True) + (f" (tree {tree:,.0f})" if tree else ""),
                     ratio, dauc])
    return md_table(["model", "side", "runs ok", "test AUC", "test log-loss", "train samples/s", "s/epoch",
                     "epochs (per seed)", "peak RSS MB (process; tree: with its helper processes)",
                     "ours / this samples/s", "ours - this AUC"], rows)


def render(m, spec, args, recs) -> str:
    return (f"# CTR peers on ml-1m-ctr (split {spec['digest'][:12]}, rows {spec['rows']})\n\n{machine_line(m)}\n\n"
            f"threads {args['threads']} per run, seeds {args['seeds']}, epochs cap {args['epochs']}, hyper-parameters "
            f"{HYPER}\n\n{table(recs)}\n")


def retable(folder: Path) -> str:
    """The table of a finished (or interrupted) results folder, from its results.json."""
    res = json.loads((folder / "results.json").read_text())
    for r in res["runs"]:
        if r["side"] == "fuxictr" and not r.get("tree_peak_rss_mb"):
            f = folder / f"fuxictr_{r['model']}_seed{r['seed']}.json"
            if f.exists():
                r["tree_peak_rss_mb"] = json.loads(f.read_text()).get("tree_peak_rss_mb")
    return render(res["machine"], res["split"], res["args"], res["runs"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10, help="cap on epochs (early stopping usually ends sooner)")
    ap.add_argument("--sides", default="ours,recbole,fuxictr")
    ap.add_argument("--models", default="DeepFM,DCNv2")
    ap.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "recstudio_edge" / "data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--export-only", action="store_true", help="write the split for the peers and stop")
    ap.add_argument("--lock", help="a file to flock around each run (share the machine with other benchmarks "
                                   "between runs, never during one)")
    ap.add_argument("--table", type=Path, metavar="RESULTS_DIR", help="print the table of a results folder and stop")
    args = ap.parse_args(argv)
    if args.table:
        text = retable(args.table)
        (args.table / "table.md").write_text(text)
        print(text)
        return 0
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for s in sides:
        if s not in SIDES:
            ap.error(f"--sides: unknown side {s!r} (known: {', '.join(SIDES)})")
    for m in models:
        if m not in ("DeepFM", "DCNv2"):
            ap.error(f"--models: unknown model {m!r} (DeepFM, DCNv2)")
    if not (args.data_dir / "ml-1m").is_dir():
        ap.error(f"--data-dir {args.data_dir}: no ml-1m folder (the real ml-1m atomic or GroupLens files)")
    need = {"recbole": PEER_PY, "fuxictr": FUXI_PY}
    for s in sides:
        if s in need and not Path(need[s]).exists():
            raise SystemExit(f"error: {SIDE_NAME[s]}'s python {need[s]} not found (set-up: this file's docstring)")
    spec = export_split(args.data_dir)
    if args.export_only:
        return 0
    out = new_results_dir("ctr", False)
    import torch

    os.environ.update(thread_env(args.threads))  # the machine line's figures are the runs' (children's)
    torch.set_num_threads(args.threads)
    m = machine()
    print(machine_line(m), flush=True)
    print(f"split {spec['digest'][:12]}: rows {spec['rows']}, positive rate {spec['positive_rate']}", flush=True)
    recs = []
    for seed in args.seeds:
        for model in models:
            for side in sides:
                if model in SIDES[side]:
                    recs.append(run_one(side, model, seed, args, out))
                    (out / "results.json").write_text(json.dumps({"machine": m, "split": spec, "args": {
                        k: str(v) for k, v in vars(args).items()}, "runs": recs}, indent=1, default=str))
    text = render(m, spec, {"threads": args.threads, "seeds": args.seeds, "epochs": args.epochs}, recs)
    (out / "table.md").write_text(text)
    print()
    print(text)
    print(f"results: {out}")
    return 0 if all(r["rc"] == 0 for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
