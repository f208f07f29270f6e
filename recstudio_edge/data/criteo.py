"""The Criteo format: read it, generate it, write it as TSV / Parquet / ORC shards.

**Format** (Criteo Kaggle Display Advertising ``train.txt``, and the Terabyte click logs'
``day_0`` .. ``day_23``): one impression per line, tab-separated, no header, 40 fields --
``label`` (0/1), ``I1`` .. ``I13`` (integer counts, may be negative), ``C1`` .. ``C26``
(categorical values, 8 hex digits in the real files: read as strings). An empty field is a
null. Kaggle's ``test.txt`` has no label (39 fields): detected from the first line.

:func:`read_criteo` parses with pyarrow.csv (multi-threaded C++, no Python per line); only when
that fails is the file scanned in Python to find the first bad line, reported as a
:class:`~recstudio_edge.data.errors.DataError` naming file, line and field::

    day_3:1207: field 'I5': expected an integer, got '1x'

:func:`iter_criteo` streams record batches of files too big for memory (a Terabyte day is
~45 GB), and :func:`convert_criteo` turns such files into Parquet / ORC shards for
:class:`~recstudio_edge.data.streaming.ShardedStream`.

**Generator** (:func:`generate`; the real data cannot be downloaded here). ``mode="planted"``:

- categorical values long-tailed: value ranks drawn from a Zipf law over each column's
  vocabulary (Kaggle's 26 table sizes, capped at ``vocab_cap``), written as 8 hex digits of a
  bijective 32-bit hash of (column, rank);
- dense counts log-normal (heavy tails), ``I2`` shifted to allow small negatives as in Kaggle;
- nulls in every dense and some categorical columns, at rates roughly like Kaggle's;
- the label ~ Bernoulli(sigmoid(logit)), ``logit = bias + sum of CROSSES + dense effects``:
  each planted cross ``(Ca, Cb)`` adds ``+-amplitude``, the sign a hash of the *pair* of values
  (a pure interaction: neither value alone says it), null values add nothing; two dense
  features add ``+-0.5 * z(log1p(x))``; the bias gives a ~25% positive rate.
  :func:`planted_logit` recomputes the true logit of any generated table (the Bayes ceiling:
  ``AUC(planted_logit, label)``).

``mode="random"`` is the DLRM reference's ``--data-generation=random``: categorical ids
uniform over each table (``round(u * (size - 1))``), labels ``round(u)`` (a fair coin),
dense values ``round(u * (RANDOM_DENSE_MAX - 1))`` (the reference's uniform [0, 1) dense made
integer counts, as the format needs): nothing to learn, for throughput.

Command line::

    python -m recstudio_edge.data.criteo generate --out DIR --rows N --shards K --format parquet
    python -m recstudio_edge.data.criteo convert 'raw/day_*' --out DIR --format orc
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from .errors import DataError, printable

__all__ = [
    "CRITEO_COLUMNS", "CRITEO_DENSE", "CRITEO_SPARSE", "CRITEO_TYPES", "KAGGLE_VOCAB", "CROSSES",
    "criteo_files", "read_criteo", "iter_criteo", "convert_criteo", "generate", "planted_logit",
    "hex_values", "write_table", "main",
]

CRITEO_DENSE = [f"I{i}" for i in range(1, 14)]
CRITEO_SPARSE = [f"C{i}" for i in range(1, 27)]
CRITEO_COLUMNS = ["label"] + CRITEO_DENSE + CRITEO_SPARSE
CRITEO_TYPES: Dict[str, pa.DataType] = {"label": pa.int32(), **{c: pa.int64() for c in CRITEO_DENSE},
                                        **{c: pa.string() for c in CRITEO_SPARSE}}
# Distinct values of C1..C26 in Criteo Kaggle train.txt (the DLRM reference's table sizes).
KAGGLE_VOCAB = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27,
                14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
# Planted crosses (mode="planted"): columns whose pair decides a +-amplitude logit term.
CROSSES = (("C6", "C17"), ("C14", "C20"), ("C22", "C23"), ("C2", "C25"))
CROSS_AMPLITUDE = 1.0
DENSE_EFFECTS = (("I1", 0.5), ("I6", -0.5))
POSITIVE_RATE = 0.25
# Null rates, roughly Kaggle's (most dense columns have some; I12 mostly null).
DENSE_NULL = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.001, 0.04, 0.45, 0.04, 0.76, 0.22)
SPARSE_NULL = {"C3": 0.03, "C4": 0.03, "C12": 0.03, "C16": 0.03, "C19": 0.44, "C20": 0.44, "C21": 0.03,
               "C22": 0.76, "C24": 0.03, "C25": 0.44, "C26": 0.44}
# log-normal dense counts: x = floor(exp(N(mu, sigma))) - 1
DENSE_MU = (1.0, 2.5, 2.0, 1.5, 7.0, 3.5, 1.8, 2.2, 3.5, 0.3, 1.0, 0.2, 1.7)
DENSE_SIGMA = (1.2, 1.5, 1.6, 1.0, 2.0, 1.8, 1.4, 1.0, 1.4, 0.6, 1.0, 0.8, 1.3)
ZIPF_A = 1.1
RANDOM_DENSE_MAX = 1000
FORMATS = ("tsv", "parquet", "orc")
MODES = ("planted", "random")
_DAY = re.compile(r"day_(\d+)")
_INT = re.compile(r"^-?\d+$")
_MASK32 = np.uint64(0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _day_key(path: Path):
    m = _DAY.search(path.name)
    return (0, int(m.group(1)), path.name) if m else (1, 0, path.name)


def _is_data_name(path: Path) -> bool:
    name = path.name
    for comp in (".gz", ".bz2", ".zst", ".lz4"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    return bool(re.fullmatch(r"day_\d+", name)) or name.endswith((".tsv", ".txt"))


def criteo_files(path: Union[str, os.PathLike, Sequence]) -> List[Path]:
    """The Criteo files named by ``path``: a file, a glob pattern (``raw/day_*``), a folder (its
    ``day_<n>`` files, else its ``*.tsv`` / ``*.txt``, compressed or not), or a list of those;
    day files in day order (``day_2`` before ``day_10``)."""
    import glob as _glob

    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: List[Path] = []
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = [q for q in p.iterdir() if q.is_file() and _is_data_name(q) and not q.name.startswith(".")]
            days = [q for q in found if _DAY.fullmatch(q.name.split(".")[0])]
            found = days or found
            if not found:
                raise DataError(p, message="no Criteo files (day_<n>, *.tsv, *.txt) in this folder")
            out.extend(sorted(found, key=_day_key))
        elif _glob.has_magic(text):
            found = [Path(q) for q in _glob.glob(text) if Path(q).is_file()]
            if not found:
                raise DataError(text, message="no files match this pattern")
            out.extend(sorted(found, key=_day_key))
        else:
            raise DataError(p, message="file not found")
    return out


def _first_line(path: Path) -> Optional[tuple[int, str]]:
    """``(line number, text)`` of the first non-empty line, or None for an empty file."""
    with pa.input_stream(str(path), compression="detect") as raw:
        for n, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=""), 1):
            line = line.rstrip("\r\n")
            if line:
                return n, line
    return None


def _columns_of(path: Path, has_label: Optional[bool]) -> List[str]:
    first = _first_line(path)
    if first is None:
        raise DataError(path, message="empty file: no rows")
    line_no, text = first
    n = text.count("\t") + 1
    if has_label is None:
        if n not in (40, 39):
            raise DataError(path, line_no, None, f"expected 40 tab-separated fields (label, I1..I13, C1..C26) "
                                                 f"or 39 (no label), got {n}")
        has_label = n == 40
    return CRITEO_COLUMNS if has_label else CRITEO_COLUMNS[1:]


def _options(columns: List[str], block_size: Optional[int] = None):
    read = pacsv.ReadOptions(column_names=columns, **({"block_size": block_size} if block_size else {}))
    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, double_quote=False,
                               newlines_in_values=False)
    convert = pacsv.ConvertOptions(column_types={c: CRITEO_TYPES[c] for c in columns}, null_values=[""],
                                   strings_can_be_null=True, quoted_strings_can_be_null=True)
    return read, parse, convert


def _check_field(column: str, value: str) -> Optional[str]:
    """What is wrong with ``value`` in ``column``, or None."""
    if column == "label":
        if value == "":
            return "the label is empty (expected 0 or 1)"
        if value not in ("0", "1"):
            return f"expected 0 or 1, got {printable(value, 40)!r}"
    elif column in CRITEO_TYPES and CRITEO_TYPES[column] == pa.int64() and value != "":
        if not _INT.match(value) or not -(2 ** 63) <= int(value) < 2 ** 63:
            return f"expected an integer, got {printable(value, 40)!r}"
    return None


def _locate(path: Path, columns: List[str], fallback: str, skip_rows: int = 0) -> DataError:
    """The first bad line of ``path``, scanned in Python only after pyarrow failed: a line passes
    on one regex of its label and integer fields (C speed, ~1-2M lines/s); only a line that fails
    it is split and checked field by field. ``skip_rows`` data rows known good are only counted."""
    n = len(columns)
    ints = sum(1 for c in columns if CRITEO_TYPES[c] == pa.int64())
    quick = re.compile((rb"[01]\t" if columns[0] == "label" else rb"") + rb"(?:(?:-?\d{1,18})?\t){%d}" % ints)
    line_no = rows = 0
    with pa.input_stream(str(path), compression="detect") as raw:
        for line_no, line in enumerate(io.BufferedReader(raw, 1 << 20), 1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            rows += 1
            if rows <= skip_rows:
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                return DataError(path, line_no, None, "not valid UTF-8 text")
            if line.count(b"\t") == n - 1 and quick.match(line):
                continue
            fields = text.split("\t")
            if len(fields) != n:
                return DataError(path, line_no, None, f"expected {n} tab-separated fields "
                                                      f"({', '.join(columns[:2])}, ..., {columns[-1]}), "
                                                      f"got {len(fields)}")
            for column, value in zip(columns, fields):
                problem = _check_field(column, value)
                if problem:
                    return DataError(path, line_no, column, problem)
    return DataError(path, message=f"cannot parse as Criteo TSV: {fallback}")


def _line_of_row(path: Path, row: int) -> int:
    """The physical line of data row ``row`` (0-based, empty lines skipped, as pyarrow does)."""
    seen = -1
    with pa.input_stream(str(path), compression="detect") as raw:
        for line_no, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=""), 1):
            if line.rstrip("\r\n"):
                seen += 1
                if seen == row:
                    return line_no
    return line_no


def _check_labels(path: Path, batch, first_row: int) -> None:
    if "label" not in batch.column_names:
        return
    label = batch.column("label")
    import pyarrow.compute as pc

    bad = pc.or_kleene(pc.is_null(label), pc.invert(pc.is_in(label, pa.array([0, 1], pa.int32()))))
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        row = int(np.flatnonzero(np.asarray(bad.to_numpy(zero_copy_only=False)))[0])
        value = label[row].as_py()
        problem = "the label is empty (expected 0 or 1)" if value is None else f"expected 0 or 1, got {value}"
        raise DataError(path, _line_of_row(path, first_row + row), "label", problem)


def read_criteo(path, has_label: Optional[bool] = None) -> pa.Table:
    """All rows of the Criteo file(s) at ``path`` (:func:`criteo_files`) as one Table with
    :data:`CRITEO_COLUMNS` (``label`` int32, ``I*`` int64, ``C*`` string; empty -> null).
    ``has_label``: ``None`` detects it from each file's first line (40 fields or 39)."""
    tables = []
    for f in criteo_files(path):
        columns = _columns_of(f, has_label)
        read, parse, convert = _options(columns)
        try:
            with pa.input_stream(str(f), compression="detect") as raw:
                table = pacsv.read_csv(raw, read_options=read, parse_options=parse, convert_options=convert)
        except (pa.ArrowInvalid, UnicodeDecodeError) as err:
            raise _locate(f, columns, str(err)) from None
        _check_labels(f, table, 0)
        tables.append(table)
    if len(tables) > 1 and len({tuple(t.column_names) for t in tables}) > 1:
        raise DataError(None, message="some files have a label column and some not: read them apart")
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def iter_criteo(path, has_label: Optional[bool] = None, block_size: int = 1 << 24) -> Iterator[pa.RecordBatch]:
    """Record batches (about ``block_size`` bytes of text each) of the Criteo file(s) at
    ``path``, in order, without holding a file in memory; errors as :func:`read_criteo`."""
    for f in criteo_files(path):
        columns = _columns_of(f, has_label)
        read, parse, convert = _options(columns, block_size)
        row = 0
        try:
            with pa.input_stream(str(f), compression="detect") as raw:
                reader = pacsv.open_csv(raw, read_options=read, parse_options=parse, convert_options=convert)
                for batch in reader:
                    _check_labels(f, batch, row)
                    row += batch.num_rows
                    yield batch
        except (pa.ArrowInvalid, UnicodeDecodeError) as err:
            raise _locate(f, columns, str(err), skip_rows=row) from None


