"""GGCN benchmark: what on-device (ego-graph) inference costs against the cloud's full-graph inference.

    python bench/ggcn.py            # ~2-4 min on 2 shared cores
    python bench/ggcn.py --quick    # smaller graphs, fewer epochs (~1 min; a smoke check)

1. Data: PPI-like generated graphs (``recstudio_edge.data.formats.ggcn.generate``: communities
   with label profiles, features that show the community faintly), ``--graphs`` graphs of
   ``--nodes`` nodes (the last 2 for testing, 1 for validation), mean degree ``--degree``; and the
   same graphs again with test graphs of another degree distribution (mean ``--shift_degree``):
   the train/valid graphs are identical, only the test graphs differ (a shift).
2. Model: GGCN with configs/model/GGCN.yaml's defaults (9 layers, alpha 0.5, lambda 1, dropout 0.2,
   lr 1e-3; hidden ``--hidden``), trained on the full training graphs (full batch, Adam), the epoch
   with the best validation micro-F1 kept. A feature-only MLP (same hidden size, no graph) is the
   baseline.
3. Table: test micro-F1 (and macro-F1) of full-graph inference, and of ego-graph inference for
   k = 1..layers hops, each node predicted from its own k-hop ego graph alone, with the full
   graph's normalisation weights (sent by the cloud) or with the ego graph's own (computed on the
   device), on the in-distribution and on the shifted test graphs. With k = layers and the full
   graph's weights the answer is the full graph's (to float precision; tests/model/test_ggcn.py).

Prints markdown tables and the machine line; writes ``bench/results/ggcn-<stamp>/ggcn.json`` and ``ggcn.md``.
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

os.environ.setdefault("OMP_NUM_THREADS", "2")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))


def machine() -> dict:
    import torch

    from common import code_state, cpu_model, loadavg

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "gpu": gpu, "loadavg_at_start": loadavg(), "code": code_state()["head"]}


def train(model, forward, train_b, valid_b, epochs: int, lr: float, weight_decay: float = 0.0):
    """Full-batch Adam; the state with the best validation micro-F1."""
    import copy

    import torch
    import torch.nn.functional as F

    from recstudio_edge.evaluation.multilabel import multilabel_f1

    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, best_epoch = -1.0, None, -1
    for epoch in range(epochs):
        model.train()
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(forward(train_b), train_b["label"]).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            f1 = multilabel_f1(torch.sigmoid(forward(valid_b)), valid_b["label"])["micro_f1"]
        if f1 > best:
            best, best_state, best_epoch = f1, copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    return model.eval(), best, best_epoch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--graphs", type=int, default=12)
    ap.add_argument("--nodes", type=int, default=150)
    ap.add_argument("--classes", type=int, default=12)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--degree", type=float, default=6.0)
    ap.add_argument("--shift_degree", type=float, default=2.0)
    ap.add_argument("--hidden", type=int, help="default: configs/model/GGCN.yaml's")
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", help="a graph of MovieLens instead of generated data, e.g. ml-1m-graph (no shift columns)")
    ap.add_argument("--data_dir", default="datasets", help="with --dataset: the folder holding <name>/ (e.g. ~/.cache/recstudio_edge/data)")
    ap.add_argument("--ego_nodes", type=int, default=0, help="ego-graph rows on this many test nodes (0: all; seeded)")
    ap.add_argument("--out", default=str(BENCH / "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.graphs, args.nodes, args.epochs = 8, 80, 150

    import torch
    from torch import nn

    from recstudio_edge.config import CONFIG_DIR, load_yaml
    from recstudio_edge.data.formats import ggcn
    from recstudio_edge.evaluation.multilabel import multilabel_f1
    from recstudio_edge.model.edge.ggcn import GGCN

    t0 = time.time()
    mach = machine()
    defaults = load_yaml(CONFIG_DIR / "model" / "GGCN.yaml")
    mcfg = dict(defaults["model"], **({"hidden": args.hidden} if args.hidden else {}))
    lr = float(defaults["train"]["lr"])
    deg = lambda g: float(g.edge_index.shape[1] / g.num_nodes) if g.num_nodes else 0.0  # noqa: E731
    if args.dataset:
        from recstudio_edge.data.loading import load_interactions

        dcfg = ggcn._data_config(args.dataset, {})
        data = load_interactions(Path(args.data_dir).expanduser(), dcfg, 2024, True)
        base, shifted = ggcn.build_item_graph(data, dcfg, 2024), None
        what = (f"{args.dataset}: {base.num_nodes} movies, {base.edge_index.shape[1] // 2} edges "
                f"(min_common {dcfg['graph']['min_common']}, top_k {dcfg['graph']['top_k']}, {dcfg['graph']['rank']}), "
                f"{base.num_classes} genres, {base.x.shape[1]} features, nodes split "
                f"{'/'.join(str(int((base.stage == i).sum())) for i in range(3))}; mean test degree "
                f"{deg(base.subset(base.stage == 2)):.2f} (within the test nodes)")
    else:
        gen = dict(graphs=args.graphs, nodes=args.nodes, classes=args.classes, features=args.features,
                   degree=args.degree, val_graphs=1, test_graphs=2, seed=args.seed)
        base = ggcn.generate(**gen)
        shifted = ggcn.generate(**gen, test_degree=args.shift_degree)
        first = lambda g: int(g.stage_nodes("test").min())  # noqa: E731  the train / valid graphs are the same
        assert torch.equal(base.edge_index[:, base.edge_index[0] < first(base)],
                           shifted.edge_index[:, shifted.edge_index[0] < first(shifted)])
        what = (f"Generated PPI-like data: {args.graphs} graphs x {args.nodes} nodes (train {args.graphs - 3}, valid 1, "
                f"test 2), {args.classes} classes, {args.features} features; mean degree of the test graphs "
                f"{deg(base.subset(base.stage == 2)):.2f} (in distribution) and "
                f"{deg(shifted.subset(shifted.stage == 2)):.2f} (shift)")
    sets = [("base", base)] + ([("shift", shifted)] if shifted is not None else [])
    n_feat, n_cls = int(base.x.shape[1]), base.num_classes
    train_b = ggcn.batch_of(base, base.stage_nodes("train"))
    valid_b = ggcn.batch_of(base, base.stage_nodes("valid"))

    torch.manual_seed(args.seed)
    model = GGCN(num_features=n_feat, num_classes=n_cls, **{k: mcfg[k] for k in
                                                                          ("hidden", "layers", "alpha", "lamda", "dropout")})
    model, best_val, best_epoch = train(model, model.logits, train_b, valid_b, args.epochs, lr)
    torch.manual_seed(args.seed)
    hid = int(mcfg["hidden"])
    mlp = nn.Sequential(nn.Linear(n_feat, hid), nn.ReLU(), nn.Linear(hid, hid), nn.ReLU(), nn.Linear(hid, n_cls))
    mlp, _, _ = train(mlp, lambda b: mlp(b["x"][b["target"]]), train_b, valid_b, args.epochs, lr)
    layers = int(mcfg["layers"])

    rows = []  # (what, k, norm, {base: f1s, shift: f1s})
    results = {}
    with torch.no_grad():
        for name, g in sets:
            nodes = g.stage_nodes("test")
            if args.ego_nodes and args.ego_nodes < nodes.numel():  # the same nodes for every row of the table
                nodes = nodes[torch.randperm(nodes.numel(), generator=torch.Generator().manual_seed(args.seed))[:args.ego_nodes]]
            b = ggcn.batch_of(g, nodes)
            full = model(b)
            # a neighbour vote: the labels that at least half a node's training neighbours have (no model;
            # label propagation's first step; no training neighbour, no label: 0 on inductive data)
            e = g.edge_index
            e = e[:, g.stage[e[0]] == 0]
            votes = torch.zeros(g.num_nodes, n_cls).index_add_(0, e[1], g.y[e[0]])
            votes = votes / torch.bincount(e[1], minlength=g.num_nodes).clamp(min=1).unsqueeze(1)
            res = {"full": multilabel_f1(full, b["label"]),
                   "mlp": multilabel_f1(torch.sigmoid(mlp(b["x"][b["target"]])), b["label"]),
                   "vote": multilabel_f1(votes[nodes], b["label"])}
            for k in range(1, layers + 1):
                for norm in ("full", "ego"):
                    e = ggcn.ego_batch(g, nodes, k, norm)
                    p = model(e)
                    res[f"k{k}_{norm}"] = {**multilabel_f1(p, e["label"]),
                                           "max_abs_diff_vs_full": float((p - full).abs().max()),
                                           "mean_ego_nodes": float(e["x"].shape[0] / nodes.numel())}
            results[name] = res
    seconds = time.time() - t0

    def cell(r):
        return f"{r['micro_f1']:.4f} / {r['macro_f1']:.4f}"

    shift = shifted is not None
    lines = [f"GGCN ego-graph inference (bench/ggcn.py{' --quick' if args.quick else ''}"
             f"{' --dataset ' + args.dataset if args.dataset else ''}): test micro-F1 / macro-F1"
             + (f" on {args.ego_nodes} test nodes drawn at random" if args.ego_nodes else ""),
             "",
             f"{what}; GGCN hidden {mcfg['hidden']}, {layers} layers, alpha {mcfg['alpha']}, lambda {mcfg['lamda']}, "
             f"dropout {mcfg['dropout']}, lr {lr}, full batch, best valid micro-F1 {best_val:.4f} at epoch "
             f"{best_epoch + 1}/{args.epochs}.",
             "",
             "| inference | k | normalisation | test (in distribution) | mean ego nodes | max abs diff vs full |"
             + (" test (degree shift) | mean ego nodes | max abs diff vs full |" if shift else ""),
             "|---|---|---|---|---|---|" + ("---|---|---|" if shift else "")]
    for key, label in (("full", "| full graph (cloud) | all | full graph"), ("mlp", "| features only (MLP) | 0 | -"),
                       ("vote", "| vote of the training neighbours' labels (no model) | 1 | -")):
        lines.append(f"{label} | {cell(results['base'][key])} | | |"
                     + (f" {cell(results['shift'][key])} | | |" if shift else ""))
    for k in range(1, layers + 1):
        for norm, label in (("full", "full graph (from the cloud)"), ("ego", "ego graph (on the device)")):
            row = f"| ego graph | {k} | {label} |"
            for name, _ in sets:
                r = results[name][f"k{k}_{norm}"]
                row += f" {cell(r)} | {r['mean_ego_nodes']:.1f} | {r['max_abs_diff_vs_full']:.2g} |"
            lines.append(row)
    m = mach
    lines += ["", f"Machine: {m['date']} | CPU: {m['cpu']} x {m['cores']} cores | torch threads {m['torch_threads']} | "
                  f"torch {m['torch']} | python {m['python']} | GPU: {m['gpu']} | load avg at start "
                  f"{m['loadavg_at_start']} | recstudio_edge at {m['code']} | {seconds:.0f} s"]
    text = "\n".join(lines)
    print(text)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) / f"ggcn{'-' + args.dataset if args.dataset else ''}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: v for k, v in vars(args).items() if k != "out"}, "machine": mach, "model": mcfg, "lr": lr, "best_valid_micro_f1": best_val,
               "best_epoch": best_epoch + 1, "data": what, "results": results, "seconds": seconds}
    for name, body in (("ggcn.json", json.dumps(payload, indent=1)), ("ggcn.md", text + "\n")):
        tmp = out / f".{name}.tmp{os.getpid()}"
        tmp.write_text(body)
        os.replace(tmp, out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
