#!/usr/bin/env python
"""TorchRec as the sharding engine behind a DLRM sparse arch: 2 CPU processes (gloo, table-wise
sharding) against one process, step by step.

usage: python bench/torchrec_check.py [--steps 300] [--batch 256] [--world 2] [--lr 1.0] [--seed 0] [--json OUT]

Runs in its own venv, never the project's (torchrec cannot be a plain requirements line, see below):

    python -m venv ~/.cache/recstudio_edge/torchrec-check/venv
    V=~/.cache/recstudio_edge/torchrec-check/venv/bin
    $V/pip install torch==2.13.0 fbgemm-gpu-cpu==1.8.0
    $V/pip install --no-deps torchrec==1.8.0
    $V/pip install tensordict torchmetrics==1.0.3 tqdm pyre-extensions
    OMP_NUM_THREADS=1 $V/python bench/torchrec_check.py

Why these versions and --no-deps (measured with torch 2.13.0+cpu, python 3.11):
- FBGEMM pins one torch minor per release (fbgemm_gpu/__init__.py: 1.9 -> 2.14, 1.8 -> 2.13, ...):
  fbgemm-gpu-cpu 1.9.0 with torch 2.13 fails at import with an undefined symbol
  (torch::autograd::_wrap_outputs, in fbgemm_gpu_tbe_index_select.so);
- torchrec's metadata requires ``fbgemm-gpu`` (the CUDA build): a plain
  ``pip install torchrec fbgemm-gpu-cpu`` installs both builds into the same ``fbgemm_gpu/`` folder
  and the import fails with ``libtorch_cuda.so: cannot open shared object file``.

What it does: the same DLRM (torchrec.models.dlrm.DLRM: EmbeddingBagCollection of 4 tables,
bottom MLP, dot interaction, top MLP) with the same initial weights and the same data,
(a) in one process on the global batch, with plain torch autograd and SGD; and
(b) in ``--world`` processes (torch.distributed, gloo), wrapped by DistributedModelParallel with a
plan from EmbeddingShardingPlanner constrained to table-wise sharding (each table whole on one
rank, lookups exchanged by all-to-all), the dense part under DDP, the embeddings updated by
FBGEMM's fused SGD in the backward pass; each rank trains on its slice of the global batch.
The data carry a planted signal (the label is a logistic of two tables' ids and a dense feature),
so the loss falls. It prints the per-step losses of both, their largest difference, the tables'
largest weight difference after training, and each side's wall time, and exits 1 when the
difference exceeds --tol.

Gradients: DDP averages the dense gradients over ranks, and the sharded tables' gradients come
out averaged too (measured: with no rescaling, (a) on the global mean loss and (b) agree to float
rounding, ~1e-7 in the loss and ~1e-8 in the weights after 200 steps); so one process on the
global batch is exactly what the sharded run trains, and the check compares them directly.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TABLES = [("t_user", 100), ("t_item", 60), ("t_cat", 40), ("t_city", 120)]  # (name, rows)
DIM = 8
DENSE = 4


def make_data(steps: int, batch: int, seed: int):
    """Per step: dense [B, DENSE], ids [B, len(TABLES)] (one id per table and row), label [B]."""
    g = torch.Generator().manual_seed(seed)
    w_user = torch.randn(TABLES[0][1], generator=g)
    w_item = torch.randn(TABLES[1][1], generator=g)
    out = []
    for _ in range(steps):
        dense = torch.rand(batch, DENSE, generator=g)
        ids = torch.stack([torch.randint(0, n, (batch,), generator=g) for _, n in TABLES], dim=1)
        logit = 1.5 * w_user[ids[:, 0]] + 1.5 * w_item[ids[:, 1]] + 2.0 * (dense[:, 0] - 0.5)
        label = torch.bernoulli(torch.sigmoid(logit), generator=g)
        out.append((dense, ids, label))
    return out


def kjt(ids: torch.Tensor):
    """One id per row and table as a KeyedJaggedTensor (keys = feature names, feature-major)."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    b = ids.shape[0]
    return KeyedJaggedTensor.from_lengths_sync(
        keys=[f"f_{name[2:]}" for name, _ in TABLES],
        values=ids.t().reshape(-1).contiguous(),
        lengths=torch.ones(b * len(TABLES), dtype=torch.int32))


def build_model(seed: int):
    from torchrec.models.dlrm import DLRM
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    torch.manual_seed(seed)
    ebc = EmbeddingBagCollection(tables=[
        EmbeddingBagConfig(name=name, embedding_dim=DIM, num_embeddings=rows,
                           feature_names=[f"f_{name[2:]}"]) for name, rows in TABLES],
        device=torch.device("cpu"))
    return DLRM(embedding_bag_collection=ebc, dense_in_features=DENSE,
                dense_arch_layer_sizes=[16, DIM], over_arch_layer_sizes=[16, 1])


def single(data, args, init):
    """The reference: one process, the global batch, autograd + SGD on every parameter."""
    model = build_model(args.seed)
    model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    bce = torch.nn.BCEWithLogitsLoss()
    losses = []
    t = time.perf_counter()
    for dense, ids, label in data:
        opt.zero_grad()
        loss = bce(model(dense, kjt(ids)).squeeze(-1), label)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    wall = time.perf_counter() - t
    tables = {k: v.detach().clone() for k, v in model.state_dict().items() if "embedding_bags" in k}
    return losses, tables, wall


