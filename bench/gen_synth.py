#!/usr/bin/env python3
"""Generate a synthetic implicit-feedback dataset at MovieLens-1M scale.

usage: python bench/gen_synth.py [--out-dir DIR] [--name synth-1m] [--n-users N --n-items N --n-inter N ...]
(bench/setup.py runs it into <BENCH_DATA>/data; the benchmark test runs it on a tiny size.)

Output: RecBole atomic file <out_dir>/<name>/<name>.inter, tab separated, header
    user_id:token  item_id:token  rating:float  timestamp:float

Model (deterministic for a given --seed):
  * items 1..n_items; item popularity weight w_i = 1 / rank_i ** zipf_a, with the
    popularity ranks randomly permuted over the item ids (so id != rank).
  * per-user activity n_u = min_per_user + floor(X), X ~ lognormal(mu, sigma), capped at
    max_per_user; then rescaled so that sum(n_u) == n_inter exactly
    (defaults give ML-1M-like mean ~166, median ~100, max ~2300).
  * each user's items are drawn WITHOUT replacement proportionally to w_i
    (Gumbel top-k trick = successive sampling), so (user, item) pairs are unique, like ML-1M.
  * the order of a user's items is a random permutation; timestamps are strictly
    increasing within a user: start_u ~ U[t0, t1 - span], gaps ~ Exp(mean gap_mean sec)
    (ML-1M epoch range, 2000-04-25 .. 2003-02-28).
  * rating ~ categorical over 1..5 with ML-1M marginals (only informational; all
    interactions are positives for implicit-feedback training).
  No latent user/item structure is planted: the only learnable signal is popularity
  (and per-user "already seen" filtering).
"""
import argparse
import os
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="data")
    ap.add_argument("--name", default="synth-1m")
    ap.add_argument("--n-users", type=int, default=6040)
    ap.add_argument("--n-items", type=int, default=3706)
    ap.add_argument("--n-inter", type=int, default=1000209)
    ap.add_argument("--zipf-a", type=float, default=1.0)
    ap.add_argument("--min-per-user", type=int, default=20)
    ap.add_argument("--max-per-user", type=int, default=2314)
    ap.add_argument("--lognorm-mu", type=float, default=4.3)
    ap.add_argument("--lognorm-sigma", type=float, default=1.1)
    ap.add_argument("--gap-mean", type=float, default=3600.0, help="mean seconds between a user's events")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args(argv)

    t_start = time.time()
    rng = np.random.default_rng(args.seed)
    U, I, N = args.n_users, args.n_items, args.n_inter
    if not args.min_per_user * U <= N <= args.max_per_user * U:
        ap.error(f"--n-inter {N} must lie in [min-per-user x n-users, max-per-user x n-users] = "
                 f"[{args.min_per_user * U}, {args.max_per_user * U}]")
    if args.max_per_user > I:
        ap.error(f"--max-per-user {args.max_per_user} exceeds --n-items {I}")

    # ---- per-user activity (long-tailed, min 20), rescaled to hit N exactly ----
    x = rng.lognormal(args.lognorm_mu, args.lognorm_sigma, size=U)
    extra_target = N - args.min_per_user * U
    cap_extra = args.max_per_user - args.min_per_user
    # scale the lognormal excess so that sum(clip(s*x)) == extra_target (bisection on s)
    lo, hi = 0.0, 1.0
    while np.minimum(hi * x, cap_extra).sum() < extra_target:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.minimum(mid * x, cap_extra).sum() < extra_target:
            lo = mid
        else:
            hi = mid
    extra = np.minimum(hi * x, cap_extra)
    n_u = np.floor(extra).astype(np.int64)
    # distribute the rounding remainder to users with the largest fractional parts (not at cap)
    rem = int(extra_target - n_u.sum())
    frac = extra - n_u
    frac[n_u >= cap_extra] = -1
    if rem > 0:
        n_u[np.argsort(-frac, kind="stable")[:rem]] += 1
    n_u += args.min_per_user
    assert n_u.sum() == N and n_u.min() >= args.min_per_user and n_u.max() <= args.max_per_user

    # ---- item popularity: Zipf over randomly permuted ranks ----
    ranks = rng.permutation(I) + 1  # rank of item id i (1 = most popular)
    logw = -args.zipf_a * np.log(ranks.astype(np.float64))

    users = np.empty(N, dtype=np.int64)
    items = np.empty(N, dtype=np.int64)
    times = np.empty(N, dtype=np.int64)
    t0, t1 = 956703932, 1046454590  # ML-1M timestamp range
    pos = 0
    for u in range(U):
        k = int(n_u[u])
        # Gumbel top-k == sampling k items without replacement with prob ~ w_i
        keys = logw + rng.gumbel(size=I)
        chosen = np.argpartition(-keys, k - 1)[:k]
        chosen = rng.permutation(chosen)  # consumption order
        gaps = rng.exponential(args.gap_mean, size=k).astype(np.int64) + 1  # strictly increasing
        span = int(gaps.sum())
        start = int(rng.integers(t0, max(t0 + 1, t1 - span)))
        ts = start + np.cumsum(gaps)
        users[pos:pos + k] = u + 1
        items[pos:pos + k] = chosen + 1
        times[pos:pos + k] = ts
        pos += k
    assert pos == N

    ratings = rng.choice(np.arange(1, 6), size=N, p=[0.056, 0.108, 0.261, 0.349, 0.226])

    out = os.path.join(args.out_dir, args.name)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{args.name}.inter")
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        # write in chunks for speed
        CH = 200000
        for s in range(0, N, CH):
            e = min(N, s + CH)
            f.write("".join(f"{a}\t{b}\t{c}\t{d}\n" for a, b, c, d in
                            zip(users[s:e].tolist(), items[s:e].tolist(),
                                ratings[s:e].tolist(), times[s:e].tolist())))

    # ---- summary ----
    item_cnt = np.bincount(items, minlength=I + 1)[1:]
    srt = np.sort(item_cnt)[::-1]
    r = np.arange(1, I + 1)
    m = srt > 0
    slope = np.polyfit(np.log(r[m][:1000]), np.log(srt[m][:1000]), 1)[0]
    print(f"wrote {path}")
    print(f"users={U} items_with_inter={int((item_cnt > 0).sum())}/{I} inter={N} "
          f"density={N / (U * I):.4f}")
    print(f"per-user: min={n_u.min()} median={int(np.median(n_u))} mean={n_u.mean():.1f} "
          f"p90={int(np.percentile(n_u, 90))} max={n_u.max()}")
    print(f"per-item: max={srt[0]} median={int(np.median(srt))} min={srt[-1]} "
          f"top-1%-items share={srt[:I // 100].sum() / N:.3f} "
          f"log-log slope (top 1000 ranks)={slope:.2f}")
    print(f"time {time.time() - t_start:.1f}s")
    return path


if __name__ == "__main__":
    main()
