"""Feature declarations: parsing, validation and normalisation of ``data.features``.

A feature is a mapping ``{name, type, fields, length, ops, embedding}`` (docs: the package
docstring). ``parse(specs, where)`` checks every key and value and returns ``Feature`` objects;
a mistake raises ``FeatureError`` naming the place (``data.features[3]``), the feature, the op
and the key, with ``did you mean`` for a misspelt name. ``Feature.to_config()`` is the
normalised plain spec (every default filled in), which parses back to the same feature.

Where each op runs:

- reader side (``FeatureSet.encode``, on pyarrow arrays): ``fill_null``, ``hash`` (strings or
  integers, distinct values only), ``truncate`` (sequences), and the padding of sequences;
- torch side (``FeatureArch``, part of the exported graph): ``bucketize``, ``mod``, ``cross``,
  ``multi_hash`` (integer ids) and ``log1p`` (dense), fused across the features that run the same op.

So in a feature's ``ops`` the reader-side value ops (``fill_null``, then ``hash``) come before
the torch-side ones; ``truncate`` may stand anywhere (it only cuts the sequence), ``cross`` is
the first torch op of its feature and ``multi_hash`` the last.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from ..config import ConfigError
from ..names import did_you_mean


class FeatureError(ConfigError):
    """A malformed feature declaration, or data that does not fit it."""


TYPES = ("dense", "sparse", "sequence")
FEATURE_KEYS = ("name", "type", "fields", "length", "ops", "embedding")
EMBEDDING_KEYS = ("dim", "init", "shared_name", "combiner", "length")
COMBINERS = ("sum", "mean", "tile")
INITS = ("normal", "uniform", "xavier")
HASH_FNS = ("murmur", "farm")
SIDES = ("left", "right")
DEFAULT_DIM = 16
DEFAULT_INIT = {"normal": 0.01}
MAX_ID = 2 ** 63 - 2  # an unbounded hash is masked to 63 bits: its ids lie in 0..2**63-1

# op -> {key: (required, default)}; the allowed feature types
OPS: Dict[str, Dict[str, Any]] = {
    "fill_null": {"keys": {"value": (True, None)}, "types": TYPES, "side": "reader"},
    "hash": {"keys": {"buckets": (False, None), "fn": (False, "murmur"), "seed": (False, 0)},
             "types": ("sparse", "sequence"), "side": "reader"},
    "truncate": {"keys": {"side": (False, "left"), "length": (True, None)}, "types": ("sequence",), "side": "reader"},
    "bucketize": {"keys": {"boundaries": (True, None)}, "types": ("sparse", "sequence"), "side": "torch"},
    "mod": {"keys": {"value": (True, None)}, "types": ("sparse", "sequence"), "side": "torch"},
    "cross": {"keys": {"fields": (True, None), "buckets": (True, None)}, "types": ("sparse",), "side": "torch"},
    "multi_hash": {"keys": {"buckets": (True, None)}, "types": ("sparse", "sequence"), "side": "torch"},
    "log1p": {"keys": {}, "types": ("dense",), "side": "torch"},
}
READER_OPS = tuple(k for k, v in OPS.items() if v["side"] == "reader")
TORCH_OPS = tuple(k for k, v in OPS.items() if v["side"] == "torch")


@dataclass
class Feature:
    """One parsed feature. ``reader_ops`` / ``torch_ops``: its ops split by where they run (in
    order); ``cardinality``: how many ids its ops can produce (``None``: the data decides, an
    identity id feature); ``input``: what the batch carries for it: ``dense`` float32 [B, n],
    ``scalar`` [B], ``cross`` int64 [B, 2], ``sequence`` int64 [B, L] (ids + 1, 0 = padding; numbers
    to bucketize: float32 [B, L], NaN = padding)."""

    name: str
    type: str
    fields: List[str]
    ops: List[Dict[str, Any]]
    length: Any = None  # sequence: an int (fixed) or "variable"
    embedding: Optional[Dict[str, Any]] = None
    reader_ops: List[Dict[str, Any]] = field(default_factory=list)
    torch_ops: List[Dict[str, Any]] = field(default_factory=list)
    cardinality: Optional[int] = None
    unbounded: bool = False  # ids are raw 63-bit hashes (a later torch op must bound them)

    @property
    def input(self) -> str:
        if self.type == "dense":
            return "dense"
        if self.type == "sequence":
            return "sequence"
        return "cross" if any(o["op"] == "cross" for o in self.ops) else "scalar"

    @property
    def dtype(self) -> str:
        """The batch tensor's dtype: float32 for dense and for a feature whose first torch op is
        bucketize (a sequence of numbers is then padded with NaN), else int64."""
        if self.type == "dense":
            return "float32"
        if self.torch_ops and self.torch_ops[0]["op"] == "bucketize":
            return "float32"
        return "int64"

    @property
    def table(self) -> Optional[str]:
        """The embedding table it looks up (its ``shared_name``, else its own name)."""
        if self.embedding is None:
            return None
        return self.embedding.get("shared_name") or self.name

    def to_config(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "type": self.type, "fields": list(self.fields)}
        if self.type == "sequence":
            out["length"] = self.length
        out["ops"] = copy.deepcopy(self.ops)
        if self.embedding is not None:
            out["embedding"] = copy.deepcopy(self.embedding)
        return out


def _fail(where: str, msg: str):
    raise FeatureError(f"{where}: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _pos_int(where: str, key: str, v) -> int:
    if not _is_int(v) or v <= 0:
        _fail(where, f"key {key!r} must be a positive integer, got {v!r}")
    return int(v)


def _name_list(where: str, key: str, v) -> List[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x for x in v):
        _fail(where, f"key {key!r} must be a field name or a non-empty list of field names, got {v!r}")
    if len(set(v)) != len(v):
        _fail(where, f"key {key!r} names a field twice: {list(v)}")
    return list(v)


def _parse_op(where: str, ftype: str, raw) -> Dict[str, Any]:
    if isinstance(raw, str):
        raw = {"op": raw}
    if not isinstance(raw, dict):
        _fail(where, f"an op must be a mapping like {{op: hash, buckets: 1000}}, got {raw!r}")
    if "op" not in raw:
        _fail(where, f"missing key 'op' (one of {', '.join(OPS)})")
    name = raw["op"]
    if name not in OPS:
        _fail(where, f"unknown op {name!r}: {did_you_mean(str(name), OPS)}")
    where = f"{where} {name!r}"
    info = OPS[name]
    if ftype not in info["types"]:
        _fail(where, f"op {name!r} does not apply to a {ftype} feature (it applies to: {', '.join(info['types'])})")
    for k in raw:
        if k != "op" and k not in info["keys"]:
            known = list(info["keys"])
            _fail(where, f"unknown key {k!r}: " + (did_you_mean(str(k), known) if known else "this op takes no keys"))
    op: Dict[str, Any] = {"op": name}
    for k, (required, default) in info["keys"].items():
        if k not in raw or raw[k] is None:
            if required:
                _fail(where, f"missing key {k!r}")
            op[k] = default
        else:
            op[k] = raw[k]
    # values
    if name == "fill_null":
        v = op["value"]
        if not (isinstance(v, str) or _is_num(v)):
            _fail(where, f"key 'value' must be a number or a string, got {v!r}")
    elif name == "hash":
        if op["buckets"] is not None:
            op["buckets"] = _pos_int(where, "buckets", op["buckets"])
        if op["fn"] not in HASH_FNS:
            _fail(where, f"key 'fn': unknown hash {op['fn']!r}: {did_you_mean(str(op['fn']), HASH_FNS)}")
        if not _is_int(op["seed"]) or op["seed"] < 0:
            _fail(where, f"key 'seed' must be a non-negative integer, got {op['seed']!r}")
    elif name == "truncate":
        if op["side"] not in SIDES:
            _fail(where, f"key 'side' must be 'left' (drop the oldest, keep the last items) or 'right' "
                         f"(keep the first items), got {op['side']!r}")
        op["length"] = _pos_int(where, "length", op["length"])
    elif name == "bucketize":
        b = op["boundaries"]
        if not isinstance(b, (list, tuple)) or not b or not all(_is_num(x) for x in b):
            _fail(where, f"key 'boundaries' must be a non-empty list of numbers, got {b!r}")
        if any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            _fail(where, f"key 'boundaries' must be strictly increasing, got {list(b)}")
        op["boundaries"] = [float(x) if isinstance(x, float) else int(x) for x in b]
    elif name == "mod":
        op["value"] = _pos_int(where, "value", op["value"])
    elif name == "cross":
        f = _name_list(where, "fields", op["fields"])
        if len(f) != 2:
            _fail(where, f"key 'fields' must name exactly two fields, got {f}")
        op["fields"] = f
        op["buckets"] = _pos_int(where, "buckets", op["buckets"])
    elif name == "multi_hash":
        b = op["buckets"]
        if not isinstance(b, (list, tuple)) or not b:
            _fail(where, f"key 'buckets' must be a non-empty list of positive integers, got {b!r}")
        op["buckets"] = [_pos_int(where, "buckets", x) for x in b]
    return op


def _parse_init(where: str, v) -> Dict[str, Any]:
    if isinstance(v, str):
        v = {v: None}
    if not isinstance(v, dict) or len(v) != 1:
        _fail(where, f"must be one of {', '.join(INITS)} or a mapping like {{normal: 0.01}}, got {v!r}")
    (kind, arg), = v.items()
    if kind not in INITS:
        _fail(where, f"unknown initialiser {kind!r}: {did_you_mean(str(kind), INITS)}")
    if arg is not None and (not _is_num(arg) or arg <= 0):
        _fail(where, f"{kind}: the argument must be a positive number, got {arg!r}")
    if kind == "normal" and arg is None:
        arg = 0.01
    if kind == "xavier" and arg is None:
        arg = 1.0
    # uniform without an argument: bound sqrt(1 / rows), the DLRM reference's
    return {kind: arg}


def _parse_embedding(where: str, ftype: str, raw) -> Dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(where, f"must be a mapping like {{dim: 16}}, got {raw!r}")
    for k in raw:
        if k not in EMBEDDING_KEYS:
            _fail(where, f"unknown key {k!r}: {did_you_mean(str(k), EMBEDDING_KEYS)}")
    emb: Dict[str, Any] = {"dim": _pos_int(where, "dim", raw.get("dim", DEFAULT_DIM))}
    emb["init"] = _parse_init(f"{where} key 'init'", raw.get("init", DEFAULT_INIT))
    shared = raw.get("shared_name")
    if shared is not None:
        if not isinstance(shared, str) or not shared:
            _fail(where, f"key 'shared_name' must be a table name, got {shared!r}")
        emb["shared_name"] = shared
    default_comb = "mean" if ftype == "sequence" else "sum"
    comb = raw.get("combiner", default_comb)
    if comb not in COMBINERS:
        _fail(where, f"key 'combiner': unknown combiner {comb!r}: {did_you_mean(str(comb), COMBINERS)}")
    if ftype != "sequence" and comb != "sum":
        _fail(where, f"key 'combiner' {comb!r} combines a sequence; a {ftype} feature has one id per row")
    emb["combiner"] = comb
    if comb == "tile":
        if "length" not in raw:
            _fail(where, "key 'length' is required with combiner 'tile' (how many items it lays side by side)")
        emb["length"] = _pos_int(where, "length", raw["length"])
    elif "length" in raw:
        _fail(where, f"key 'length' is for combiner 'tile' only (combiner is {comb!r})")
    return emb


def parse_feature(raw, where: str) -> Feature:
    if not isinstance(raw, dict):
        _fail(where, f"a feature must be a mapping like {{name: C1, type: sparse, fields: [C1]}}, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        _fail(where, f"missing or empty key 'name' (got {name!r})")
    where = f"{where} feature {name!r}"
    for k in raw:
        if k not in FEATURE_KEYS:
            _fail(where, f"unknown key {k!r}: {did_you_mean(str(k), FEATURE_KEYS)}")
    ftype = raw.get("type")
    if ftype not in TYPES:
        _fail(where, f"key 'type': " + (f"unknown type {ftype!r}: {did_you_mean(str(ftype), TYPES)}"
                                         if ftype is not None else f"missing (one of {', '.join(TYPES)})"))
    ops_raw = raw.get("ops") or []
    if not isinstance(ops_raw, (list, tuple)):
        _fail(where, f"key 'ops' must be a list of ops, got {ops_raw!r}")
    ops = [_parse_op(f"{where} ops[{i}]", ftype, o) for i, o in enumerate(ops_raw)]
    # fields: from the feature, or from its cross op
    cross = [o for o in ops if o["op"] == "cross"]
    if len(cross) > 1:
        _fail(where, "key 'ops': at most one 'cross' op per feature")
    if "fields" in raw and raw["fields"] is not None:
        fields = _name_list(where, "fields", raw["fields"])
        if cross and fields != cross[0]["fields"]:
            _fail(where, f"key 'fields' {fields} differs from op 'cross' key 'fields' {cross[0]['fields']} "
                         f"(a crossed feature reads the cross's two fields; leave 'fields' out)")
    elif cross:
        fields = list(cross[0]["fields"])
    else:
        _fail(where, "missing key 'fields' (the raw columns it reads)")
    if ftype == "sparse" and len(fields) != 1 and not cross:
        _fail(where, f"key 'fields': a sparse feature reads one field, got {fields} (several fields: "
                     f"type 'sequence' (one table, combined), type 'dense', or op 'cross')")
    # op order: fill_null, then hash, then the torch ops; truncate anywhere
    seen_torch, seen_hash = None, False
    for i, o in enumerate(ops):
        w = f"{where} ops[{i}] {o['op']!r}"
        if o["op"] in TORCH_OPS:
            if o["op"] == "cross" and seen_torch:
                _fail(w, f"'cross' must be the first torch-side op (it comes after {seen_torch!r})")
            if seen_torch == "multi_hash":
                _fail(w, "'multi_hash' must be the last op of its feature")
            if o["op"] == "bucketize" and (seen_torch or seen_hash):
                _fail(w, "'bucketize' reads the raw number: it must be the first value op (before hash, mod, ...)")
            seen_torch = o["op"]
        elif o["op"] in ("fill_null", "hash"):
            if seen_torch:
                _fail(w, f"reader-side op {o['op']!r} must come before the torch-side op {seen_torch!r}")
            if o["op"] == "fill_null" and seen_hash:
                _fail(w, "'fill_null' must come before 'hash'")
            if o["op"] == "hash" and seen_hash:
                _fail(w, "one 'hash' op per feature")
            seen_hash = seen_hash or o["op"] == "hash"
    if sum(o["op"] == "truncate" for o in ops) > 1:
        _fail(where, "key 'ops': at most one 'truncate' op per feature")
    if sum(o["op"] == "fill_null" for o in ops) > 1:
        _fail(where, "key 'ops': at most one 'fill_null' op per feature")
    # length
    length = raw.get("length")
    if ftype == "sequence":
        if length is None:
            length = "variable"
        if length != "variable":
            length = _pos_int(where, "length", length)
    elif length is not None:
        _fail(where, f"key 'length' is for sequence features (this one is {ftype})")
    # embedding
    if ftype == "dense":
        if raw.get("embedding") is not None:
            _fail(where, "key 'embedding': a dense feature has no embedding table (it goes to the dense output)")
        emb = None
    else:
        emb = _parse_embedding(f"{where} key 'embedding'", ftype, raw.get("embedding"))
    f = Feature(name=name, type=ftype, fields=fields, ops=ops, length=length, embedding=emb,
                reader_ops=[o for o in ops if o["op"] in READER_OPS],
                torch_ops=[o for o in ops if o["op"] in TORCH_OPS])
    # cardinality of the ids it produces
    card, unbounded = None, False
    for o in ops:
        if o["op"] == "hash":
            card, unbounded = o["buckets"], o["buckets"] is None
        elif o["op"] == "bucketize":
            card, unbounded = len(o["boundaries"]) + 1, False
        elif o["op"] in ("mod",):
            card, unbounded = o["value"] if card is None or unbounded else min(card, o["value"]), False
        elif o["op"] == "cross":
            card, unbounded = o["buckets"], False
        elif o["op"] == "multi_hash":
            card, unbounded = sum(o["buckets"]), False
    if unbounded:
        _fail(where, "op 'hash' without 'buckets' gives 63-bit ids: add 'buckets', or a later 'mod', 'cross' or "
                     "'multi_hash' op")
    f.cardinality, f.unbounded = card, any(o["op"] == "hash" and o["buckets"] is None for o in ops)
    return f


def parse(specs, where: str = "data.features") -> List[Feature]:
    """Parse and validate a list of feature specs (``Feature`` objects pass through)."""
    if specs is None or not isinstance(specs, (list, tuple)):
        raise FeatureError(f"{where}: expected a list of features, got {type(specs).__name__}")
    if not specs:
        raise FeatureError(f"{where}: the list of features is empty")
    out: List[Feature] = []
    names: Dict[str, int] = {}
    for i, raw in enumerate(specs):
        f = raw if isinstance(raw, Feature) else parse_feature(raw, f"{where}[{i}]")
        if f.name in names:
            raise FeatureError(f"{where}[{i}] feature {f.name!r}: the name is taken by {where}[{names[f.name]}]")
        if f.name == "label":
            raise FeatureError(f"{where}[{i}] feature 'label': the name is the batch's click label; rename the feature")
        names[f.name] = i
        out.append(f)
    # features sharing a table agree on its dim and initialiser
    tables: Dict[str, Feature] = {}
    for i, f in enumerate(out):
        if f.table is None:
            continue
        if f.table in tables:
            g = tables[f.table]
            for key in ("dim", "init"):
                if f.embedding[key] != g.embedding[key]:
                    raise FeatureError(f"{where}[{i}] feature {f.name!r} key 'embedding': shared_name {f.table!r} "
                                       f"is also feature {g.name!r}'s table, with {key} {g.embedding[key]!r}; "
                                       f"this one has {key} {f.embedding[key]!r} (a shared table has one {key})")
        else:
            tables[f.table] = f
    return out


def to_config(features: Sequence[Feature]) -> List[Dict[str, Any]]:
    return [f.to_config() for f in features]
