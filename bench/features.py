"""FeatureArch fused against per-feature, and FeatureSet.encode's reader throughput.

A Criteo-shaped feature set (13 dense with log1p, 26 categorical, dim 16), in two forms: the 26
hashed into buckets on the reader (device ops: none), or hashed to 63 bits on the reader and
bounded on the device by ``mod`` as RecIS does, plus 4 crosses and 2 bucketized fields (device
ops: mod+cross+bucketize).
Tables of 10k and of 100k rows. Variants, on the same tables (outputs checked equal first):
the default ``FeatureArch`` (ops fused across features, a weight per table), ``fuse_max_table``
large (the tables of one dim in one weight: one lookup), ``fuse=False`` (every op and lookup
per feature), and the default with ``sparse=True`` gradients. For each batch size: median
milliseconds per forward and per forward + backward (dense gradients unless sparse), the
median over ``--rounds`` interleaved rounds of ``--repeats`` calls; then the rows/s of
``FeatureSet.encode`` on a generated pyarrow table (zipf categorical values, nulls).

    OMP_NUM_THREADS=1 python bench/features.py [--batches 512,8192] [--repeats 20] [--rounds 3] [--device cpu]

Prints the machine line and a markdown table; nothing is written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from recstudio_edge.features import FeatureArch, FeatureSet  # noqa: E402

BUCKETS = 100_000


def specs(device_ops: bool, buckets: int = BUCKETS):
    out = [{"name": "dense", "type": "dense", "fields": [f"I{i}" for i in range(1, 14)],
            "ops": [{"op": "fill_null", "value": 0}, {"op": "log1p"}]}]
    for i in range(1, 27):
        ops = [{"op": "fill_null", "value": ""}]
        ops += [{"op": "hash"}, {"op": "mod", "value": buckets}] if device_ops else [{"op": "hash", "buckets": buckets}]
        out.append({"name": f"C{i}", "type": "sparse", "fields": [f"C{i}"], "ops": ops, "embedding": {"dim": 16}})
    if device_ops:
        for j, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8)]):
            out.append({"name": f"X{j}", "type": "sparse", "embedding": {"dim": 16},
                        "ops": [{"op": "fill_null", "value": ""}, {"op": "hash"},
                                {"op": "cross", "fields": [f"C{a}", f"C{b}"], "buckets": buckets}]})
        for j, f in enumerate(["I1", "I2"]):
            out.append({"name": f"B{j}", "type": "sparse", "fields": [f], "embedding": {"dim": 16},
                        "ops": [{"op": "fill_null", "value": 0}, {"op": "bucketize", "boundaries": [1, 2, 4, 8, 16, 64, 256]}]})
    return out


def table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {}
    for i in range(1, 14):
        v = rng.zipf(1.5, rows).astype(np.int64)
        cols[f"I{i}"] = pa.array(v, mask=rng.random(rows) < 0.1)
    for i in range(1, 27):
        card = (10, 1000, 100_000)[i % 3]
        cols[f"C{i}"] = pa.array(np.char.mod("%08x", rng.zipf(1.2, rows) % card), mask=rng.random(rows) < 0.05)
    return pa.table(cols)


def timed(fn, repeats: int, sync) -> float:
    """Median milliseconds of one call (the machine is shared: the median resists the others' bursts)."""
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="512,8192")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--encode-rows", type=int, default=65536)
    args = ap.parse_args(argv)
    try:
        from bench.common import machine, machine_line

        print(machine_line(machine()))
    except Exception as e:  # noqa: BLE001 - the machine line is informative only
        print(f"(no machine line: {e})")
    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"device {args.device}")
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    big = table(max(int(b) for b in args.batches.split(",")))
    variants = {"ops fused (default)": {}, "ops + tables fused": {"fuse_max_table": 1 << 30},
                "per-feature": {"fuse": False}, "default, sparse grads": {"sparse": True}}
    rows = ["| device ops | buckets | batch | " + " | ".join(f"fwd {v}" for v in list(variants)[:3]) + " | "
            + " | ".join(f"fwd+bwd {v}" for v in variants) + " |", "|---" * (3 + 3 + len(variants)) + "|"]
    for device_ops, buckets in ((False, 10_000), (False, BUCKETS), (True, 10_000), (True, BUCKETS)):
        fs = FeatureSet.from_config(specs(device_ops, buckets))
        enc_all = fs.encode(big)
        archs = {k: FeatureArch(fs, **kw).to(dev) for k, kw in variants.items()}
        ref = archs["ops fused (default)"]
        for a in archs.values():
            a.copy_tables_from(ref)
        for b in (int(x) for x in args.batches.split(",")):
            batch = {k: v[:b].to(dev) for k, v in enc_all.items()}
            with torch.no_grad():
                want = ref.flat(batch)
                assert all(torch.equal(a.flat(batch), want) for a in archs.values())
            fwd, step_ms = {}, {}
            for _ in range(args.rounds):  # rounds interleave the variants: the machine's drift hits all alike
                for k, arch in archs.items():
                    if k in list(variants)[:3]:
                        with torch.no_grad():
                            fwd.setdefault(k, []).append(timed(lambda: arch.flat(batch), args.repeats, sync))

                    def step():
                        arch.zero_grad(set_to_none=True)
                        arch.flat(batch).square().mean().backward()
                    step_ms.setdefault(k, []).append(timed(step, args.repeats, sync))
            med = lambda xs: float(np.median(xs))  # noqa: E731
            rows.append(f"| {'mod+cross+bucketize' if device_ops else 'none'} | {buckets} | {b} | "
                        + " | ".join(f"{med(fwd[k]):.2f}" for k in fwd) + " | "
                        + " | ".join(f"{med(step_ms[k]):.2f}" for k in step_ms) + " |")
    print("\n".join(rows))
    # reader side
    t = table(args.encode_rows, seed=1)
    for device_ops in (False, True):
        fs = FeatureSet.from_config(specs(device_ops))
        fs.encode(t)
        t0 = time.perf_counter()
        n = 5
        for _ in range(n):
            fs.encode(t)
        dt = (time.perf_counter() - t0) / n
        print(f"FeatureSet.encode, {'63-bit hashes' if device_ops else 'hash into buckets'}: {args.encode_rows} rows "
              f"(13 int with nulls, 26 hex strings): {dt * 1e3:.1f} ms, {args.encode_rows / dt / 1e6:.2f} M rows/s")


if __name__ == "__main__":
    main()
