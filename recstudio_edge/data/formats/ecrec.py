"""ECRec's sample format: read, write, convert, generate, and train from it (``data.format: ecrec``).

One sample per line, nine tab-separated fields, no header::

    user_id  item_id  cate_id  label  item_seq  cate_seq  edge_item_seq  edge_cate_seq  seq_len
    17       230      4        1      12,45,9   3,3,1     45,9           3,1            3

- ``user_id``: non-negative integer; ``item_id``, ``cate_id``: positive integers (0 is padding);
- ``label``: 0 or 1;
- ``item_seq`` / ``cate_seq``: the long-term history (the cloud's) and its categories, comma lists,
  oldest first, any length, possibly empty, the two of the same length. Positions whose item is 0
  (padding, left or right) are dropped, then the *latest* ``seq_length`` (``data.max_seq_len``)
  are kept and left-padded with 0. (The release kept the *oldest* ``seq_length``, so a long
  history lost exactly its recent part.)
- ``edge_item_seq`` / ``edge_cate_seq``: the instant history (the device's), the same rules with
  ``data.edge_len`` (default 10);
- ``seq_len``: the length of the long history, a non-negative integer; the batch holds
  ``min(seq_len, seq_length)``.

Written files hold the real items only (no padding), oldest first; a tenth field,
``probability`` (inference output), is accepted and ignored by the readers. Ids are used as they
are. Malformed rows raise ``DataError`` as ``file:line: field 'x': what is wrong`` (or, with
``data.on_bad_line: skip``, are skipped and counted in ``stats['skipped_lines']``). Files are
written to a temporary name and renamed when complete.

Batch fields (what ``ECRec`` reads): ``user_id, item_id, cate_id, label, item_seq [B, L],
cate_seq [B, L], edge_item_seq [B, E], edge_cate_seq [B, E], seq_len``.

Sources (``formats/__init__.py``):

- ``open_source(folder, cfg)``: the files ``train.txt`` / ``valid.txt`` / ``test.txt`` (other
  names with ``data.files``);
- ``from_interactions(data, cfg, seed)`` (``-d=ml-1m``, ``-d=ml-100k``, any atomic dataset): our
  ``ctr`` samples (``KindBuilder``: every training interaction after the user's first is a request,
  its long history the user's items before it, the latest ``max_seq_len``; one negative per
  positive from items the user never touched in training; validation / test = the
  ``data.split`` targets, by default leave-one-out by time, with ``eval_neg_per_pos`` fixed
  negatives from items the user never touched), plus each item's category (the first token of
  the item's ``genre`` / ``class`` / ``category`` attribute; a hashed bucket of the item token,
  ``data.cate_buckets``, for items without one) and the instant history = the last ``edge_len``
  items of the long one. ``data.max_requests_per_user`` (> 0) keeps each user's latest training
  requests only (ml-1m: 20 per user is a ninth of its 1M requests, an epoch of ~15 s instead of
  ~2.3 min on 2 cores at ECRec's batch of 128). Batches are built by tensor gathers, no per-row
  Python.

``generate(...)`` makes interactions with planted structure (a long-term taste and a short-term
drift, see its docstring); ``write_sample(out)`` writes ``out/sample-ecrec/`` from it.

Command line (from the repository root)::

    python -m recstudio_edge.data.formats.ecrec convert -d ml-1m --data_dir DIR --out OUT \\
        [--max_seq_len 100] [--edge_len 10] [--eval_neg_per_pos 1] [--seed 2024]
    python -m recstudio_edge.data.formats.ecrec check FILE [FILE ...] [--max_seq_len 100] [--edge_len 10]
"""
from __future__ import annotations

import os
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from .staged import StagedSamples
from .fields import cli_data_config, command_line, int_field as _int, int_list as _ids, run_command

FIELDS = ("user_id", "item_id", "cate_id", "label", "item_seq", "cate_seq", "edge_item_seq", "edge_cate_seq",
          "seq_len")
KINDS, HOLDS = ("ctr",), "ECRec CTR"
SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
CATE_COLUMNS = ("genre", "class", "category")  # item attributes read as the category, first found
SEQ_PAIRS = (("item_seq", "cate_seq"), ("edge_item_seq", "edge_cate_seq"))
DEFAULT_SEQ, DEFAULT_EDGE = 100, 10


