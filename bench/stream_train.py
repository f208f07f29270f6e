#!/usr/bin/env python
"""Training from streamed Parquet shards against training from in-memory tensors: is the reader the
bottleneck?

usage: OMP_NUM_THREADS=1 python bench/stream_train.py [--model DLRM] [--rows 400000] [--epochs 2]
                                                   [--workers 0 1] [--format parquet] [--data-dir DIR]

The same model, config and generated criteo-synth rows (``configs/data/criteo-synth.yaml``, the shards
under ``--data-dir``, default ``<cache>/recstudio_edge/bench/stream``), trained ``--epochs`` epochs:

- ``memory``: every shard read once, encoded into tensors, batches gathered from them (``data.stream:
  false``);
- ``stream, w workers``: ``ShardedStream`` over the shards with ``w`` loader workers (``data.stream:
  true``), the windowed shuffle of ``data.shuffle_buffer`` rows, the encoding done per batch.

Each run is a child process (its own peak memory); samples/s counts training rows over the fit's wall
time (validation off, the first epoch included: worker start-up is part of the cost). Prints a table
with the machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import default_bench_data, machine, machine_line, md_table, new_results_dir, run_child, thread_env  # noqa: E402


def worker(args) -> dict:
    """One measured fit (in the child process)."""
    import lightning.pytorch as pl
    import torch

    from recstudio_edge.callbacks.stream_position import StreamPosition
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class
    from recstudio_edge.runner import build_datamodule, build_model
    from recstudio_edge.wiring import connect

    cls = get_model_class(args.model)
    over = {"data_dir": args.data_dir, "data.generator.rows": str(args.rows),
            "data.generator.format": args.format, "data.stream": str(args.stream).lower(),
            "train.num_workers": str(args.workers[0]), "seed": "0"}
    if args.batch_size:
        over["train.batch_size"] = str(args.batch_size)
    cfg = build_config(args.model, "criteo-synth", None, over, cls)
    cfg["data"]["name"] = f"criteo-synth-{args.rows}-{args.format}"
    torch.manual_seed(0)
    dm = build_datamodule(cfg, cls)
    model = build_model(cfg, cls, dm)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[StreamPosition()])
    connect(model, dm, trainer)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    wall = time.perf_counter() - t0
    rows = dm.stream.rows if dm.streaming else int(dm.source.stats["train_rows"])  # the stream counts its shards
    return {"rows": rows * args.epochs, "seconds": round(wall, 2), "samples_per_s": round(rows * args.epochs / wall)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="DLRM")
    p.add_argument("--rows", type=int, default=400_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="train.batch_size (default: the model's YAML)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--format", default="parquet", choices=["parquet", "orc"])
    p.add_argument("--data-dir", default=str(default_bench_data() / "stream"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    base = [sys.executable, __file__, "--worker", "--model", args.model, "--rows", str(args.rows), "--epochs",
            str(args.epochs), "--format", args.format, "--data-dir", args.data_dir]
    if args.batch_size:
        base += ["--batch-size", str(args.batch_size)]
    runs = [("memory", base + ["--workers", "0"])]
    runs += [(f"stream, {w} worker{'s' if w != 1 else ''}", base + ["--stream", "--workers", str(w)])
             for w in args.workers]
    out = new_results_dir("stream_train", False)
    print(machine_line(machine()))
    print(f"{args.model} on criteo-synth ({args.rows} rows, {args.format}), {args.epochs} epochs, validation off\n")
    rows = []
    for k, (name, cmd) in enumerate(runs):
        log = out / f"run{k}.log"
        info = run_child(cmd, log, timeout=3600, env=thread_env(1))
        if info["rc"] != 0:
            print(f"  {name}: failed (rc {info['rc']}), see {log}")
            continue
        res = json.loads(log.read_text().strip().splitlines()[-1])
        rows.append((name, res, info["maxrss_mb"]))
        print(f"  {name}: {res['samples_per_s']:,} samples/s ({res['seconds']} s), peak {info['maxrss_mb']:.0f} MB",
              flush=True)
    if not rows:
        return 1
    mem = rows[0][1]["samples_per_s"]
    table = md_table(["data", "samples/s", "vs memory", "fit s", "peak MB"],
                     [[n, f"{r['samples_per_s']:,}", f"{r['samples_per_s'] / mem:.2f}", r["seconds"], f"{pk:.0f}"]
                      for n, r, pk in rows])
    print("\n" + table)
    (out / "table.md").write_text(machine_line(machine()) + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
