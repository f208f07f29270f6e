"""A sharded streaming reader over Parquet and ORC files: :class:`ShardedStream`.

The data never has to fit in memory. Its *units* are the files' row groups (Parquet) and
stripes (ORC), counted from the files' metadata at construction. Each epoch:

1. the units are put in an order fixed by ``(seed, epoch)`` (file order when ``shuffle=False``)
   and dealt, in that order, to the *readers* -- one per (rank, DataLoader worker) -- each unit
   to the reader with the fewest rows so far: every reader gets its own disjoint set of units
   and about the same number of rows;
2. every reader cuts its rows into the **same number of batches** ``K = ceil(rows /
   (readers * batch_size))``, with near-equal sizes (they differ by at most one row within a
   reader, and across readers by the units' imbalance): every rank yields the same number of
   batches per epoch (DDP hangs otherwise) and every row is read exactly once per epoch;
3. a reader reads its units in order into *windows* of at least ``shuffle_buffer`` rows (whole
   units), permutes each window's rows by a generator seeded with ``(seed, epoch, reader,
   window)`` and cuts its batches from the permuted windows (a batch may straddle two windows);
4. each batch is a pyarrow Table turned into tensors by ``convert`` (one call per batch, on
   whole columns: no per-row Python), plus ``_pos``.

**Position.** Every batch carries ``_pos``, an int64 tensor ``[epoch, worker, index]`` (the
batch's index in that worker's stream of the epoch). Hand trained batches (or their ``_pos``)
to :meth:`ShardedStream.consumed`; :meth:`state_dict` then holds the epoch and each worker's
next batch, and after :meth:`load_state_dict` iteration resumes exactly at the next unconsumed
batch of every worker: only the window holding that batch is read again, no trained row comes
back, none is skipped. The plan of an epoch depends only on the metadata, the seed, the epoch
and the number of ranks and workers, so a new process rebuilds it exactly; the state records
them and loading it under a different layout is an error. Every rank consumes the same number
of batches of every worker (equal counts, round-robin DataLoader order), so rank 0's state --
the one Lightning saves -- is every rank's.

Usage::

    ds = ShardedStream("shards/", convert=to_tensors, batch_size=4096, num_workers=2, seed=0)
    loader = ds.loader()              # a DataLoader with num_workers=2, batch_size=None,
    for epoch in range(3):            # and state_dict()/load_state_dict() (Lightning saves it)
        ds.set_epoch(epoch)
        for batch in loader:
            ...train on batch...
            ds.consumed(batch)

Rank and world size come from the arguments, else from ``torch.distributed`` when it is
initialised (looked up at iteration, so a dataset built before DDP starts is fine), else 0 / 1.
The worker comes from :func:`torch.utils.data.get_worker_info`; ``num_workers`` must equal the
DataLoader's (``len()`` and the plan depend on it; a mismatch is an error). Persistent workers
are refused: they would keep the epoch of their first iteration.
"""

from __future__ import annotations

import glob as _glob
import heapq
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .errors import DataError
from ..names import did_you_mean

__all__ = ["ShardedStream", "StreamLoader", "Unit", "table_to_tensors", "stream_files", "pack_tensors", "POS_KEY"]

