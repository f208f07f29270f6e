"""CTR rows described by features (``data.format: ctr``; models DLRM, DeepFM, DCNv2): labelled rows of
columns in files (Criteo TSV, Parquet, ORC shards), or built from an interaction dataset with its user
and item files (``-d=ml-1m-ctr``), turned into batches by the features of ``data.features``
(``recstudio_edge/features``, docs/features.md).

Files (``open_source``): ``data.files`` maps each stage to a glob under ``<data_dir>/<name>/``
(default ``train*``, ``valid*``, ``test*``; a list of globs is their union); a file is read by its suffix: ``.parquet``, ``.orc``, else
the Criteo TSV layout (label, 13 integers, 26 hex strings, tab-separated: ``data/criteo.py``), which is
also how Terabyte's ``day_0`` .. ``day_23`` are read (``criteo-terabyte.yaml``). Test files without
valid files are halved, the first half valid (the DLRM reference's day 23); without either, the last
``split.ratios`` shares of the training rows are held out (in file order: the later days). ``data.label`` names the label column. When the folder has no files
and ``data.generator`` is set, the Criteo-format generator writes them first (``-d=criteo-synth``):
``generator.shards`` shards, the last two held out as valid and test.

In memory (default) every stage is read once, encoded by ``FeatureSet.encode`` into tensors, and
batches are gathers of rows. With ``data.stream: true`` the training shards (Parquet / ORC) are read by
``ShardedStream`` (``data/streaming.py``): each rank and loader worker its own row groups, a windowed
shuffle of ``data.shuffle_buffer`` rows, its position saved in every checkpoint (``RecDataModule``
``state_dict``) so that ``--resume`` neither repeats nor skips a row. Evaluation stays in memory.

From interactions (``from_interactions``): one row per interaction of the split; the columns are
``user_id``, ``item_id`` (the zoo's 1-based ids), ``timestamp``, ``rating`` and every column of the
``.user`` / ``.item`` files (numbers where every value is one, else strings; a sequence feature's
string column is split on whitespace: MovieLens's genres); ``label`` = ``rating >= data.label_threshold``,
or, on data without ratings (or a null threshold), every interaction is a positive and
``data.neg_per_pos`` (training) / ``data.eval_neg_per_pos`` (evaluation) sampled items the user never
touched are negatives, drawn once with the seed. Without ``data.features``, the features are
``user_id`` and ``item_id`` (identity ids).

The tables that feed the encoder stay available as ``source.tables[stage]`` (``pyarrow.Table``): what
``bench/ctr.py`` writes for the peers, so that everyone trains on the same rows.
"""
from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from ..errors import DataError

log = logging.getLogger(__name__)

KINDS = ("ctr",)
HOLDS = "CTR"
STAGES = ("train", "valid", "test")
READ_SUFFIXES = {".parquet": "parquet", ".orc": "orc"}  # anything else: Criteo TSV
LABEL = "label"


# ---- reading files ---------------------------------------------------------------------------------------
def file_kind(path: Path) -> str:
    return READ_SUFFIXES.get(Path(path).suffix.lower(), "tsv")


def read_table(path: Path, columns: Optional[List[str]] = None):
    """One file as a ``pyarrow.Table`` (its kind by suffix), only ``columns`` when given."""
    import pyarrow as pa

    kind = file_kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    elif kind == "orc":
        import pyarrow.orc as po

        names = po.ORCFile(path).schema.names
    else:
        from ..criteo import read_criteo

        table = read_criteo(path)
        names = table.column_names
    missing = [c for c in columns or () if c not in names]
    if missing:
        from ...names import did_you_mean

        what = "the label column (data.label)" if missing[0] == columns[-1] else "a column data.features reads"
        raise DataError(str(path), field=missing[0], message=f"no such column, {what}; {did_you_mean(missing[0], names)}")
    if kind == "parquet":
        return pq.read_table(path, columns=columns)
    if kind == "orc":
        return po.read_table(path, columns=columns)
    return table.select(columns) if columns else table


def stage_files(folder: Path, cfg: Mapping[str, Any]) -> Dict[str, List[Path]]:
    """``{stage: sorted files}`` of ``data.files`` globs (defaults ``train*`` ...), hidden and temporary
    files left out; stages whose glob matches nothing are absent."""
    globs = {s: f"{s}*" for s in STAGES}
    files = cfg.get("files") or {}
    unknown = sorted(set(files) - set(STAGES))
    if unknown:
        from ...names import did_you_mean

        raise DataError(str(folder), message=f"data.files: unknown stage {unknown[0]!r} "
                                             f"({did_you_mean(unknown[0], STAGES)})")
    globs.update({k: v for k, v in files.items() if v})
    out = {}
    for stage, patterns in globs.items():
        found = []
        for pattern in [patterns] if isinstance(patterns, str) else list(patterns):
            found += sorted(Path(p) for p in glob.glob(str(folder / str(pattern)))
                            if Path(p).is_file() and not Path(p).name.startswith(".") and ".tmp" not in Path(p).name)
        if found:
            out[stage] = list(dict.fromkeys(found))
    return out


