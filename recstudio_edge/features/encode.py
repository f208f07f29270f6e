"""Reader side: ``FeatureSet.encode(table) -> {feature name: tensor}`` on pyarrow columns.

Vectorised (numpy / pyarrow compute on whole columns; no Python per row): nulls filled
(``fill_null``), strings and integers hashed (``hash``: each *distinct* value of the batch once,
then a gather), list columns cut (``truncate``) and left-padded to
``[B, L]``. What it emits per feature (``Feature.input``):

- ``dense``: float32 ``[B, len(fields)]``; a null needs ``fill_null`` (else an error naming it);
- ``scalar``: int64 ``[B]`` (float32 when the first torch op is ``bucketize``);
- ``cross``: int64 ``[B, 2]``, the two fields side by side (the torch side crosses them);
- ``sequence``: int64 ``[B, L]``, each id **plus one**, ``0`` = padding (numbers whose first op
  is ``bucketize``: float32, ``NaN`` = padding), left-padded (newest
  last, as ``edge.protocol.history``); ``L`` = the feature's fixed ``length``, or for
  ``variable`` the longest row of the batch after ``truncate`` (at least 1). A null element
  (without ``fill_null``) or a null list is padding. Several scalar fields make a fixed-length
  sequence, one element per field.

The torch-side ops (``bucketize``, ``mod``, ``cross``, ``multi_hash``, ``log1p``) are left to
``FeatureArch`` so they run on the device and are part of the exported graph.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..names import did_you_mean
from .spec import Feature, FeatureError, parse, to_config

MASK63 = np.uint64(2 ** 63 - 1)


def _hash_many(fn: str, seed: int):
    """``keys (list of str or bytes) -> uint64 [n]``: MurmurHash3 x64 (the first 64 bits of its
    128-bit digest, ``mmh3.hash64(key, seed)[0]``) or FarmHash64 (``FarmHash64WithSeed`` when seeded)."""
    if fn == "murmur":
        try:
            import mmh3
        except ImportError:  # pragma: no cover - in requirements.txt
            raise FeatureError("op 'hash' fn 'murmur' needs the mmh3 package (pip install mmh3)") from None
        digest = mmh3.mmh3_x64_128_digest

        def many(keys):
            if not keys:
                return np.zeros(0, np.uint64)
            return np.frombuffer(b"".join([digest(k, seed) for k in keys]), dtype="<u8")[::2].astype(np.uint64)
        return many
    try:
        import farmhash
    except ImportError:  # pragma: no cover - in requirements.txt
        raise FeatureError("op 'hash' fn 'farm' needs the cityhash package, which provides farmhash "
                           "(pip install cityhash)") from None
    if seed:
        return lambda keys: np.fromiter((farmhash.FarmHash64WithSeed(k, seed) for k in keys), np.uint64, len(keys))
    return lambda keys: np.fromiter(map(farmhash.FarmHash64, keys), np.uint64, len(keys))


def hash_values(values: Sequence[Any], fn: str = "murmur", seed: int = 0) -> np.ndarray:
    """The 63-bit hashes (uint64) of the values: strings as their UTF-8 bytes, integers as
    their decimal text (so 123 and "123" hash alike), bytes as they are."""
    keys = [v if isinstance(v, bytes) else (v if isinstance(v, str) else str(int(v))).encode("utf-8") for v in values]
    return _hash_many(fn, seed)(keys) & MASK63


class _HashOp:
    """One ``hash`` op: each batch's distinct values are hashed once (the column is dictionary
    encoded by pyarrow), then gathered back to the rows."""

    def __init__(self, op: Dict[str, Any]):
        self.op = dict(op)
        self.buckets = op["buckets"]
        self.hash_many = _hash_many(op["fn"], op["seed"])

    def __getstate__(self):  # picklable for DataLoader workers: the hasher is rebuilt
        return self.op

    def __setstate__(self, op):
        self.__init__(op)

    def __call__(self, arr: pa.Array, feature: Feature, field: str) -> np.ndarray:
        """int64 ids (hash mod buckets, or the 63-bit hash) of a null-free array."""
        if pa.types.is_dictionary(arr.type):
            indices, dictionary = arr.indices, arr.dictionary
        else:
            enc = pc.dictionary_encode(arr)
            indices, dictionary = enc.indices, enc.dictionary
        typ = dictionary.type
        if pa.types.is_integer(typ) or pa.types.is_boolean(typ):
            dictionary = pc.cast(dictionary if not pa.types.is_boolean(typ) else pc.cast(dictionary, pa.int8()),
                                 pa.string())
        elif not _is_text(typ):
            raise FeatureError(f"feature {feature.name!r} field {field!r}: op 'hash' hashes strings or integers, "
                               f"the column is {typ}" + ("; numbers: use op 'bucketize'" if pa.types.is_floating(typ)
                                                         else ""))
        typ = dictionary.type
        keys = pc.cast(dictionary, pa.large_binary() if pa.types.is_large_string(typ) or pa.types.is_large_binary(typ)
                       else pa.binary())  # UTF-8 bytes, without a Python str per value
        h = self.hash_many(keys.to_pylist()) & MASK63
        if self.buckets is not None:
            h %= np.uint64(self.buckets)
        idx = np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        return h.astype(np.int64)[idx]


def _column(table, field: str, feature: Feature) -> pa.Array:
    names = table.schema.names
    if field not in names:
        raise FeatureError(f"feature {feature.name!r}: field {field!r} is not a column of the data: "
                           f"{did_you_mean(field, names)}")
    col = table.column(field)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return _plain(col)


def _plain(arr: pa.Array) -> pa.Array:
    """View types (``string_view``, ``binary_view``, ``list_view``) as their plain forms, which
    every kernel used here takes."""
    t = arr.type
    if getattr(pa.types, "is_string_view", lambda _: False)(t):
        return arr.cast(pa.string())
    if getattr(pa.types, "is_binary_view", lambda _: False)(t):
        return arr.cast(pa.binary())
    if getattr(pa.types, "is_list_view", lambda _: False)(t):
        return arr.cast(pa.list_(t.value_type))
    if getattr(pa.types, "is_large_list_view", lambda _: False)(t):
        return arr.cast(pa.large_list(t.value_type))
    if _is_list(t) and not pa.types.is_fixed_size_list(t):
        vt = t.value_type
        if getattr(pa.types, "is_string_view", lambda _: False)(vt):
            return arr.cast(pa.list_(pa.string()) if pa.types.is_list(t) else pa.large_list(pa.string()))
    return arr


def _fill(arr: pa.Array, op: Optional[Dict[str, Any]], feature: Feature, field: str) -> pa.Array:
    if op is None or arr.null_count == 0:
        return arr
    value = op["value"]
    typ = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    try:
        scalar = pa.scalar(value).cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        if (pa.types.is_string(typ) or pa.types.is_large_string(typ)) and not isinstance(value, str):
            scalar = pa.scalar(str(value)).cast(typ)
        else:
            raise FeatureError(f"feature {feature.name!r} op 'fill_null' key 'value': {value!r} does not fit "
                               f"field {field!r} of type {typ}") from None
    return pc.fill_null(arr, scalar)


def _tensor(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:  # a zero-copy view of an arrow buffer
        x = x.copy()
    return torch.from_numpy(x)


def _is_text(typ) -> bool:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ) \
        or pa.types.is_large_binary(typ)


def _is_list(typ) -> bool:
    return pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)


class FeatureSet:
    """The declared features of a data set, and their reader-side encoding (module docstring)."""

    def __init__(self, features: List[Feature]):
        self.features = list(features)
        self._hash = {f.name: _HashOp(o) for f in self.features for o in f.reader_ops if o["op"] == "hash"}

    @classmethod
    def from_config(cls, specs, where: str = "data.features") -> "FeatureSet":
        if isinstance(specs, FeatureSet):
            return specs
        return cls(parse(specs, where))

    def to_config(self) -> List[Dict[str, Any]]:
        return to_config(self.features)

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.features]

    @property
    def columns(self) -> List[str]:
        """The raw columns it reads, in first-use order."""
        out: List[str] = []
        for f in self.features:
            for c in f.fields:
                if c not in out:
                    out.append(c)
        return out

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise FeatureError(f"no feature {name!r}: {did_you_mean(name, self.names)}")

    def __len__(self):
        return len(self.features)

    def __repr__(self):
        return f"FeatureSet({', '.join(f'{f.name}:{f.type}' for f in self.features)})"

    # ------------------------------------------------------------------ encode
    def encode(self, table) -> Dict[str, torch.Tensor]:
        """``{feature name: tensor}`` for a ``pa.Table`` or ``pa.RecordBatch`` (module docstring)."""
        if not isinstance(table, (pa.Table, pa.RecordBatch)):
            raise FeatureError(f"FeatureSet.encode takes a pyarrow Table or RecordBatch, got {type(table).__name__}")
        return {f.name: self._encode(f, table) for f in self.features}

    def _op(self, f: Feature, name: str) -> Optional[Dict[str, Any]]:
        for o in f.reader_ops:
            if o["op"] == name:
                return o
        return None

    def _encode(self, f: Feature, table) -> torch.Tensor:
        fill = self._op(f, "fill_null")
        if f.input == "dense":
            cols = []
            for c in f.fields:
                arr = _fill(_column(table, c, f), fill, f, c)
                if arr.null_count:
                    raise FeatureError(f"feature {f.name!r} field {c!r}: {arr.null_count} null values; add "
                                       f"{{op: fill_null, value: 0}} to its ops")
                if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
                    raise FeatureError(f"feature {f.name!r} field {c!r}: a dense feature reads numbers, the column "
                                       f"is {arr.type}")
                cols.append(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float32))
            return _tensor(np.stack(cols, axis=1) if cols else np.zeros((table.num_rows, 0), np.float32))
        if f.input in ("scalar", "cross"):
            vals = [self._values(f, _fill(_column(table, c, f), fill, f, c), c, scalar=True) for c in f.fields]
            x = vals[0] if f.input == "scalar" else np.stack(vals, axis=1)
            return _tensor(x)
        return self._sequence(f, table, fill)

    def _values(self, f: Feature, arr: pa.Array, field: str, scalar: bool) -> np.ndarray:
        """Null-free values of one field as int64 ids (hashed when the feature hashes), or
        float32 when the feature's first torch op is bucketize."""
        if _is_list(arr.type):
            raise FeatureError(f"feature {f.name!r} field {field!r}: a list column ({arr.type}); "
                               f"declare the feature as type 'sequence'")
        if scalar and arr.null_count:
            raise FeatureError(f"feature {f.name!r} field {field!r}: {arr.null_count} null values; add "
                               f"{{op: fill_null, value: ...}} to its ops")
        if f.name in self._hash:
            return self._hash[f.name](arr, f, field)
        if f.dtype == "float32":
            if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
                raise FeatureError(f"feature {f.name!r} field {field!r}: op 'bucketize' reads numbers, the column "
                                   f"is {arr.type}")
            return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float32)
        if _is_text(arr.type):
            raise FeatureError(f"feature {f.name!r} field {field!r}: a string column ({arr.type}) needs "
                               f"{{op: hash, buckets: N}} to become ids")
        if pa.types.is_floating(arr.type):
            v = np.asarray(arr.to_numpy(zero_copy_only=False))
            if arr.null_count == 0 and not np.all(np.floor(v) == v):
                raise FeatureError(f"feature {f.name!r} field {field!r}: float values are not ids; use "
                                   f"{{op: bucketize, boundaries: [...]}} or a dense feature")
            return v.astype(np.int64)
        if not (pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type)):
            raise FeatureError(f"feature {f.name!r} field {field!r}: cannot make ids of a {arr.type} column; "
                               f"use {{op: hash, buckets: N}}")
        if arr.null_count:
            arr = pc.fill_null(arr, pa.scalar(0, arr.type))
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)

    def _sequence(self, f: Feature, table, fill) -> torch.Tensor:
        B = table.num_rows
        if len(f.fields) == 1 and _is_list(_column(table, f.fields[0], f).type):
            arr = _column(table, f.fields[0], f)
            if pa.types.is_fixed_size_list(arr.type):
                arr = arr.cast(pa.list_(arr.type.value_type))
            lengths = np.asarray(pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False),
                                 dtype=np.int64)
            starts = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)[:-1]
            if arr.null_count:  # a null list's offsets may be anything: length 0
                starts = np.where(lengths > 0, starts, 0)
            flat = arr.values
        else:
            cols = []
            for c in f.fields:
                a = _column(table, c, f)
                if _is_list(a.type):
                    raise FeatureError(f"feature {f.name!r} field {c!r}: a list column among several fields "
                                       f"{f.fields}; a sequence reads one list column or several scalar columns")
                cols.append(a)
            n = len(cols)
            # interleave: row r's elements are the fields in order
            flat = pa.concat_arrays([c.cast(cols[0].type) if c.type != cols[0].type else c for c in cols]) \
                if n > 1 else cols[0]
            order = (np.arange(n)[None, :] * B + np.arange(B)[:, None]).reshape(-1)
            flat = flat.take(pa.array(order))
            lengths = np.full(B, n, dtype=np.int64)
            starts = np.arange(B, dtype=np.int64) * n
        flat = _fill(flat, fill, f, f.fields[0])
        valid = np.ones(len(flat), dtype=bool) if flat.null_count == 0 else \
            np.asarray(flat.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        numbers = f.dtype == "float32"  # to bucketize on the device: NaN pads
        pad = np.float32("nan") if numbers else 0
        ids = np.zeros(len(flat), dtype=np.float32 if numbers else np.int64)
        if len(flat):
            nn_idx = np.nonzero(valid)[0]
            present = flat.filter(pa.array(valid)) if flat.null_count else flat
            if len(present):
                ids[nn_idx] = self._values(f, present, f.fields[0], scalar=False)
        if numbers:
            ids = np.where(valid, ids, pad)
        else:
            if (ids[valid] < 0).any():
                raise FeatureError(f"feature {f.name!r} field {f.fields[0]!r}: negative ids in a sequence "
                                   f"(min {ids[valid].min()}); add {{op: hash, buckets: N}} or {{op: mod, value: N}}")
            ids = np.where(valid, ids + 1, 0)  # +1: 0 is padding
        # truncate / pad
        trunc = self._op(f, "truncate")
        side = trunc["side"] if trunc else "left"
        keep = lengths if trunc is None else np.minimum(lengths, trunc["length"])
        if f.length == "variable":
            L = max(1, int(keep.max()) if B else 1)
        else:
            L = int(f.length)
            keep = np.minimum(keep, L)
        first = starts + (lengths - keep if side == "left" else 0)  # the first element kept
        j = np.arange(L)[None, :]
        k = j - (L - keep)[:, None]  # position within the kept elements (left padding)
        ok = k >= 0
        src = np.where(ok, first[:, None] + k, 0)
        out = np.where(ok, ids[src] if len(ids) else pad, pad).astype(ids.dtype)
        return torch.from_numpy(np.ascontiguousarray(out.reshape(B, L)))

    # ------------------------------------------------------------------ sizes
    def data_sizes(self, encoded: Dict[str, torch.Tensor]) -> Dict[str, int]:
        """Table sizes the data decides: for each identity id feature (no op bounds its ids),
        the number of ids, ``max + 1`` (``max`` for a sequence, whose ids are stored plus one)."""
        out: Dict[str, int] = {}
        for f in self.features:
            if f.type == "dense" or f.cardinality is not None:
                continue
            if f.name not in encoded:
                raise FeatureError(f"data_sizes: no encoded tensor for feature {f.name!r}: "
                                   f"{did_you_mean(f.name, encoded)}")
            x = encoded[f.name]
            if f.input == "sequence":
                out[f.name] = int(x.max()) if x.numel() else 0
            else:
                if x.numel() and int(x.min()) < 0:
                    raise FeatureError(f"feature {f.name!r}: negative ids (min {int(x.min())}) cannot index a "
                                       f"table; add {{op: hash, buckets: N}} or {{op: mod, value: N}}")
                out[f.name] = int(x.max()) + 1 if x.numel() else 0
        return out
