"""One measured recstudio_edge run in its own process (started by bench/common.py:run_ours).

usage: python bench/ours_worker.py SPEC.json OUT.json

Tasks (``spec["task"]``):

``parse``  ``load_interactions`` (read + filter + remap + split) timed on its own, with the
           cache off (``use_cache: false``) or from the cache; then the data module set-up
           (``RecDataModule.setup`` + the train dataset), timed separately.
``train``  the command line's own train task (``runner.run_task``, as ``python run.py`` does)
           with a timing callback added to the Trainer that ``runner.build_trainer`` builds:
           per epoch the training seconds (first batch start to last batch end: validation,
           checkpointing and start-up excluded), samples and targets trained, the validation
           seconds and metrics, and optionally a test-set probe (full-sort test metrics after
           each validation and every ``probe_every`` batches of the first epoch; probe time is
           excluded from every reported time).

Nothing in recstudio_edge is modified: ``runner.build_trainer`` is wrapped in this process only.
"""
from __future__ import annotations

import json
import sys
import time

T_START = time.perf_counter()

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402


def vm_hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def base_overrides(spec):
    from common import RUNS_DIR  # bench/common.py (this script's folder is on sys.path)

    over = {"data_dir": spec["data_dir"], "output_dir": spec.get("output_dir", str(RUNS_DIR)),
            "trainer.enable_progress_bar": "false"}
    over.update({k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (spec.get("overrides") or {}).items()})
    return over


def task_parse(spec):
    from recstudio_edge.config import build_config
    from recstudio_edge.data.datamodule import RecDataModule, load_interactions
    from recstudio_edge.model import get_model_class

    cls = get_model_class(spec["model"])
    cfg = build_config(cls.registry_name, spec["dataset"], None, base_overrides(spec), cls)
    t_ready = time.perf_counter() - T_START
    t = time.perf_counter()
    data = load_interactions(cfg["data_dir"], cfg["data"], int(cfg["seed"]), use_cache=bool(spec["use_cache"]))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    dm = RecDataModule(cfg["data"], cfg["data_dir"], cls.data_kind, batch_size=cfg["train"]["batch_size"],
                       eval_batch_size=cfg["eval"]["batch_size"], seed=int(cfg["seed"]))
    dm.data = data
    dm.setup()
    dm.train_dataloader()
    setup_s = time.perf_counter() - t
    return {"load_s": load_s, "setup_s": setup_s, "import_s": t_ready, "stats": data.stats,
            "use_cache": bool(spec["use_cache"]), "num_users": data.num_users - 1, "num_items": data.num_items - 1}