def _columns(fs, label: str) -> List[str]:
    return list(dict.fromkeys([*fs.columns, label]))


def _concat(tables):
    import pyarrow as pa

    tables = list(tables)
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")


# ---- the source --------------------------------------------------------------------------------------------
class CtrSource:
    """Labelled rows per stage, encoded by a ``FeatureSet``; the facts the models take
    (``model_args()``: ``features`` (the normalised spec) and ``feature_sizes`` (rows of each identity
    feature's table: what the data decides)). ``tables[stage]``: the raw rows (memory mode), and
    ``shards``: the training files a stream reads (``data.stream``)."""

    group_num = 0

    def __init__(self, fs, tables: Dict[str, Any], cfg: Mapping[str, Any], where: str,
                 paths: Optional[Dict[str, Path]] = None, shards: Optional[List[Path]] = None,
                 stats: Optional[Dict[str, float]] = None):
        self.fs, self.cfg, self.where = fs, dict(cfg), where
        self.label = str(self.cfg.get("label") or LABEL)
        self.encoder = RowEncoder(fs, self.label, where)
        self.tables = dict(tables)
        self.shards = list(shards or [])
        self.paths = dict(paths or {})
        self.encoded: Dict[str, Dict[str, torch.Tensor]] = {}
        for stage, table in self.tables.items():
            self.encoded[stage] = self.encode(table, stage)
        self.sizes = self._sizes()
        self.num_users = int(self.sizes.get("user_id", 0))
        self.num_items = int(self.sizes.get("item_id", 0))
        self.stats = {f"{s}_rows": float(next(iter(e.values())).shape[0]) for s, e in self.encoded.items()}
        if self.shards:
            self.stats["train_shards"] = float(len(self.shards))
        if "train" in self.encoded:
            self.stats["train_ctr"] = round(float(self.encoded["train"][LABEL].mean()), 4)
        self.stats.update(stats or {})

    # encoding -----------------------------------------------------------------------------------------
    def encode(self, table, stage: str = "rows") -> Dict[str, torch.Tensor]:
        """The batch tensors of ``table``: the features' inputs and ``label`` (float 0/1)."""
        return self.encoder(table, stage)

    def _sizes(self) -> Dict[str, int]:
        sizes: Dict[str, int] = {}
        for enc in self.encoded.values():
            for k, v in self.fs.data_sizes(enc).items():
                sizes[k] = max(int(v), sizes.get(k, 0))
        for k, v in (self.cfg.get("feature_sizes") or {}).items():
            sizes[str(k)] = int(v)
        return sizes

    # the source contract --------------------------------------------------------------------------------
    def stages(self) -> set:
        return set(self.encoded) | ({"train"} if self.shards else set())

    def model_args(self) -> Dict[str, Any]:
        return {"features": self.fs.to_config(), "feature_sizes": dict(self.sizes)}

    def item_counts(self) -> torch.Tensor:
        enc = self.encoded.get("train") or {}
        if "item_id" in enc and enc["item_id"].dim() == 1 and self.num_items:
            return torch.bincount(enc["item_id"], minlength=self.num_items)
        return torch.zeros(0, dtype=torch.long)

    def train_keys(self) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)

    def _dataset(self, kind: str, stage: str):
        from ..dataset import BatchDataset

        if kind not in KINDS:
            raise DataError(self.where, message=f"CTR rows serve the 'ctr' data kind; this model trains on "
                                                f"'{kind}' data")
        if stage not in self.encoded:
            raise DataError(str(self.paths.get(stage, self.where)), message=f"no {stage} rows")
        enc = self.encoded[stage]
        n = int(next(iter(enc.values())).shape[0])
        return BatchDataset(n, lambda idx: {k: v[idx] for k, v in enc.items()})

    def train(self, kind: str):
        return self._dataset(kind, "train")

    def eval(self, kind: str, stage: str):
        return self._dataset(kind, stage)

    def train_stream(self, batch_size: int, seed: int, num_workers: int = 0):
        """``data.stream``: the training shards as a ``ShardedStream`` of encoded batches, read by
        ``num_workers`` loader workers per rank. Each shuffle window is encoded once and its batches are
        slices of the tensors (``convert_window``: at batch 128, 0.26 ms per batch instead of 1.26)."""
        from ..streaming import ShardedStream

        if not self.shards:
            raise DataError(self.where, message="data.stream: no training shards (Parquet or ORC files) to stream")
        return ShardedStream(self.shards, convert=self.encoder, batch_size=int(batch_size),
                             columns=_columns(self.fs, self.label), seed=int(seed), num_workers=int(num_workers),
                             shuffle_buffer=int(self.cfg.get("shuffle_buffer") or 0), convert_window=True)

    def read_input(self, path):
        """``--task=infer --input=FILE``: rows of a Parquet / ORC / Criteo TSV file."""
        from ..dataset import BatchDataset

        enc = self.encode(read_table(Path(path), _columns(self.fs, self.label)), str(path))
        n = int(enc[LABEL].shape[0])
        return BatchDataset(n, lambda idx: {k: v[idx] for k, v in enc.items()})