def hex_values(column) -> tuple[np.ndarray, np.ndarray]:
    """``(values uint32, valid bool)`` of a column of 8-hex-digit strings (Criteo categoricals),
    vectorised over the column's bytes; an other value is a DataError naming it."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    column = column.cast(pa.string()) if column.type != pa.string() else column
    n = len(column)
    valid = np.ones(n, dtype=bool) if column.null_count == 0 else \
        np.asarray(column.is_valid().to_numpy(zero_copy_only=False))
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32, count=n + 1, offset=column.offset * 4)
    lengths = np.diff(offsets)
    bad = valid & (lengths != 8)
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8) if column.buffers()[2] is not None \
        else np.zeros(0, np.uint8)
    values = np.zeros(n, dtype=np.uint32)
    idx = np.flatnonzero(valid & ~bad)
    if len(idx):
        chars = data[offsets[idx][:, None] + np.arange(8)]
        digit = np.where(chars <= ord("9"), chars.astype(np.int16) - ord("0"),
                         (chars | 0x20).astype(np.int16) - ord("a") + 10)
        wrong = ((digit < 0) | (digit > 15)).any(axis=1)
        bad[idx[wrong]] = True
        shifts = np.arange(28, -1, -4, dtype=np.uint32)
        values[idx] = (np.clip(digit, 0, 15).astype(np.uint32) << shifts).sum(axis=1, dtype=np.uint64).astype(np.uint32)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(None, None, None, f"row {i}: expected 8 hex digits, got {printable(column[i].as_py(), 40)!r}")
    return values, valid


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt") or (suffix == "" and _DAY.fullmatch(path.name)):
        return "tsv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".orc":
        return "orc"
    raise ValueError(f"{path}: cannot tell the format from the name: end it in .tsv, .txt, .parquet, .pq or .orc "
                     "(or name it day_<n> for a Terabyte-style TSV)")


def write_table(table: pa.Table, path, row_group_size: Optional[int] = None) -> Path:
    """Write ``table`` to ``path`` in the format its name says (``.tsv`` / ``.txt`` / ``day_<n>``:
    Criteo TSV, no header, null = empty; ``.parquet`` and ``.orc``, both snappy-compressed, except ORC
    stripes too small for it),
    ``row_group_size`` rows per
    Parquet row group / ORC stripe. Written to a temporary name in the same folder and renamed,
    so a reader never sees half a file."""
    path = Path(path)
    fmt = _format_of(path)
    if row_group_size is not None and row_group_size < 1:
        raise ValueError(f"row_group_size must be positive, got {row_group_size}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if fmt == "tsv":
            pacsv.write_csv(table, str(tmp), pacsv.WriteOptions(include_header=False, delimiter="\t",
                                                                quoting_style="none"))
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, str(tmp), row_group_size=row_group_size or (1 << 20))
        else:
            import pyarrow.orc as orc

            if row_group_size:  # a stripe per batch of row_group_size rows
                orc.write_table(table, str(tmp), batch_size=row_group_size, stripe_size=1, compression="snappy")
                if orc.ORCFile(str(tmp)).nstripes != -(-table.num_rows // row_group_size):
                    # small stripes: compressed streams buffer 64 KiB before the writer sees a stripe's
                    # size, so it cannot cut them; uncompressed it can
                    orc.write_table(table, str(tmp), batch_size=row_group_size, stripe_size=1)
            else:
                orc.write_table(table, str(tmp), compression="snappy")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def convert_criteo(src, out_dir, fmt: str = "parquet", rows_per_shard: int = 1 << 22,
                   row_group_size: int = 1 << 16, has_label: Optional[bool] = None) -> List[Path]:
    """Criteo TSV file(s) at ``src`` -> ``out_dir/part-<k>.<fmt>`` shards of ``rows_per_shard``
    rows (the last one shorter), streamed: memory holds one shard."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out_dir = Path(out_dir)
    paths, pending, count = [], [], 0

    def flush():
        nonlocal pending, count
        table = pa.Table.from_batches(pending)
        paths.append(write_table(table, out_dir / f"part-{len(paths):05d}.{fmt}", row_group_size))
        pending, count = [], 0

    for batch in iter_criteo(src, has_label=has_label):
        while batch.num_rows:
            take = min(batch.num_rows, rows_per_shard - count)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count >= rows_per_shard:
                flush()
    if pending:
        flush()
    return paths


