"""MCRec's sample formats: read, write, build from interactions, generate (``data.format: mcrec``).

The release (luoxi_models' MCRec) trains three models from three tab-separated files, one row a
line, no header, histories as comma lists of item ids (oldest first, 0-padded to 50)::

    CRec (cloud):        hist_seq <TAB> cand <TAB> label
    ORec (device):       hist_seq <TAB> cand <TAB> prior_score <TAB> label
    controller:          hist_seq <TAB> choice

- ``hist_seq``: any number of ids >= 0; reading drops the zeros (left or right padding alike),
  keeps the latest ``max_seq_len`` and left-pads with 0; writing writes ``max_seq_len`` ids,
  left-padded with 0 (the release's 50 by default);
- ``cand``: the candidate item, an integer >= 1; ``label``: 0 or 1;
- ``prior_score``: the cloud model's click probability for the row, a FLOAT in [0, 1] (the
  release cast it to an integer, which makes every prior 0: we keep it a float);
- ``choice``: 0 (cloud session recommendation), 1 (cloud real-time refresh), 2 (on-device rerank).

Two optional trailing fields of CRec / ORec rows (both or neither), our extension, which the
counterfactual decision dataset needs and release files lack:

- ``session_seq``: the history when the session started (what the cloud's session
  recommendation was computed from); absent: the same as ``hist_seq`` (no session lag);
- ``request``: an integer >= 0 grouping the rows of one request (its candidates and the next K
  exposures the replay scores); absent: each row is its own request.

and three of controller rows (all or none): ``loss_0, loss_1, loss_2``, the request's replayed
log-loss under each choice (what the decision dataset's label was chosen from; the controller's
``regret`` objective trains on them).

Malformed rows raise ``DataError`` as ``file:line: field 'x': what is wrong``; written files go
to a temporary name and are renamed when complete.

Folder of ``data.format: mcrec`` (``-d=sample-mcrec``): ``crec_train.tsv`` (required),
``crec_valid.tsv``, ``crec_test.tsv`` (CRec rows: ``train`` rows train CRec and ORec, ``valid``
rows make the controller's decision dataset, ``test`` rows the final report); optionally
``orec_train.tsv`` (ORec rows: when present ORec trains on their ``prior_score`` rather than
on the trained CRec's). Files carry no user: a batch's ``user_id`` is the row's ``request``.

From interactions (``-m=MCRec -d=ml-1m``, ``from_interactions``): every interaction sorted by
time per user; a *session* is a run of interactions with gaps of at most ``data.session_gap``
seconds, cut every ``data.session_max`` items (the cloud refreshes its session page at least that
often). Training rows: each training interaction after the user's first, its history the user's
training items before it (``windows``), ``session_seq`` the training items before its session
started, ``neg_per_pos`` sampled negatives (items outside the user's training items, redrawn
every batch). Evaluation requests (``valid``, ``test``): the stage's interactions of a user in
time order, in chunks of ``data.exposures`` (K): one request per chunk (the user's first
``data.requests_per_user`` chunks of the stage when that is > 0), its history every item of
the user before the chunk by time, its session history the items before the session of the
chunk's first item, its rows the K positives (the next K exposures) and ``eval_neg_per_pos``
fixed negatives each (items the user never touched).

``generate(...)`` / ``write_atomic_sample``: interactions with planted structure for the tests
(stable users and users whose taste drifts inside a session: the device's fresh history beats
the stale session scores on some requests and not on others); ``write_sample(out)`` writes
``out/sample-mcrec/`` in this format.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..errors import DataError
from .fields import int_field as _int, int_list

KINDS, HOLDS = ("ctr",), "MCRec CTR"
COLUMNS = {"crec": ("hist_seq", "cand", "label"), "orec": ("hist_seq", "cand", "prior_score", "label"),
           "controller": ("hist_seq", "choice")}
EXTRA = ("session_seq", "request")  # optional trailing fields of crec / orec rows
LOSSES = ("loss_0", "loss_1", "loss_2")  # optional trailing fields of controller rows (the replay's log-losses)
CHOICES = {0: "cloud session recommendation", 1: "cloud real-time refresh", 2: "on-device rerank"}
STAGES = ("train", "valid", "test")
DEFAULT_LEN = 50


# ---- reading ----------------------------------------------------------------------------------------
def _seq(text, path, line, name):
    """The non-zero ids of a comma list (0 is padding, dropped wherever it stands)."""
    return [v for v in int_list(text, path, line, name, what="item") if v]


def _pad(rows, L):
    seq = torch.zeros(len(rows), L, dtype=torch.long)
    for r, items in enumerate(rows):
        keep = items[-L:]
        if keep:
            seq[r, L - len(keep):] = torch.tensor(keep, dtype=torch.long)
    return seq


def read_rows(path, kind: str, max_seq_len: int = DEFAULT_LEN) -> Dict[str, torch.Tensor]:
    """One file of ``kind`` (``crec``, ``orec``, ``controller``) as tensors: ``seq [N, L]``, ``seq_len``,
    ``item_id`` (``cand``), ``label`` (float), ``prior_score`` (float), ``choice``, and for crec / orec
    rows ``session_seq`` and ``request`` (defaults when the file has no such fields)."""
    if kind not in COLUMNS:
        raise ValueError(f"kind must be one of {sorted(COLUMNS)}, got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), message="file not found")
    cols, L, where = COLUMNS[kind], int(max_seq_len), str(path)
    extra_ok = kind != "controller"
    hist, sess, cand, label, prior, choice, req, lines, losses = [], [], [], [], [], [], [], [], []
    with open(path, newline=None) as f:
        for n, text in enumerate(f, start=1):
            text = text.rstrip("\r\n")
            if not text.strip() or (n == 1 and text.strip().lower().startswith("hist_seq")):
                continue
            parts = text.split("\t")
            n_extra = len(EXTRA) if extra_ok else len(LOSSES)
            if len(parts) != len(cols) and len(parts) != len(cols) + n_extra:
                names = EXTRA if extra_ok else LOSSES
                want = f"{len(cols)} (or {len(cols) + n_extra} with {', '.join(names)})"
                raise DataError(where, n, None, f"expected {want} tab-separated fields ({', '.join(cols)}), "
                                                f"got {len(parts)}: {text[:80]!r}")
            f_ = dict(zip(cols, parts))
            h = _seq(f_["hist_seq"], where, n, "hist_seq")
            hist.append(h)
            if kind == "controller":
                choice.append(_int(f_["choice"], where, n, "choice", 0, 2))
                if len(parts) > len(cols):
                    row = []
                    for name, text in zip(LOSSES, parts[len(cols):]):
                        try:
                            v = float(text)
                        except ValueError:
                            raise DataError(where, n, name, f"expected a number, got {text!r}") from None
                        if not v >= 0.0 or v == float("inf"):
                            raise DataError(where, n, name, f"expected a log-loss >= 0, got {text!r}")
                        row.append(v)
                    losses.append(row)
            else:
                cand.append(_int(f_["cand"], where, n, "cand", low=1))
                lab = f_["label"].strip()
                if lab not in ("0", "1"):
                    raise DataError(where, n, "label", f"expected 0 or 1, got {f_['label']!r}")
                label.append(float(lab))
                if kind == "orec":
                    try:
                        p = float(f_["prior_score"])
                    except ValueError:
                        raise DataError(where, n, "prior_score", f"expected a number, got {f_['prior_score']!r}") from None
                    if not 0.0 <= p <= 1.0:
                        raise DataError(where, n, "prior_score", f"expected a probability in [0, 1], got {p:g}")
                    prior.append(p)
                if len(parts) > len(cols):
                    sess.append(_seq(parts[len(cols)], where, n, "session_seq"))
                    req.append(_int(parts[len(cols) + 1], where, n, "request"))
                else:
                    sess.append(h)
                    req.append(len(req))
            lines.append(n)
    if not lines:
        raise DataError(where, message="no rows")
    seq = _pad(hist, L)
    out = {"seq": seq, "seq_len": (seq != 0).sum(1), "lines": torch.tensor(lines)}
    if kind == "controller":
        out["choice"] = torch.tensor(choice, dtype=torch.long)
        if losses:
            if len(losses) != len(lines):
                raise DataError(where, message=f"some rows carry {', '.join(LOSSES)} and some do not")
            out["replay_loss"] = torch.tensor(losses, dtype=torch.float32)
        return out
    out.update(item_id=torch.tensor(cand, dtype=torch.long), label=torch.tensor(label),
               session_seq=_pad(sess, L), request=torch.tensor(req, dtype=torch.long))
    if kind == "orec":
        out["prior_score"] = torch.tensor(prior, dtype=torch.float32)
    return out


# ---- writing ------------------------------------------------------------------------------------------
def _seq_text(row: np.ndarray, L: int) -> str:
    items = row[row != 0][-L:]
    return ",".join(["0"] * (L - items.size) + [str(int(v)) for v in items])


def write_rows(path, kind: str, rows: Dict[str, Any], max_seq_len: Optional[int] = None,
               extra: Optional[bool] = None) -> Path:
    """Write ``rows`` (tensors or arrays: ``seq``, and ``item_id`` / ``label`` / ``prior_score`` /
    ``choice`` as the kind needs; ``session_seq`` and ``request`` for the optional fields) as a file of
    ``kind``, histories ``max_seq_len`` long (default: the width of ``seq``), left-padded with 0;
    ``extra`` (default: when ``rows`` has ``session_seq`` and ``request``) writes the two optional
    fields. Temporary name, renamed when complete."""
    if kind not in COLUMNS:
        raise ValueError(f"kind must be one of {sorted(COLUMNS)}, got {kind!r}")
    a = {k: np.asarray(torch.as_tensor(v).detach().cpu()) for k, v in rows.items()}
    L = int(max_seq_len or a["seq"].shape[1])
    if extra is None:
        extra = kind != "controller" and "session_seq" in a and "request" in a
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_lines(tmp, kind, a, L, extra)
    except BaseException:
        tmp.unlink(missing_ok=True)  # nothing half-written is left behind
        raise
    os.replace(tmp, path)
    return path


def _write_lines(tmp: Path, kind: str, a: Dict[str, np.ndarray], L: int, extra: bool) -> None:
    with open(tmp, "w") as f:
        for r in range(a["seq"].shape[0]):
            fields = [_seq_text(a["seq"][r], L)]
            if kind == "controller":
                fields.append(str(int(a["choice"][r])))
                if "replay_loss" in a:
                    fields += [f"{float(v):.6g}" for v in a["replay_loss"][r]]
            else:
                fields.append(str(int(a["item_id"][r])))
                if kind == "orec":
                    fields.append(f"{float(a['prior_score'][r]):.6g}")  # a float: the release's int cast lost it
                fields.append(str(int(round(float(a["label"][r])))))
                if extra:
                    fields += [_seq_text(a["session_seq"][r], L), str(int(a["request"][r]))]
            f.write("\t".join(fields) + "\n")


# ---- sessions over per-user time-ordered lists ----------------------------------------------------------
def session_starts(ptr: torch.Tensor, time: torch.Tensor, gap: float, max_items: int) -> torch.Tensor:
    """For every position of a CSR of time-ordered per-user lists, the flat index where its session
    starts: a new session after a gap above ``gap`` seconds (or at the user's first item), cut every
    ``max_items`` items."""
    n = time.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    pos = torch.arange(n)
    first = torch.zeros(n, dtype=torch.bool)
    starts_user = ptr[:-1][ptr[1:] > ptr[:-1]]
    first[starts_user] = True
    new = first.clone()
    new[1:] |= (time[1:] - time[:-1]) > float(gap)
    run = torch.cumsum(new.long(), 0) - 1
    run_start = pos[new][run]
    r = pos - run_start
    m = max(int(max_items), 1)
    return run_start + torch.div(r, m, rounding_mode="floor") * m


# ---- the source -----------------------------------------------------------------------------------------
@dataclass
class Stage:
    """The rows of one evaluation stage, contiguous by request: ``rows`` (batch fields) and the
    request count."""

    rows: Dict[str, torch.Tensor]
    num_requests: int


class McRecSource:
    """What ``RecDataModule`` serves for MCRec (files or built from interactions): ``ctr`` batches
    ``{user_id, item_id, seq, seq_len, session_seq, label, request}`` (and ``prior_score`` for ORec
    files); ``stage_rows(stage)`` gives the pipeline a stage's rows whole."""

    def __init__(self, num_users, num_items, train_ds, stages: Dict[str, Stage], item_counts, train_keys,
                 stats, paths=None, max_seq_len=DEFAULT_LEN, orec_train=None):
        self.num_users, self.num_items, self.group_num = int(num_users), int(num_items), 0
        self._train, self._stages = train_ds, stages
        self._item_counts, self._train_keys = item_counts, train_keys
        self.stats, self.paths, self.max_seq_len = stats, dict(paths or {}), int(max_seq_len)
        self.orec_train = orec_train  # ORec rows with given priors (files only), or None

    def stages(self) -> set:
        return {"train", *self._stages}

    def model_args(self) -> Dict[str, Any]:
        return {}

    def item_counts(self) -> torch.Tensor:
        return self._item_counts

    def train_keys(self) -> torch.Tensor:
        return self._train_keys

    def _check(self, kind):
        if kind != "ctr":
            raise DataError(str(self.paths.get("train", "mcrec")),
                            message=f"MCRec samples are CTR rows; this model trains on '{kind}' data")

    def train(self, kind: str):
        self._check(kind)
        return self._train

    def stage_rows(self, stage: str) -> Stage:
        if stage not in self._stages:
            where = self.paths.get(stage, self.paths.get("train", "mcrec"))
            raise DataError(str(where), message=f"no {stage} rows")
        return self._stages[stage]

    def eval(self, kind: str, stage: str):
        self._check(kind)
        return _fixed(self.stage_rows(stage).rows)


def _fixed(rows: Dict[str, torch.Tensor]):
    from ..dataset import BatchDataset

    n = int(rows["item_id"].numel())
    return BatchDataset(n, lambda idx: {k: v.index_select(0, idx) for k, v in rows.items()})


def _as_batch(rows: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {k: v for k, v in rows.items() if k != "lines"}
    out["user_id"] = out["request"]  # files carry no user: one "user" per request (gauc per request)
    return out


def open_source(folder, cfg: Dict[str, Any]) -> McRecSource:
    """``data.format: mcrec``: ``crec_{train,valid,test}.tsv`` (+ optional ``orec_train.tsv``) of ``folder``."""
    folder = Path(folder)
    L = int(cfg.get("max_seq_len", DEFAULT_LEN))
    paths = {s: folder / f"crec_{s}.tsv" for s in STAGES}
    if not paths["train"].is_file():
        raise DataError(str(paths["train"]), message="file not found (data.format: mcrec reads crec_train.tsv, "
                                                     "crec_valid.tsv, crec_test.tsv)")
    read = {s: _as_batch(read_rows(p, "crec", L)) for s, p in paths.items() if p.is_file()}
    orec = None
    if (folder / "orec_train.tsv").is_file():
        paths["orec_train"] = folder / "orec_train.tsv"
        orec = _as_batch(read_rows(paths["orec_train"], "orec", L))
    every = list(read.values()) + ([orec] if orec is not None else [])
    num_items = max(max(int(r["item_id"].max()), int(r["seq"].max()), int(r["session_seq"].max())) for r in every) + 1
    num_users = max(int(r["request"].max()) for r in every) + 1
    tr = read["train"]
    pos = tr["label"] > 0.5
    stages = {s: Stage(r, int(torch.unique(r["request"]).numel())) for s, r in read.items() if s != "train"}
    stats = {f"{s}_rows": float(r["item_id"].numel()) for s, r in read.items()}
    stats.update({f"{s}_requests": float(st.num_requests) for s, st in stages.items()})
    return McRecSource(num_users, num_items, _fixed(tr), stages,
                       torch.bincount(tr["item_id"][pos], minlength=num_items),
                       torch.unique(tr["request"][pos] * num_items + tr["item_id"][pos]), stats, paths, L, orec)


def from_interactions(data, cfg: Dict[str, Any], seed: int) -> McRecSource:
    """The MCRec rows of an interaction dataset (the module docstring): training rows with
    histories and session histories by time (``windows``), negatives drawn per batch; evaluation
    requests of ``data.exposures`` exposures each."""
    from ...progress import stages as progress_stages
    from ..dataset import BatchDataset, UserItemIndex, batch_generator, windows
    from ..preprocess import TEST, TRAIN, VALID

    L = int(cfg.get("max_seq_len", DEFAULT_LEN))
    K = int(cfg.get("exposures", 5))
    gap, smax = float(cfg.get("session_gap", 1800)), int(cfg.get("session_max", 10))
    k_train, k_eval = int(cfg.get("neg_per_pos", 1)), int(cfg.get("eval_neg_per_pos", 1))
    per_user = int(cfg.get("requests_per_user") or 0)
    if K < 1 or smax < 1:
        raise ValueError(f"data.exposures and data.session_max must be >= 1, got {K}, {smax}")
    with progress_stages("mcrec samples", ["train rows", "requests"]) as step:
        step("train rows")
        tmask = data.split == TRAIN
        t_ptr, t_items = data.user_ptr(tmask)
        t_sess = session_starts(t_ptr, data.time[tmask], gap, smax)
        user_of = torch.repeat_interleave(torch.arange(data.num_users), t_ptr[1:] - t_ptr[:-1])
        pos_idx = torch.arange(t_items.numel())
        keep = pos_idx != t_ptr[user_of]
        pos_idx, pos_user = pos_idx[keep], user_of[keep]
        seen = UserItemIndex(data, tmask)

        def make(key):
            rng, idx = batch_generator(seed, key)
            g, u = pos_idx[idx], pos_user[idx]
            seq, n = windows(t_items, t_ptr[u], g, L)
            sess, _ = windows(t_items, t_ptr[u], t_sess[g], L)
            uu = u.repeat(k_train)
            negs = seen.sample_unseen(uu, generator=rng)
            r = k_train + 1
            return {"user_id": torch.cat([u, uu]), "item_id": torch.cat([t_items[g], negs]), "seq": seq.repeat(r, 1),
                    "seq_len": n.repeat(r), "session_seq": sess.repeat(r, 1),
                    "label": torch.cat([torch.ones(g.numel()), torch.zeros(uu.numel())]),
                    "request": torch.full((g.numel() * r,), -1, dtype=torch.long)}

        train_ds = BatchDataset(pos_idx.numel(), make, epoch_keyed=True)
        step("requests")
        every = torch.ones_like(tmask)
        a_ptr, a_items = data.user_ptr(every)
        a_sess = session_starts(a_ptr, data.time, gap, smax)
        a_user = data.user
        never = UserItemIndex(data)
        built, total_req = {}, 0
        for name, code in (("valid", VALID), ("test", TEST)):
            flat = torch.nonzero(data.split == code).flatten()
            if flat.numel() == 0:
                continue
            u = a_user[flat]
            first_of_user = torch.ones_like(u, dtype=torch.bool)
            first_of_user[1:] = u[1:] != u[:-1]
            start = torch.nonzero(first_of_user).flatten()
            grp = torch.cumsum(first_of_user.long(), 0) - 1
            rank = torch.arange(flat.numel()) - start[grp]
            chunk = torch.div(rank, K, rounding_mode="floor")
            if per_user > 0:  # the user's first requests of the stage only
                keep = chunk < per_user
                flat, u, chunk, first_of_user = flat[keep], u[keep], chunk[keep], first_of_user[keep]
            newreq = first_of_user | (chunk != torch.roll(chunk, 1))
            req = torch.cumsum(newreq.long(), 0) - 1 + total_req
            head = flat[newreq]  # the first exposure of each request
            hu = a_user[head]
            seq, n = windows(a_items, a_ptr[hu], head, L)
            sess, _ = windows(a_items, a_ptr[hu], a_sess[head], L)
            local = req - total_req
            g = torch.Generator().manual_seed(int(seed) + (1 if name == "valid" else 2))
            negs = never.sample_unseen(u.repeat(k_eval), generator=g)
            rq = torch.cat([local, local.repeat(k_eval)])
            order = torch.argsort(rq, stable=True)
            rq = rq[order]
            rows = {"user_id": torch.cat([u, u.repeat(k_eval)])[order],
                    "item_id": torch.cat([a_items[flat], negs])[order],
                    "label": torch.cat([torch.ones(flat.numel()), torch.zeros(flat.numel() * k_eval)])[order],
                    "seq": seq[rq], "seq_len": n[rq], "session_seq": sess[rq], "request": rq + total_req}
            built[name] = Stage(rows, int(head.numel()))
            total_req += int(head.numel())
    lag = (torch.arange(t_items.numel()) - t_sess).float()
    stats = {"train_positives": float(pos_idx.numel()), "mean_session_lag": round(float(lag.mean()), 3) if lag.numel() else 0.0}
    for name, st in built.items():
        stats[f"{name}_requests"] = float(st.num_requests)
        stats[f"{name}_rows"] = float(st.rows["item_id"].numel())
    keys = torch.unique(data.user[tmask] * data.num_items + data.item[tmask])
    return McRecSource(data.num_users, data.num_items, train_ds, built, data.item_counts(tmask), keys, stats,
                       max_seq_len=L)


# ---- a generator with planted structure -----------------------------------------------------------------
GENERATOR = dict(num_users=300, num_items=120, num_cates=6, sessions=6, session_len=(3, 8), drift_share=0.5,
                 noise=0.05, seed=2024)


def generate(num_users: int, num_items: int, num_cates: int, sessions: int, session_len=(3, 8),
             drift_share: float = 0.5, noise: float = 0.1, seed: int = 2024):
    """Interactions ``(user, item, timestamp, category of each item)`` (numpy; ids from 1) with planted
    structure. Items fall into ``num_cates`` categories (popularity Zipf inside each). A user
    consumes ``sessions`` sessions of ``session_len`` items (60 s apart; sessions a day apart), each
    item from the user's current category (a share ``noise`` at random). *Stable* users keep one
    category; *drifting* users (``drift_share`` of them) switch to a new category in the middle of
    every session (its items a minute apart), so that within a session the latest items (on the
    device) tell the next ones while the history at the session's start (the cloud's session
    scores) does not; a stable user's items are a day apart (each its own session), so the
    session's history is the latest one and the cheapest choice (the session recommendation) is
    right. The controller can tell the two apart from the history alone (one category, or runs of
    several)."""
    rng = np.random.default_rng(seed)
    cate = (np.arange(num_items) % num_cates) + 1  # category of item id k+1
    rng.shuffle(cate)
    by_cate = {c: np.nonzero(cate == c)[0] + 1 for c in range(1, num_cates + 1)}
    weights = {c: (1.0 / np.arange(1, v.size + 1) ** 0.8) / (1.0 / np.arange(1, v.size + 1) ** 0.8).sum()
               for c, v in by_cate.items()}
    users, items, times = [], [], []
    for u in range(1, num_users + 1):
        drift = rng.random() < drift_share
        c = int(rng.integers(1, num_cates + 1))
        t = 1_000_000 + int(rng.integers(0, 86400))
        used = set()
        for s in range(sessions):
            n = int(rng.integers(session_len[0], session_len[1] + 1))
            switch = n // 2 if drift else n + 1
            for j in range(n):
                if j == switch:
                    c = int(rng.choice([x for x in range(1, num_cates + 1) if x != c]))
                cc = c if rng.random() >= noise else int(rng.integers(1, num_cates + 1))
                pool = by_cate[cc]
                w = weights[cc].copy()
                mask = np.array([i in used for i in pool])
                if mask.all():
                    used.clear()
                    mask[:] = False
                w[mask] = 0.0
                it = int(rng.choice(pool, p=w / w.sum()))
                used.add(it)
                users.append(u)
                items.append(it)
                times.append(t)
                t += 60 if drift else 86400  # a stable user's items are days apart: sessions of one item
            t += 86400
    return (np.array(users), np.array(items), np.array(times), cate)


def write_atomic(out, name: str = "mcrec-gen", **overrides) -> Path:
    """``out/<name>/<name>.inter`` (user_id, item_id, timestamp) and ``.item`` (item_id, category) of
    ``generate`` (``GENERATOR`` defaults, then ``overrides``): train on it with ``-d=<name>``."""
    user, item, ts, cate = generate(**{**GENERATOR, **overrides})
    d = Path(out) / name
    d.mkdir(parents=True, exist_ok=True)
    text = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{t}\n" for u, i, t in zip(user.tolist(), item.tolist(), ts.tolist()))
    items = "item_id:token\tcategory:token\n" + "".join(f"{k + 1}\tc{int(c)}\n" for k, c in enumerate(cate.tolist()))
    for fname, body in ((f"{name}.inter", text), (f"{name}.item", items)):
        tmp = d / f".{fname}.tmp{os.getpid()}"
        tmp.write_text(body)
        os.replace(tmp, d / fname)
    return d


SAMPLE = dict(num_users=10, num_items=30, num_cates=3, sessions=3, session_len=(3, 5), seed=2024)
SAMPLE_DATA = {"split": {"mode": "user_entry", "ratios": [0.6, 0.2, 0.2], "order": "time"}, "max_seq_len": 8,
               "exposures": 2, "neg_per_pos": 1, "eval_neg_per_pos": 1, "session_gap": 1800, "session_max": 10}


def write_sample(out) -> Path:
    """``out/sample-mcrec/``: the generator's interactions (``SAMPLE``) built into MCRec rows
    (``SAMPLE_DATA``) and written in this format: ``crec_{train,valid,test}.tsv`` (one epoch's draw of
    training negatives) and ``orec_train.tsv`` (the training rows with a float prior: the share of
    the row's category in its session history, a stand-in for a cloud score)."""
    import tempfile

    from ...config import CONFIG_DIR, load_yaml, merge
    from ..loading import load_interactions

    d = Path(out) / "sample-mcrec"
    with tempfile.TemporaryDirectory() as tmp:
        write_atomic(tmp, "mcrec-gen", **SAMPLE)
        cfg = merge(load_yaml(CONFIG_DIR / "base.yaml")["data"], SAMPLE_DATA)
        cfg.update(name="mcrec-gen", format="atomic", cache=False)
        data = load_interactions(Path(tmp), cfg, 2024, False)
        src = from_interactions(data, cfg, 2024)
    L = int(SAMPLE_DATA["max_seq_len"])
    tr = src.train("ctr")
    batch = tr[((0, 0, 0), torch.arange(len(tr)))]
    batch["request"] = torch.arange(batch["item_id"].numel())
    write_rows(d / "crec_train.tsv", "crec", batch, L, extra=True)
    for stage in ("valid", "test"):
        write_rows(d / f"crec_{stage}.tsv", "crec", src.stage_rows(stage).rows, L, extra=True)
    cat = torch.tensor([0] + [int(t[1:]) if t.startswith("c") else 0 for t in data.item_attrs.get("category", [""])[1:]])
    sess = batch["session_seq"]
    same = ((cat[sess] == cat[batch["item_id"]].unsqueeze(1)) & (sess != 0)).sum(1).float()
    batch["prior_score"] = ((same + 0.5) / ((sess != 0).sum(1).float() + 1.0)).clamp(0.02, 0.98)
    write_rows(d / "orec_train.tsv", "orec", batch, L, extra=True)
    return d


__all__ = ["read_rows", "write_rows", "open_source", "from_interactions", "session_starts", "generate",
           "write_atomic", "write_sample", "McRecSource", "COLUMNS", "CHOICES", "KINDS", "HOLDS"]