POS_KEY = "_pos"
PARQUET_SUFFIXES = (".parquet", ".pq")
ORC_SUFFIXES = (".orc",)
_FILE_CACHE = 16  # open file readers kept per worker
_WARNED: set = set()
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One row group (Parquet) or stripe (ORC): ``file`` indexes :attr:`ShardedStream.files`."""

    file: int
    index: int
    rows: int


# ---------------------------------------------------------------------------------------------
# files and metadata
# ---------------------------------------------------------------------------------------------


def _kind(path: Path) -> Optional[str]:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in ORC_SUFFIXES:
        return "orc"
    return None


def stream_files(files: Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]) -> List[Path]:
    """The Parquet / ORC files named by ``files``: a file, a folder (its ``*.parquet``, ``*.pq``,
    ``*.orc``, sorted), a glob pattern, or a list of those. Order is kept (then sorted within a
    folder or pattern); a name given twice is read once."""
    items = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not items:
        raise DataError(None, None, None, "no files given to read")
    out: List[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _kind(p) and not p.name.startswith("."))
            if not found:
                raise DataError(path, message="no Parquet or ORC files (*.parquet, *.pq, *.orc) in this folder")
        elif path.is_file():
            if _kind(path) is None:
                raise DataError(path, message="not a Parquet or ORC file: the name must end in .parquet, .pq or .orc")
            found = [path]
        elif _glob.has_magic(text):
            found = sorted(Path(p) for p in _glob.glob(text) if Path(p).is_file() and _kind(Path(p)))
            if not found:
                raise DataError(text, message="no Parquet or ORC files match this pattern")
        else:
            raise DataError(path, message="file not found")
        out.extend(found)
    seen, unique = set(), []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _open(path: Path):
    """A pyarrow reader of ``path``: ``ParquetFile`` or ``ORCFile``."""
    try:
        if _kind(path) == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path)
        import pyarrow.orc as orc

        return orc.ORCFile(str(path))
    except (pa.ArrowException, OSError) as err:
        raise DataError(path, message=f"cannot read as {_kind(path)}: {err}") from None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes):
    """``(field number, value)`` of a protobuf message: ints for varints, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"wire type {wire}")
        yield field, value


def _orc_decompress(data: bytes, kind: int) -> bytes:
    """An ORC stream of ``kind`` (0 none, 1 zlib, 2 snappy, 5 zstd): 3-byte chunk headers, each
    chunk stored as is or compressed."""
    if kind == 0:
        return data
    import zlib

    out, pos = [], 0
    while pos < len(data):
        header = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        size, original = header >> 1, header & 1
        chunk = data[pos + 3:pos + 3 + size]
        pos += 3 + size
        if original:
            out.append(chunk)
        elif kind == 1:
            out.append(zlib.decompress(chunk, -15))
        elif kind == 2:
            length, _ = _varint(chunk, 0)  # snappy's preamble: the uncompressed length
            out.append(pa.Codec("snappy").decompress(chunk, decompressed_size=length, asbytes=True))
        else:
            out.append(pa.Codec("zstd").decompress(chunk, decompressed_size=_zstd_size(chunk), asbytes=True))
    return b"".join(out)


def _zstd_size(frame: bytes) -> int:
    """The content size in a zstd frame header (ValueError when the frame does not say)."""
    if frame[:4] != b"\x28\xb5\x2f\xfd":
        raise ValueError("not a zstd frame")
    descriptor = frame[4]
    single = (descriptor >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3]
    width = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
    if width == 0:
        raise ValueError("no content size")
    return int.from_bytes(frame[pos:pos + width], "little") + (256 if width == 2 else 0)


