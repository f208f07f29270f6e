#!/usr/bin/env python
"""PINRec and DIN training speed on real ml-1m, this tree against an older one, in one sitting.

usage: python bench/pinrec_speed.py [--before DIR] [--threads 1] [--trunks DIN,SASRec,GRU4Rec] [--before-trunks DIN]
                                    [--full both|after|none] [--recbole] [--data-dir DIR]

``--before DIR`` is a checkout of the older code (``git worktree add /tmp/before <rev>``); every
measurement runs in a fresh child process (``bench/common.py:run_child``: wall time, peak RSS)
through that tree's own ``run.py``, the command a user types, on the same data:

- *per trunk* (DIN, SASRec, GRU4Rec, ``model.arch_config``): 2 epochs with the plugins switched on
  at epoch 1 (``plugin_stage.stage_switch_epoch=1``), so one epoch of each stage; s/epoch as the
  run log reports it (training and that epoch's validation pass), and the run's wall time;
- *the whole default run*, ``python run.py -m=PINRec -d=ml-1m`` (12 epochs, switch at 2; sample
  building, 12 validation passes and the test pass included): wall time, s/epoch, test AUC and
  the tail / head AUC. ``--full after`` runs it on this tree only and estimates the older tree's
  from its per-trunk epochs (setup + 2 x stage 1 + 10 x stage 2), said so in the table;
- *DIN*, 2 epochs: s/epoch (training rows/s and where a step goes: ``bench/din_breakdown.py``);
- ``--recbole``: RecBole 1.2.1's DIN (``bench/peer/run_peer.py``, the peer venv, our sizes: embed
  32, MLP 128-64, batch 2048 rows, one uniform negative; anomaly detection off), 30 training
  batches, rows/s.

Results: ``bench/results/pinrec_speed-<stamp>/`` (``pinrec_speed.json``, ``.md``, every run's log).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from common import (OURS_DATA, PEER_CONFIGS, ensure_ours_data, machine, machine_line, md_table,  # noqa: E402
                    new_results_dir, run_child, run_peer)

EPOCH_LINE = re.compile(r"epoch (\d+): .*\(([\d.]+)s\)")


def epoch_seconds(run_log: Path):
    """Per-epoch seconds from a run's ``run.log`` (``epoch N: ... (12.3s)``)."""
    out = {}
    for line in run_log.read_text().splitlines():
        m = EPOCH_LINE.search(line)
        if m and "INFO" in line:
            out[int(m.group(1))] = float(m.group(2))
    return [out[k] for k in sorted(out)]


