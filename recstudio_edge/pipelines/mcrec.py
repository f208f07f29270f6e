"""MCRec's pipeline: ``python run.py -m=MCRec -d=ml-1m`` (the model's ``tasks``, ``runner.model_task``).

Steps, each leaving its artefacts in the run folder:

1. ``crec``: CRec trained on the training rows (fresh histories) -> ``crec.ckpt`` (and ``crec/``:
   Lightning's best / last checkpoints and logs of the step);
2. ``orec``: ORec trained with CRec frozen, the prior of each row being CRec's *session* score
   (from ``session_seq``), a float (or the ``prior_score`` of ``orec_train.tsv`` for files that
   have one) -> ``orec.ckpt``;
3. ``decisions``: the counterfactual decision dataset. For each request of the valid and test
   stages, each choice (0 session recommendation, 1 real-time refresh, 2 on-device rerank) is
   replayed on the request's next K exposures (its rows) and scored by log-loss; the label is
   the choice with the lowest, a costlier choice (cost order 0 < 2 < 1) needing to beat the
   cheaper pick by more than ``mcrec.tie_margin`` -> ``decisions_valid.tsv`` /
   ``decisions_test.tsv`` in the controller format (``hist_seq, choice``, with the three replayed
   log-losses as optional trailing fields);
4. ``controller``: its item table first copied from ORec's (``mcrec.controller_init: orec``: a
   few thousand decisions cannot learn an item table; both run on the device), trained on the
   valid decisions (a ``mcrec.controller_valid_share`` of them held
   out to pick the best epoch by accuracy; ``model.label_smoothing``; ``model.controller_loss:
   regret`` trains on the replayed losses instead, each choice's cost being ``tie_margin`` per
   step of the cost order) -> ``controller.ckpt``, and
   ``best.ckpt`` (the whole model, what ``--task=test|infer|export --ckpt`` take);
5. the report on the test requests: AUC and log-loss of always-0, always-1, always-2, the
   controller's routing, a random router with the routing's mix of choices (mean of
   ``mcrec.random_draws`` draws), the oracle (each request's best choice); the share of requests
   per choice and the cloud-call share (choice 1); the controller's accuracy against the test
   decisions (its own argmax; ``routed_accuracy``: the routed choices'). A request is routed to
   the argmax of ``MCRec.routing_probs`` (``model.route: balanced`` divides the controller's
   probabilities by the choices' shares among its training decisions). ``mcrec.cloud_budget`` (a share) caps the cloud refreshes: the routing keeps the
   most confident ones and sends the rest to the more likely device-side choice (0 or 2).
   Printed, and saved in ``metrics.json`` (``test``: the routed figures; ``routing``: the table).

``--mcrec.step=<crec|orec|decisions|controller|report> --mcrec.from=<run folder>`` runs that one
step alone from the earlier steps' artefacts of that run (orec: ``crec.ckpt``; decisions:
``orec.ckpt``; controller: ``orec.ckpt`` and ``decisions_valid.tsv``; report: ``controller.ckpt``),
then the report when the controller exists. ``--task=test`` writes the report for ``--ckpt``;
``--task=infer`` writes ``infer.tsv`` (one line per test row: request, user, item, label, the
routed choice and probability), with ``--backend=onnx`` the controller and ORec served by the
torch-free runtime from their exported files.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from ..checkpoint import CKPT_KEY, load_weights
from ..config import ConfigError
from ..data.dataset import BatchDataset, make_loader
from ..data.formats.mcrec import CHOICES, read_rows, write_rows
from ..evaluation.metrics import auc as auc_of
from ..model.edge.mcrec import COST_ORDER, REFRESH, budget_route

STEPS = ("crec", "orec", "decisions", "controller", "report")
NEEDS = {"crec": None, "orec": "crec", "decisions": "orec", "controller": "orec", "report": "controller"}
OPTIONS = {"step": "all", "from": None, "tie_margin": 0.0, "cloud_budget": None, "controller_valid_share": 0.2,
           "random_draws": 5, "controller_init": "orec", "controller_batch_size": 64, "crec_epochs": 2, "orec_epochs": 2, "controller_epochs": 20}
SYSTEMS = ("always-0 (session)", "always-1 (refresh)", "always-2 (device)", "routed (controller)",
           "random (same mix)", "oracle")


def options(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``mcrec:`` of the config over ``OPTIONS``, checked."""
    m = {**OPTIONS, **dict(cfg.get("mcrec") or {})}
    if m["step"] not in ("all", *STEPS):
        raise ConfigError(f"mcrec.step must be all or one of {', '.join(STEPS)}, got {m['step']!r}")
    if m["step"] not in ("all", "crec") and not m["from"]:
        raise ConfigError(f"--mcrec.step={m['step']} runs one step from an earlier run's artefacts: "
                          f"give --mcrec.from=<that run folder>")
    b = m["cloud_budget"]
    if b is not None and not 0.0 <= float(b) <= 1.0:
        raise ConfigError(f"mcrec.cloud_budget must be a share in [0, 1] (or null), got {b}")
    if m["controller_init"] not in ("orec", "none"):
        raise ConfigError(f"mcrec.controller_init must be orec or none, got {m['controller_init']!r}")
    if not 0.0 < float(m["controller_valid_share"]) < 1.0:
        raise ConfigError(f"mcrec.controller_valid_share must be in (0, 1), got {m['controller_valid_share']}")
    return m