# ---------------------------------------------------------------------------------------------
# generating
# ---------------------------------------------------------------------------------------------


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _hash32(column: int, ranks: np.ndarray) -> np.ndarray:
    """A bijective 32-bit hash of a value rank within column ``column``: its hex digits are the value."""
    with np.errstate(over="ignore"):
        x = ranks.astype(np.uint32) * np.uint32(0x9E3779B1) + np.uint32((column * 0x85EBCA77) & 0xFFFFFFFF)
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def _hex_array(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """An arrow string array of 8 lowercase hex digits per value (null where not valid), no per-row Python."""
    n = len(values)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    chars = digits[(values[:, None] >> shifts) & np.uint32(0xF)]
    lengths = np.where(valid, 8, 0).astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = chars[valid].reshape(-1)
    mask = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()), mask,
                                       int(n - valid.sum()))


def _vocab(vocab_cap: int) -> List[int]:
    return [min(v, vocab_cap) for v in KAGGLE_VOCAB]


def _zipf_ranks(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1, dtype=np.float64) ** ZIPF_A
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), size - 1)


def _pair_sign(seed: int, k: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    key = (a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64)
    salt = np.uint64((seed * 0x9E3779B97F4A7C15 + (k + 1) * 0xC2B2AE3D27D4EB4F) & 0xFFFFFFFFFFFFFFFF)
    return np.where((_mix64(key ^ salt) >> np.uint64(63)) == 1, 1.0, -1.0)


def _cross_dense_logit(seed: int, hexes: Dict[str, tuple], dense: Dict[str, np.ndarray]) -> np.ndarray:
    """The planted logit without bias: the crosses from the columns' 32-bit values, the dense effects."""
    n = len(next(iter(dense.values()))) if dense else len(next(iter(hexes.values()))[0])
    logit = np.zeros(n, dtype=np.float64)
    for k, (ca, cb) in enumerate(CROSSES):
        (va, ma), (vb, mb) = hexes[ca], hexes[cb]
        logit += np.where(ma & mb, CROSS_AMPLITUDE * _pair_sign(seed, k, va, vb), 0.0)
    for name, weight in DENSE_EFFECTS:
        j = CRITEO_DENSE.index(name)
        x = dense[name]
        z = (np.log1p(np.maximum(np.nan_to_num(x, nan=0.0), 0.0)) - DENSE_MU[j]) / DENSE_SIGMA[j]
        logit += np.where(np.isnan(x), 0.0, weight * z)
    return logit


def _bias(seed: int, vocab_cap: int) -> float:
    """The bias giving a POSITIVE_RATE share of positives, from a pilot sample fixed by the seed."""
    pilot = _planted_columns(np.random.default_rng([seed, 0x7FFFFFFF]), 20000, vocab_cap)
    hexes = {c: (hex_values(pilot[c])) for c in {c for pair in CROSSES for c in pair}}
    dense = {name: pilot[name].to_numpy(zero_copy_only=False).astype(np.float64) for name, _ in DENSE_EFFECTS}
    logit = _cross_dense_logit(seed, hexes, dense)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(logit + mid)))).mean() > POSITIVE_RATE:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def _planted_columns(rng: np.random.Generator, n: int, vocab_cap: int) -> Dict[str, pa.Array]:
    cols: Dict[str, pa.Array] = {}
    for j, name in enumerate(CRITEO_DENSE):
        x = np.floor(np.exp(rng.normal(DENSE_MU[j], DENSE_SIGMA[j], n))) - 1
        if name == "I2":
            x -= 2
        x = np.minimum(x, 2 ** 40).astype(np.int64)
        null = rng.random(n) < DENSE_NULL[j]
        cols[name] = pa.array(x, mask=null if null.any() else None)
    for j, (name, size) in enumerate(zip(CRITEO_SPARSE, _vocab(vocab_cap))):
        ranks = _zipf_ranks(rng, size, n)
        valid = rng.random(n) >= SPARSE_NULL.get(name, 0.0)
        cols[name] = _hex_array(_hash32(j, ranks), valid)
    return cols


