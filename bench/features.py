"""FeatureArch fused against per-feature, and FeatureSet.encode's reader throughput.

A Criteo-shaped feature set (13 dense with log1p, 26 categorical; ``--device-ops``: the 26 are
hashed on the reader without buckets and bounded on the device by ``mod`` as RecIS does, plus 4
crosses and 2 bucketized fields; else hashed into buckets on the reader, no device op), dim 16.
Tables of 10k rows (fused into one weight per dim) and of 100k rows
(each its own weight: over ``fuse_max_table``). For each batch size: median milliseconds per forward and per forward + backward of ``FeatureArch(fuse=True)``
and ``fuse=False`` (a weight per table) on the same tables (their outputs are checked equal
first), the speed-up, forward + backward of the fused arch with ``sparse=True`` gradients,
and the rows/s of ``FeatureSet.encode`` on a generated pyarrow table (zipf categorical values).

    OMP_NUM_THREADS=1 python bench/features.py [--batches 512,8192] [--repeats 30] [--device cpu]

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
    ap.add_argument("--repeats", type=int, default=30)
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
    rows = ["| device ops | buckets | batch | fwd fused ms | fwd per-feature ms | speed-up | fwd+bwd fused ms | "
            "fwd+bwd per-feature ms | speed-up | fwd+bwd fused, sparse grads ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for device_ops, buckets in ((False, 10_000), (False, BUCKETS), (True, 10_000), (True, BUCKETS)):
        fs = FeatureSet.from_config(specs(device_ops, buckets))
        enc_all = fs.encode(big)
        fused = FeatureArch(fs).to(dev)
        single = FeatureArch(fs, fuse=False).to(dev)
        single.copy_tables_from(fused)
        sparse = FeatureArch(fs, sparse=True).to(dev)
        for b in (int(x) for x in args.batches.split(",")):
            batch = {k: v[:b].to(dev) for k, v in enc_all.items()}
            with torch.no_grad():
                assert torch.equal(fused.flat(batch), single.flat(batch))
            res = []
            for arch in (fused, single):
                with torch.no_grad():
                    fwd = timed(lambda: arch.flat(batch), args.repeats, sync)

                def step():
                    arch.zero_grad(set_to_none=True)
                    arch.flat(batch).square().mean().backward()
                res.append((fwd, timed(step, args.repeats, sync)))
            (ff, fb), (sf, sb) = res

            def sparse_step():
                sparse.zero_grad(set_to_none=True)
                sparse.flat(batch).square().mean().backward()
            spb = timed(sparse_step, args.repeats, sync)
            rows.append(f"| {'mod+cross+bucketize' if device_ops else 'none'} | {buckets} | {b} | {ff:.2f} | {sf:.2f} | "
                        f"{sf / ff:.2f}x | {fb:.2f} | {sb:.2f} | {sb / fb:.2f}x | {spb:.2f} |")
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
