"""A deterministic generated dataset with real structure, so ``python run.py`` needs no download.

What is planted (and so what a model can learn beyond popularity):
- low-rank taste: user and item factors (``rank`` dims); a user's choices follow
  ``softmax(taste * <p_u, q_i> + popularity_i)``, drawn without replacement (Gumbel top-k);
- Zipf item popularity over randomly permuted item ids;
- long-tailed (log-normal) user activity, at least ``min_per_user`` items each;
- order: every item has an "era" on a circle [0, 1); a user starts at a random era and
  consumes their items roughly in era order around the circle (noise ``order_noise``),
  so the next item is near the last one: sequence models have signal that MF does not;
- strictly increasing timestamps per user, ratings 1..5 that rise with the affinity.

Output: RecBole atomic files ``<name>.inter`` (user_id, item_id, rating, timestamp) and
``<name>.item`` (item_id, era bucket as a ``category`` token), written to a temporary name
and renamed when complete.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VERSION = 2  # bump when the generator's output changes: generated files are remade

DEFAULTS = dict(
    num_users=2000,
    num_items=1000,
    mean_per_user=40.0,
    min_per_user=8,
    rank=8,
    taste=3.0,
    zipf_a=0.8,
    order_noise=0.03,
    seed=2024,
)


def generate(num_users: int, num_items: int, mean_per_user: float, min_per_user: int, rank: int,
             taste: float, zipf_a: float, order_noise: float, seed: int):
    """Return ``(user, item, rating, timestamp, era)`` numpy arrays (ids start at 1)."""
    rng = np.random.default_rng(seed)
    U, I = int(num_users), int(num_items)
    if min_per_user > I // 2:
        raise ValueError(f"min_per_user={min_per_user} needs at least {2 * min_per_user} items")
    p = rng.normal(size=(U, rank)) / np.sqrt(rank)
    q = rng.normal(size=(I, rank))
    pop = -zipf_a * np.log(rng.permutation(I) + 1.0)
    era = rng.random(I)
    sigma = 1.0
    mu = np.log(max(mean_per_user - min_per_user, 1.0)) - sigma ** 2 / 2
    n_u = np.minimum(min_per_user + np.floor(rng.lognormal(mu, sigma, U)), I // 2).astype(np.int64)

    users, items, affin = [], [], []
    chunk = max(1, 2_000_000 // I)
    for s in range(0, U, chunk):
        e = min(U, s + chunk)
        logits = taste * (p[s:e] @ q.T) + pop
        keys = logits + rng.gumbel(size=logits.shape)
        order = np.argsort(-keys, axis=1)
        rank_pos = np.arange(I)[None, :]
        take = rank_pos < n_u[s:e, None]
        rows = np.broadcast_to(np.arange(s, e)[:, None], order.shape)[take]
        cols = order[take]
        users.append(rows)
        items.append(cols)
        affin.append(logits[rows - s, cols])
    user = np.concatenate(users)
    item = np.concatenate(items)
    aff = np.concatenate(affin)

    # consumption order: by era plus noise, starting from a random era per user and wrapping
    # around, so that every era is someone's latest item; timestamps strictly increasing
    offset = rng.random(U)
    key = np.mod(era[item] - offset[user], 1.0) + order_noise * rng.normal(size=item.shape)
    srt = np.lexsort((key, user))
    user, item, aff = user[srt], item[srt], aff[srt]
    starts = np.r_[0, np.flatnonzero(np.diff(user)) + 1]
    gaps = rng.exponential(3600.0, size=user.shape).astype(np.int64) + 1
    gaps[starts] = rng.integers(956_703_932, 1_000_000_000, size=starts.shape)
    # cumulative sum that restarts at each user
    csum = np.cumsum(gaps)
    base = np.repeat(csum[starts] - gaps[starts], np.diff(np.r_[starts, user.size]))
    ts = csum - base
    z = (aff - aff.mean()) / (aff.std() + 1e-9)
    rating = np.clip(np.round(3.6 + 1.0 * z + 0.5 * rng.normal(size=z.shape)), 1, 5)
    return user + 1, item + 1, rating, ts, era


def write_atomic(directory: Path, name: str, **params) -> Path:
    """Generate with ``params`` (defaults in ``DEFAULTS``) and write atomic files; return the folder."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        from ..names import did_you_mean

        key = sorted(unknown)[0]
        raise KeyError(f"unknown generator parameter {key!r}: {did_you_mean(key, DEFAULTS)}")
    args = {**DEFAULTS, **params}
    user, item, rating, ts, era = generate(**args)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inter = directory / f"{name}.inter"
    tmp = inter.with_suffix(f".inter.tmp{os.getpid()}")
    body = np.char.add(np.char.add(np.char.add(np.char.add(
        user.astype(str), "\t"), np.char.add(item.astype(str), "\t")),
        np.char.add(rating.astype(int).astype(str), "\t")), ts.astype(str))
    with open(tmp, "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        f.write("\n".join(body.tolist()))
        f.write("\n")
    item_file = directory / f"{name}.item"
    tmp_item = item_file.with_suffix(f".item.tmp{os.getpid()}")
    cats = np.floor(era * 10).astype(int)
    with open(tmp_item, "w") as f:
        f.write("item_id:token\tcategory:token\n")
        f.write("".join(f"{i + 1}\t{c}\n" for i, c in enumerate(cats.tolist())))
    os.replace(tmp_item, item_file)
    os.replace(tmp, inter)
    return directory