def worker(rank, args, port, init_path, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=args.world)
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingType
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    init = torch.load(init_path)
    model = build_model(args.seed)
    model.load_state_dict(init)
    # the embeddings' optimizer runs inside the backward pass (FBGEMM fuses it into the TBE kernel)
    apply_optimizer_in_backward(torch.optim.SGD, model.sparse_arch.parameters(), {"lr": args.lr})
    sharders = [EmbeddingBagCollectionSharder()]
    constraints = {name: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value])
                   for name, _ in TABLES}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=args.world, compute_device="cpu"),
                                       constraints=constraints)
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(module=model, device=torch.device("cpu"), plan=plan, sharders=sharders)
    # the tables as the planner placed them: copy the initial weights into the local shards
    placement = {}
    with torch.no_grad():
        for key, value in dmp.state_dict().items():
            if "embedding_bags" not in key:
                continue
            ref_key = key[len("module."):] if key.startswith("module.") else key
            for shard in value.local_shards():
                o = shard.metadata.shard_offsets
                s = shard.metadata.shard_sizes
                shard.tensor.copy_(init[ref_key][o[0]:o[0] + s[0], o[1]:o[1] + s[1]])
                placement[ref_key.split(".")[-2]] = rank
    dense_opt = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                      lambda params: torch.optim.SGD(params, lr=args.lr))
    opt = CombinedOptimizer([dmp.fused_optimizer, dense_opt])
    bce = torch.nn.BCEWithLogitsLoss()
    data = make_data(args.steps, args.batch, args.seed + 1)
    local = args.batch // args.world
    losses = []
    dist.barrier()
    t = time.perf_counter()
    for dense, ids, label in data:
        sl = slice(rank * local, (rank + 1) * local)
        opt.zero_grad()
        logits = dmp(dense[sl], kjt(ids[sl])).squeeze(-1)
        loss = bce(logits, label[sl])
        loss.backward()
        opt.step()
        g = loss.detach().clone()
        dist.all_reduce(g)
        losses.append(float(g) / args.world)
    wall = time.perf_counter() - t
    tables = {}
    for key, value in dmp.state_dict().items():
        if "embedding_bags" in key:
            for shard in value.local_shards():
                if tuple(shard.metadata.shard_sizes) == tuple(value.size()):  # table-wise: whole table
                    tables[key[len("module."):] if key.startswith("module.") else key] = shard.tensor.clone()
    plan_text = str(plan)
    torch.save({"losses": losses, "tables": tables, "wall": wall, "placement": placement,
                "plan": plan_text if rank == 0 else ""}, f"{out_path}.{rank}")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256, help="global batch (split evenly over --world ranks)")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    if args.batch % args.world:
        ap.error(f"--batch {args.batch} must be a multiple of --world {args.world}")
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec
    except Exception as e:  # noqa: BLE001 - report the exact import failure
        print(f"error: torchrec does not import here: {type(e).__name__}: {str(e).splitlines()[-1]} "
              "(see this file's docstring for the versions that work)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    init = build_model(args.seed).state_dict()
    data = make_data(args.steps, args.batch, args.seed + 1)
    ref_losses, ref_tables, ref_wall = single(data, args, init)
    with tempfile.TemporaryDirectory() as tmp:
        init_path, out_path = os.path.join(tmp, "init.pt"), os.path.join(tmp, "out")
        torch.save(init, init_path)
        t = time.perf_counter()
        mp.spawn(worker, args=(args, free_port(), init_path, out_path), nprocs=args.world, join=True)
        spawn_wall = time.perf_counter() - t
        outs = [torch.load(f"{out_path}.{r}") for r in range(args.world)]
    losses = outs[0]["losses"]
    tables = {}
    for o in outs:
        tables.update(o["tables"])
    placement = {}
    for o in outs:
        placement.update(o["placement"])
    loss_diff = max(abs(a - b) for a, b in zip(ref_losses, losses))
    w_diff = {k: float((tables[k] - ref_tables[k]).abs().max()) for k in ref_tables if k in tables}
    missing = sorted(set(ref_tables) - set(tables))
    print(f"torch {torch.__version__} | torchrec {getattr(torchrec, '__version__', '?')} | "
          f"fbgemm_gpu {getattr(fbgemm_gpu, '__version__', '?')} | world {args.world} (gloo, CPU) | "
          f"global batch {args.batch} | {args.steps} SGD steps, lr {args.lr}")
    print(outs[0]["plan"])
    print("table placement (table -> rank):", placement)
    print("step | one process | sharded (mean of ranks) | diff")
    for i, (a, b) in enumerate(zip(ref_losses, losses)):
        if i < 5 or i >= len(losses) - 3 or i % 10 == 0:
            print(f"{i:4d} | {a:.6f} | {b:.6f} | {abs(a - b):.2e}")
    print(f"loss: first {ref_losses[0]:.4f} -> last {ref_losses[-1]:.4f} (one process), "
          f"{losses[0]:.4f} -> {losses[-1]:.4f} (sharded)")
    print(f"largest loss difference {loss_diff:.2e}; largest table weight difference after training "
          f"{max(w_diff.values()) if w_diff else float('nan'):.2e}" + (f"; tables not found: {missing}" if missing else ""))
    print(f"wall: one process {ref_wall:.2f} s; {args.world} processes {max(o['wall'] for o in outs):.2f} s "
          f"training ({spawn_wall:.1f} s with start-up and planning)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ref_losses": ref_losses, "losses": losses, "loss_diff": loss_diff, "weight_diff": w_diff,
                       "placement": placement, "ref_wall": ref_wall,
                       "wall": max(o["wall"] for o in outs), "spawn_wall": spawn_wall}, f, indent=1)
    ok = loss_diff <= args.tol and not missing and all(v <= args.tol * 10 for v in w_diff.values())
    print("MATCH" if ok else f"MISMATCH (tolerance {args.tol})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