def _orc_stripe_rows(path: Path) -> Optional[List[int]]:
    """The rows of every stripe from the ORC file's footer (pyarrow does not expose them), or None
    when the footer's compression is not none / zlib / snappy / zstd or it does not parse."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            tail_len = min(size, 1 << 16)
            f.seek(size - tail_len)
            tail = f.read(tail_len)
            ps_len = tail[-1]
            ps = dict((k, v) for k, v in _proto_fields(tail[-1 - ps_len:-1]))
            footer_len, kind = ps.get(1, 0), ps.get(2, 0)
            if kind not in (0, 1, 2, 5):
                return None
            need = footer_len + ps_len + 1
            if need > tail_len:
                f.seek(size - need)
                tail = f.read(need)
            footer = _orc_decompress(tail[len(tail) - need:len(tail) - ps_len - 1], kind)
        rows = []
        for field, value in _proto_fields(footer):
            if field == 3:  # StripeInformation
                rows.append(dict((k, v) for k, v in _proto_fields(value)).get(5, 0))
        return rows
    except Exception:  # noqa: BLE001 - any surprise: count the rows by reading instead
        return None


def _count_column(schema: pa.Schema) -> str:
    """The cheapest column to read to count an ORC stripe's rows when the footer cannot be read:
    the first fixed-width one, else the first."""
    for f in schema:
        if pa.types.is_integer(f.type) or pa.types.is_boolean(f.type) or pa.types.is_floating(f.type):
            return f.name
    return schema[0].name


def _units_of(index: int, path: Path, reader) -> tuple[List[Unit], pa.Schema]:
    """The non-empty units of one file and its arrow schema."""
    if _kind(path) == "parquet":
        meta = reader.metadata
        units = [Unit(index, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
        schema = reader.schema_arrow
    else:
        schema = reader.schema
        if len(schema) == 0:
            raise DataError(path, message="the ORC file has no columns")
        rows = _orc_stripe_rows(path)
        if rows is None or len(rows) != reader.nstripes or sum(rows) != reader.nrows:
            col = _count_column(schema)  # read one column of every stripe to count its rows
            rows = [reader.read_stripe(i, columns=[col]).num_rows for i in range(reader.nstripes)]
        units = [Unit(index, i, n) for i, n in enumerate(rows)]
    return [u for u in units if u.rows > 0], schema


def _read_unit(reader, path: Path, unit: Unit, columns: Optional[List[str]]) -> pa.Table:
    try:
        if _kind(path) == "parquet":
            table = reader.read_row_group(unit.index, columns=columns)
        else:
            table = pa.Table.from_batches([reader.read_stripe(unit.index, columns=columns)])
    except (pa.ArrowException, OSError) as err:
        what = "row group" if _kind(path) == "parquet" else "stripe"
        raise DataError(path, message=f"cannot read {what} {unit.index}: {err}") from None
    if columns is not None and table.column_names != list(columns):
        table = table.select(columns)  # ORC reads in the file's order
    if table.num_rows != unit.rows:
        raise DataError(path, message=f"{'row group' if _kind(path) == 'parquet' else 'stripe'} {unit.index} has "
                                      f"{table.num_rows} rows, its metadata said {unit.rows}: the file changed "
                                      "while it was being read")
    return table


# ---------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------


def table_to_tensors(table: pa.Table) -> Dict[str, torch.Tensor]:
    """The default ``convert``: every column to a tensor, whole columns at once (integers and
    booleans -> int64, floating point -> float32). Nulls and non-numeric columns are errors
    naming the column: pass a ``convert`` (e.g. a FeatureSet's ``encode``) for those."""
    out: Dict[str, torch.Tensor] = {}
    for name, column in zip(table.column_names, table.columns):
        typ = column.type
        if column.null_count:
            raise DataError(None, None, name, f"{column.null_count} null values: pass a convert that fills them")
        if pa.types.is_integer(typ) or pa.types.is_boolean(typ):
            out[name] = torch.from_numpy(np.array(column.to_numpy(), dtype=np.int64))
        elif pa.types.is_floating(typ):
            out[name] = torch.from_numpy(np.array(column.to_numpy(), dtype=np.float32))
        else:
            raise DataError(None, None, name, f"type {typ} has no default tensor: pass a convert for it")
    return out


def pack_tensors(batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The same tensors as views of one buffer per dtype. A DataLoader worker sends every tensor
    storage to the main process through its own shared-memory segment (a file descriptor, an
    mmap: ~0.1-0.3 ms each); a CTR batch has one tensor per feature, so one storage per dtype
    makes that cost per batch instead of per feature. One copy of the batch, in the worker."""
    groups: Dict[torch.dtype, List[str]] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.layout == torch.strided:
            groups.setdefault(value.dtype, []).append(key)
    out = dict(batch)
    for dtype, keys in groups.items():
        if len(keys) < 2:
            value = batch[keys[0]]
            if value.untyped_storage().nbytes() > value.numel() * value.element_size():
                out[keys[0]] = value.clone()  # a slice of a window's tensor: send its rows, not the window
            continue
        flat = torch.cat([batch[k].reshape(-1) for k in keys])
        offset = 0
        for k in keys:
            n = batch[k].numel()
            out[k] = flat[offset:offset + n].view(batch[k].shape)
            offset += n
    return out


# ---------------------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------------------


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardedStream(IterableDataset):
    """Batches streamed from Parquet / ORC files, disjoint per rank and worker (module doc).

    Args:
        files: a file, folder, glob pattern or list of them (:func:`stream_files`).
        convert: ``pa.Table -> dict[str, Tensor]`` applied to each batch's rows (default
            :func:`table_to_tensors`); a FeatureSet's ``encode`` plus the label.
        batch_size: target rows per batch (the mean is at most this; see the module doc).
        columns: the columns to read (default all); each must be in every file.
        shuffle: unit order and window permutation seeded by ``(seed, epoch)``; ``False`` reads
            the units in file order and keeps the rows' order (evaluation).
        shuffle_buffer: rows per shuffle window (whole units are read until it is full); 0 =
            one unit per window.
        seed: the seed of every order.
        num_workers: the DataLoader's ``num_workers`` (0 = the main process).
        rank, world_size: this process's rank and the number of ranks (default: from
            ``torch.distributed`` when initialised, else 0 and 1).
        convert_window: call ``convert`` once per shuffle window and slice its tensors into the
            batches (a batch straddling two windows is converted from its rows): the convert's
            fixed costs per call are paid per window, not per batch (small batches). Needs a
            row-wise convert (every output ``[rows, ...]``); variable-length sequences are then
            padded to the window's longest, not the batch's.
    """

    def __init__(self, files, convert: Optional[Callable[[pa.Table], Mapping[str, torch.Tensor]]] = None,
                 batch_size: int = 1024, *, columns: Optional[Sequence[str]] = None, shuffle: bool = True,
                 shuffle_buffer: int = 65536, seed: int = 0, num_workers: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None, convert_window: bool = False):
        super().__init__()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be a non-negative integer, got {shuffle_buffer!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
        if world_size is not None and not (0 <= rank < world_size):
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.files = stream_files(files)
        self.convert = convert if convert is not None else table_to_tensors
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.num_workers = num_workers
        self.convert_window = bool(convert_window)
        self._rank, self._world = rank, world_size
        self.units: List[Unit] = []
        schema0: Optional[pa.Schema] = None
        for i, path in enumerate(self.files):
            units, schema = _units_of(i, path, _open(path))
            self.units.extend(units)
            if columns is None and schema0 is None:
                columns = list(schema.names)
            names = set(schema.names)
            for col in columns:
                if col not in names:
                    raise DataError(path, field=col, message=f"no such column; {did_you_mean(col, schema.names)}")
            if schema0 is None:
                schema0 = schema
            else:
                for col in columns:
                    a, b = schema0.field(col).type, schema.field(col).type
                    if a != b:
                        raise DataError(path, field=col, message=f"type {b} here but {a} in {self.files[0]}")
        self.columns = list(columns)
        self._schema = pa.schema([schema0.field(c).with_nullable(True) for c in self.columns])
        self.rows = sum(u.rows for u in self.units)
        if self.rows == 0:
            raise DataError(self.files[0] if len(self.files) == 1 else None,
                            message=f"no rows in {len(self.files)} file(s)")
        if self._world is not None or torch.distributed.is_available() and torch.distributed.is_initialized():
            self.assignment(0)  # fewer units than readers: say so now
        # the position: the epoch iterated next, and what the training consumed
        self._epoch = 0
        self._resume: Optional[Dict[str, Any]] = None
        self._pos_epoch: Optional[int] = None
        self._next: List[int] = []

    # ---- layout ---------------------------------------------------------------------------
    @property
    def rank_world(self) -> tuple[int, int]:
        """``(rank, world_size)``: the arguments, else ``torch.distributed``'s, else ``(0, 1)``."""
        if self._world is not None:
            return self._rank, self._world
        return _dist_rank_world()

    @property
    def workers(self) -> int:
        """Readers per rank: ``max(1, num_workers)``."""
        return max(1, self.num_workers)

    @property
    def epoch(self) -> int:
        return self._epoch

    def readers(self) -> int:
        return self.rank_world[1] * self.workers

    def batches_per_worker(self) -> int:
        """``K``: the batches each reader yields per epoch."""
        return max(1, math.ceil(self.rows / (self.readers() * self.batch_size)))

    def __len__(self) -> int:
        """Batches per rank per epoch (the same on every rank)."""
        return self.batches_per_worker() * self.workers

    def set_epoch(self, epoch: int) -> None:
        """The epoch iterated next (its unit order and permutations). A position loaded by
        :meth:`load_state_dict` for another epoch is dropped."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self._epoch = epoch
        if self._resume is not None and self._resume["epoch"] != epoch:
            self._resume = None

    def assignment(self, epoch: int) -> List[List[int]]:
        """The unit indices (into :attr:`units`) of every reader in epoch ``epoch``, in reading
        order; reader ``rank * workers + worker``."""
        readers = self.readers()
        if len(self.units) < readers:
            rank, world = self.rank_world
            raise DataError(None, None, None,
                            f"{len(self.units)} row groups / stripes in {len(self.files)} file(s) for {world} rank(s) "
                            f"x {self.workers} worker(s) = {readers} readers: every reader needs at least one; write "
                            "smaller row groups (more, smaller shards) or use fewer workers")
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        else:
            order = np.arange(len(self.units))
        heap = [(0, r) for r in range(readers)]
        out: List[List[int]] = [[] for _ in range(readers)]
        for u in order.tolist():
            load, r = heapq.heappop(heap)
            out[r].append(u)
            heapq.heappush(heap, (load + self.units[u].rows, r))
        return out

    def _plan(self, epoch: int, reader: int):
        """``(windows, window_starts, batch_bounds)`` of one reader: its units in windows, the first
        stream row of each window (plus the end), and the first row of each batch (plus the end)."""
        assignment = self.assignment(epoch)
        units = [self.units[u] for u in assignment[reader]]
        rows = sum(u.rows for u in units)
        k = self.batches_per_worker()
        if rows < k:
            raise DataError(None, None, None,
                            f"reader {reader} got {rows} rows in epoch {epoch} but every reader yields {k} batches: "
                            "the row groups / stripes are too unequal for this many readers; write smaller ones")
        loads = [sum(self.units[u].rows for u in a) for a in assignment]
        if reader == 0 and max(loads) > 1.25 * min(loads) and (epoch, len(loads)) not in _WARNED:
            _WARNED.add((epoch, len(loads)))
            logger.warning("ShardedStream epoch %d: the %d readers got %d to %d rows (batches of ~%d to ~%d rows): "
                           "write more, smaller row groups / stripes for equal batch sizes", epoch, len(loads),
                           min(loads), max(loads), min(loads) // k, -(-max(loads) // k))
        q, r = divmod(rows, k)
        bounds = [j * q + min(j, r) for j in range(k + 1)]
        starts, windows, acc, fill = [0], [], 0, 0
        current: List[Unit] = []
        for u in units:
            current.append(u)
            acc += u.rows
            fill += u.rows
            if not self.shuffle or fill >= self.shuffle_buffer:
                windows.append(current)
                starts.append(acc)
                current, fill = [], 0
        if current:
            windows.append(current)
            starts.append(acc)
        return windows, starts, bounds

    # ---- iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, count = (0, 1) if info is None else (info.id, info.num_workers)
        if count != self.workers:
            raise ValueError(f"ShardedStream(num_workers={self.num_workers}) is read by a DataLoader with "
                             f"num_workers={count if info is not None else 0}: give both the same (or use "
                             "ShardedStream.loader())")
        rank, _world = self.rank_world
        epoch = self._epoch
        start = 0
        if self._resume is not None and self._resume["epoch"] == epoch:
            start = self._resume["next"][worker]
            if info is None:  # this object is the one iterated: the position is used once
                self._resume = None
        reader = rank * self.workers + worker
        plan = self._plan(epoch, reader)  # errors now, not at the first next()
        return self._generate(epoch, worker, reader, start, plan)

    def _generate(self, epoch, worker, reader, start, plan):
        windows, starts, bounds = plan
        k = len(bounds) - 1
        if start >= k:
            return
        first = bounds[start]
        w = int(np.searchsorted(starts, first, side="right")) - 1
        readers: Dict[int, Any] = {}
        j, pieces = start, []
        for wi in range(w, len(windows)):
            table = self._window(windows[wi], readers)
            if self.shuffle and table.num_rows > 1:
                perm = np.random.default_rng([self.seed, epoch, reader, wi]).permutation(table.num_rows)
                table = table.take(pa.array(perm))
            lo, hi = max(starts[wi], bounds[j]), starts[wi + 1]
            encoded = None
            while j < k:
                end = bounds[j + 1]
                if end > hi:
                    if hi > lo:
                        pieces.append(table.slice(lo - starts[wi], hi - lo))
                    break
                if self.convert_window and not pieces:  # a batch inside the window: a slice of its tensors
                    if encoded is None:
                        encoded = self._convert(table)
                    a, b = lo - starts[wi], end - starts[wi]
                    yield self._finish({key: v[a:b] for key, v in encoded.items()}, epoch, worker, j)
                else:
                    pieces.append(table.slice(lo - starts[wi], end - lo))
                    yield self._batch(pieces, epoch, worker, j)
                pieces, lo, j = [], end, j + 1
            if j >= k:
                return

    def _window(self, units: List[Unit], readers: Dict[int, Any]) -> pa.Table:
        tables = []
        for u in units:
            reader = readers.get(u.file)
            if reader is None:
                if len(readers) >= _FILE_CACHE:
                    readers.pop(next(iter(readers)))
                reader = readers[u.file] = _open(self.files[u.file])
            table = _read_unit(reader, self.files[u.file], u, self.columns)
            if not table.schema.equals(self._schema):  # other column nullability / metadata in this file
                table = table.cast(self._schema)
            tables.append(table)
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return table.combine_chunks()

    def _convert(self, table: pa.Table) -> Dict[str, torch.Tensor]:
        batch = self.convert(table)
        if not isinstance(batch, Mapping):
            raise TypeError(f"convert must return a dict of tensors, got {type(batch).__name__}")
        batch = dict(batch)
        if POS_KEY in batch:
            raise ValueError(f"convert returned a key {POS_KEY!r}: it is the stream's position, rename it")
        if self.convert_window:
            for key, value in batch.items():
                if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != table.num_rows:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(f"convert_window=True needs one row of every output per input row: {key!r} is "
                                     f"{shape} for {table.num_rows} rows (use convert_window=False)")
        return batch

    def _batch(self, pieces: List[pa.Table], epoch: int, worker: int, index: int) -> Dict[str, torch.Tensor]:
        table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces).combine_chunks()
        return self._finish(self._convert(table), epoch, worker, index)

    def _finish(self, batch: Dict[str, torch.Tensor], epoch: int, worker: int, index: int) -> Dict[str, torch.Tensor]:
        batch[POS_KEY] = torch.tensor([epoch, worker, index], dtype=torch.int64)
        if get_worker_info() is not None:
            batch = pack_tensors(batch)
        return batch

    # ---- position -------------------------------------------------------------------------
    def consumed(self, batch: Union[Mapping[str, torch.Tensor], torch.Tensor, Sequence]) -> None:
        """Record that ``batch`` (a yielded batch, or its ``_pos``, or a list of them) was trained on."""
        if isinstance(batch, (list, tuple)):
            for one in batch:
                self.consumed(one)
            return
        pos = batch[POS_KEY] if isinstance(batch, Mapping) else batch
        epoch, worker, index = (int(x) for x in torch.as_tensor(pos).reshape(-1)[:3].tolist())
        if not 0 <= worker < self.workers:
            raise ValueError(f"batch of worker {worker}, but this stream has {self.workers} worker(s)")
        if self._pos_epoch != epoch:
            self._pos_epoch = epoch
            self._next = [0] * self.workers
        self._next[worker] = max(self._next[worker], index + 1)

    def _layout(self) -> Dict[str, Any]:
        return {"seed": self.seed, "shuffle": self.shuffle, "shuffle_buffer": self.shuffle_buffer,
                "batch_size": self.batch_size, "world_size": self.rank_world[1], "num_workers": self.workers,
                "rows": self.rows, "units": len(self.units)}

    def state_dict(self) -> Dict[str, Any]:
        """The epoch and each worker's next batch, with the layout they hold for (seed, batch
        size, ranks, workers, rows, units). Before any :meth:`consumed` of the current epoch:
        its start (or the position loaded and not yet consumed past)."""
        if self._pos_epoch is not None and self._pos_epoch >= self._epoch:
            epoch, nxt = self._pos_epoch, list(self._next)
        elif self._resume is not None:
            epoch, nxt = self._resume["epoch"], list(self._resume["next"])
        else:
            epoch, nxt = self._epoch, [0] * self.workers
        return {"epoch": epoch, "next": nxt, **self._layout()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state``: the next iteration of its epoch starts at each worker's next
        batch. The layout must be the same as when it was saved."""
        missing = [k for k in ("epoch", "next") if k not in state]
        if missing:
            raise ValueError(f"not a ShardedStream state: no {', '.join(missing)}")
        layout = self._layout()
        diff = [f"{k} {state[k]!r} then, {v!r} now" for k, v in layout.items() if k in state and state[k] != v]
        if diff:
            raise ValueError("cannot resume this stream exactly, its layout changed: " + "; ".join(diff))
        nxt = [int(x) for x in state["next"]]
        if len(nxt) != self.workers:
            raise ValueError(f"the state has {len(nxt)} worker position(s), this stream {self.workers} worker(s)")
        epoch = int(state["epoch"])
        self._epoch = epoch
        self._resume = {"epoch": epoch, "next": nxt}
        self._pos_epoch, self._next = epoch, list(nxt)

    def loader(self, **kwargs) -> "StreamLoader":
        """A :class:`StreamLoader` over this stream (DataLoader keyword arguments pass through)."""
        return StreamLoader(self, **kwargs)


