"""ANN retrieval benchmark: faiss indexes (through ``recstudio_edge.model.ann.AnnIndex``, the code
path ``model.ann`` uses) against the exact torch top-k, on trained-like item vectors.

Data: ``--items`` (1M) x ``--dim`` (64) item vectors from a Gaussian mixture whose component
sizes follow a Zipf law (a trained embedding table is clustered and long-tailed), ``--queries``
(10k) query vectors drawn near the same components (users sit near the items they like), inner
product scores. Exact: chunked ``q @ V.T`` + ``torch.topk`` (the full-sort path). Both sides run
with one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, ``faiss.omp_set_num_threads(1)``).
recall@10 = |ANN top-10 ∩ exact top-10| / 10, averaged over queries; speed-up = exact search
time / ANN search time for the same queries (index build time reported apart). Writes table.md,
ann.json and ann.png (recall against speed-up, one line per index) to bench/results/ann-<stamp>/.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/ann.py            # IVF, ~5 min
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/ann.py --hnsw     # + HNSW32 (long single-thread build)
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python bench/ann.py --quick    # 100k items, 2k queries, IVF + HNSW
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.common import machine, machine_line, md_table, new_results_dir, save_plot  # noqa: E402


def mixture(n_items: int, n_queries: int, dim: int, components: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(components, dim, generator=g)
    sizes = 1.0 / torch.arange(1, components + 1, dtype=torch.float64) ** 1.0  # Zipf
    comp = torch.multinomial(sizes, n_items, replacement=True, generator=g)
    scale = 0.5 + torch.rand(n_items, 1, generator=g)  # item norms vary (popular items are longer)
    items = (centers[comp] + 0.35 * torch.randn(n_items, dim, generator=g)) * scale
    qcomp = torch.multinomial(sizes, n_queries, replacement=True, generator=g)
    queries = centers[qcomp] + 0.5 * torch.randn(n_queries, dim, generator=g)
    return items.float().contiguous(), queries.float().contiguous()


@torch.no_grad()
def exact_topk(items, queries, k, chunk=64):
    out = []
    for s in range(0, queries.size(0), chunk):
        out.append(torch.topk(queries[s:s + chunk] @ items.T, k, dim=1).indices)
    return torch.cat(out)


def recall(approx, truth):
    hit = (approx.unsqueeze(2) == truth.unsqueeze(1)).any(2).sum().item()
    return hit / truth.numel()


def plot_runs(path, runs, t_exact, k, head):
    """recall@k against speed-up over the exact top-k, one line per index, each point its setting."""
    series = {}
    for r in runs:
        param = next(p for p in ("nprobe", "efSearch") if p in r)
        s = series.setdefault(r["index"], {"label": r["index"], "x": [], "y": [], "labels": []})
        s["x"].append(t_exact / r["search_s"] if r["search_s"] else None)
        s["y"].append(r["recall"])
        s["labels"].append(f"{param}={r[param]}")
    return save_plot(path, list(series.values()), xlabel="speed-up over exact torch top-k (log)",
                     ylabel=f"recall@{k}", title="ANN: recall against speed-up per index setting", logx=True,
                     note=head)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--components", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="100k items, 2k queries")
    ap.add_argument("--hnsw", action="store_true", help="also HNSW32 (its single-thread build at 1M takes minutes)")
    args = ap.parse_args(argv)
    if args.quick:
        args.items, args.queries, args.components = 100_000, 2_000, 500
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    from recstudio_edge.model.ann import AnnIndex

    m = machine()
    m["faiss"] = faiss.__version__
    print(machine_line(m) + f" | faiss {faiss.__version__}", flush=True)
    items, queries = mixture(args.items, args.queries, args.dim, args.components)
    k = args.k
    t = time.perf_counter()
    truth = exact_topk(items, queries, k) + 1  # item ids are 1-based (0 is padding)
    t_exact = time.perf_counter() - t
    print(f"exact torch top-{k}: {t_exact:.1f} s for {args.queries} queries", flush=True)

    nlist = 4096 if args.items >= 500_000 else 1024
    configs = [(f"IVF{nlist},Flat", "nprobe", [4, 8, 16, 32])]
    if args.hnsw or args.quick:
        configs.append(("HNSW32", "efSearch", [64, 128, 256]))
    rows = [["exact (torch matmul + topk)", "-", "-", f"{t_exact:.1f}", f"{1e3 * t_exact / args.queries:.3f}",
             "1", "1x"]]
    raw = {"machine": m, "args": vars(args), "exact_s": t_exact, "runs": []}
    for factory, param, values in configs:
        ann = AnnIndex({"index": factory}, "ip", "inner_product")
        t = time.perf_counter()
        ann.ensure(items)
        t_build = time.perf_counter() - t
        print(f"{factory}: built in {t_build:.1f} s", flush=True)
        for v in values:
            ann.faiss.ParameterSpace().set_index_parameter(ann.index, param, v)
            t = time.perf_counter()
            found = torch.cat([ann.search(queries[s:s + 1000], k)[1] for s in range(0, queries.size(0), 1000)])
            t_s = time.perf_counter() - t
            r = recall(found, truth)
            rows.append([factory, f"{param}={v}", f"{t_build:.0f}", f"{t_s:.2f}", f"{1e3 * t_s / args.queries:.3f}",
                         f"{r:.4f}", f"{t_exact / t_s:.0f}x"])
            raw["runs"].append({"index": factory, param: v, "build_s": t_build, "search_s": t_s, "recall": r})
            print(f"  {param}={v}: {t_s:.2f} s, recall@{k} {r:.4f}, speed-up {t_exact / t_s:.1f}x", flush=True)
        del ann
    table = md_table(["index", "search parameter", "build s", f"search s ({args.queries} queries)", "ms / query",
                      f"recall@{k}", "speed-up vs exact"], rows)
    head = (f"{args.items:,} items x {args.dim} dims (Gaussian mixture, {args.components} Zipf-sized components), "
            f"{args.queries:,} queries, inner product, 1 thread each side")
    print("\n" + machine_line(m) + f" | faiss {faiss.__version__}\n\n" + head + "\n\n" + table)
    out = new_results_dir("ann", args.quick)
    (out / "ann.json").write_text(json.dumps(raw, indent=1, default=str))
    (out / "table.md").write_text(machine_line(m) + "\n\n" + head + "\n\n" + table + "\n")
    plot_runs(out / "ann.png", raw["runs"], t_exact, k, head)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