class Timer(pl.Callback):
    """Lightning callback: per-epoch timings, valid metrics, optional test probes."""

    def __init__(self, spec):
        self.probe = bool(spec.get("probe_test", False))
        self.probe_every = int(spec.get("probe_every", 0) or 0)
        self.probe_metric = spec.get("probe_metric", "ndcg@10")
        self.budget = spec.get("time_budget_s")
        self.stop_at = spec.get("stop_at")  # {"metric": "ndcg@10", "value": x}: stop once test >= value
        self.epochs, self.evals, self.probes = [], [], []
        self.probe_s = 0.0  # excluded from every reported time
        self.fit_t0 = None
        self.cur = None
        self.reached = None
        self.partial_path = spec.get("_partial_path")

    # helpers -------------------------------------------------------------------------------
    def elapsed(self):
        """Seconds since fit start, probe time excluded (training + validation + checkpoints)."""
        return time.perf_counter() - self.fit_t0 - self.probe_s

    def run_probe(self, trainer, model, where):
        t = time.perf_counter()
        was_training = model.training
        model.eval()
        dm = trainer.datamodule
        acc = model._new_acc()
        model._acc["_probe"] = acc
        with torch.no_grad():
            for batch in dm.test_dataloader():
                batch = {k: v.to(model.device) for k, v in batch.items()}
                model._eval_step(batch, "_probe")
        model._acc.pop("_probe", None)
        sums, count = acc.state()
        values = acc.compute(sums, count)
        if was_training:
            model.train()
        dt = time.perf_counter() - t
        self.probe_s += dt
        rec = {"where": where, "epoch": trainer.current_epoch, "elapsed_s": self.elapsed(),
               "train_s_cum": sum(e["train_s"] for e in self.epochs) + (
                   (self.cur["t_last"] - self.cur["t0"] - self.cur["probe_s"]) if self.cur else 0.0),
               "probe_s": dt, "test": {k: float(v) for k, v in values.items()}}
        self.probes.append(rec)
        if self.stop_at and self.reached is None and rec["test"].get(self.stop_at["metric"], -1) >= self.stop_at["value"]:
            self.reached = rec
        return rec

    # hooks ------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, model):
        self.fit_t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer, model):
        now = time.perf_counter()
        self.cur = {"epoch": trainer.current_epoch, "t0": now, "t_last": now, "batches": 0, "samples": 0,
                    "targets": 0, "probe_s": 0.0}

    def on_train_batch_end(self, trainer, model, outputs, batch, batch_idx):
        c = self.cur
        c["t_last"] = time.perf_counter()
        for b in (batch if isinstance(batch, list) else [batch]):  # a list: train.steps_per_call batches
            c["batches"] += 1
            c["samples"] += int(b["user_id"].numel())
            c["targets"] += int((b["target_seq"] > 0).sum()) if "target_seq" in b else int(b["user_id"].numel())
        if self.probe and self.probe_every and trainer.current_epoch == 0 and (batch_idx + 1) % self.probe_every == 0 \
                and (batch_idx + 1) < trainer.num_training_batches:
            p0 = self.probe_s
            self.run_probe(trainer, model, f"epoch0-batch{batch_idx + 1}")
            c["probe_s"] += self.probe_s - p0
            c["t_last"] = time.perf_counter()

    def _eval_start(self, trainer, kind):
        self._ev = (kind, trainer.state.fn.value if hasattr(trainer.state.fn, "value") else str(trainer.state.fn),
                    time.perf_counter())

    def _eval_end(self, trainer, model, kind):
        k, fn, t0 = self._ev
        rec = {"kind": kind, "fn": fn, "seconds": time.perf_counter() - t0, "epoch": trainer.current_epoch}
        self.evals.append(rec)
        return rec

    def on_validation_start(self, trainer, model):
        self._eval_start(trainer, "valid")
        if self.cur is not None and fn_is_fit(trainer) and not trainer.sanity_checking:
            c = self.cur
            c["train_s"] = c["t_last"] - c["t0"] - c["probe_s"]

    def on_validation_end(self, trainer, model):
        rec = self._eval_end(trainer, model, "valid")
        if fn_is_fit(trainer) and not trainer.sanity_checking and self.cur is not None:
            c = self.cur
            c.setdefault("train_s", c["t_last"] - c["t0"] - c["probe_s"])
            c["valid_s"] = rec["seconds"]
            c["valid"] = dict(model.last_metrics.get("valid", {}))
            if self.probe:
                p = self.run_probe(trainer, model, f"epoch{trainer.current_epoch}-end")
                c["test_probe"] = p["test"]

    def on_test_start(self, trainer, model):
        self._eval_start(trainer, "test")

    def on_test_end(self, trainer, model):
        self._eval_end(trainer, model, "test")

    def on_train_epoch_end(self, trainer, model):
        c = self.cur
        c.setdefault("train_s", c["t_last"] - c["t0"] - c["probe_s"])
        c["elapsed_s"] = self.elapsed()
        self.epochs.append({k: v for k, v in c.items() if k not in ("t0", "t_last")})
        self.cur = None
        if self.partial_path:
            try:
                with open(self.partial_path, "w") as f:
                    json.dump({"epochs": self.epochs, "probes": self.probes, "evals": self.evals,
                               "partial": True}, f, default=float)
            except OSError:
                pass
        if self.budget is not None and self.elapsed() > float(self.budget):
            trainer.should_stop = True
        if self.stop_at and self.stop_at.get("stop") and self.reached is not None:
            trainer.should_stop = True


