"""ECRec on one split: the device part with the memory MemoryUpdate wrote, against the same device part
on the memory as trained, the cloud model attending over the full history, and a DIN on the
instant sequence alone (issue 11's comparison).

    python bench/ecrec.py -d ml-1m --data_dir ~/.cache/recstudio_edge/data            # trains ECRec, then compares
    python bench/ecrec.py -d ml-1m --data_dir DIR --run outputs/ECRec/ml-1m/<stamp>   # reuse a trained run
    python bench/ecrec.py --quick                                                     # generated data, ~1 min
    python bench/ecrec.py -d ml-1m --data_dir DIR --set epochs=3 --set data.max_requests_per_user=20

One ECRec checkpoint (``best.ckpt`` of a ``python run.py -m=ECRec`` run: the best weights by valid
AUC with the memory refreshed after fit) is tested four ways on the same test rows
(``model.serve``): ``device`` (the device part on the refreshed memory row: what ships),
``device_trained`` (the device part on the trained memory rows, no refresh), ``cloud`` (the
cloud model: the memory's attention over the row's full long history, ``data.max_seq_len``
latest items). The baseline ``instant DIN`` is the zoo's DIN trained on the same training rows
with the instant sequence (``edge_item_seq``) as its history, its best epoch by valid AUC.
Printed: a table of test AUC / GAUC / logloss with the deltas the issue asks about, and the
machine; written to ``bench/results/ecrec-<stamp>.{json,md}`` (``--out``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{platform.system()} {platform.release()}, {cpu}, {cores} cores available, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}")


def _trainer(epochs: int, root=None, callbacks=()):
    import lightning.pytorch as pl

    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=root is not None,
                      default_root_dir=root, enable_progress_bar=False, enable_model_summary=False,
                      use_distributed_sampler=False, num_sanity_val_steps=0, callbacks=list(callbacks))


def instant_din(dm, epochs: int, embed_dim: int, lr: float, batch_size: int, workdir: Path):
    """DIN on the instant sequence, best epoch by valid AUC; returns its test metrics."""
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from recstudio_edge.checkpoint import load_weights
    from recstudio_edge.model.ctr.din import DIN
    from recstudio_edge.wiring import connect

    class InstantDIN(DIN):
        data_format = "ecrec"

        def score(self, batch):
            return self.net(batch["item_id"], batch["edge_item_seq"])

    torch.manual_seed(0)
    model = InstantDIN(num_items=dm.num_items, embed_dim=embed_dim, lr=lr, max_seq_len=int(dm.cfg.get("edge_len", 10)))
    ck = ModelCheckpoint(dirpath=str(workdir), filename="din-best", monitor="valid/auc", mode="max", save_top_k=1)
    saved = dm.batch_size
    dm.batch_size = batch_size
    tr = _trainer(epochs, str(workdir), [ck])
    connect(model, dm, tr)
    tr.fit(model, datamodule=dm)
    dm.batch_size = saved
    load_weights(model, ck.best_model_path)
    tr.test(model, datamodule=dm, verbose=False)
    return dict(model.last_metrics["test"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-d", "--dataset", default="ml-1m")
    ap.add_argument("--data_dir", default="datasets")
    ap.add_argument("--run", help="a trained ECRec run folder (its best.ckpt); default: train one now")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides for the ECRec run and the data (as run.py's --key=value)")
    ap.add_argument("--din_epochs", type=int, default=3)
    ap.add_argument("--din_lr", type=float, default=1e-3)
    ap.add_argument("--din_batch", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="generated data (ECRec's generator), small, ~1 min")
    ap.add_argument("--out", default=str(Path("bench") / "results"))
    ap.add_argument("--output_dir", default="outputs")
    args = ap.parse_args(argv)

    import recstudio_edge.runner as runner
    from recstudio_edge.checkpoint import load_weights
    from recstudio_edge.config import build_config
    from recstudio_edge.model.edge.ecrec import ECRec

    over = {"data_dir": str(Path(args.data_dir).expanduser()), "output_dir": args.output_dir,
            "trainer.enable_progress_bar": "false"}
    if args.quick:
        over.update({"epochs": "4", "train.lr": "0.005", "train.batch_size": "256", "data.max_seq_len": "30",
                     "data.edge_len": "5"})
    for kv in args.set:
        k, _, v = kv.partition("=")
        over[k.lstrip("-")] = v
    dataset = args.dataset
    if args.quick:  # the generator's interactions, written as an atomic dataset once
        from recstudio_edge.data.formats import ecrec as fmt

        over["data_dir"] = str(Path(args.output_dir) / "bench-ecrec" / "data")
        gen = Path(over["data_dir"]) / "ecrec-generated"
        if not (gen / "ecrec-generated.inter").exists():
            d = fmt.generate(num_users=300, per_user=40, p_taste=0.3)
            gen.mkdir(parents=True, exist_ok=True)
            rows = "".join(f"{d.user_tokens[u]}\t{d.item_tokens[i]}\t{t:.0f}\n"
                           for u, i, t in zip(d.user.tolist(), d.item.tolist(), d.time.tolist()))
            (gen / "ecrec-generated.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows)
            (gen / "ecrec-generated.item").write_text(
                "item_id:token\tcategory:token\n"
                + "".join(f"{d.item_tokens[i]}\t{d.item_attrs['category'][i]}\n" for i in range(1, d.num_items)))
        dataset = "ecrec-generated"
        args.din_lr, args.din_batch = 0.005, 256
    cfg = build_config("ECRec", dataset, None, over, ECRec)
    t0 = time.perf_counter()
    if args.run:
        run_dir = Path(args.run)
        train_s = None
    else:
        res = runner.run_task(cfg, ECRec, "train")
        run_dir, train_s = Path(res["run_dir"]), res.get("train_seconds")
    dm = runner.build_datamodule(cfg, ECRec)
    model = runner.build_model(cfg, ECRec, dm)
    load_weights(model, run_dir / "best.ckpt")
    if not model.memory_is_written:
        print("note: this checkpoint's memory was never written (memory_update off?): 'device' = memory as trained")
    rows = {}
    tr = _trainer(1)
    for serve in ("device", "device_trained", "cloud"):
        model.serve = serve
        tr.test(model, datamodule=dm, verbose=False)
        rows[serve] = dict(model.last_metrics["test"])
    work = Path(args.output_dir) / "bench-ecrec"
    work.mkdir(parents=True, exist_ok=True)
    rows["instant DIN"] = instant_din(dm, args.din_epochs, 32, args.din_lr, args.din_batch, work)
    dev = rows["device"]["auc"]
    names = {"device": "device part, memory refreshed (MemoryUpdate)", "device_trained": "device part, memory as trained",
             "cloud": "cloud model, attention over the full history", "instant DIN": "DIN on the instant sequence alone"}
    lines = [f"ECRec on {dataset} (test rows: {len(dm.eval_dataset('test'))}; run {run_dir})", "",
             f"| {'variant':<48} | {'AUC':>7} | {'GAUC':>7} | {'logloss':>7} | {'device - this':>13} |",
             f"|{'-' * 50}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 15}|"]
    for k, m in rows.items():
        lines.append(f"| {names[k]:<48} | {m['auc']:>7.4f} | {m['gauc']:>7.4f} | {m['logloss']:>7.4f} | "
                     f"{dev - m['auc']:>+13.4f} |")
    checks = {"refreshed >= as trained + 0.005": dev >= rows["device_trained"]["auc"] + 0.005,
              "|refreshed - cloud| <= 0.01": abs(dev - rows["cloud"]["auc"]) <= 0.01,
              "refreshed and cloud > instant DIN": min(dev, rows["cloud"]["auc"]) > rows["instant DIN"]["auc"]}
    lines += ["", *(f"- {k}: {'yes' if v else 'NO'}" for k, v in checks.items()),
              f"- machine: {machine()}", f"- seconds: {time.perf_counter() - t0:.0f} total"
              + (f", ECRec training {train_s:.0f}" if train_s else "")]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"ecrec-{stamp}.md").write_text(text + "\n")
    (out / f"ecrec-{stamp}.json").write_text(json.dumps({"dataset": dataset, "run": str(run_dir), "test": rows,
                                                         "checks": checks, "machine": machine(),
                                                         "overrides": over}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