def _say(msg: str) -> None:
    from ..runner import say

    say(msg)


def save_state(model, path: Path) -> Path:
    """The model's whole state as a checkpoint ``load_weights`` reads (temporary name, renamed)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), CKPT_KEY: {"model": "MCRec"}}, tmp)
    os.replace(tmp, path)
    return path


# ---- scoring ------------------------------------------------------------------------------------------
@torch.no_grad()
def choice_logits(model, rows: Dict[str, torch.Tensor], batch_size: int = 4096) -> torch.Tensor:
    """``[N, 3]`` click logits of every row under each choice."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    n = rows["item_id"].numel()
    for s in range(0, n, batch_size):
        b = {k: v[s:s + batch_size].to(dev) for k, v in rows.items()}
        out.append(model.choice_logits(b).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 3)


def requests_of(rows: Dict[str, torch.Tensor]):
    """``(local request id per row [N], index of each request's first row [R])`` (rows contiguous by request)."""
    uniq, local = torch.unique_consecutive(rows["request"], return_inverse=True)
    first = torch.zeros(uniq.numel(), dtype=torch.long)
    first.scatter_reduce_(0, local, torch.arange(local.numel()), reduce="amin", include_self=False)
    return local, first


def replay_losses(logits: torch.Tensor, label: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """``[R, 3]``: each request's mean log-loss over its rows under each choice."""
    bce = F.binary_cross_entropy_with_logits(logits, label.float().unsqueeze(1).expand_as(logits), reduction="none")
    R = int(local.max()) + 1 if local.numel() else 0
    sums = torch.zeros(R, logits.shape[1]).index_add_(0, local, bce)
    counts = torch.bincount(local, minlength=R).clamp(min=1).unsqueeze(1)
    return sums / counts


def decide(losses: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """The label of each request: the lowest log-loss, ties toward the cheaper choice (``COST_ORDER``):
    a costlier choice is taken only when it beats the current (cheaper) pick by more than ``margin``."""
    pick = torch.full((losses.shape[0],), COST_ORDER[0], dtype=torch.long)
    best = losses[:, COST_ORDER[0]].clone()
    for c in COST_ORDER[1:]:
        better = losses[:, c] < best - float(margin)
        pick[better] = c
        best[better] = losses[better, c]
    return pick


def system_figures(logits, label, local, choice_per_request) -> Dict[str, float]:
    s = logits.gather(1, choice_per_request[local].unsqueeze(1)).squeeze(1)
    return {"auc": float(auc_of(s, label)), "logloss": float(F.binary_cross_entropy_with_logits(s, label.float()))}


@torch.no_grad()
def controller_probs(model, seq: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """``MCRec.routing_probs`` of every row of ``seq`` (what the routing takes the argmax of)."""
    model.eval()
    dev = next(model.parameters()).device
    out = [model.routing_probs(seq[s:s + batch_size].to(dev)).float().cpu()
           for s in range(0, seq.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 3)


def report(model, rows, m, seed: int = 0, decisions: Optional[torch.Tensor] = None) -> Dict[str, Any]:
    """The routing table on ``rows`` (a stage's rows, contiguous by request); see the module docstring."""
    logits = choice_logits(model, rows)
    label = rows["label"]
    local, first = requests_of(rows)
    losses = replay_losses(logits, label, local)
    oracle = decide(losses, float(m["tie_margin"]))
    labels = oracle if decisions is None else decisions
    prob = controller_probs(model, rows["seq"][first])
    routed = budget_route(prob, m["cloud_budget"])
    raw = torch.softmax(torch.log(prob.clamp(min=1e-12)) + torch.log(model.choice_prior.cpu().clamp(min=1e-3)), -1) \
        if model.route_rule == "balanced" else prob  # the controller's own probabilities
    R = routed.numel()
    table = {}
    for c in range(3):
        table[SYSTEMS[c]] = system_figures(logits, label, local, torch.full((R,), c, dtype=torch.long))
    table[SYSTEMS[3]] = system_figures(logits, label, local, routed)
    share = torch.bincount(routed, minlength=3).float() / max(R, 1)
    draws = []
    for d in range(int(m["random_draws"])):
        g = torch.Generator().manual_seed(int(seed) + 7919 * (d + 1))
        draws.append(system_figures(logits, label, local, torch.multinomial(share, R, replacement=True, generator=g)))
    table[SYSTEMS[4]] = {k: sum(x[k] for x in draws) / len(draws) for k in ("auc", "logloss")}
    table[SYSTEMS[5]] = system_figures(logits, label, local, oracle)
    label_share = torch.bincount(labels, minlength=3).float() / max(R, 1)
    oracle_share = torch.bincount(oracle, minlength=3).float() / max(R, 1)
    for name, cloud in zip(SYSTEMS, (0.0, 1.0, 0.0, float(share[REFRESH]), float(share[REFRESH]),
                                     float(oracle_share[REFRESH]))):
        table[name]["cloud_share"] = cloud
    out = {"table": table, "requests": R, "rows": int(label.numel()),
           "routed_share": {str(c): float(share[c]) for c in range(3)},
           "oracle_share": {str(c): float(label_share[c]) for c in range(3)},
           "cloud_share": float(share[REFRESH]),
           "accuracy": float((raw.argmax(-1) == labels).float().mean()) if R else 0.0,
           "route": model.route_rule, "choice_prior": [float(x) for x in model.choice_prior.cpu()],
           "routed_accuracy": float((routed == labels).float().mean()) if R else 0.0,
           "cloud_budget": m["cloud_budget"]}
    return out


def format_report(rep: Dict[str, Any]) -> str:
    lines = [f"MCRec routing on {rep['requests']} test requests ({rep['rows']} rows)",
             f"{'':<22}{'auc':>9}{'logloss':>10}{'cloud calls':>13}"]
    for name, v in rep["table"].items():
        lines.append(f"{name:<22}{v['auc']:>9.4f}{v['logloss']:>10.4f}{v['cloud_share']:>13.3f}")
    rs, os_ = rep["routed_share"], rep["oracle_share"]
    lines.append("share of requests     " + "  ".join(f"{c}:{CHOICES[int(c)].split(' ', 1)[-1]} {rs[c]:.3f}"
                                                      for c in rs))
    lines.append("oracle's share        " + "  ".join(f"{c}: {os_[c]:.3f}" for c in os_))
    budget = "" if rep["cloud_budget"] is None else f" (cloud_budget {rep['cloud_budget']})"
    lines.append(f"cloud calls (choice 1) {rep['cloud_share']:.3f} of requests{budget}; controller accuracy "
                 f"{rep['accuracy']:.4f} (routed choices {rep['routed_accuracy']:.4f})")
    return "\n".join(lines)


def report_metrics(rep: Dict[str, Any]) -> Dict[str, float]:
    """The flat ``test`` figures of metrics.json: the routed system's, and each system's AUC / log-loss."""
    t = rep["table"]
    out = {"auc": t[SYSTEMS[3]]["auc"], "logloss": t[SYSTEMS[3]]["logloss"], "accuracy": rep["accuracy"],
           "cloud_share": rep["cloud_share"]}
    for key, name in zip(("always0", "always1", "always2", "routed", "random", "oracle"), SYSTEMS):
        out[f"auc_{key}"], out[f"logloss_{key}"] = t[name]["auc"], t[name]["logloss"]
    for c, v in rep["routed_share"].items():
        out[f"share_{c}"] = v
    return out


# ---- steps -------------------------------------------------------------------------------------------
def _fit(run, phase: str, epochs: int, extra_callbacks=(), train_loader=None, val_loader=None):
    """One Lightning fit of ``phase`` in ``<run>/<phase>/``; the best epoch's weights are kept."""
    from ..runner import build_trainer
    from ..wiring import connect

    model, dm, cfg = run.model, run.dm, run.cfg
    model.set_phase(phase)
    model.train()
    metric = "accuracy" if phase == "controller" else "auc"
    folder = run.run_dir / phase
    folder.mkdir(parents=True, exist_ok=True)
    trainer, ckpt = build_trainer(cfg, folder, metric, model.metric_mode(metric), epochs=int(epochs),
                                  extra_callbacks=extra_callbacks)
    if train_loader is None:
        connect(model, dm, trainer)
        trainer.fit(model, datamodule=dm, weights_only=True)
    else:
        trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader, weights_only=True)
    best = Path(ckpt.best_model_path) if ckpt.best_model_path else folder / "last.ckpt"
    if best.exists():
        load_weights(model, best)
    if train_loader is None:
        trainer.validate(model, datamodule=dm, verbose=False)
    else:
        trainer.validate(model, dataloaders=val_loader, verbose=False)
    valid = dict(model.last_metrics.get("valid", {}))
    save_state(model, run.run_dir / f"{phase}.ckpt")
    _say(f"step {phase}: valid " + ", ".join(f"{k} {v:.4f}" for k, v in valid.items() if not k.startswith("rows"))
         + f" ({trainer.current_epoch} epochs) -> {phase}.ckpt")
    return {"valid": valid, "epochs": int(trainer.current_epoch)}


def _orec_loader(run):
    """Files with ``orec_train.tsv``: ORec trains on their given priors."""
    src = run.dm.source
    rows = getattr(src, "orec_train", None)
    if rows is None:
        return None
    ds = BatchDataset(int(rows["item_id"].numel()), lambda idx: {k: v.index_select(0, idx) for k, v in rows.items()})
    return make_loader(ds, int(run.cfg["train"]["batch_size"]), True, int(run.cfg["seed"]), True)


def build_decisions(run, m) -> Dict[str, Dict[str, torch.Tensor]]:
    """Step 3: the decision rows ``{stage: {seq, choice}}`` of the valid and test requests, written as
    ``decisions_<stage>.tsv``."""
    out = {}
    src = run.dm.source
    for stage in ("valid", "test"):
        rows = src.stage_rows(stage).rows
        logits = choice_logits(run.model, rows)
        local, first = requests_of(rows)
        losses = replay_losses(logits, rows["label"], local)
        pick = decide(losses, float(m["tie_margin"]))
        dec = {"seq": rows["seq"][first], "choice": pick, "replay_loss": losses}
        write_rows(run.run_dir / f"decisions_{stage}.tsv", "controller", dec)
        share = torch.bincount(pick, minlength=3).float() / max(pick.numel(), 1)
        _say(f"step decisions: {stage} {pick.numel()} requests, best choice 0/1/2 "
             + "/".join(f"{float(x):.3f}" for x in share) + f" -> decisions_{stage}.tsv")
        out[stage] = dec
    return out


def read_decisions(folder: Path, L: int) -> Dict[str, Dict[str, torch.Tensor]]:
    out = {}
    for stage in ("valid", "test"):
        p = Path(folder) / f"decisions_{stage}.tsv"
        if not p.exists():
            raise ConfigError(f"--mcrec.from={folder}: no decisions_{stage}.tsv (run the decisions step first)")
        r = read_rows(p, "controller", L)
        out[stage] = {k: r[k] for k in ("seq", "choice", "replay_loss") if k in r}
    return out


def train_controller(run, decisions, m, extra_callbacks=()):
    """Step 4: the controller on the valid decisions, a held-out share picking the epoch."""
    model = run.model
    if m["controller_init"] == "orec":
        src_emb, dst_emb = model.orec.block.item_emb.weight, model.controller.item_emb.weight
        if src_emb.shape != dst_emb.shape:
            raise ConfigError(f"mcrec.controller_init=orec copies ORec's item table into the controller's: "
                              f"model.controller_dim ({dst_emb.shape[1]}) must equal model.orec_dim "
                              f"({src_emb.shape[1]}), or set mcrec.controller_init=none")
        with torch.no_grad():  # a few thousand decisions cannot learn an item table; ORec's knows the items
            dst_emb.copy_(src_emb)
    d = dict(decisions["valid"])
    n = int(d["choice"].numel())
    if "replay_loss" in d:  # the regret objective's targets: each choice's log-loss plus its cost, minus the best
        rank = torch.zeros(3)
        rank[list(COST_ORDER)] = torch.arange(3, dtype=torch.float32)
        cost = d.pop("replay_loss") + float(m["tie_margin"]) * rank
        d["regret"] = cost - cost.min(1, keepdim=True).values
    d["user_id"] = torch.arange(n)  # the training loop counts rows by user_id
    g = torch.Generator().manual_seed(int(run.cfg["seed"]))
    perm = torch.randperm(n, generator=g)
    k = max(1, int(round(n * float(m["controller_valid_share"]))))
    parts = {"fit": perm[k:], "hold": perm[:k]}
    sets = {}
    for name, idx in parts.items():
        rows = {key: v[idx] for key, v in d.items()}
        sets[name] = BatchDataset(int(idx.numel()), lambda i, r=rows: {key: v.index_select(0, i) for key, v in r.items()})
    share = torch.bincount(d["choice"][parts["fit"]], minlength=3).float()
    with torch.no_grad():  # balanced routing's prior: the choices' shares among the training decisions
        model.choice_prior.copy_((share / share.sum().clamp(min=1.0)).clamp(min=1e-3))
    bs, seed = int(m["controller_batch_size"]), int(run.cfg["seed"])
    res = _fit(run, "controller", int(m["controller_epochs"]), extra_callbacks,
               make_loader(sets["fit"], bs, True, seed, True),
               make_loader(sets["hold"], int(run.cfg["eval"]["batch_size"]), False, seed, False))
    save_state(run.model, run.run_dir / "best.ckpt")
    return res


def _final_report(run, m, steps: Dict[str, Any], decisions=None) -> Dict[str, Any]:
    from ..runner import _write_metrics

    model = run.model
    model.set_phase("joint")
    rows = run.dm.source.stage_rows("test").rows
    dec = decisions["test"]["choice"] if decisions and "test" in decisions else None
    rep = report(model, rows, m, int(run.cfg["seed"]), dec)
    metrics = {"test": report_metrics(rep), "routing": rep, "steps": steps,
               "best_ckpt": str(run.run_dir / "best.ckpt")}
    _write_metrics(run.run_dir, metrics)
    _say(format_report(rep))
    return metrics


def train(run, extra_callbacks=()) -> Dict[str, Any]:
    """``--task=train`` of MCRec: the pipeline (module docstring)."""
    from ..runner import _shown, _write_metrics

    cfg, model = run.cfg, run.model
    m = options(cfg)
    todo = ["crec", "orec", "decisions", "controller", "report"] if m["step"] == "all" else [m["step"]]
    steps: Dict[str, Any] = {}
    decisions = None
    frm = Path(str(m["from"])) if m["from"] else None
    if m["step"] != "all":
        need = NEEDS[m["step"]]
        if need is not None:
            load_weights(model, frm / f"{need}.ckpt", what=f"--mcrec.from {need} checkpoint")
            shutil.copy2(frm / f"{need}.ckpt", run.run_dir / f"{need}.ckpt")
        if m["step"] == "controller":
            decisions = read_decisions(frm, int(cfg["data"]["max_seq_len"]))
            for stage in decisions:
                shutil.copy2(frm / f"decisions_{stage}.tsv", run.run_dir / f"decisions_{stage}.tsv")
        if m["step"] == "report":
            shutil.copy2(frm / "controller.ckpt", run.run_dir / "best.ckpt")
            if (frm / "decisions_test.tsv").exists():
                decisions = read_decisions(frm, int(cfg["data"]["max_seq_len"]))
    for step in todo:
        if step == "crec":
            steps["crec"] = _fit(run, "crec", int(m["crec_epochs"]), extra_callbacks)
        elif step == "orec":
            loader = _orec_loader(run)
            steps["orec"] = _fit(run, "orec", int(m["orec_epochs"]), extra_callbacks, loader,
                                 run.dm.val_dataloader() if loader is not None else None)
        elif step == "decisions":
            decisions = build_decisions(run, m)
            steps["decisions"] = {s: int(d["choice"].numel()) for s, d in decisions.items()}
        elif step == "controller":
            steps["controller"] = train_controller(run, decisions, m, extra_callbacks)
    if m["step"] in ("all", "controller", "report"):
        metrics = _final_report(run, m, steps, decisions)
    else:
        metrics = {"test": {}, "steps": steps}
        _write_metrics(run.run_dir, metrics)
    _say(f"run folder: {_shown(run.run_dir)}")
    return {"run_dir": str(run.run_dir), **metrics}


def test(run, extra_callbacks=()) -> Dict[str, Any]:
    """``--task=test --ckpt=<run>/best.ckpt``: the report on the test requests (weights loaded by the runner)."""
    from ..runner import _shown

    m = options({**run.cfg, "mcrec": {**dict(run.cfg.get("mcrec") or {}), "step": "all", "from": None}})
    metrics = _final_report(run, m, {})
    metrics["ckpt"] = str(run.cfg["ckpt"])
    _say(f"run folder: {_shown(run.run_dir)}")
    return {"run_dir": str(run.run_dir), **metrics}


@torch.no_grad()
def routed_on_device(router_files, rows, cloud_logits: torch.Tensor, budget=None):
    """The routed decision served by the torch-free runtime: the exported controller picks each request's
    choice from its history, rows routed to the device are scored by the exported ORec (prior = the
    cloud's session score the device holds); choices 0 and 1 take the cloud's scores (``cloud_logits``
    ``[N, 2]``: session, refresh). Returns ``(probability [N], choice per row [N])`` (numpy)."""
    import numpy as np

    from ..edge.runtime import EdgePredictor

    ctrl, orec = EdgePredictor(router_files["controller"]), EdgePredictor(router_files["orec"])
    local, first = requests_of(rows)
    seq = rows["seq"].numpy()
    prob = ctrl.predict({"seq": seq[first.numpy()]})
    choice_req = budget_route(torch.from_numpy(np.asarray(prob)), budget).numpy()
    choice = choice_req[local.numpy()]
    cloud = torch.sigmoid(cloud_logits).numpy()
    out = np.where(choice == 0, cloud[:, 0], cloud[:, 1]).astype(np.float32)
    dev = choice == 2
    if dev.any():
        out[dev] = orec.predict({"item_id": rows["item_id"].numpy()[dev], "seq": seq[dev],
                                 "prior_score": cloud[dev, 0].astype(np.float32)})
    return out, choice


def infer(run, extra_callbacks=()) -> Dict[str, Any]:
    """``--task=infer``: one line per test row with its request, user, item, label, routed choice and
    probability (``--backend=onnx``: the device parts served by the runtime, module docstring)."""
    from ..runner import say
    from ..utils import atomic_write_text

    model, cfg = run.model, run.cfg
    model.set_phase("joint")
    m = options({**cfg, "mcrec": {**dict(cfg.get("mcrec") or {}), "step": "all", "from": None}})
    rows = run.dm.source.stage_rows("test").rows
    logits = choice_logits(model, rows)
    if cfg.get("backend") == "onnx":
        from ..edge.onnx_export import export_edge_models

        reports = export_edge_models(model, run.run_dir, tol=float(cfg["export"]["tolerance"]),
                                     exporter=str(cfg["export"]["exporter"]), config=cfg)
        prob, choice = routed_on_device({k: r["path"] for k, r in reports.items()}, rows, logits[:, :2],
                                        m["cloud_budget"])
        prob, choice = torch.from_numpy(prob), torch.from_numpy(choice)
    else:
        local, first = requests_of(rows)
        choice = budget_route(controller_probs(model, rows["seq"][first]), m["cloud_budget"])[local]
        prob = torch.sigmoid(logits.gather(1, choice.unsqueeze(1)).squeeze(1))
    cols = ("request", "user_id", "item_id", "label")
    lines = ["\t".join([*cols, "choice", "probability"])]
    vals = [rows[c].tolist() for c in cols]
    for r, (c, p) in enumerate(zip(choice.tolist(), prob.tolist())):
        lines.append("\t".join([*(f"{v[r]:g}" for v in vals), str(int(c)), f"{p:.6g}"]))
    out = atomic_write_text(run.run_dir / "infer.tsv", "\n".join(lines) + "\n")
    say(f"wrote {out}")
    return {"run_dir": str(run.run_dir), "output": str(out)}


__all__ = ["train", "test", "infer", "report", "decide", "replay_losses", "requests_of", "choice_logits",
           "routed_on_device", "options", "OPTIONS", "STEPS"]
