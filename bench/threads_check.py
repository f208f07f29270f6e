#!/usr/bin/env python
"""Why the benchmarks pin torch to 1 thread on both sides: OpenMP spin-waiting on shared cores.

usage: python bench/threads_check.py [--epochs N] [--limit S]

Runs the same plain-torch BPR loop (ml-1m sized: 6,040 users, 3,706 items, 805,443 rows,
batch 2048, embed 64, Adam; no recstudio_edge, no RecBole) in fresh processes with
1 thread, 2 threads, and 2 threads with OMP_WAIT_POLICY=PASSIVE, and prints seconds per
epoch with the load average. On a 2-core machine that other processes also use, 2 threads
with the default (active, spinning) wait policy can be tens of times slower than 1 thread,
because every small parallel region waits for a descheduled thread.
Each variant is killed after --limit seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

LOOP = r"""
import json, sys, time, torch
torch.manual_seed(0)
U, I, D, N = 6041, 3707, 64, 805443
ue, ie = torch.nn.Embedding(U, D), torch.nn.Embedding(I, D)
opt = torch.optim.Adam(list(ue.parameters()) + list(ie.parameters()), lr=1e-3)
u, i = torch.randint(1, U, (N,)), torch.randint(1, I, (N,))
for ep in range(int(sys.argv[1])):
    t = time.perf_counter()
    perm = torch.randperm(N)
    for s in range(0, N, 2048):
        idx = perm[s:s + 2048]
        q = ue(u[idx])
        neg = torch.randint(1, I, (idx.numel(),))
        loss = -torch.nn.functional.logsigmoid((q * ie(i[idx])).sum(-1) - (q * ie(neg)).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(json.dumps({"epoch": ep, "s": time.perf_counter() - t, "threads": torch.get_num_threads(),
                      "load": open("/proc/loadavg").read().split()[:3]}), flush=True)
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=float, default=240.0)
    a = ap.parse_args(argv)
    variants = [("1 thread", {"OMP_NUM_THREADS": "1"}),
                ("2 threads, OMP_WAIT_POLICY default", {"OMP_NUM_THREADS": "2"}),
                ("2 threads, OMP_WAIT_POLICY=PASSIVE", {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"})]
    for name, extra in variants:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        env.update(extra)
        t = time.perf_counter()
        try:
            r = subprocess.run([sys.executable, "-c", LOOP, str(a.epochs)], env=env, capture_output=True, text=True,
                               timeout=a.limit)
            eps = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            eps = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            eps.append({"epoch": "killed", "s": time.perf_counter() - t})
        print(f"{name:38s} " + "  ".join(f"{e['s']:.2f}s" + (f" (load {e['load'][0]})" if "load" in e else " (killed)")
                                          for e in eps), flush=True)


if __name__ == "__main__":
    main()