def fn_is_fit(trainer):
    fn = trainer.state.fn
    return (fn.value if hasattr(fn, "value") else str(fn)) == "fit"


def patch_bpr_unseen_negatives():
    """Diagnostic only (spec "patch": "bpr_unseen_negatives"), in this process: BPR draws its
    negative from the items the user has NOT interacted with in training (as RecBole and the
    BPR paper do) instead of uniformly over all items but the positive."""
    from recstudio_edge.data.dataset import UserItemIndex
    from recstudio_edge.model.general.bpr import BPR

    orig_setup = BPR.setup

    def setup(self, stage):
        orig_setup(self, stage)
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and not hasattr(self, "_bench_seen"):
            self._bench_seen = UserItemIndex(dm.data, dm.train_mask())

    def compute_loss(self, batch):
        users, pos = batch["user_id"], batch["item_id"]
        neg = self._bench_seen.sample_unseen(users.cpu()).to(pos.device).unsqueeze(1)
        q = self.query(batch)
        pos_s = self.scorer(q, self.item_vectors(pos))
        neg_s = self.scorer(q.unsqueeze(1), self.item_vectors(neg))
        return self.loss_fn(pos_s, neg_s)

    BPR.setup, BPR.compute_loss = setup, compute_loss


def task_train(spec):
    if spec.get("patch") == "bpr_unseen_negatives":
        patch_bpr_unseen_negatives()
    import recstudio_edge.runner as runner
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class

    cls = get_model_class(spec["model"])
    over = base_overrides(spec)
    if spec.get("epochs") is not None:
        over["epochs"] = str(int(spec["epochs"]))
    cfg = build_config(cls.registry_name, spec["dataset"], None, over, cls)

    timer = Timer(spec)
    orig_bt, orig_bd = runner.build_trainer, runner.build_datamodule
    data_t = {}

    def build_trainer(*a, **k):
        tr, ck = orig_bt(*a, **k)
        tr.callbacks.append(timer)
        return tr, ck

    def build_datamodule(*a, **k):
        t = time.perf_counter()
        dm = orig_bd(*a, **k)
        data_t["data_s"] = time.perf_counter() - t
        return dm

    runner.build_trainer, runner.build_datamodule = build_trainer, build_datamodule
    t = time.perf_counter()
    res = runner.run_task(cfg, cls, "train")
    run_s = time.perf_counter() - t
    eps = timer.epochs
    train_s = [e["train_s"] for e in eps]
    return {"result": res, "config": {"model": cls.registry_name, "dataset": spec["dataset"], "data": cfg["data"],
                                      "train": cfg["train"], "eval": cfg["eval"], "model_args": cfg.get("model"),
                                      "epochs": cfg["epochs"]},
            "epochs": eps, "evals": timer.evals, "probes": timer.probes, "probe_s_total": timer.probe_s,
            "reached": timer.reached, "data_s": data_t.get("data_s"), "run_task_s": run_s,
            "run_task_s_excl_probes": run_s - timer.probe_s, "train_s_total": sum(train_s),
            "fit_elapsed_s": timer.elapsed() if timer.fit_t0 else None}


def main():
    spec_path, out_path = sys.argv[1], sys.argv[2]
    spec = json.load(open(spec_path))
    spec["_partial_path"] = out_path + ".partial"
    torch.set_num_threads(int(spec.get("threads") or torch.get_num_threads()))
    out = {"spec": spec, "torch_threads": torch.get_num_threads()}
    if spec["task"] == "parse":
        out.update(task_parse(spec))
    elif spec["task"] == "train":
        out.update(task_train(spec))
    else:
        raise SystemExit(f"unknown task {spec['task']!r}")
    out["vm_hwm_mb"] = vm_hwm_mb()
    out["process_s"] = time.perf_counter() - T_START
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