class RowEncoder:
    """Rows (a ``pyarrow`` table) -> batch tensors: the features' inputs (``FeatureSet.encode``) and
    ``label`` (float 0/1, checked). The source's and its stream's one encoder: picklable for loader
    workers (it holds no tables)."""

    def __init__(self, fs, label: str, where: str):
        self.fs, self.label, self.where = fs, label, where

    def __call__(self, table, stage: str = "train") -> Dict[str, torch.Tensor]:
        import pyarrow.compute as pc

        if self.label not in table.column_names:
            raise DataError(self.where, message=f"{stage}: no label column {self.label!r} (data.label); "
                                                f"the columns are {table.column_names[:12]}")
        out = self.fs.encode(table)
        lab = table.column(self.label)
        if lab.null_count:
            bad = int(np.flatnonzero(pc.is_null(lab).to_numpy(zero_copy_only=False))[0])
            raise DataError(self.where, message=f"{stage}: row {bad + 1}: field {self.label!r}: empty label")
        y = torch.from_numpy(np.array(lab.to_numpy(zero_copy_only=False), dtype=np.float32))
        if y.numel() and not bool(((y == 0) | (y == 1)).all()):
            bad = int(torch.nonzero((y != 0) & (y != 1))[0])
            raise DataError(self.where, message=f"{stage}: row {bad + 1}: field {self.label!r}: expected 0 or 1, "
                                                f"got {float(y[bad]):g}")
        out[LABEL] = y
        return out


# ---- files ---------------------------------------------------------------------------------------------------
def _feature_set(cfg: Mapping[str, Any], default=None):
    from ...features import FeatureSet

    specs = cfg.get("features") or default
    if not specs:
        raise DataError(str(cfg.get("name")), message="data.features is empty: a CTR dataset needs its features "
                                                      "(docs/features.md)")
    return FeatureSet.from_config(list(specs), where="data.features")


def _hold_out(table, ratios) -> Dict[str, Any]:
    """``{train, valid, test}`` of one table: the last ``ratios[1]``, ``ratios[2]`` shares held out."""
    n = table.num_rows
    r = [float(x) for x in (ratios or (0.8, 0.1, 0.1))]
    total = sum(r)
    n_test = int(round(n * r[2] / total))
    n_valid = int(round(n * r[1] / total))
    n_train = n - n_valid - n_test
    return {"train": table.slice(0, n_train), "valid": table.slice(n_train, n_valid),
            "test": table.slice(n_train + n_valid, n_test)}


def generate_files(folder: Path, gen: Mapping[str, Any], seed: int) -> None:
    """``data.generator`` for a CTR dataset: the Criteo-format generator's shards into ``folder``, the
    last two renamed as the valid and test shards."""
    from .. import criteo

    gen = dict(gen)
    shards = int(gen.pop("shards", 10))
    if "format" in gen:
        gen["fmt"] = gen.pop("format")
    if shards < 3:
        raise DataError(str(folder), message=f"data.generator.shards={shards}: at least 3 (train, valid, test)")
    tmp = folder.parent / f".{folder.name}.generating"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    written = criteo.generate(tmp, seed=int(gen.pop("seed", seed)), shards=shards, **gen)
    written = sorted(Path(p) for p in written)
    suffix = written[0].suffix
    for k, p in enumerate(written[:-2]):
        p.rename(tmp / f"train-{k:05d}{suffix}")
    written[-2].rename(tmp / f"valid-00000{suffix}")
    written[-1].rename(tmp / f"test-00000{suffix}")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)


