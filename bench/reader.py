"""Reader benchmark: rows/s of ``ShardedStream`` alone (no model), Parquet and ORC, 0 / 1 / 2
DataLoader workers, on generated Criteo-format shards (``recstudio_edge.data.criteo``, planted
mode: 13 integer + 26 hex-string columns, nulls, long-tailed values).

What one epoch costs, per ``convert`` (what turns a batch's pyarrow Table into tensors):

- ``arrow``: nothing (the batch's row count only): read the row groups / stripes, permute the
  shuffle windows, cut the batches -- the reader's own cost;
- ``tensors`` (not run by default): label and I1..I13 to tensors, C1..C26 parsed from hex to
  int64 (``criteo.hex_values``, vectorised numpy: slower than pyarrow's hashing below);
- ``features``: the CTR pipeline's reader side, ``FeatureSet.encode`` of a Criteo feature
  declaration (dense ``fill_null``, 26 murmur ``hash`` ops) plus the label.

Each (format, workers, convert) is timed over ``--epochs`` whole epochs through
``ShardedStream.loader()`` (worker start-up included: it is part of every epoch); the best
epoch is reported, with the CPU time the main process spent in it per row (with workers: what
the training process gives up to receive the batches). One torch thread per process. The data is written once under
``$BENCH_DATA/criteo-reader`` (kept for reruns).

    OMP_NUM_THREADS=1 python bench/reader.py          # ~3 min
    OMP_NUM_THREADS=1 python bench/reader.py --quick                                         # ~20 s
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import BENCH_DATA, machine, machine_line, md_table, new_results_dir  # noqa: E402
from recstudio_edge.data import criteo  # noqa: E402
from recstudio_edge.data.streaming import ShardedStream  # noqa: E402


def convert_arrow(table):
    return {"rows": torch.tensor(table.num_rows)}


def convert_tensors(table):
    out = {"label": torch.from_numpy(table.column("label").to_numpy().astype(np.float32))}
    dense = np.stack([table.column(c).fill_null(0).to_numpy() for c in criteo.CRITEO_DENSE], axis=1)
    out["dense"] = torch.from_numpy(dense.astype(np.float32))
    for c in criteo.CRITEO_SPARSE:
        values, valid = criteo.hex_values(table.column(c))
        out[c] = torch.from_numpy(np.where(valid, values.astype(np.int64) + 1, 0))
    return out


class ConvertFeatures:
    """FeatureSet.encode of a Criteo declaration + the label (picklable for the workers)."""

    def __init__(self, buckets: int):
        from recstudio_edge.features import FeatureSet

        specs = [{"name": "dense", "type": "dense", "fields": criteo.CRITEO_DENSE,
                  "ops": [{"op": "fill_null", "value": 0}, {"op": "log1p"}]}]
        ops = [{"op": "fill_null", "value": ""}, {"op": "hash", "buckets": buckets}]
        specs += [{"name": c, "type": "sparse", "fields": [c], "ops": ops} for c in criteo.CRITEO_SPARSE]
        self.fs = FeatureSet.from_config(specs)

    def __call__(self, table):
        out = dict(self.fs.encode(table))
        out["label"] = torch.from_numpy(table.column("label").to_numpy().astype(np.float32))
        return out


def ensure_data(root: Path, rows: int, row_group: int, shards: int) -> dict:
    out = {}
    for fmt in ("parquet", "orc"):
        folder = root / f"{fmt}-{rows}-{row_group}-{shards}"
        files = sorted(folder.glob(f"*.{fmt}")) if folder.is_dir() else []
        if len(files) != shards:
            t0 = time.perf_counter()
            files = criteo.generate(folder, rows, seed=0, shards=shards, fmt=fmt, row_group_size=row_group)
            print(f"wrote {rows} rows as {shards} {fmt} shard(s) in {time.perf_counter() - t0:.1f} s", flush=True)
        out[fmt] = (folder, sum(f.stat().st_size for f in files))
    return out


def time_epochs(folder: Path, workers: int, convert, batch: int, buffer: int, epochs: int):
    ds = ShardedStream(folder, convert=convert, batch_size=batch, shuffle_buffer=buffer, seed=0,
                       num_workers=workers, rank=0, world_size=1)
    times, cpu = [], []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for b in ds.loader():
            n += 1
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert n == len(ds), (n, len(ds))
    best = int(np.argmin(times))
    return ds.rows, times[best], times, cpu[best]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--row-group-size", type=int, default=65536)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--shuffle-buffer", type=int, default=262144)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--converts", nargs="+", default=["arrow", "features"],
                    choices=["arrow", "tensors", "features"])
    ap.add_argument("--buckets", type=int, default=1_000_000, help="hash buckets of the features convert")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="100k rows, one epoch")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.row_group_size, args.epochs, args.shuffle_buffer = 100_000, 8192, 1, 32768
    torch.set_num_threads(1)
    m = machine()
    root = Path(os.environ.get("READER_BENCH_DATA") or BENCH_DATA / "criteo-reader")
    data = ensure_data(root, args.rows, args.row_group_size, args.shards)
    converts = {"arrow": convert_arrow, "tensors": convert_tensors}
    if "features" in args.converts:
        converts["features"] = ConvertFeatures(args.buckets)
    import pyarrow.parquet as pq

    sample = pq.ParquetFile(next(iter(sorted(data["parquet"][0].glob("*.parquet"))))).read_row_group(0).slice(0, 1024)
    for conv in args.converts:  # warm up (imports, first calls) outside the timings
        converts[conv](sample)
    rows_out, results = [], []
    for fmt, (folder, size) in data.items():
        for conv in args.converts:
            for w in args.workers:
                n, best, times, cpu = time_epochs(folder, w, converts[conv], args.batch, args.shuffle_buffer,
                                                  args.epochs)
                rate = n / best
                results.append({"format": fmt, "convert": conv, "workers": w, "rows": n, "bytes": size,
                                "epoch_s": times, "rows_per_s": rate, "main_cpu_s": cpu})
                rows_out.append([fmt, conv, w, f"{rate:,.0f}", f"{best:.2f}", f"{cpu / n * 1e6:.2f}",
                                 f"{size / best / 2**20:.0f}"])
                epochs = ", ".join(f"{t:.2f}" for t in times)
                print(f"{fmt:8s} {conv:9s} workers={w}: {rate:,.0f} rows/s (epochs {epochs} s)", flush=True)
    print()
    print(machine_line(m))
    print(f"{args.rows:,} Criteo rows, {args.shards} shards, row groups / stripes of {args.row_group_size:,}, "
          f"batch {args.batch:,}, shuffle buffer {args.shuffle_buffer:,} rows, best of {args.epochs} epoch(s)")
    print(md_table(["format", "convert", "workers", "rows/s", "epoch s", "main-process CPU us/row", "file MiB/s"],
                   rows_out))
    out = new_results_dir("reader", args.quick)
    (out / "results.json").write_text(json.dumps({"machine": m, "args": vars(args), "results": results}, indent=1))
    print(f"\nresults in {out}")


if __name__ == "__main__":
    main()