class StreamLoader(DataLoader):
    """A DataLoader over a :class:`ShardedStream`: ``num_workers`` is the stream's, batches come
    whole (``batch_size=None``), and ``state_dict`` / ``load_state_dict`` are the stream's, so
    Lightning saves the position in its checkpoints (its fit loop keeps the state of stateful
    loaders)."""

    def __init__(self, dataset: ShardedStream, **kwargs):
        if not isinstance(dataset, ShardedStream):
            raise TypeError(f"StreamLoader reads a ShardedStream, got {type(dataset).__name__}")
        for key in ("batch_size", "shuffle", "sampler", "batch_sampler"):
            if kwargs.get(key) is not None and not (key == "shuffle" and kwargs[key] is False):
                raise ValueError(f"StreamLoader: {key} is the stream's (ShardedStream arguments), not the loader's")
            kwargs.pop(key, None)
        if kwargs.pop("persistent_workers", False):
            raise ValueError("StreamLoader: persistent workers would keep the epoch of their first iteration")
        workers = kwargs.pop("num_workers", dataset.num_workers)
        if workers != dataset.num_workers:
            raise ValueError(f"StreamLoader: num_workers={workers} but the stream has num_workers="
                             f"{dataset.num_workers}")
        super().__init__(dataset, batch_size=None, num_workers=dataset.num_workers, **kwargs)

    def __iter__(self):
        it = super().__iter__()
        if self.num_workers > 0:  # the workers hold their copies: the loaded position is used once
            self.dataset._resume = None
        return it

    def state_dict(self) -> Dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.dataset.load_state_dict(state)
