#!/usr/bin/env python
"""Where a BPR epoch goes on our side (real ml-1m, RO 0.8/0.1/0.1, batch 2048, embed 64).

usage: python bench/bpr_breakdown.py [--threads 1] [--epochs 3] [--data-dir <BENCH_DATA>/ours]

Times one training epoch (median of --epochs) of:
  lightning                 recstudio_edge as the CLI runs it: wiring.connect, Trainer.fit, validation
                            off (the fused BPR kernel, the fast loop with its direct steps:
                            model/fastloop.py, train.steps_per_call from BPR.yaml);
  lightning, automatic loop the same with Lightning's automatic optimisation (forced by an
                            ``optimizer_step`` override): the cost of its closure and hooks;
  lightning, generic path   ``model.fused=false``: the tower's autograd path instead of the kernel;
  manual ...                the same model, data module and optimiser in a plain Python loop
                            (compute_loss, zero_grad, backward, step): Lightning's cost is the
                            difference; with the kernel or the generic path; with the direct
                            steps' train_grads (no autograd graph) and fused Adam step; forward +
                            backward (or train_grads) only; sparse embeddings +
                            torch.optim.SparseAdam (generic path; lazy Adam, so not numerically
                            the same optimiser).
Only timing; nothing in recstudio_edge is changed (the variants patch the model object here).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from common import OURS_DATA, ensure_ours_data  # noqa: E402  (bench/common.py; bench/ is on sys.path as the script's folder)


def build(data_dir, threads):
    from recstudio_edge import runner
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class

    torch.set_num_threads(threads)
    cls = get_model_class("BPR")
    cfg = build_config(cls.registry_name, "ml-1m", None, {"data_dir": data_dir, "trainer.enable_progress_bar": "false",
                                                          "output_dir": tempfile.mkdtemp()}, cls)
    dm = runner.build_datamodule(cfg, cls)
    return runner, cfg, cls, dm


def manual_epoch(model, dm, opt, step=True, direct=False):
    """One epoch of a plain loop; ``direct``: the fast loop's direct steps (the model's train_grads,
    no autograd graph, and the fused Adam step as one kernel call: model/fastloop.py)."""
    from recstudio_edge.model.fastloop import FusedAdamStep

    model.train()
    t = time.perf_counter()
    for idx, batch in enumerate(dm.train_dataloader()):
        opt.zero_grad(set_to_none=True)
        loss = model.train_grads(batch) if direct else None
        if loss is None:
            loss = model.compute_loss(batch)
            loss.backward()
        if step:
            fused = FusedAdamStep.of(opt) if direct else None
            if fused is None or not fused.step():
                opt.step()
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data-dir", default=str(OURS_DATA))
    a = ap.parse_args(argv)
    if a.data_dir == str(OURS_DATA):
        ensure_ours_data()  # <OURS_DATA>/ml-1m/ml-1m.inter -> the real atomic file
    runner, cfg, cls, dm = build(a.data_dir, a.threads)
    res = {}

    # lightning: the CLI's Trainer, validation off, one fit over all epochs; per-epoch timer
    import lightning.pytorch as pl

    from recstudio_edge.wiring import connect

    class T(pl.Callback):
        def __init__(self):
            self.s = []

        def on_train_epoch_start(self, tr, m):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, tr, m):
            self.s.append(time.perf_counter() - self.t)

    def fit(name, model):
        tr, _ = runner.build_trainer(cfg, Path(cfg["output_dir"]), "recall@10", "max", epochs=a.epochs,
                                     with_checkpoints=False)
        tr.limit_val_batches = 0
        timer = T()
        tr.callbacks.append(timer)
        connect(model, dm, tr)  # as the runner does: data facts, pipeline negatives, the fast loop
        tr.fit(model, datamodule=dm)
        res[name] = timer.s

    fit("lightning", runner.build_model(cfg, cls, dm))

    class Automatic(cls):  # an optimizer_step override keeps Lightning's automatic loop
        def optimizer_step(self, *args, **kwargs):
            return super().optimizer_step(*args, **kwargs)

    auto = runner.build_model(cfg, cls, dm)
    auto.__class__ = Automatic
    fit("lightning, automatic loop", auto)
    generic = runner.build_model(cfg, cls, dm)
    generic.fused = False
    fit("lightning, generic path (fused=false)", generic)

    def fresh():
        m = runner.build_model(cfg, cls, dm)
        connect(m, dm)  # exclude_seen needs the keys; no trainer: one batch per loader item
        return m

    def generic_model():
        m = fresh()
        m.fused = False
        return m

    for name, make_model, step, direct in (
            ("manual, fused kernel", fresh, True, False),
            ("manual, train_grads + fused Adam step", fresh, True, True),
            ("manual, generic path", generic_model, True, False),
            ("manual, fused kernel, forward+backward only", fresh, False, False),
            ("manual, train_grads only (no optimiser)", fresh, False, True)):
        m = make_model()
        opt = m.configure_optimizers()
        res[name] = [manual_epoch(m, dm, opt, step, direct) for _ in range(a.epochs)]

    m = generic_model()
    for emb in (m.user_emb, m.item_emb):
        emb.sparse = True
    opt = torch.optim.SparseAdam(list(m.parameters()), lr=1e-3)
    res["manual, sparse embeddings + SparseAdam"] = [manual_epoch(m, dm, opt) for _ in range(a.epochs)]

    print(f"BPR ml-1m, one epoch = {len(dm.train_dataloader())} batches of 2048; torch threads {torch.get_num_threads()}; "
          f"load avg {open('/proc/loadavg').read().split()[:3]}")
    for k, v in res.items():
        if isinstance(v, str):
            print(f"{k:46s} {v}")
        else:
            print(f"{k:46s} median {statistics.median(v):.2f} s/epoch  (each: {', '.join(f'{x:.2f}' for x in v)})")


if __name__ == "__main__":
    main()
