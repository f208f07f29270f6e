#!/usr/bin/env python
"""Full-sort evaluation of our SASRec (L=200) on real ml-1m at different eval batch sizes.

usage: python bench/eval_batch_check.py [--threads 1] [--sizes 4096,1024,512,256] [--model SASRec]

For each eval batch size, a fresh process trains 2 batches (so that validation runs once on
a real model) and reports the validation seconds (all 6,040 users, every item ranked) and the
process's peak RSS. configs/base.yaml sets eval.batch_size 4096 for every model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OURS_DATA, check_setup, new_results_dir, run_ours, thread_env  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="4096,1024,512,256")
    ap.add_argument("--model", default="SASRec")
    a = ap.parse_args(argv)
    check_setup(need_peer=False)
    out = new_results_dir("evalbatch", False)
    env = thread_env(a.threads)
    print(f"{a.model} ml-1m, threads {a.threads}")
    for bs in [int(x) for x in a.sizes.split(",")]:
        spec = {"task": "train", "model": a.model, "dataset": "ml-1m", "data_dir": str(OURS_DATA), "epochs": 1,
                "threads": a.threads, "overrides": {"eval.batch_size": bs, "trainer.limit_train_batches": 2}}
        r = run_ours(spec, f"{a.model.lower()}_eval{bs}", out, 900, env)
        vs = [e["seconds"] for e in r.get("evals", []) if e["kind"] == "valid"]
        print(f"eval batch {bs:5d}: valid pass {vs[0] if vs else float('nan'):6.2f} s (all passes: "
              f"{', '.join(f'{x:.2f}' for x in vs)}), peak RSS {r['proc']['maxrss_mb']:,.0f} MB, rc {r['proc']['rc']}",
              flush=True)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