def open_source(folder, cfg: Dict[str, Any]) -> CtrSource:
    """``data.format: ctr``: the files of ``folder`` (the module docstring)."""
    folder = Path(folder)
    cfg = dict(cfg)
    found = stage_files(folder, cfg) if folder.is_dir() else {}
    if not found and cfg.get("generator"):
        generate_files(folder, cfg["generator"], int(cfg.get("seed") or 0))
        found = stage_files(folder, cfg)
    if "train" not in found:
        raise DataError(str(folder), message=f"no training files (data.files.train: "
                                             f"{(cfg.get('files') or {}).get('train', 'train*')!r} matches nothing)")
    fs = _feature_set(cfg)
    label = str(cfg.get("label") or LABEL)
    cols = _columns(fs, label)
    stream = bool(cfg.get("stream"))
    if stream:
        bad = [p for p in found["train"] if file_kind(p) == "tsv"]
        if bad:
            raise DataError(str(bad[0]), message="data.stream reads Parquet or ORC shards; this is a TSV file: "
                                                 "write it as shards first (python -m recstudio_edge.data.criteo "
                                                 "--help)")
    tables = {}
    for stage, files in found.items():
        if stage == "train" and stream:
            continue
        tables[stage] = _concat(read_table(p, cols) for p in files)
    if "valid" not in tables and "test" in tables:  # the DLRM reference's day_23: first half valid, second test
        t = tables["test"]
        tables["valid"], tables["test"] = t.slice(0, t.num_rows // 2), t.slice(t.num_rows // 2)
    elif "valid" not in tables or "test" not in tables:
        if stream:
            raise DataError(str(folder), message="data.stream needs test files (data.files.test; valid "
                                                 "files too, or the test rows are halved into valid and test)")
        parts = _hold_out(tables["train"], (cfg.get("split") or {}).get("ratios"))
        for stage in ("valid", "test"):
            if stage not in tables:
                tables[stage] = parts[stage]
        tables["train"] = parts["train"]
    paths = {s: (f[0] if len(f) == 1 else folder) for s, f in found.items()}
    return CtrSource(fs, tables, cfg, str(folder), paths=paths, shards=found["train"] if stream else None)


# ---- from interactions ------------------------------------------------------------------------------------------
def _attr_column(values: List[str]):
    """A ``.user`` / ``.item`` column as a pyarrow array: int64 or float64 when every non-empty value is a
    number (empty = null), else strings (empty = null)."""
    import pyarrow as pa

    arr = np.asarray(values, dtype=object)
    present = np.array([bool(str(v).strip()) for v in arr])
    try:
        nums = np.array([float(v) if p else 0.0 for v, p in zip(arr, present)], dtype=np.float64)
    except ValueError:
        return pa.array([str(v) if p else None for v, p in zip(arr, present)], type=pa.string())
    mask = ~present
    if np.all(nums[present] == np.round(nums[present])):
        return pa.array(nums.astype(np.int64), mask=mask)
    return pa.array(nums, mask=mask)


def default_features(data) -> List[dict]:
    """The features of a dataset without ``data.features``: ``user_id`` and ``item_id``, identity ids
    (their tables as large as the data's id ranges)."""
    return [{"name": "user_id", "type": "sparse", "fields": ["user_id"]},
            {"name": "item_id", "type": "sparse", "fields": ["item_id"]}]


def _negatives(users: np.ndarray, num_items: int, count: int, known: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """``[len(users) * count]`` items the users never touched (``known``: sorted user*num_items+item keys),
    uniform, redrawn until clean (at most 20 rounds; the rest keep their draw)."""
    u = np.repeat(users, count)
    items = rng.integers(1, num_items, size=u.size)
    for _ in range(20):
        keys = u * num_items + items
        pos = np.searchsorted(known, keys)
        hit = (pos < known.size) & (known[np.minimum(pos, known.size - 1)] == keys)
        if not hit.any():
            break
        items[hit] = rng.integers(1, num_items, size=int(hit.sum()))
    return items


def _year_of(texts: List[str], pattern: str):
    """The 4-digit year ``pattern`` (a regex with one group) finds in each text, as an int64 array with nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.extract_regex(pa.array([str(t) for t in texts], type=pa.string()), pattern)
    year = pc.struct_field(found, [0])
    return pc.cast(year, pa.int64())


def _common_item_names(attrs: Mapping[str, List[str]], cols: Dict[str, Any], tokens: List[str]) -> None:
    """One feature YAML for every MovieLens layout: ``genre`` (raw files, ml-1m atomic) from ``class``
    (ml-100k atomic), ``release_year`` from ``release_date`` (raw ml-100k: ``01-Jan-1995``), else from the
    ``(1995)`` of the title (raw ml-1m) or of the item token (an atomic file keyed by titles)."""
    import pyarrow.compute as pc

    if "genre" not in cols and "class" in cols:
        cols["genre"] = cols["class"]
    if "release_year" not in cols:
        if "release_date" in attrs:
            cols["release_year"] = _year_of(attrs["release_date"], r"(?P<y>\d{4})\s*$")
        elif "movie_title" in attrs or tokens:
            in_title = r"\((?P<y>\d{4})\)\s*$"
            year = _year_of(tokens, in_title)
            if "movie_title" in attrs:
                year = pc.coalesce(_year_of(attrs["movie_title"], in_title), year)
            cols["release_year"] = year


def interaction_tables(data, cfg: Mapping[str, Any], seed: int = 0, sequence_fields=()) -> Dict[str, Any]:
    """``{stage: pyarrow.Table}`` of an interaction dataset's split (the module docstring)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..preprocess import TEST, TRAIN, VALID

    threshold = cfg.get("label_threshold")
    explicit = threshold is not None and data.rating is not None
    split = data.split.numpy()
    user, item = data.user.numpy(), data.item.numpy()
    time = data.time.numpy()
    rating = data.rating.numpy() if data.rating is not None else np.ones(user.size, dtype=np.float32)
    rng = np.random.default_rng(int(seed))
    known = np.unique(user.astype(np.int64) * data.num_items + item)
    user_cols = {k: _attr_column(v) for k, v in data.user_attrs.items() if k != "user_id"}
    item_cols = {k: _attr_column(v) for k, v in data.item_attrs.items() if k != "item_id"}
    _common_item_names(data.item_attrs, item_cols, list(data.item_tokens))
    for name in list(user_cols) + list(item_cols):
        if name in sequence_fields:
            cols = user_cols if name in user_cols else item_cols
            if pa.types.is_string(cols[name].type):
                cols[name] = pc.utf8_split_whitespace(cols[name])
    tables = {}
    for stage, code in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        m = split == code
        u, i, t, r = user[m], item[m], time[m], rating[m]
        if explicit:
            label = (r >= float(threshold)).astype(np.float32)
        else:
            count = int(cfg.get("neg_per_pos", 1) if stage == "train" else cfg.get("eval_neg_per_pos", 1))
            neg = _negatives(u, data.num_items, count, known, rng) if count else np.zeros(0, np.int64)
            label = np.concatenate([np.ones(u.size, np.float32), np.zeros(neg.size, np.float32)])
            u, t, r = (np.concatenate([a, np.repeat(a, count)]) for a in (u, t, r))
            i = np.concatenate([i, neg])
            order = np.argsort(t, kind="stable")  # rows in time order, a negative beside its positive
            u, i, t, r, label = u[order], i[order], t[order], r[order], label[order]
        ui, ii = pa.array(u.astype(np.int64)), pa.array(i.astype(np.int64))
        cols = {"user_id": ui, "item_id": ii, "timestamp": pa.array(t.astype(np.float64)),
                "rating": pa.array(r.astype(np.float64)), LABEL: pa.array(label.astype(np.float32))}
        for k, col in user_cols.items():
            cols.setdefault(k, col.take(ui))
        for k, col in item_cols.items():
            cols.setdefault(k, col.take(ii))
        tables[stage] = pa.table(cols)
    return tables


def from_interactions(data, cfg: Dict[str, Any], seed: int = 0) -> CtrSource:
    """The CTR rows of an interaction dataset (the module docstring)."""
    cfg = dict(cfg)
    where = str(cfg.get("name", "interactions"))
    if cfg.get("label_threshold") is not None and data.rating is None:
        raise DataError(where, message=f"data.label_threshold={cfg['label_threshold']}: this dataset has no ratings "
                                       f"(null: every interaction is a positive, with sampled negatives)")
    fs = _feature_set(cfg, default_features(data))
    seq_fields = {f for spec in fs.to_config() if spec.get("type") == "sequence" for f in spec.get("fields", [])}
    tables = interaction_tables(data, cfg, seed, seq_fields)
    missing = sorted(set(fs.columns) - set(tables["train"].column_names))
    if missing:
        from ...names import did_you_mean

        raise DataError(where, message=f"data.features reads column {missing[0]!r}, which this dataset does not "
                                       f"have ({did_you_mean(missing[0], tables['train'].column_names)})")
    return CtrSource(fs, tables, cfg, where)


__all__ = ["CtrSource", "open_source", "from_interactions", "interaction_tables", "read_table", "stage_files",
           "KINDS", "HOLDS"]