def run_cli(tree: Path, tag: str, args, res_dir: Path, model: str, extra, timeout: float):
    """``python <tree>/run.py -m=<model> -d=ml-1m ...`` in a child; its wall, peak RSS, epochs, metrics."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"pinrec_speed_{tag}_"))
    cmd = [sys.executable, tree / "run.py", f"-m={model}", "-d=ml-1m", f"--data_dir={args.data_dir}",
           f"--output_dir={out_dir}", "--trainer.enable_progress_bar=false", *extra]
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "PYTHONPATH": str(tree)}
    proc = run_child(cmd, res_dir / f"{tag}.log", timeout, cwd=tree, env=env)
    runs = sorted(out_dir.glob(f"{model}/ml-1m/*/run.log"))
    res = {"proc": proc, "cmd": " ".join(map(str, cmd[1:]))}
    if runs:
        res["epochs_s"] = epoch_seconds(runs[-1])
        metrics = runs[-1].parent / "metrics.json"
        if metrics.exists():
            res["metrics"] = json.loads(metrics.read_text())
    return res


def test_metric(res, key):
    """A test metric of a run; ``auc_tail`` / ``auc_head``: the mean AUC of groups 0 and 1 / of the
    top group (as groups.txt reports them)."""
    m = res.get("metrics") or {}
    test = m.get("test", m)
    if not isinstance(test, dict):
        return None
    groups = sorted(int(k[5:]) for k in test if k.startswith("auc_g"))
    if key == "auc_tail" and len(groups) > 1:
        return round((test["auc_g0"] + test["auc_g1"]) / 2, 4)
    if key == "auc_head" and groups:
        return test[f"auc_g{groups[-1]}"]
    return test.get(key)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=None, help="checkout of the older code (a git worktree)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trunks", default="DIN,SASRec,GRU4Rec")
    ap.add_argument("--before-trunks", default=None,
                    help="the trunks the older tree runs (default: --trunks; its SASRec epoch was 13 min here: "
                         "bench/din_breakdown.py --trunk times its steps instead)")
    ap.add_argument("--full", default="after", choices=["both", "after", "none"],
                    help="which trees run the whole default 12-epoch command")
    ap.add_argument("--recbole", action="store_true", help="also RecBole's DIN rows/s (30 batches)")
    ap.add_argument("--data-dir", default=str(OURS_DATA))
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args(argv)
    if a.data_dir == str(OURS_DATA):
        ensure_ours_data()
    a.data_dir = str(Path(a.data_dir).expanduser())
    res_dir = new_results_dir("pinrec_speed", False)
    trees = {"after": REPO}
    if a.before:
        trees = {"before": Path(a.before).resolve(), "after": REPO}
    mach = machine()
    print(machine_line(mach))
    out = {"machine": mach, "threads": a.threads, "trees": {k: str(v) for k, v in trees.items()}, "runs": {}}

    for name, tree in trees.items():  # DIN first (the cheapest), then the trunks, then the whole run
        r = run_cli(tree, f"{name}_DIN-model", a, res_dir, "DIN", ["--epochs=2"], a.timeout)
        out["runs"][f"{name}/DIN model"] = r
        print(f"{name:6s} DIN 2 epochs: {r.get('epochs_s')} s/epoch, wall {r['proc']['wall_s']} s", flush=True)
        trunks = a.trunks if name == "after" or not a.before_trunks else a.before_trunks
        for trunk in trunks.split(","):
            arch = json.dumps({"trunk": trunk})
            r = run_cli(tree, f"{name}_{trunk}", a, res_dir, "PINRec",
                        ["--epochs=2", "--plugin_stage.stage_switch_epoch=1", f"--model.arch_config={arch}"],
                        a.timeout)
            out["runs"][f"{name}/{trunk}"] = r
            print(f"{name:6s} PINRec {trunk} trunk: {r.get('epochs_s')} s/epoch (stage 1, stage 2), "
                  f"wall {r['proc']['wall_s']} s", flush=True)
    for name, tree in trees.items():
        if a.full == "both" or (a.full == "after" and name == "after"):
            r = run_cli(tree, f"{name}_full", a, res_dir, "PINRec", [], a.timeout)
            out["runs"][f"{name}/full"] = r
            print(f"{name:6s} PINRec default run: wall {r['proc']['wall_s']} s, epochs {r.get('epochs_s')}, "
                  f"test auc {test_metric(r, 'auc')}", flush=True)
    if a.recbole:
        import yaml

        cfg = yaml.safe_load((PEER_CONFIGS / "din.yaml").read_text())
        cfg.update(embedding_size=32, mlp_hidden_size=[128, 64])
        path = res_dir / "recbole_din.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
        r = run_peer("DIN", "ml-1m", path, "din", res_dir, a.timeout, max_batches=30, anomaly=False, env_extra=env)
        out["runs"]["recbole/DIN"] = r
        print(f"RecBole DIN: {r.get('samples_per_s')} rows/s over {r.get('batches_trained')} batches", flush=True)

    # tables --------------------------------------------------------------------------------
    lines = [machine_line(mach), f"torch threads {a.threads}", ""]
    head = ["", *trees]
    if len(trees) == 2:
        head.append("before / after")
    table = []

    def add(label, values):
        row = [label, *[("-" if v is None else f"{v:.1f}") for v in values]]
        if len(values) == 2 and all(values):
            row.append(f"{values[0] / values[1]:.2f}x")
        table.append(row)

    def stage(key, i):
        e = out["runs"].get(key, {}).get("epochs_s") or []
        return e[i] if len(e) > i else None

    add("DIN s/epoch (epochs 0, 1: mean)", [(stage(f"{n}/DIN model", 0) + stage(f"{n}/DIN model", 1)) / 2
                                            if stage(f"{n}/DIN model", 1) else None for n in trees])
    for trunk in a.trunks.split(","):
        add(f"PINRec {trunk} trunk, s/epoch stage 1", [stage(f"{n}/{trunk}", 0) for n in trees])
        add(f"PINRec {trunk} trunk, s/epoch stage 2", [stage(f"{n}/{trunk}", 1) for n in trees])
    fulls = []
    for n in trees:
        r = out["runs"].get(f"{n}/full")
        if r:
            fulls.append(r["proc"]["wall_s"])
        else:  # estimated from the DIN trunk's epochs and its 2-epoch run's set-up
            t = out["runs"].get(f"{n}/DIN", {})
            s1, s2 = stage(f"{n}/DIN", 0), stage(f"{n}/DIN", 1)
            setup = t["proc"]["wall_s"] - sum(t.get("epochs_s") or [0]) if t.get("proc") else None
            fulls.append(setup + 2 * s1 + 10 * s2 if None not in (setup, s1, s2) else None)
            out[f"{n}_full_estimated_s"] = fulls[-1]
    add("PINRec default run (12 epochs), wall s" + ("" if a.full == "both" else " (before: estimated)"), fulls)
    lines.append(md_table(head, table))
    for n in trees:
        r = out["runs"].get(f"{n}/full")
        if r:
            lines.append(f"\n{n}: default run test AUC {test_metric(r, 'auc')}, tail {test_metric(r, 'auc_tail')}, "
                         f"head {test_metric(r, 'auc_head')}; epochs {r.get('epochs_s')}")
    if "recbole/DIN" in out["runs"]:
        r = out["runs"]["recbole/DIN"]
        lines.append(f"\nRecBole 1.2.1 DIN (embed 32, MLP 128-64, batch 2048 rows): {r.get('samples_per_s')} rows/s "
                     f"over {r.get('batches_trained')} training batches")
    text = "\n".join(lines)
    print("\n" + text)
    (res_dir / "pinrec_speed.md").write_text(text + "\n")
    (res_dir / "pinrec_speed.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"\nresults: {res_dir}")


if __name__ == "__main__":
    main()