def _random_columns(rng: np.random.Generator, n: int, vocab_cap: int) -> Dict[str, pa.Array]:
    cols: Dict[str, pa.Array] = {}
    for name in CRITEO_DENSE:
        cols[name] = pa.array(np.round(rng.random(n) * (RANDOM_DENSE_MAX - 1)).astype(np.int64))
    for j, (name, size) in enumerate(zip(CRITEO_SPARSE, _vocab(vocab_cap))):
        ranks = np.round(rng.random(n) * (size - 1)).astype(np.int64)
        cols[name] = _hex_array(_hash32(j, ranks), np.ones(n, dtype=bool))
    return cols


def planted_logit(table: pa.Table, seed: int, vocab_cap: int = 100_000) -> np.ndarray:
    """The true logit of every row of a table generated with ``mode="planted"`` and ``seed``
    (its label is Bernoulli(sigmoid(logit))). Needs the crossed and dense-effect columns."""
    hexes = {c: hex_values(table.column(c)) for c in {c for pair in CROSSES for c in pair}}
    dense = {name: table.column(name).to_numpy().astype(np.float64) for name, _ in DENSE_EFFECTS}
    return _bias(seed, vocab_cap) + _cross_dense_logit(seed, hexes, dense)


def generate_table(rows: int, seed: int = 0, mode: str = "planted", vocab_cap: int = 100_000,
                   shard: int = 0, _bias_value: Optional[float] = None) -> pa.Table:
    """``rows`` generated rows (one shard's: ``shard`` picks its random stream) as a Table with
    :data:`CRITEO_COLUMNS`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    rng = np.random.default_rng([seed, shard, MODES.index(mode)])
    if mode == "planted":
        cols = _planted_columns(rng, rows, vocab_cap)
        hexes = {c: hex_values(cols[c]) for c in {c for pair in CROSSES for c in pair}}
        dense = {name: cols[name].to_numpy(zero_copy_only=False).astype(np.float64) for name, _ in DENSE_EFFECTS}
        bias = _bias(seed, vocab_cap) if _bias_value is None else _bias_value
        p = 1 / (1 + np.exp(-(bias + _cross_dense_logit(seed, hexes, dense))))
        label = (rng.random(rows) < p).astype(np.int32)
    else:
        cols = _random_columns(rng, rows, vocab_cap)
        label = np.round(rng.random(rows)).astype(np.int32)
    arrays = [pa.array(label, pa.int32())] + [cols[c] for c in CRITEO_DENSE + CRITEO_SPARSE]
    return pa.Table.from_arrays(arrays, schema=pa.schema([(c, CRITEO_TYPES[c]) for c in CRITEO_COLUMNS]))


def generate(out_dir, rows: int, seed: int = 0, shards: int = 1, fmt: str = "parquet",
             row_group_size: int = 65536, mode: str = "planted", vocab_cap: int = 100_000,
             prefix: str = "part-") -> List[Path]:
    """Write ``rows`` generated Criteo rows as ``shards`` files ``out_dir/<prefix><k>.<fmt>``
    (near-equal rows each; ``fmt`` tsv, parquet or orc; ``row_group_size`` rows per row group /
    stripe). Deterministic in ``seed`` (and the shard count). Returns the paths."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if rows < 1 or shards < 1 or shards > rows:
        raise ValueError(f"need rows >= shards >= 1, got rows={rows}, shards={shards}")
    bias = _bias(seed, vocab_cap) if mode == "planted" else None
    paths = []
    for k in range(shards):
        n = rows // shards + (k < rows % shards)
        table = generate_table(n, seed, mode, vocab_cap, shard=k, _bias_value=bias)
        suffix = "" if fmt == "tsv" and prefix == "day_" else f".{fmt}"
        name = f"{prefix}{k}{suffix}" if prefix == "day_" else f"{prefix}{k:05d}{suffix}"
        paths.append(write_table(table, Path(out_dir) / name, row_group_size))
    return paths


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    import time

    from .formats.fields import run_command

    parser = argparse.ArgumentParser(prog="python -m recstudio_edge.data.criteo",
                                     description="Criteo-format data: generate shards, convert TSV to shards.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write generated Criteo rows (planted signal or the DLRM random mode)")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--rows", type=int, required=True)
    gen.add_argument("--shards", type=int, default=1)
    gen.add_argument("--format", choices=FORMATS, default="parquet")
    gen.add_argument("--row-group-size", type=int, default=65536, help="rows per Parquet row group / ORC stripe")
    gen.add_argument("--mode", choices=MODES, default="planted")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--vocab-cap", type=int, default=100_000, help="largest categorical vocabulary")
    gen.add_argument("--prefix", default="part-", help="file name prefix ('day_' writes day_0, day_1, ...)")
    conv = sub.add_parser("convert", help="Criteo TSV file(s) (a file, folder or 'day_*' pattern) -> shards")
    conv.add_argument("src")
    conv.add_argument("--out", required=True)
    conv.add_argument("--format", choices=("parquet", "orc"), default="parquet")
    conv.add_argument("--rows-per-shard", type=int, default=1 << 22)
    conv.add_argument("--row-group-size", type=int, default=65536)
    args = parser.parse_args(argv)

    def work():
        t0 = time.perf_counter()
        if args.command == "generate":
            paths = generate(args.out, args.rows, seed=args.seed, shards=args.shards, fmt=args.format,
                             row_group_size=args.row_group_size, mode=args.mode, vocab_cap=args.vocab_cap,
                             prefix=args.prefix)
        else:
            paths = convert_criteo(args.src, args.out, fmt=args.format, rows_per_shard=args.rows_per_shard,
                                   row_group_size=args.row_group_size)
        print(f"wrote {len(paths)} file(s) to {args.out} in {time.perf_counter() - t0:.1f} s")

    return run_command(work)


if __name__ == "__main__":
    raise SystemExit(main())
