"""CIGAR's sample format (the Alimama display-ad rows of the release), read, written, generated, and
built from any interaction dataset (``data.format: cigar``; models PNN, CIGAR_WO_PN, CIGAR_WO_CDGNN, CIGAR).

One sample per line, tab-separated, ``data.column_len`` (29) columns, no header. Which column holds
what is configurable (``data:`` keys, the release's defaults)::

    uid_graph_label_col_id: "0,9,28"          user id, neighbour list, label
    user_fea_col_id: "1,2,3,4,5,6,7,8"         8 user features (cms_segid ... new_user_class_level)
    seq_col_id: "13,14,15,16,17"               5 behaviour sequences, one per item feature, in that order
    item_fea_col_id: "20,21,22,23,24"          5 item features (adgroup_id, cate_id, campaign_id, customer, brand)

The other columns are ignored (written empty). Every id in a file is a raw non-negative integer; the
reader adds 1 to every one of them (user id, neighbours, features, sequence entries), so that 0 is
padding in the tensors, and the writer takes the 1 off again. (The release added 1 to the features
but not to the sequences, which share the features' embedding tables: a sequence entry looked up the
embedding of the id below it.) A neighbour list is a comma list of user ids, possibly empty, the
first ``data.max_neighbors`` (10) kept; a sequence is a comma list, oldest first, the last
``data.max_seq_len`` (100) kept; all five sequences of a row have the same length; the label is 0 or 1.
A malformed row is a ``DataError`` naming ``file:line: field 'x'`` (or is skipped and counted with
``data.on_bad_line: skip``). Written files may carry one more column, ``probability``.

Batches (``BatchDataset``, data kind ``cigar``): ``user_id [B]``, ``user_feat [B, Fu]``,
``item_feat [B, Fi]``, ``item_id [B]`` (= the first item feature), ``seq_feat [B, Fi, L]`` (left-padded),
``seq_len [B]``, ``neighbors [B, K]`` (0 = none), ``label [B]``.

Built from interactions (``-d=ml-1m`` / ``ml-100k`` / any atomic dataset with a CIGAR model,
``from_interactions``): one row per interaction of the train / valid / test split (the model YAMLs
split each user's interactions by time), label = ``rating >= data.like_rating`` (4); user features
``age, gender, occupation, zip prefix`` (the first ``ZIP_PREFIX`` characters) from the ``.user`` file;
item features ``item, first genre, year`` from the ``.item`` file; the sequences are the items the
row may know (training rows: the user's earlier training items; evaluation rows: every item the user
has outside that stage's targets, as ``KindBuilder``'s ctr samples) as item / genre / year;
neighbours = the ``max_neighbors`` users most similar by training history (cosine over item sets,
sparse products in chunks, ties to the smaller id). A missing attribute gets a derived feature: a
hashed bucket of the user id for a user column, the item's ``category`` token or a popularity decile
for a genre, a popularity decile for a year (the synthetic data has no ``.user`` file and only a
``category`` per item). With ``data.sampled_negatives`` (the format's default; the CIGAR YAMLs set it
false) every row also brings ``data.neg_per_pos`` (valid / test: ``eval_neg_per_pos``) items the user
never touched as unclicked rows (fixed, seeded), as the zoo's ctr samples: what the model sweep's
leave-one-out data needs for a GAUC (one rated row per user has no pair to rank).

Generator (``generate``, ``write_sample``): groups of devices with a shared taste (liked categories,
disjoint between groups while the categories last, so an item's popularity says little); a user's
own history is short and half noise, its neighbours are mostly of its own group, so the taste is
reachable through the neighbour graph; user features carry no signal.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from .fields import int_list as _list

KINDS, HOLDS = ("cigar",), "CIGAR (Alimama 29-column)"
SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
DEFAULTS = {"column_len": 29, "user_fea_col_id": "1,2,3,4,5,6,7,8", "item_fea_col_id": "20,21,22,23,24",
            "seq_col_id": "13,14,15,16,17", "uid_graph_label_col_id": "0,9,28", "max_neighbors": 10,
            "max_seq_len": 100, "like_rating": 4,
            "sampled_negatives": True}
ZIP_PREFIX = 2  # characters of a zip code kept as the user's region feature
HASH_BUCKETS = 16  # buckets of a derived user feature (an attribute the dataset lacks)


# ---- the column layout ---------------------------------------------------------------------------------
def _ids(value, name: str) -> List[int]:
    if isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [p for p in str(value).split(",") if p.strip()]
    try:
        out = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"data.{name}: expected comma-separated column numbers, got {value!r}") from None
    if not out or min(out) < 0:
        raise ValueError(f"data.{name}: expected non-negative column numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class Layout:
    """Which column holds what (``data.*_col_id``), checked: distinct columns inside ``column_len``, one
    sequence per item feature."""

    user: tuple
    item: tuple
    seq: tuple
    uid: int
    graph: int
    label: int
    n: int = 29

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Layout":
        g = lambda k: cfg.get(k) if cfg.get(k) is not None else DEFAULTS[k]  # noqa: E731
        user, item, seq = _ids(g("user_fea_col_id"), "user_fea_col_id"), _ids(g("item_fea_col_id"), "item_fea_col_id"), \
            _ids(g("seq_col_id"), "seq_col_id")
        ugl = _ids(g("uid_graph_label_col_id"), "uid_graph_label_col_id")
        if len(ugl) != 3:
            raise ValueError(f"data.uid_graph_label_col_id: expected 3 columns (user, neighbours, label), got {ugl}")
        if len(seq) != len(item):
            raise ValueError(f"data.seq_col_id: one sequence per item feature ({len(item)}), got {len(seq)} columns")
        n = int(g("column_len"))
        every = [*user, *item, *seq, *ugl]
        if len(set(every)) != len(every):
            raise ValueError(f"data.*_col_id: a column is named twice: {every}")
        if max(every) >= n:
            raise ValueError(f"data.*_col_id: column {max(every)} is outside data.column_len={n}")
        return cls(tuple(user), tuple(item), tuple(seq), ugl[0], ugl[1], ugl[2], n)


# ---- samples --------------------------------------------------------------------------------------
@dataclass
class Samples:
    """Parsed rows, ids shifted by one (0 = padding): ``user_id [N]``, ``user_feat [N, Fu]``,
    ``item_feat [N, Fi]``, ``seq_feat [N, Fi, L]`` (left-padded), ``seq_len [N]``, ``neighbors [N, K]``,
    ``label [N]`` (float)."""

    user_id: torch.Tensor
    user_feat: torch.Tensor
    item_feat: torch.Tensor
    seq_feat: torch.Tensor
    seq_len: torch.Tensor
    neighbors: torch.Tensor
    label: torch.Tensor
    path: str = ""
    skipped: int = 0
    lines: Optional[torch.Tensor] = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.user_id.numel())

    def batch(self, idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"user_id": self.user_id[idx], "user_feat": self.user_feat[idx], "item_feat": self.item_feat[idx],
                "item_id": self.item_feat[idx, 0], "seq_feat": self.seq_feat[idx], "seq_len": self.seq_len[idx],
                "neighbors": self.neighbors[idx], "label": self.label[idx]}


def _int(text: str, path, line: int, name: str) -> int:
    t = text.strip()
    if not t.isdigit():
        raise DataError(path, line, name, f"expected a non-negative integer, got {text!r}")
    return int(t)


def parse_line(text: str, layout: Layout, path, line: int):
    """``(user, user feats, item feats, sequences (lists), neighbours, label)`` of one line, raw ids
    (not shifted), or ``DataError`` naming the field."""
    cols = text.split("\t")
    if len(cols) not in (layout.n, layout.n + 1):
        raise DataError(path, line, None, f"expected {layout.n} tab-separated columns, got {len(cols)}")
    user = _int(cols[layout.uid], path, line, f"user_id (column {layout.uid})")
    ufeat = [_int(cols[c], path, line, f"user feature (column {c})") for c in layout.user]
    ifeat = [_int(cols[c], path, line, f"item feature (column {c})") for c in layout.item]
    seqs = [_list(cols[c], path, line, f"sequence (column {c})") for c in layout.seq]
    if len({len(s) for s in seqs}) > 1:
        raise DataError(path, line, f"sequence (column {layout.seq[0]})",
                        f"the {len(seqs)} sequences differ in length: {[len(s) for s in seqs]}")
    nbrs = _list(cols[layout.graph], path, line, f"neighbor_ids (column {layout.graph})")
    lab = cols[layout.label].strip()
    if lab not in ("0", "1", "0.0", "1.0"):
        raise DataError(path, line, f"label (column {layout.label})", f"expected 0 or 1, got {cols[layout.label]!r}")
    if len(cols) == layout.n + 1 and cols[-1].strip():
        try:
            float(cols[-1])
        except ValueError:
            raise DataError(path, line, "probability", f"expected a number, got {cols[-1]!r}") from None
    return user, ufeat, ifeat, seqs, nbrs, int(float(lab))


def pack(rows: Sequence[tuple], max_seq_len: int, max_neighbors: int, path: str = "", skipped: int = 0,
         lines: Optional[List[int]] = None) -> Samples:
    """Rows of ``parse_line`` (raw ids) as ``Samples`` (ids + 1; last ``max_seq_len`` items, first
    ``max_neighbors`` neighbours)."""
    n, L, K = len(rows), int(max_seq_len), int(max_neighbors)
    fu = len(rows[0][1]) if rows else 0
    fi = len(rows[0][2]) if rows else 0
    seq = torch.zeros(n, fi, L, dtype=torch.long)
    seq_len = torch.zeros(n, dtype=torch.long)
    nb = torch.zeros(n, K, dtype=torch.long)
    for r, (_, _, _, seqs, nbrs, _) in enumerate(rows):
        m = min(len(seqs[0]), L) if seqs else 0
        if m:
            seq[r, :, L - m:] = torch.tensor([s[-m:] for s in seqs], dtype=torch.long) + 1
        seq_len[r] = m
        keep = nbrs[:K]
        if keep:
            nb[r, :len(keep)] = torch.tensor(keep, dtype=torch.long) + 1
    t = lambda vals, dt=torch.long: torch.tensor(vals, dtype=dt)  # noqa: E731
    return Samples(t([row[0] for row in rows]) + 1, t([row[1] for row in rows]).reshape(n, fu) + 1,
                   t([row[2] for row in rows]).reshape(n, fi) + 1, seq, seq_len, nb,
                   t([row[5] for row in rows], torch.float32), path, skipped,
                   None if lines is None else t(lines))


def read_samples(path, cfg: Optional[Mapping[str, Any]] = None, on_bad_line: str = "error") -> Samples:
    """Read one file of the format (``cfg``: the ``data:`` keys of the module docstring)."""
    cfg = dict(cfg or {})
    layout = Layout.from_config(cfg)
    path = Path(path)
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    if not path.is_file():
        raise DataError(str(path), message="file not found")
    rows, lines, skipped = [], [], 0
    try:
        with open(path, newline=None, encoding="utf-8") as f:
            for n, text in enumerate(f, start=1):
                text = text.rstrip("\r\n")
                if not text.strip():
                    continue
                try:
                    rows.append(parse_line(text, layout, str(path), n))
                    lines.append(n)
                except DataError:
                    if on_bad_line != "skip":
                        raise
                    skipped += 1
    except UnicodeDecodeError as e:
        raise DataError(str(path), message=f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not rows:
        raise DataError(str(path), message="no samples" + (f" ({skipped} malformed lines skipped)" if skipped else ""))
    if len({len(r[1]) for r in rows}) > 1 or len({len(r[2]) for r in rows}) > 1:  # pragma: no cover - layout fixes them
        raise DataError(str(path), message="rows differ in their number of features")
    return pack(rows, int(cfg.get("max_seq_len") or DEFAULTS["max_seq_len"]),
                int(cfg.get("max_neighbors") or DEFAULTS["max_neighbors"]), str(path), skipped, lines)


def format_lines(batch: Mapping[str, torch.Tensor], layout: Layout, probability=None) -> List[str]:
    """Lines (no newline) of a batch of ``Samples.batch`` fields, ids written back raw (minus 1)."""
    a = {k: np.asarray(torch.as_tensor(batch[k]).cpu()) for k in
         ("user_id", "user_feat", "item_feat", "seq_feat", "neighbors", "label")}
    p = None if probability is None else np.asarray(torch.as_tensor(probability).detach().cpu(), dtype=np.float64)
    out = []
    for r in range(a["user_id"].shape[0]):
        cols = [""] * layout.n
        cols[layout.uid] = str(int(a["user_id"][r]) - 1)
        for c, v in zip(layout.user, a["user_feat"][r].tolist()):
            cols[c] = str(v - 1)
        for c, v in zip(layout.item, a["item_feat"][r].tolist()):
            cols[c] = str(v - 1)
        seq = a["seq_feat"][r]
        real = seq[0] != 0
        for c, s in zip(layout.seq, seq):
            cols[c] = ",".join(str(v - 1) for v in s[real].tolist())
        nb = a["neighbors"][r]
        cols[layout.graph] = ",".join(str(v - 1) for v in nb[nb != 0].tolist())
        cols[layout.label] = str(int(round(float(a["label"][r]))))
        if p is not None:
            cols.append(f"{p[r]:.6g}")
        out.append("\t".join(cols))
    return out


def write_samples(path, samples, cfg: Optional[Mapping[str, Any]] = None, probability=None,
                  chunk: int = 65536) -> Path:
    """Write ``samples`` (``Samples`` or a batch dict) to ``path``: a temporary name, renamed when complete."""
    layout = Layout.from_config(dict(cfg or {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = samples.batch(torch.arange(len(samples))) if isinstance(samples, Samples) else samples
    n = int(batch["user_id"].numel())
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for s in range(0, n, chunk):
                part = {k: v[s:s + chunk] for k, v in batch.items()}
                pr = None if probability is None else probability[s:s + chunk]
                lines = format_lines(part, layout, pr)
                if lines:
                    f.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---- the source RecDataModule serves -----------------------------------------------------------------
class CigarSource:
    """Rows of the format per stage (``{stage: (size, make_batch)}``) with the facts the data module
    and the models take: ``num_users``, ``num_items``, ``model_args()`` (``user_vocab``, ``item_vocab``:
    rows of each feature's embedding table, padding included; ``num_neighbors``)."""

    group_num = 0

    def __init__(self, rows: Dict[str, tuple], user_vocab: Sequence[int], item_vocab: Sequence[int],
                 num_users: int, num_neighbors: int, train_pos: Dict[str, torch.Tensor], where: str,
                 paths: Optional[Dict[str, Path]] = None, cfg: Optional[Mapping[str, Any]] = None,
                 stats: Optional[Dict[str, float]] = None):
        self.rows, self.where, self.cfg = rows, where, dict(cfg or {})
        self.user_vocab, self.item_vocab = [int(v) for v in user_vocab], [int(v) for v in item_vocab]
        self.num_users, self.num_items = int(num_users), int(self.item_vocab[0])
        self.num_neighbors = int(num_neighbors)
        self._train_pos = train_pos  # user_id, item_id of the positive training rows
        self.paths = dict(paths or {})
        self.stats = {f"{k}_rows": float(v[0]) for k, v in rows.items()}
        self.stats.update(stats or {})

    def stages(self) -> set:
        return set(self.rows)

    def model_args(self) -> Dict[str, Any]:
        return {"user_vocab": list(self.user_vocab), "item_vocab": list(self.item_vocab),
                "num_neighbors": self.num_neighbors}

    def item_counts(self) -> torch.Tensor:
        return torch.bincount(self._train_pos["item_id"], minlength=self.num_items)

    def train_keys(self) -> torch.Tensor:
        return torch.unique(self._train_pos["user_id"] * self.num_items + self._train_pos["item_id"])

    def _dataset(self, kind: str, stage: str):
        from ..dataset import BatchDataset

        if kind not in KINDS:
            raise DataError(self.where, message=f"CIGAR samples serve the 'cigar' data kind; this model trains on "
                                                f"'{kind}' data")
        if stage not in self.rows:
            raise DataError(str(self.paths.get(stage, self.where)), message=f"no {stage} samples")
        size, make = self.rows[stage]
        return BatchDataset(size, make)

    def train(self, kind: str):
        return self._dataset(kind, "train")

    def eval(self, kind: str, stage: str):
        return self._dataset(kind, stage)

    def read_input(self, path):
        """``--task=infer --input=FILE``: a file of the format, checked against the training vocabularies."""
        from ..dataset import BatchDataset

        s = read_samples(path, self.cfg, self.cfg.get("on_bad_line", "error"))
        _check_fits(s, self.user_vocab, self.item_vocab, self.num_users, str(path))
        return BatchDataset(len(s), s.batch)


def _check_fits(s: Samples, user_vocab, item_vocab, num_users: int, where: str) -> None:
    """Ids a model trained on these vocabularies cannot embed: a ``DataError`` naming file:line."""
    checks = [(s.user_feat[:, k], v, f"user feature {k + 1}") for k, v in enumerate(user_vocab)]
    checks += [(s.item_feat[:, k], v, f"item feature {k + 1}") for k, v in enumerate(item_vocab)]
    checks += [(s.seq_feat[:, k].amax(1), v, f"sequence {k + 1}") for k, v in enumerate(item_vocab)]
    checks += [(s.user_id, num_users, "user_id"), (s.neighbors.amax(1), num_users, "neighbor_ids")]
    for values, vocab, name in checks:
        bad = torch.nonzero(values >= vocab).flatten()
        if bad.numel():
            r = int(bad[0])
            line = int(s.lines[r]) if s.lines is not None else None
            raise DataError(where, line, name, f"id {int(values[r]) - 1} is outside the training data's range "
                                               f"0..{vocab - 2}")


def open_source(folder, cfg: Dict[str, Any]) -> CigarSource:
    """``data.format: cigar``: ``train.txt`` / ``valid.txt`` / ``test.txt`` of ``folder`` (``data.files``
    names others); vocabularies = one more than the largest id of any file."""
    folder = Path(folder)
    files = cfg.get("files") or {}
    paths = {k: folder / Path(v) for k, v in dict(files).items()} if files else {k: folder / v for k, v in
                                                                                  SPLIT_FILES.items()}
    if "train" not in paths or set(paths) - set(SPLIT_FILES):
        raise ValueError(f"data.files for CIGAR files: keys train (required), valid, test; got {sorted(paths)}")
    samples = {}
    for stage, p in paths.items():
        if stage == "train" or p.exists():
            samples[stage] = read_samples(p, cfg, cfg.get("on_bad_line", "error"))
    shapes = {(s.user_feat.shape[1], s.item_feat.shape[1]) for s in samples.values()}
    if len(shapes) > 1:  # pragma: no cover - one layout reads them all
        raise DataError(str(folder), message=f"files differ in their number of features: {shapes}")
    return source_of_samples(samples, str(folder), paths, cfg)


def source_of_samples(samples: Dict[str, "Samples"], where: str, paths: Optional[Dict[str, Path]] = None,
                      cfg: Optional[Mapping[str, Any]] = None) -> "CigarSource":
    """The source of parsed samples (``{stage: Samples}``, ``train`` among them): vocabularies and the
    user count are one more than the largest id of any stage (neighbours included)."""
    every = list(samples.values())
    user_vocab = [max(int(s.user_feat[:, k].max()) for s in every) + 1 for k in range(every[0].user_feat.shape[1])]
    item_vocab = [max(max(int(s.item_feat[:, k].max()), int(s.seq_feat[:, k].max())) for s in every) + 1
                  for k in range(every[0].item_feat.shape[1])]
    num_users = max(max(int(s.user_id.max()), int(s.neighbors.max())) for s in every) + 1
    tr = samples["train"]
    pos = tr.label > 0.5
    return CigarSource({k: (len(s), s.batch) for k, s in samples.items()}, user_vocab, item_vocab, num_users,
                       tr.neighbors.shape[1], {"user_id": tr.user_id[pos], "item_id": tr.item_feat[pos, 0]}, where,
                       paths, cfg, {"skipped_lines": float(sum(s.skipped for s in every))})


# ---- built from interactions -------------------------------------------------------------------------
def _vocab_ids(tokens: Sequence[str]) -> torch.Tensor:
    """Each token's id in the sorted vocabulary of the non-empty tokens, from 1; "" -> 0."""
    uniq = sorted({t for t in tokens if t})
    index = {t: i + 1 for i, t in enumerate(uniq)}
    return torch.tensor([index.get(t, 0) for t in tokens], dtype=torch.long)


def _deciles(counts: torch.Tensor) -> torch.Tensor:
    """Popularity decile (1..10) per id of ``counts`` (index 0 stays 0)."""
    order = torch.argsort(counts[1:], stable=True)
    out = torch.zeros(counts.numel(), dtype=torch.long)
    out[order + 1] = torch.arange(order.numel()) * 10 // max(order.numel(), 1) + 1
    return out


def _hashed(n: int, salt: int, buckets: int = HASH_BUCKETS) -> torch.Tensor:
    """A deterministic hashed bucket (1..buckets) of every id ``0..n-1`` (index 0 stays 0)."""
    x = (torch.arange(n, dtype=torch.long) * 2654435761 + salt * 40503) % (2 ** 31 - 1)
    out = (x * 48271 % (2 ** 31 - 1)) % buckets + 1
    out[0] = 0
    return out


def user_features(data) -> torch.Tensor:
    """``[num_users, 4]``: age, gender, occupation, zip prefix (a hashed user-id bucket where missing)."""
    cols = []
    for k, name in enumerate(("age", "gender", "occupation", "zip_code")):
        vals = data.user_attrs.get(name)
        if vals is not None and any(vals[1:]):
            if name == "zip_code":
                vals = [v[:ZIP_PREFIX] for v in vals]
            cols.append(_vocab_ids(vals))
        else:
            cols.append(_hashed(data.num_users, k + 1))
    return torch.stack(cols, 1)


def item_features(data, train_mask: torch.Tensor) -> torch.Tensor:
    """``[num_items, 3]``: the item, its first genre, its year (derived where missing: the module docstring)."""
    pop = _deciles(data.item_counts(train_mask))
    genre = None
    for name in ("genre", "class", "category"):
        vals = data.item_attrs.get(name)
        if vals is not None and any(vals[1:]):
            genre = _vocab_ids([v.split()[0] if v.split() else "" for v in vals])
            break
    year = None
    vals = data.item_attrs.get("release_year")
    if vals is not None and any(vals[1:]):
        year = _vocab_ids([v.strip() for v in vals])
    ids = torch.arange(data.num_items, dtype=torch.long)
    return torch.stack([ids, pop if genre is None else genre, pop if year is None else year], 1)


def neighbours(ptr: torch.Tensor, items: torch.Tensor, num_items: int, k: int, chunk: int = 1024) -> torch.Tensor:
    """``[num_users, k]``: each user's ``k`` most similar users by cosine over their item sets (CSR
    ``ptr, items``), most similar first, ties to the smaller id, 0 = none (no common item, or the user
    has no items). Sparse products in chunks of ``chunk`` users: memory ``chunk x num_users``."""
    import scipy.sparse as sp

    n = ptr.numel() - 1
    p, it = ptr.numpy(), items.numpy()
    rows = np.repeat(np.arange(n), np.diff(p))
    x = sp.csr_matrix((np.ones(it.size, dtype=np.float64), (rows, it)), shape=(n, int(num_items)))
    x.sum_duplicates()
    x.data[:] = 1.0
    norm = np.sqrt(np.asarray(x.sum(1)).ravel())
    inv = np.where(norm > 0, 1.0 / np.maximum(norm, 1e-12), 0.0)
    xn = sp.diags(inv) @ x
    xt = xn.T.tocsr()
    out = torch.zeros(n, k, dtype=torch.long)
    ids = np.arange(n, dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        sim = np.asarray((xn[s:e] @ xt).todense())
        sim[np.arange(e - s), np.arange(s, e)] = 0.0  # not one's own neighbour
        q = np.rint(sim * 1e6).astype(np.int64)  # exact ties, whatever the summation order
        key = torch.from_numpy(q * (n + 1) + (n - ids)[None, :])  # larger = more similar, then smaller id
        top = torch.topk(key, min(k, n), dim=1).indices
        val = torch.gather(torch.from_numpy(q), 1, top)
        top = torch.where(val > 0, top, torch.zeros_like(top))
        out[s:e, :top.shape[1]] = top
    out[0] = 0
    return out


def from_interactions(data, cfg: Dict[str, Any], seed: int = 0) -> CigarSource:
    """The CIGAR rows of an interaction dataset (the module docstring)."""
    from ..dataset import UserItemIndex, windows
    from ..preprocess import HISTORY, TEST, TRAIN, VALID

    cfg = dict(cfg)
    where = str(cfg.get("name", "interactions"))
    if data.rating is None:
        raise DataError(where, message="CIGAR's label is rating >= data.like_rating: this dataset has no ratings")
    L = int(cfg.get("max_seq_len") or DEFAULTS["max_seq_len"])
    K = int(cfg.get("max_neighbors") or DEFAULTS["max_neighbors"])
    like = float(cfg.get("like_rating") if cfg.get("like_rating") is not None else DEFAULTS["like_rating"])
    split = data.split
    train_mask = split == TRAIN
    ufeat, ifeat = user_features(data), item_features(data, train_mask)
    label_all = (data.rating >= like).float()
    t_ptr, t_items = data.user_ptr(train_mask)
    nb = neighbours(t_ptr, t_items, data.num_items, K)
    user_vocab = [int(ufeat[:, j].max()) + 1 for j in range(ufeat.shape[1])]
    item_vocab = [int(ifeat[:, j].max()) + 1 for j in range(ifeat.shape[1])]

    def stage_rows(known: torch.Tensor, target: torch.Tensor, before: bool, neg: int, salt: int):
        """Rows of the ``target`` interactions; history = the ``known`` items (``before``: only those
        earlier than the row, rows being known themselves)."""
        k_ptr, k_items = data.user_ptr(known)
        rows = torch.nonzero(target).flatten()
        users = data.user[rows]
        if before:  # position of the row among the user's known interactions (sorted by user, time)
            pos_in_known = torch.cumsum(known.long(), 0) - 1
            end = pos_in_known[rows]
        else:
            end = k_ptr[users + 1]
        items, labels = data.item[rows], label_all[rows]
        if neg:  # data.sampled_negatives: (eval_)neg_per_pos items the user never touched, unclicked (fixed, seeded)
            g = torch.Generator().manual_seed(int(seed) + salt)
            uu = users.repeat(neg)
            items = torch.cat([items, seen.sample_unseen(uu, generator=g)])
            users, end = torch.cat([users, uu]), torch.cat([end, end.repeat(neg)])
            labels = torch.cat([labels, torch.zeros(uu.numel())])

        def make(idx):
            u = users[idx]
            seq, n = windows(k_items, k_ptr[u], end[idx], L)
            sf = ifeat[seq].permute(0, 2, 1).contiguous()  # [B, Fi, L]; padding id 0 -> row 0 = zeros
            sf = torch.where(seq.unsqueeze(1) != 0, sf, 0)
            it = ifeat[items[idx]]
            return {"user_id": u, "user_feat": ufeat[u], "item_feat": it, "item_id": it[:, 0], "seq_feat": sf,
                    "seq_len": n, "neighbors": nb[u], "label": labels[idx]}

        return users.numel(), make

    seen = UserItemIndex(data)
    sampled = cfg.get("sampled_negatives", DEFAULTS["sampled_negatives"])
    tr_neg = int(cfg.get("neg_per_pos") or 0) if sampled else 0
    ev_neg = int(cfg.get("eval_neg_per_pos") or 0) if sampled else 0
    rows = {"train": stage_rows(train_mask, train_mask, True, tr_neg, 0),
            "valid": stage_rows((split == TRAIN) | (split == HISTORY), split == VALID, False, ev_neg, 1),
            "test": stage_rows((split == TRAIN) | (split == HISTORY) | (split == VALID), split == TEST, False,
                               ev_neg, 2)}
    rows = {k: v for k, v in rows.items() if v[0] > 0 or k == "train"}
    pos = train_mask & (label_all > 0.5)
    stats = {"positive_share": float(label_all[train_mask].mean()) if bool(train_mask.any()) else 0.0,
             "users_with_neighbours": float(((nb != 0).any(1)).sum())}
    return CigarSource(rows, user_vocab, item_vocab, data.num_users, K,
                       {"user_id": data.user[pos], "item_id": data.item[pos]}, where, cfg=cfg, stats=stats)


# ---- the generator with planted structure ----------------------------------------------------------------
GENERATOR = dict(num_users=400, num_items=120, groups=4, num_cates=8, liked_per_group=2, rows_per_user=10,
                 history=3, noise=0.5, same_group_neighbours=0.9, num_neighbors=10, user_feats=8,
                 p_like=0.85, p_other=0.15, seed=7)


def generate(num_users: int = 400, num_items: int = 120, groups: int = 4, num_cates: int = 8,
             liked_per_group: int = 2, rows_per_user: int = 10, history: int = 3, noise: float = 0.5,
             same_group_neighbours: float = 0.9, num_neighbors: int = 10, user_feats: int = 8,
             p_like: float = 0.85, p_other: float = 0.15, seed: int = 7) -> Dict[str, Any]:
    """Rows with planted group structure (raw ids, as in a file). Users fall in ``groups`` groups; each
    group likes ``liked_per_group`` of the ``num_cates`` categories. A row's label is 1 with probability
    ``p_like`` when the target's category is liked by the user's group, else ``p_other``. A user's own
    sequence is short (``history`` items), a ``noise`` share of it random; its ``num_neighbors`` neighbours
    are of its own group with probability ``same_group_neighbours``; user features are random (no
    signal). Items have 5 features: id, category, campaign, customer, brand. Returns ``rows`` (a list of
    ``parse_line`` tuples), ``group`` (per user) and ``liked`` (``[groups, num_cates]`` 0/1)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, num_users)
    liked = np.zeros((groups, num_cates), dtype=np.int64)
    order = rng.permutation(num_cates)
    for g in range(groups):  # disjoint tastes while the categories last: an item's popularity says little
        if (g + 1) * liked_per_group <= num_cates:
            liked[g, order[g * liked_per_group:(g + 1) * liked_per_group]] = 1
        else:
            liked[g, rng.choice(num_cates, liked_per_group, replace=False)] = 1
    cate = rng.integers(0, num_cates, num_items)
    feats = np.stack([np.arange(num_items), cate, np.arange(num_items) // 3, np.arange(num_items) % 7,
                      (np.arange(num_items) * 7919) % 11], 1)
    ufeat = rng.integers(0, 4, (num_users, user_feats))
    members = [np.flatnonzero(group == g) for g in range(groups)]
    nbrs = []
    for u in range(num_users):
        out = []
        for _ in range(num_neighbors):
            pool = members[group[u]] if rng.random() < same_group_neighbours else np.arange(num_users)
            v = int(rng.choice(pool))
            if v != u and v not in out:
                out.append(v)
        nbrs.append(out)
    liked_items = [np.flatnonzero(liked[g][cate] == 1) for g in range(groups)]
    rows = []
    for u in range(num_users):
        g = group[u]
        hist = [int(rng.choice(liked_items[g])) if rng.random() > noise else int(rng.integers(num_items))
                for _ in range(history)]
        for _ in range(rows_per_user):
            item = int(rng.integers(num_items))
            p = p_like if liked[g, cate[item]] else p_other
            label = int(rng.random() < p)
            seqs = [[int(feats[h, j]) for h in hist] for j in range(feats.shape[1])]
            rows.append((u, ufeat[u].tolist(), feats[item].tolist(), seqs, list(nbrs[u]), label))
    return {"rows": rows, "group": group, "liked": liked}


def generated_source(cfg: Optional[Mapping[str, Any]] = None, **gen) -> CigarSource:
    """A source of generated rows split by row order per user (70 / 15 / 15 %), for tests and demos."""
    g = generate(**{**GENERATOR, **gen})
    rows = g["rows"]
    by_user: Dict[int, list] = {}
    for r in rows:
        by_user.setdefault(r[0], []).append(r)
    parts = {"train": [], "valid": [], "test": []}
    for rs in by_user.values():
        a, b = int(len(rs) * 0.7), int(len(rs) * 0.85)
        parts["train"] += rs[:a]
        parts["valid"] += rs[a:b]
        parts["test"] += rs[b:]
    cfg = dict(cfg or {})
    L, K = int(cfg.get("max_seq_len") or DEFAULTS["max_seq_len"]), int(cfg.get("max_neighbors") or 10)
    samples = {k: pack(v, L, K) for k, v in parts.items()}
    src = source_of_samples(samples, "generated", cfg=cfg)
    src.samples, src.generated = samples, g
    return src


SAMPLE = dict(num_users=16, num_items=30, rows_per_user=7, history=2, num_neighbors=3, seed=11)


def write_sample(out) -> Path:
    """``out/sample-cigar/``: train / valid / test files of a tiny generated set (a few KB each), the
    release's 29-column layout; ``configs/data/sample-cigar.yaml`` reads it."""
    g = generate(**{**GENERATOR, **SAMPLE})
    d = Path(out) / "sample-cigar"
    parts = {"train": [], "valid": [], "test": []}
    seen: Dict[int, int] = {}
    for r in g["rows"]:  # per user: 3 training rows, then 2 valid, then 2 test
        k = seen[r[0]] = seen.get(r[0], -1) + 1
        parts["train" if k < 3 else "valid" if k < 5 else "test"].append(r)
    for stage, rows in parts.items():
        write_samples(d / SPLIT_FILES[stage], pack(rows, DEFAULTS["max_seq_len"], SAMPLE["num_neighbors"]))
    return d


__all__ = ["Layout", "Samples", "CigarSource", "read_samples", "write_samples", "format_lines", "parse_line",
           "pack", "open_source", "from_interactions", "neighbours", "generate", "generated_source",
           "write_sample", "user_features", "item_features", "DEFAULTS", "KINDS", "HOLDS"]
