#!/usr/bin/env python
"""Where a DIN / PINRec training step goes (real ml-1m, leave-one-out, batch 1024 positives + 1024
negatives, history 50, embed 32: the default configs), and the training rows/s.

usage: python bench/din_breakdown.py [--models DIN,PINRec] [--trunk DIN] [--threads 1] [--steps 60]
                                     [--precision 32-true] [--data-dir <BENCH_DATA>/ours] [--json OUT]

For each model, on the same ``--steps`` training batches of the real data module:

  loader            building the batches (``next()`` of the training loader: windows, negatives)
  forward           the model's ``compute_loss`` (no gradient kept)
  forward+backward  ``compute_loss`` and ``backward``
  optimizer         Adam's step on the gradients (fused, as the runner builds it)
  step, plain loop  loader + forward + backward + step in a plain Python loop: rows/s
  samples           the training samples (once per run), the validation rows with their fixed
                    negatives (once per run), one validation pass (every epoch)
  lightning         the command line's Trainer (``runner.build_trainer``, validation off) over the
                    same number of batches: rows/s, and Lightning's cost = its time - the plain loop's

and the forward + backward of each part of the network on the same batch's tensors: the
embedding lookups (target and history), ``target_trans``, ``seq_trans`` on every history
position, the attention (query / key / value maps, softmax, weighted sum), the classifier, the
loss. PINRec is measured in its second stage (plugins on, ``group_id`` routed) and its first
(the trunk alone); the parts are the DIN network's (``--trunk SASRec`` or ``GRU4Rec``: PINRec
with that trunk, whole-step figures only). Only timing: nothing is changed. The script
runs on an older tree too (``git worktree add /tmp/before <rev>``, then
``python /tmp/before/bench/din_breakdown.py``), so before and after come from one sitting.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from common import OURS_DATA, ensure_ours_data, machine, machine_line  # noqa: E402  (bench/common.py)


PRECISION = ["32-true"]
TRUNK = ["DIN"]


def autocast():
    """The precision's autocast context for the plain-loop timings (as Lightning's bf16-mixed)."""
    import contextlib

    if PRECISION[0].startswith("bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build(name: str, data_dir: str, threads: int):
    from recstudio_edge import runner
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class

    torch.set_num_threads(threads)
    cls = get_model_class(name)
    over = {"data_dir": data_dir, "trainer.enable_progress_bar": "false", "output_dir": tempfile.mkdtemp()}
    if name == "PINRec":
        over["plugin_stage.enabled"] = "false"
        if TRUNK[0] != "DIN":
            over["model.arch_config"] = json.dumps({"trunk": TRUNK[0]})
    over["trainer.precision"] = PRECISION[0]
    cfg = build_config(cls.registry_name, "ml-1m", None, over, cls)
    dm = runner.build_datamodule(cfg, cls)
    return runner, cfg, cls, dm


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def fwd_bwd(fn, *inputs):
    """A closure: ``fn(*inputs)`` forward and backward (gradient of ones) with fresh leaf copies."""
    leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]

    def run():
        y = fn(*leaves)
        y.backward(torch.ones_like(y))
        for x in leaves:
            x.grad = None
    return run


def part_times(model, batch, repeat: int):
    """fwd+bwd seconds of each part of the DIN network (DIN, or PINRec's DIN trunk) on ``batch``."""
    net = model.net
    f = net.features
    emb = f.item_emb
    item, seq = batch["item_id"], batch["seq"]
    enc = f.encoder
    att = enc.attention
    D = emb.weight.size(1)
    with torch.no_grad():
        t = f.target_trans(emb(item))
        h = emb(seq)
        hs = enc.seq_trans(h)
        group = batch.get("group_id") if getattr(model, "plugins_enabled", False) else None
        feats = f(item, seq) if group is None else f(item, seq, group)
    w = emb.weight.detach().requires_grad_(True)

    def lookups():
        y = F.embedding(seq, w).sum() + F.embedding(item, w).sum()
        y.backward()
        w.grad = None

    parts = {
        "embedding lookups (target + history)": lookups,
        "target_trans": fwd_bwd(f.target_trans, emb(item).detach()),
        f"history encoder per position ({seq.numel():,} x {D})": fwd_bwd(lambda a, b: enc(a, b, seq), t, h),
        "  seq_trans per position": fwd_bwd(enc.seq_trans, h),
        "  attention per position": fwd_bwd(lambda a, b: att(a, b, seq != 0), t, hs),
    }
    if hasattr(enc, "forward_table"):  # this tree computes seq_trans once per table row
        table = emb.weight.detach()
        try:  # and reads each history a positive and its negatives share once
            from recstudio_edge.model.layers import batch_histories

            hist = batch_histories(batch)
        except ImportError:
            hist = seq
        parts[f"history encoder on the table ({table.size(0):,} rows), {hist.size(0)} histories"] = fwd_bwd(
            lambda a, tab: enc.forward_table(a, tab, hist, hist), t, table)
    parts["classifier"] = fwd_bwd(net.classifier, feats)
    logits = model.score(batch).detach()
    parts["loss (BCE)"] = fwd_bwd(lambda z: F.binary_cross_entropy_with_logits(z, batch["label"].float()), logits)
    return {k: timed(v, repeat) for k, v in parts.items()}


def plain_loop(model, batches, opt):
    model.train()
    t = time.perf_counter()
    for b in batches:
        with autocast():
            loss = model.compute_loss(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def measure(name: str, a, stage2: bool):
    import lightning.pytorch as pl

    from recstudio_edge.wiring import connect

    runner, cfg, cls, dm = build(name, a.data_dir, a.threads)
    model = runner.build_model(cfg, cls, dm)
    connect(model, dm)
    if stage2:
        model.set_plugins(True)
    loader = iter(dm.train_dataloader())
    t = time.perf_counter()
    batches = [next(loader) for _ in range(a.steps)]
    load_s = (time.perf_counter() - t) / a.steps
    rows = statistics.mean(b["label"].numel() for b in batches)
    b0 = batches[0]
    opt = model.configure_optimizers()
    trunk = f" ({TRUNK[0]} trunk)" if name == "PINRec" else ""
    res = {"model": name + trunk + (" (plugins on)" if stage2 else ""), "rows_per_batch": rows,
           "batches_per_epoch": len(dm.train_dataloader()), "loader_s": load_s}

    def fwd():
        with torch.no_grad(), autocast():
            model.compute_loss(b0)

    def fb():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = model.compute_loss(b0)
        loss.backward()

    res["forward_s"] = timed(fwd, a.repeat)
    res["forward_backward_s"] = timed(fb, a.repeat)
    fb()
    res["optimizer_s"] = timed(opt.step, a.repeat)
    if TRUNK[0] == "DIN" or name == "DIN":  # the parts are DIN's network
        with autocast():
            res["parts_s"] = part_times(model, b0, a.repeat)
    plain_loop(model, batches[:3], opt)
    loop_s = plain_loop(model, batches, opt) / a.steps
    res["plain_step_s"] = loop_s + load_s
    res["plain_rows_per_s"] = rows / (loop_s + load_s)

    class T(pl.Callback):
        def on_train_batch_start(self, tr, m, batch, i):
            if i == 3:
                self.t = time.perf_counter()

        def on_train_epoch_end(self, tr, m):
            self.s = time.perf_counter() - self.t

    # the data side of an epoch: training samples (once per run), evaluation rows and their fixed
    # negatives (once per stage), and one validation pass of the model (every epoch)
    builder = dm.builder
    t = time.perf_counter()
    builder.train(dm.kind)
    res["train_samples_s"] = time.perf_counter() - t
    t = time.perf_counter()
    valid = builder.eval(dm.kind, "valid")
    res["valid_samples_s"] = time.perf_counter() - t
    res["valid_rows"] = len(valid)
    vt, _ = runner.build_trainer(cfg, Path(cfg["output_dir"]), "auc", "max", epochs=1, with_checkpoints=False)
    dm.val_dataloader()  # built (and cached) outside the timed pass
    t = time.perf_counter()
    vt.validate(model, datamodule=dm, verbose=False)
    res["validation_pass_s"] = time.perf_counter() - t

    tr, _ = runner.build_trainer(cfg, Path(cfg["output_dir"]), "auc", "max", epochs=1, with_checkpoints=False)
    tr.limit_val_batches = 0
    tr.limit_train_batches = a.steps + 3
    timer = T()
    tr.callbacks.append(timer)
    model = runner.build_model(cfg, cls, dm)
    connect(model, dm, tr)
    if stage2:
        model.set_plugins(True)
    tr.fit(model, datamodule=dm)
    res["lightning_step_s"] = timer.s / a.steps
    res["lightning_rows_per_s"] = rows / res["lightning_step_s"]
    return res


def show(res):
    ms = lambda s: f"{1000 * s:8.1f} ms"  # noqa: E731
    print(f"\n## {res['model']}: {res['rows_per_batch']:.0f} rows per batch, {res['batches_per_epoch']} batches per epoch")
    print(f"{'loader (build one batch)':46s} {ms(res['loader_s'])}")
    print(f"{'forward (compute_loss)':46s} {ms(res['forward_s'])}")
    print(f"{'forward + backward':46s} {ms(res['forward_backward_s'])}")
    print(f"{'optimizer step (fused Adam)':46s} {ms(res['optimizer_s'])}")
    print("parts, forward + backward each:" if "parts_s" in res else "")
    for k, v in res.get("parts_s", {}).items():
        print(f"  {k:44s} {ms(v)}")
    print(f"{'plain loop, one step incl. loader':46s} {ms(res['plain_step_s'])}   {res['plain_rows_per_s']:,.0f} rows/s")
    print(f"{'training samples (positives, seen items)':46s} {res['train_samples_s']:8.2f} s   once per run")
    print(f"{'valid rows + fixed negatives':46s} {res['valid_samples_s']:8.2f} s   once per run "
          f"({res['valid_rows']:,} rows; test the same)")
    print(f"{'one validation pass (Trainer.validate)':46s} {res['validation_pass_s']:8.2f} s   every epoch")
    print(f"{'lightning (the CLI Trainer), one step':46s} {ms(res['lightning_step_s'])}   "
          f"{res['lightning_rows_per_s']:,.0f} rows/s  (epoch: {res['lightning_step_s'] * res['batches_per_epoch']:.0f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="DIN,PINRec")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=60, help="training batches timed (plain loop and Lightning)")
    ap.add_argument("--repeat", type=int, default=10, help="repeats of each single-batch timing (median)")
    ap.add_argument("--data-dir", default=str(OURS_DATA))
    ap.add_argument("--trunk", default="DIN", help="PINRec's trunk: DIN | SASRec | GRU4Rec (model.arch_config)")
    ap.add_argument("--precision", default="32-true", help="trainer.precision (bf16-mixed: the plain-loop and "
                    "single-batch timings run under torch.autocast(bfloat16) too)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    PRECISION[0] = a.precision
    TRUNK[0] = a.trunk
    if a.data_dir == str(OURS_DATA):
        ensure_ours_data()  # <OURS_DATA>/ml-1m/ml-1m.inter -> the real atomic file
    print(machine_line(machine()))
    print(f"code: {REPO}; torch {torch.__version__}, {a.threads} thread(s), precision {a.precision}")
    out = []
    for name in a.models.split(","):
        for stage2 in ((False, True) if name == "PINRec" else (False,)):
            res = measure(name, a, stage2)
            show(res)
            out.append(res)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