@dataclass
class Samples:
    """Parsed samples (tensors): ids ``[N]``, ``label`` float, sequences left-padded."""

    user_id: torch.Tensor
    item_id: torch.Tensor
    cate_id: torch.Tensor
    label: torch.Tensor
    item_seq: torch.Tensor
    cate_seq: torch.Tensor
    edge_item_seq: torch.Tensor
    edge_cate_seq: torch.Tensor
    seq_len: torch.Tensor
    path: str = ""
    skipped: int = 0
    lines: Optional[torch.Tensor] = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.user_id.numel())

    def batch(self, idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {k: getattr(self, k).index_select(0, idx) for k in FIELDS}


# ---- reading ---------------------------------------------------------------------------------------
def parse_line(text: str, path, line: int):
    """``(user, item, cate, label, (items, cates), (edge items, edge cates), seq_len)`` of one line
    (padding positions dropped), or ``DataError``."""
    parts = text.split("\t")
    if len(parts) not in (9, 10):
        raise DataError(path, line, None, f"expected 9 tab-separated fields ({' '.join(FIELDS)}), got "
                                          f"{len(parts)}: {text[:80]!r}")
    user = _int(parts[0], path, line, "user_id")
    item = _int(parts[1], path, line, "item_id", 1)
    cate = _int(parts[2], path, line, "cate_id", 1)
    label = parts[3].strip()
    if label not in ("0", "1"):
        raise DataError(path, line, "label", f"expected 0 or 1, got {parts[3]!r}")
    seqs = []
    for a, (ni, nc) in zip((4, 6), SEQ_PAIRS):
        items, cates = _ids(parts[a], path, line, ni), _ids(parts[a + 1], path, line, nc)
        if len(items) != len(cates):
            raise DataError(path, line, nc, f"{len(cates)} entries, but {ni} has {len(items)} (one category per item)")
        keep = [k for k, v in enumerate(items) if v]
        seqs.append(([items[k] for k in keep], [cates[k] for k in keep]))
    seq_len = _int(parts[8], path, line, "seq_len")
    if len(parts) == 10 and parts[9].strip():
        try:
            float(parts[9])
        except ValueError:
            raise DataError(path, line, "probability", f"expected a number, got {parts[9]!r}") from None
    return user, item, cate, int(label), seqs[0], seqs[1], seq_len


def _left_pad(rows: List[List[int]], L: int) -> torch.Tensor:
    out = torch.zeros(len(rows), L, dtype=torch.long)
    for r, v in enumerate(rows):
        keep = v[-L:] if L else []
        if keep:
            out[r, L - len(keep):] = torch.tensor(keep, dtype=torch.long)
    return out


def _read_strict(path: Path, L: int, E: int, on_bad_line: str) -> Samples:
    rows, lines, skipped = [], [], 0
    with open(path, newline=None) as f:
        for n, text in enumerate(f, start=1):
            text = text.rstrip("\r\n")
            if not text.strip() or (n == 1 and text.split("\t")[0].strip().lower() == "user_id"):
                continue
            try:
                rows.append(parse_line(text, str(path), n))
                lines.append(n)
            except DataError:
                if on_bad_line != "skip":
                    raise
                skipped += 1
    col = lambda i, dt=torch.long: torch.tensor([r[i] for r in rows], dtype=dt)  # noqa: E731
    return Samples(col(0), col(1), col(2), col(3, torch.float32),
                   _left_pad([r[4][0] for r in rows], L), _left_pad([r[4][1] for r in rows], L),
                   _left_pad([r[5][0] for r in rows], E), _left_pad([r[5][1] for r in rows], E),
                   col(6).clamp(max=L), str(path), skipped, torch.tensor(lines, dtype=torch.long))


def _flat(col) -> Optional[tuple]:
    """``(counts [n], flat ids)`` of a column of comma lists, or ``None`` when anything is off."""
    s = col.str.strip()
    nonempty = (s != "").to_numpy()
    counts = np.where(nonempty, s.str.count(",").to_numpy() + 1, 0)
    joined = ",".join(s[nonempty])
    total = int(counts.sum())
    if not total:
        return counts, np.zeros(0, dtype=np.int64)
    if any(c not in "0123456789, " for c in set(joined)) or ",," in joined.replace(" ", ""):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = np.fromstring(joined, dtype=np.int64, sep=",")
    return (counts, flat) if flat.size == total else None


def _latest(items: np.ndarray, cates: np.ndarray, counts: np.ndarray, L: int):
    """Drop padding positions (item 0), keep each row's latest ``L``, left-pad: two ``[n, L]``."""
    n = counts.size
    row = np.repeat(np.arange(n), counts)
    real = items != 0
    items, cates, row = items[real], cates[real], row[real]
    kept = np.bincount(row, minlength=n)
    end = np.cumsum(kept)
    from_end = end[row] - np.arange(items.size) - 1
    take = from_end < L
    a, b = np.zeros((n, L), dtype=np.int64), np.zeros((n, L), dtype=np.int64)
    a[row[take], L - 1 - from_end[take]] = items[take]
    b[row[take], L - 1 - from_end[take]] = cates[take]
    return torch.from_numpy(a), torch.from_numpy(b)


def _read_fast(path: Path, L: int, E: int) -> Optional[Samples]:
    """Vectorised reader (pandas' C parser + numpy); ``None`` when anything looks wrong, so that the
    strict reader finds and reports the exact line."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, na_filter=False,
                         engine="c", skip_blank_lines=True, quoting=3)
    except Exception:  # noqa: BLE001 - ragged rows, bad bytes: the strict reader says where
        return None
    if df.shape[1] not in (9, 10) or len(df) == 0:
        return None
    if str(df.iloc[0, 0]).strip().lower() == "user_id":
        df = df.iloc[1:]
    if df.shape[1] == 10 and not pd.to_numeric(df[9].replace("", "0"), errors="coerce").notna().all():
        return None
    try:
        ints = {k: df[i].str.strip().astype(np.int64).to_numpy() for k, i in
                (("user_id", 0), ("item_id", 1), ("cate_id", 2), ("label", 3), ("seq_len", 8))}
    except (ValueError, TypeError, OverflowError):
        return None
    if ((ints["user_id"] < 0).any() or (ints["item_id"] < 1).any() or (ints["cate_id"] < 1).any()
            or not np.isin(ints["label"], (0, 1)).all() or (ints["seq_len"] < 0).any()):
        return None
    seqs = []
    for a, length in ((4, L), (6, E)):
        fi, fc = _flat(df[a]), _flat(df[a + 1])
        if fi is None or fc is None or not np.array_equal(fi[0], fc[0]):
            return None
        seqs.extend(_latest(fi[1], fc[1], fi[0], length))
    t = lambda a, dt=torch.long: torch.tensor(np.asarray(a), dtype=dt)  # noqa: E731
    return Samples(t(ints["user_id"]), t(ints["item_id"]), t(ints["cate_id"]), t(ints["label"], torch.float32),
                   *seqs, t(ints["seq_len"]).clamp(max=L), str(path), 0, None)


def read_samples(path: str | os.PathLike, max_seq_len: int = DEFAULT_SEQ, edge_len: int = DEFAULT_EDGE,
                 on_bad_line: str = "error") -> Samples:
    """Read an ECRec sample file (the module docstring)."""
    path = Path(path)
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    if int(max_seq_len) < 1 or int(edge_len) < 1:
        raise ValueError(f"max_seq_len and edge_len must be >= 1, got {max_seq_len}, {edge_len}")
    if not path.is_file():
        raise DataError(str(path), message="file not found")
    fast = _read_fast(path, int(max_seq_len), int(edge_len))
    if fast is not None:
        return fast
    s = _read_strict(path, int(max_seq_len), int(edge_len), on_bad_line)
    if len(s) == 0:
        raise DataError(str(path), message="no samples" + (f" ({s.skipped} malformed lines skipped)" if s.skipped else ""))
    return s


# ---- writing ----------------------------------------------------------------------------------------
def _np(t, dt=np.int64):
    return np.asarray(torch.as_tensor(t).detach().cpu()).astype(dt)


def _lists(seq: np.ndarray, other: np.ndarray) -> (List[str], List[str]):
    """Comma lists of each row's real positions (item != 0) of ``seq`` and, aligned, ``other``."""
    a, b = [], []
    for r in range(seq.shape[0]):
        keep = seq[r] != 0
        a.append(",".join(map(str, seq[r][keep].tolist())))
        b.append(",".join(map(str, other[r][keep].tolist())))
    return a, b


def format_lines(batch: Dict[str, Any], probability=None) -> List[str]:
    """Lines of the format (no newline) for a batch dict with the fields of ``FIELDS``."""
    u, i, c = _np(batch["user_id"]), _np(batch["item_id"]), _np(batch["cate_id"])
    y = np.rint(_np(batch["label"], np.float64)).astype(np.int64)
    n = _np(batch["seq_len"])
    li, lc = _lists(_np(batch["item_seq"]), _np(batch["cate_seq"]))
    ei, ec = _lists(_np(batch["edge_item_seq"]), _np(batch["edge_cate_seq"]))
    p = None if probability is None else _np(probability, np.float64)
    out = []
    for r in range(u.shape[0]):
        line = f"{u[r]}\t{i[r]}\t{c[r]}\t{y[r]}\t{li[r]}\t{lc[r]}\t{ei[r]}\t{ec[r]}\t{n[r]}"
        if p is not None:
            line += f"\t{p[r]:.6g}"
        out.append(line)
    return out


def write_samples(path: str | os.PathLike, samples, probability=None, chunk: int = 65536) -> Path:
    """Write ``samples`` (``Samples`` or a batch dict) to ``path`` (temporary name, renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {k: getattr(samples, k) for k in FIELDS} if isinstance(samples, Samples) else {k: samples[k] for k in FIELDS}
    n = int(cols["user_id"].numel())
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            for s in range(0, n, chunk):
                part = {k: v[s:s + chunk] for k, v in cols.items()}
                lines = format_lines(part, None if probability is None else probability[s:s + chunk])
                if lines:
                    f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---- the sources -----------------------------------------------------------------------------------
def _ctr_error(where, kind: str):
    return DataError(str(where), message=f"data.format=ecrec holds ECRec CTR samples; this model trains on '{kind}' data")


class SampleFiles(StagedSamples):
    """ECRec sample files of one dataset, read once (``data.format: ecrec``)."""

    FORMAT, HOLDS = "ecrec", "ECRec CTR"

    def __init__(self, folder, files: Optional[Dict[str, Any]] = None, max_seq_len: int = DEFAULT_SEQ,
                 edge_len: int = DEFAULT_EDGE, on_bad_line: str = "error"):
        from .pinrec import _split_paths

        self.folder = Path(folder)
        self.paths = _split_paths(self.folder, files)
        self.samples: Dict[str, Samples] = {}
        for stage, p in self.paths.items():
            if stage == "train" or p.exists():
                self.samples[stage] = read_samples(p, max_seq_len, edge_len, on_bad_line)
        every = list(self.samples.values())
        self.edge_len = int(edge_len)
        self.num_users = max(int(s.user_id.max()) for s in every) + 1
        self.num_items = max(max(int(s.item_id.max()), int(s.item_seq.max()), int(s.edge_item_seq.max()))
                             for s in every) + 1
        self.num_cates = max(max(int(s.cate_id.max()), int(s.cate_seq.max()), int(s.edge_cate_seq.max()))
                             for s in every) + 1
        self.group_num = 0
        self.stats = {f"{k}_rows": float(len(s)) for k, s in self.samples.items()}
        self.stats.update(skipped_lines=float(sum(s.skipped for s in every)), num_cates=float(self.num_cates - 1))

    def model_args(self) -> Dict[str, Any]:
        return {"num_cates": self.num_cates, "edge_len": self.edge_len}

    def read_input(self, path):
        from ..dataset import BatchDataset

        s = read_samples(path, self.samples["train"].item_seq.size(1), self.edge_len)
        return BatchDataset(len(s), s.batch)


def item_categories(data, buckets: int = 32) -> (torch.Tensor, int, str):
    """``(cate [num_items], num_cates (padding included), where from)``: each item's first token of its
    ``genre`` / ``class`` / ``category`` attribute (ids 1.. in sorted token order); items without one
    (or every item, when the dataset has no such column) get a hashed bucket of their token,
    ``1 + named + crc32(token) % buckets``."""
    attrs = getattr(data, "item_attrs", None) or {}
    column = next((c for c in CATE_COLUMNS if c in attrs), None)
    first = [""] * data.num_items
    if column is not None:
        first = [(v.split() or [""])[0] for v in attrs[column]]
        first[0] = ""
    named = sorted({t for t in first if t})
    code = {t: k + 1 for k, t in enumerate(named)}
    cate = torch.zeros(data.num_items, dtype=torch.long)
    hashed = 0
    for i in range(1, data.num_items):
        if first[i]:
            cate[i] = code[first[i]]
        else:
            cate[i] = 1 + len(named) + zlib.crc32(str(data.item_tokens[i]).encode()) % int(buckets)
            hashed += 1
    num = 1 + len(named) + (int(buckets) if hashed else 0)
    return cate, num, (column or "hashed")


class InteractionSamples:
    """ECRec samples built from ``Interactions`` (the module docstring): ``KindBuilder``'s ``ctr``
    rows with categories and instant histories added by gathers."""

    def __init__(self, data, cfg: Dict[str, Any], seed: int = 0):
        from ..dataset import KindBuilder

        self.data = data
        self.builder = KindBuilder.from_config(data, cfg, seed)
        self.edge_len = int(cfg.get("edge_len", DEFAULT_EDGE))
        if self.edge_len < 1:
            raise ValueError(f"data.edge_len must be >= 1, got {self.edge_len}")
        self.max_requests = int(cfg.get("max_requests_per_user") or 0)
        self.cate, self.num_cates, self.cate_from = item_categories(data, int(cfg.get("cate_buckets", 32)))
        self.num_users, self.num_items, self.group_num = data.num_users, data.num_items, 0
        self.paths = {}
        tr = self.builder.train_mask
        self.stats = {"interactions": float(data.user.numel()), "train_interactions": float(tr.sum()),
                      "num_cates": float(self.num_cates - 1), "hashed_cates": float(self.cate_from == "hashed")}

    def stages(self) -> set:
        return {"train", "valid", "test"}

    def model_args(self) -> Dict[str, Any]:
        return {"num_cates": self.num_cates, "edge_len": self.edge_len}

    def item_counts(self) -> torch.Tensor:
        return self.data.item_counts(self.builder.train_mask)

    def train_keys(self) -> torch.Tensor:
        from ..dataset import UserItemIndex

        return UserItemIndex(self.data, self.builder.train_mask).keys

    def _add(self, b: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        seq = b.pop("seq")
        cate, E = self.cate, self.edge_len
        edge = seq[:, -E:] if seq.size(1) >= E else torch.cat([seq.new_zeros(seq.size(0), E - seq.size(1)), seq], 1)
        return {"user_id": b["user_id"], "item_id": b["item_id"], "cate_id": cate[b["item_id"]], "label": b["label"],
                "item_seq": seq, "cate_seq": cate[seq], "edge_item_seq": edge, "edge_cate_seq": cate[edge],
                "seq_len": b["seq_len"]}

    def _train_rows(self) -> Optional[torch.Tensor]:
        """With ``max_requests_per_user``: the rows of ``KindBuilder``'s ctr training dataset (one per
        training interaction after the user's first, users in order, time order) to keep."""
        if self.max_requests <= 0:
            return None
        ptr = self.builder.train_ptr
        per = (ptr[1:] - ptr[:-1] - 1).clamp(min=0)  # requests per user
        start = torch.cumsum(per, 0) - per
        user_of = torch.repeat_interleave(torch.arange(per.numel()), per)
        pos = torch.arange(int(per.sum())) - start[user_of]
        return torch.nonzero(pos >= per[user_of] - self.max_requests).flatten()

    def train(self, kind: str):
        from ..dataset import BatchDataset

        if kind != "ctr":
            raise _ctr_error("interactions", kind)
        inner, rows = self.builder.train("ctr"), self._train_rows()

        def make(key):
            if rows is not None:
                key = (key[0], rows[key[1]]) if isinstance(key, tuple) else rows[key]
            return self._add(inner.make_batch(key))

        return BatchDataset(len(inner) if rows is None else rows.numel(), make, epoch_keyed=True)

    def eval(self, kind: str, stage: str):
        from ..dataset import BatchDataset

        if kind != "ctr":
            raise _ctr_error("interactions", kind)
        inner = self.builder.eval("ctr", stage)
        return BatchDataset(len(inner), lambda idx: self._add(inner.make_batch(idx)))

    def read_input(self, path):
        """``--task=infer --input=FILE``: an ECRec sample file, read with this data's lengths."""
        from ..dataset import BatchDataset

        s = read_samples(path, self.builder.L, self.edge_len)
        return BatchDataset(len(s), s.batch)


def open_source(folder, cfg: Dict[str, Any]) -> SampleFiles:
    """``data.format: ecrec``: the sample files of ``folder`` (``data.files``, ``data.max_seq_len``,
    ``data.edge_len``, ``data.on_bad_line`` apply)."""
    return SampleFiles(folder, cfg.get("files") or None, int(cfg.get("max_seq_len", DEFAULT_SEQ)),
                       int(cfg.get("edge_len", DEFAULT_EDGE)), cfg.get("on_bad_line", "error"))


def from_interactions(data, cfg: Dict[str, Any], seed: int = 0) -> InteractionSamples:
    return InteractionSamples(data, cfg, seed)


# ---- a generator with planted structure ---------------------------------------------------------------
def generate(num_users: int = 300, num_cates: int = 12, items_per_cate: int = 15, per_user: int = 40,
             p_taste: float = 0.3, drift_len: int = 6, seed: int = 2024):
    """Interactions (``data/preprocess.Interactions``, leave-one-out split by time) with planted structure.

    Every user has a long-term *taste* (one category, fixed for the whole history) and a short-term
    *drift* (a category, never the taste, that changes every ``drift_len`` interactions). Each
    interaction is an item of the taste category with probability ``p_taste``, else of the current
    drift category (uniform within the category). The next item is predictable from the instant
    sequence (the drift fills the last few items) and from the long history (the taste is its most
    frequent category, but often absent from the last few items): a model that reads only the
    instant sequence misses the taste requests whose taste left the instant window, which the
    long history, and so the memory, carries. Items carry a ``category`` attribute (``item_attrs``)."""
    from ..preprocess import Interactions, split_codes

    rng = np.random.default_rng(seed)
    U, C, M, n, T = int(num_users), int(num_cates), int(items_per_cate), int(per_user), int(drift_len)
    if C < 2 or T < 1:
        raise ValueError(f"generate: num_cates >= 2 and drift_len >= 1, got {C}, {T}")
    taste = rng.integers(0, C, U)
    blocks = -(-n // T)
    drift = (taste[:, None] + 1 + rng.integers(0, C - 1, (U, blocks))) % C  # never the taste
    from_taste = rng.random((U, n)) < float(p_taste)
    cats = np.where(from_taste, taste[:, None], np.repeat(drift, T, axis=1)[:, :n])
    items = cats * M + rng.integers(0, M, (U, n)) + 1
    user = np.repeat(np.arange(1, U + 1), n)
    codes = split_codes(user, np.zeros(user.size), "loo", [0.8, 0.1, 0.1], "time", seed)
    num_items = C * M + 1
    cate_tok = [""] + [f"c{(i - 1) // M}" for i in range(1, num_items)]
    return Interactions(
        num_users=U + 1, num_items=num_items, user=torch.from_numpy(user), item=torch.from_numpy(items.reshape(-1)),
        time=torch.from_numpy(np.tile(np.arange(n, dtype=np.float64), U)), split=torch.from_numpy(codes),
        user_tokens=["[PAD]"] + [f"u{u}" for u in range(1, U + 1)],
        item_tokens=["[PAD]"] + [f"i{i}" for i in range(1, num_items)], item_attrs={"category": cate_tok})


SAMPLE = dict(num_users=8, num_cates=4, items_per_cate=5, per_user=10, seed=2024)
SAMPLE_DATA = {"max_seq_len": 8, "edge_len": 4, "neg_per_pos": 1, "eval_neg_per_pos": 1}


def write_files(source: InteractionSamples, out, seed: int = 2024) -> Dict[str, int]:
    """A source's train (one draw of negatives) / valid / test rows as ``train.txt`` ... in ``out``."""
    out = Path(out)
    counts = {}
    for stage in ("train", "valid", "test"):
        ds = source.train("ctr") if stage == "train" else source.eval("ctr", stage)
        idx = torch.arange(len(ds))
        b = ds[((0, 0, 0), idx)] if stage == "train" else ds[idx]
        write_samples(out / SPLIT_FILES[stage], b)
        counts[stage] = int(b["user_id"].numel())
    return counts


def write_sample(out) -> Path:
    """``out/sample-ecrec/``: train/valid/test.txt of the generator (``SAMPLE``, ``SAMPLE_DATA``)."""
    d = Path(out) / "sample-ecrec"
    write_files(from_interactions(generate(**SAMPLE), SAMPLE_DATA, 2024), d)
    return d


# ---- converting a dataset ------------------------------------------------------------------------------
CONVERT_DEFAULTS = {"split": {"mode": "loo"}, "max_seq_len": DEFAULT_SEQ, "edge_len": DEFAULT_EDGE,
                    "neg_per_pos": 1, "eval_neg_per_pos": 1}


def convert(data_cfg: Dict[str, Any], data_dir, out_dir, seed: int = 2024) -> Dict[str, Any]:
    """Write a dataset's ECRec samples (``from_interactions``) as ``train.txt`` / ``valid.txt`` /
    ``test.txt`` in ``out_dir``; returns counts."""
    from ..loading import load_interactions

    cfg = dict(data_cfg)
    data = load_interactions(Path(data_dir), cfg, seed, cfg.get("cache", True))
    src = from_interactions(data, cfg, seed)
    rows = write_files(src, out_dir, seed)
    return {"out_dir": str(out_dir), "rows": rows, "num_users": data.num_users - 1, "num_items": data.num_items - 1,
            "num_cates": src.num_cates - 1, "categories": src.cate_from}


def _data_config(dataset: Optional[str], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The command line's data config: base.yaml's ``data:`` < ``CONVERT_DEFAULTS`` <
    ``configs/data/<dataset>.yaml``'s ``data:`` < the options given (``fields.cli_data_config``)."""
    return cli_data_config(dataset, CONVERT_DEFAULTS, overrides)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap, sub, c = command_line("ecrec", "ECRec sample files: convert a dataset to them, or check them.",
                              "write a dataset's ECRec samples (train/valid/test.txt)")
    c.add_argument("--max_seq_len", type=int)
    c.add_argument("--edge_len", type=int)
    c.add_argument("--eval_neg_per_pos", type=int)
    c.add_argument("--max_requests_per_user", type=int)
    k = sub.add_parser("check", help="read sample files and print their sizes (errors as file:line)")
    k.add_argument("files", nargs="+")
    k.add_argument("--max_seq_len", type=int, default=DEFAULT_SEQ)
    k.add_argument("--edge_len", type=int, default=DEFAULT_EDGE)
    args = ap.parse_args(argv)

    def work():
        if args.cmd == "convert":
            cfg = _data_config(args.dataset, {"max_seq_len": args.max_seq_len, "edge_len": args.edge_len,
                                              "eval_neg_per_pos": args.eval_neg_per_pos,
                                              "max_requests_per_user": args.max_requests_per_user})
            res = convert(cfg, args.data_dir, args.out, seed=args.seed)
            print(f"wrote {res['out_dir']}: " + ", ".join(f"{k} {v} rows" for k, v in res["rows"].items())
                  + f"; {res['num_users']} users, {res['num_items']} items, {res['num_cates']} categories "
                    f"({res['categories']})")
        else:
            for f in args.files:
                s = read_samples(f, args.max_seq_len, args.edge_len)
                print(f"{f}: {len(s)} samples, {int(s.label.sum())} positive, max item id "
                      f"{int(max(s.item_id.max(), s.item_seq.max()))}, max category {int(s.cate_id.max())}")

    return run_command(work)


if __name__ == "__main__":
    raise SystemExit(main())
