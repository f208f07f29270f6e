"""Torch side: ``FeatureArch``, the integer ops and the embedding tables, as one ``nn.Module``.

``FeatureArch(specs, sizes=None, dim=None, fuse=True, sparse=False, fuse_max_table=0)``;
``arch(batch) -> (dense, slots)``:

- ``dense`` float32 ``[B, dense_dim]``: the dense features side by side (declaration order),
  ``log1p`` (``log(1 + max(x, 0))``, the DLRM reference's transform) applied to the columns
  that declare it in one masked op;
- ``slots`` ``[B, num_slots, D]``: one embedding per sparse feature, one per sequence feature
  (its ``sum`` / ``mean`` over the non-padding items), ``length`` per ``tile`` sequence (its last
  ``length`` items, left-padded with zeros), in declaration order. Stacking needs one ``D``;
  with several dims ``forward`` raises an error naming them and ``flat(batch)`` (``[B, dense_dim +
  sum(slot_dims)]``) still works.

Ops on ids, as RecIS's: ``bucketize`` (``x -> #{b : x >= b}``, ``0..len(boundaries)``), ``mod``
(``x mod value``), ``cross`` (``((a mod P) * P + (b mod P)) mod buckets``, ``P = 2**31 - 1``, no
int64 overflow), ``multi_hash`` (``x mod b_i`` for each bucket size, each its own rows of the
feature's table, their embeddings summed: coprime sizes tell apart ``prod(b_i)`` ids).

Fusion (``fuse=True``): the scalar features are run op by op in steps; at each step the features
whose next op is the same (same kind, and the same number of buckets for ``multi_hash``) are
stacked ``[B, F]`` and run as one op with per-feature parameters (moduli, padded boundaries,
bucket sizes) held as buffers; then one embedding lookup per weight for all its scalar
features, one per multi-hash group. With ``fuse_max_table=N`` the tables of at most ``N`` values
(rows x dim) of one embedding dim share one weight, each at its row offset, so their features
take one lookup; the default ``0`` keeps a weight per table (CPU training measured faster so:
``FUSE_MAX_TABLE``). Sequence features run one by one (their lengths differ).
``fuse=False`` runs every op and lookup per feature, each table its own weight (the usual
layout: an ``nn.Embedding`` per table); ``copy_tables_from`` moves the rows between the two
layouts, and then both give the same output (tests); ``bench/features.py`` compares their
speed. ``sparse=True``: sparse gradients for the weights (``torch.optim.SparseAdam`` / SGD),
so a step touches only the rows of the batch, not every table.

Tables: a feature's table is its ``shared_name`` (else its name); it has ``1 + max cardinality``
rows over the features that use it (row 0 is padding; id ``v`` is row ``v + 1``). Cardinality:
the last op that bounds the ids (``hash`` buckets, ``bucketize``, ``mod``, ``cross``, sum of the
``multi_hash`` buckets), else ``sizes[name]`` (identity ids: ``FeatureSet.data_sizes``).
Initialisers: ``{normal: std}``, ``{uniform: a}`` (``uniform`` alone: ``a = sqrt(1 / rows)``, the
DLRM reference's), ``{xavier: gain}`` (Glorot uniform on the table).

Export: ``input_specs()`` are the device inputs (names = batch keys); ``positional(flat=True)``
wraps the arch as ``module(*tensors)`` in that order for ``edge.onnx_export`` (every op used
is in onnxruntime: Mod, Mul, GreaterOrEqual, ReduceSum, Gather, Where, Concat, Log1p as Log).
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..edge.protocol import TensorSpec
from .encode import FeatureSet
from .spec import MAX_ID, Feature, FeatureError, parse

CROSS_P = 2 ** 31 - 1
# tables up to this many values (rows x dim) share their dim's weight and one lookup when fused. Off
# by default: on CPU (bench/features.py, 26 tables at dim 16) dense-gradient training steps measured
# 3-10x slower with one weight for 100k-row tables (one gradient the size of every table, fresh memory
# each step) and no faster with 10k-row ones, while the forward at batch 512 is up to 1.9x faster with
# it (on-device scoring of small batches). Ops are fused either way.
FUSE_MAX_TABLE = 0


def _features(specs) -> List[Feature]:
    if isinstance(specs, FeatureSet):
        return list(specs.features)
    return parse(specs)


def _available_memory() -> Optional[int]:
    """Bytes of memory available (Linux ``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class _Group:
    """One fused op over the scalar features ``members`` at one step."""

    def __init__(self, op: str, members: List[int]):
        self.op, self.members = op, members


class FeatureArch(nn.Module):
    """The torch side of ``data.features`` (module docstring): ``arch(batch) -> (dense, slots)``."""

    def __init__(self, specs, sizes: Optional[Mapping[str, int]] = None, dim: Optional[int] = None,
                 fuse: bool = True, sparse: bool = False, fuse_max_table: int = FUSE_MAX_TABLE):
        super().__init__()
        self.sparse = bool(sparse)
        self.fuse_max_table = int(fuse_max_table)
        feats = _features(specs)
        sizes = dict(sizes or {})
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
            raise FeatureError(f"FeatureArch: dim must be a positive integer, got {dim!r}")
        self.fuse = bool(fuse)
        self.features = feats
        self.dense_features = [f for f in feats if f.type == "dense"]
        self.sparse_features = [f for f in feats if f.type != "dense"]
        self.input_names = [f.name for f in feats]
        # ---- dense
        self.dense_dim = sum(len(f.fields) for f in self.dense_features)
        logmask = [any(o["op"] == "log1p" for o in f.torch_ops) for f in self.dense_features for _ in f.fields]
        self.has_log1p = any(logmask)
        self.register_buffer("log1p_mask", torch.tensor(logmask, dtype=torch.bool).reshape(1, -1), persistent=False)
        # ---- cardinalities and tables
        self.cardinality: Dict[str, int] = {}
        for f in self.sparse_features:
            card = f.cardinality
            if card is None:
                if f.name not in sizes:
                    raise FeatureError(f"feature {f.name!r}: identity ids need their table size: pass "
                                       f"sizes={{{f.name!r}: n}} (FeatureSet.data_sizes of the data), or bound "
                                       f"the ids with an op (hash buckets, mod, bucketize)")
                card = sizes[f.name]
                if not isinstance(card, numbers.Integral) or isinstance(card, bool) or card <= 0:
                    raise FeatureError(f"feature {f.name!r}: sizes[{f.name!r}] must be a positive integer, "
                                       f"got {card!r}")
            self.cardinality[f.name] = int(card)
        self.dim_of = {f.name: int(dim) if dim is not None else f.embedding["dim"] for f in self.sparse_features}
        tables: Dict[str, Dict] = {}
        for f in self.sparse_features:
            t = tables.setdefault(f.table, {"rows": 0, "dim": self.dim_of[f.name], "init": f.embedding["init"],
                                            "features": []})
            t["rows"] = max(t["rows"], self.cardinality[f.name] + 1)
            t["features"].append(f.name)
        self.tables = tables
        # fused: the small tables of one dim share one weight, each at its row offset; a large table
        # (more than fuse_max_table values) and, unfused, every table has its own weight
        self.dims = sorted({t["dim"] for t in tables.values()})
        self.table_offset: Dict[str, int] = {}
        self._wkey: Dict[str, str] = {}
        shapes: Dict[str, List[int]] = {}
        for j, (name, t) in enumerate(tables.items()):
            if self.fuse and t["rows"] * t["dim"] <= self.fuse_max_table:
                key = f"d{t['dim']}"
                self.table_offset[name] = shapes.setdefault(key, [0, t["dim"]])[0]
                shapes[key][0] += t["rows"]
            else:
                key = f"t{j}"
                self.table_offset[name] = 0
                shapes[key] = [t["rows"], t["dim"]]
            self._wkey[name] = key
        self._check_memory(shapes)
        self.weights = nn.ParameterDict({k: nn.Parameter(torch.empty(*v)) for k, v in shapes.items()})
        self.reset_parameters()
        # ---- slots
        self.slot_dims: List[int] = []
        self.slot_owner: List[str] = []
        for f in self.sparse_features:
            n = f.embedding["length"] if f.embedding["combiner"] == "tile" else 1
            self.slot_dims += [self.dim_of[f.name]] * n
            self.slot_owner += [f.name] * n
        self.num_slots = len(self.slot_dims)
        # ---- op plan for the scalar features
        self._build_plan()

    # ------------------------------------------------------------------ parameters
    def _check_memory(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """A clear error, instead of the kernel's out-of-memory kill, when the tables cannot fit in
        the memory the machine has available (float32 weights alone; built on the CPU)."""
        if torch.get_default_device().type != "cpu":
            return  # e.g. under ``with torch.device("meta")``: nothing is allocated here
        need = sum(int(r) * int(d) * 4 for r, d in shapes.values())
        avail = _available_memory()
        if avail is None or need <= avail:
            return
        big = sorted(self.tables.items(), key=lambda kv: -kv[1]["rows"] * kv[1]["dim"])[:3]
        desc = ", ".join(f"{n}: {t['rows']} x {t['dim']}" for n, t in big)
        raise FeatureError(f"FeatureArch: the embedding tables need {need / 2 ** 30:.1f} GiB ({desc}, ...), more "
                           f"than the {avail / 2 ** 30:.1f} GiB of memory available here; use fewer hash buckets or a "
                           f"smaller embedding dim, or shard the tables across machines (docs/features.md)")

    def reset_parameters(self):
        with torch.no_grad():
            for name, t in self.tables.items():
                w = self.table_weight(name)
                (kind, arg), = t["init"].items()
                if kind == "normal":
                    w.normal_(0.0, float(arg))
                elif kind == "uniform":
                    a = float(arg) if arg is not None else math.sqrt(1.0 / t["rows"])
                    w.uniform_(-a, a)
                else:  # xavier (Glorot uniform)
                    a = float(arg) * math.sqrt(6.0 / (t["rows"] + t["dim"]))
                    w.uniform_(-a, a)
                w[0].zero_()  # the padding row

    def table_weight(self, table: str) -> torch.Tensor:
        """The rows of one table (a view of its dim's weight)."""
        t = self.tables[table]
        off = self.table_offset[table]
        w = self.weights[self._wkey[table]]
        return w if w.shape[0] == t["rows"] and off == 0 else w[off: off + t["rows"]]

    def copy_tables_from(self, other: "FeatureArch") -> None:
        """Copy every table's rows from another arch over the same features (e.g. fused <-> per-feature)."""
        with torch.no_grad():
            for name in self.tables:
                self.table_weight(name).copy_(other.table_weight(name))

    # ------------------------------------------------------------------ plan
    def _build_plan(self):
        scal = [f for f in self.sparse_features if f.input in ("scalar", "cross")]
        self._scalar = [f.name for f in scal]
        self._seq = [f.name for f in self.sparse_features if f.input == "sequence"]
        for j, name in enumerate(self._seq):
            for o in next(f for f in self.sparse_features if f.name == name).torch_ops:
                if o["op"] == "bucketize":
                    self.register_buffer(f"_seqb_{j}", torch.tensor(o["boundaries"], dtype=torch.float64),
                                         persistent=False)
                if o["op"] == "multi_hash":
                    m = torch.tensor(o["buckets"], dtype=torch.long)
                    self.register_buffer(f"_seqm_{j}", m, persistent=False)
                    self.register_buffer(f"_seqo_{j}", torch.cumsum(m, 0) - m, persistent=False)
        steps: List[List[_Group]] = []
        nbuf = 0

        def add_buffers(g: _Group, feats: List[Feature], k: int):
            nonlocal nbuf
            ops = [f.torch_ops[k] for f in feats]
            # shaped to broadcast over [F, B] (one row of values per feature)
            if g.op == "mod":
                bufs = [torch.tensor([[o["value"]] for o in ops], dtype=torch.long)]
            elif g.op == "cross":
                bufs = [torch.tensor([[o["buckets"]] for o in ops], dtype=torch.long)]
            elif g.op == "bucketize":
                K = max(len(o["boundaries"]) for o in ops)
                b = torch.full((len(ops), 1, K), float("inf"), dtype=torch.float64)
                for i, o in enumerate(ops):
                    b[i, 0, : len(o["boundaries"])] = torch.tensor(o["boundaries"], dtype=torch.float64)
                bufs = [b]
            else:  # multi_hash: moduli and their row offsets within the feature's ids
                m = torch.tensor([o["buckets"] for o in ops], dtype=torch.long)
                off = torch.cumsum(m, 1) - m
                bufs = [m.unsqueeze(1), off.unsqueeze(1)]
            g.buffers = []
            for b in bufs:
                name = f"_op{nbuf}"
                nbuf += 1
                self.register_buffer(name, b, persistent=False)
                g.buffers.append(name)

        depth = max([len(f.torch_ops) for f in scal] + [0])
        for k in range(depth):
            groups: Dict[tuple, List[int]] = {}
            for i, f in enumerate(scal):
                if k < len(f.torch_ops):
                    o = f.torch_ops[k]
                    key = (o["op"], len(o["buckets"]) if o["op"] == "multi_hash" else 0)
                    groups.setdefault(key if self.fuse else (key, i), []).append(i)
            step = []
            for key, members in groups.items():
                g = _Group(key[0] if self.fuse else key[0][0], members)
                add_buffers(g, [scal[i] for i in members], k)
                step.append(g)
            steps.append(step)
        self._steps = steps
        # lookups of the scalar features: by (weight, multi-hash k) when fused, else one per feature
        lookups: Dict[tuple, List[int]] = {}
        for i, f in enumerate(scal):
            last = f.torch_ops[-1] if f.torch_ops else None
            k = len(last["buckets"]) if last is not None and last["op"] == "multi_hash" else 0
            key = (self._wkey[f.table], k)
            lookups.setdefault(key if self.fuse else (key, i), []).append(i)
        self._lookups = []
        self._single_off: Dict[str, int] = {}  # the row offset of a one-feature lookup, as a Python int
        for j, (key, members) in enumerate(lookups.items()):
            wkey = self._wkey[scal[members[0]].table]  # fused: the dim's weight; per-feature: the table's
            name = f"_rowoff{j}"
            off_list = [self.table_offset[scal[i].table] + 1 for i in members]
            self.register_buffer(name, torch.tensor(off_list, dtype=torch.long), persistent=False)
            self._single_off[name] = off_list[0]
            self._lookups.append((wkey, members, name))
        # where each scalar lookup's outputs go among the slots, to put them back in declaration order
        slot_start, s = {}, 0
        for f in self.sparse_features:
            slot_start[f.name] = s
            s += f.embedding["length"] if f.embedding["combiner"] == "tile" else 1
        order = [slot_start[scal[i].name] for _, members, _ in self._lookups for i in members]
        for name in self._seq:
            f = next(g for g in self.sparse_features if g.name == name)
            n = f.embedding["length"] if f.embedding["combiner"] == "tile" else 1
            order += list(range(slot_start[name], slot_start[name] + n))
        # computed order -> declaration order
        perm = [0] * len(order)
        for pos, slot in enumerate(order):
            perm[slot] = pos
        self._perm = perm
        self._feature = {f.name: f for f in self.features}

    # ------------------------------------------------------------------ ops
    def _run_op(self, g: _Group, x: torch.Tensor) -> torch.Tensor:
        """One op on ``x`` ``[F, B]`` (``[F, B, 2]`` for cross) with per-feature parameters: the
        features stacked along the first axis, so each feature's result is a contiguous row."""
        bufs = [getattr(self, b) for b in g.buffers]
        if g.op == "mod":
            return torch.remainder(x, bufs[0])
        if g.op == "cross":
            a, b = x[..., 0], x[..., 1]
            return torch.remainder(torch.remainder(a, CROSS_P) * CROSS_P + torch.remainder(b, CROSS_P), bufs[0])
        if g.op == "bucketize":
            return (x.to(torch.float64).unsqueeze(-1) >= bufs[0]).to(torch.long).sum(-1)
        # multi_hash: [F, B] -> [F, B, k] ids within the feature's rows
        return torch.remainder(x.unsqueeze(-1), bufs[0]) + bufs[1]

    def _seq_op(self, f: Feature, k: int, x: torch.Tensor) -> torch.Tensor:
        op = f.torch_ops[k]
        if op["op"] == "mod":
            return torch.remainder(x, op["value"])
        if op["op"] == "bucketize":
            bnd = getattr(self, f"_seqb_{self._seq.index(f.name)}")
            return (x.to(torch.float64).unsqueeze(-1) >= bnd).to(torch.long).sum(-1)
        if op["op"] == "multi_hash":  # moduli and row offsets: buffers made at build time (on the device)
            return torch.remainder(x.unsqueeze(-1), getattr(self, f"_seqm_{self._seq.index(f.name)}")) \
                + getattr(self, f"_seqo_{self._seq.index(f.name)}")
        raise FeatureError(f"op {op['op']!r} does not apply to a sequence")  # parse() rules this out

    # ------------------------------------------------------------------ forward
    def _inputs(self, batch: Mapping[str, torch.Tensor]):
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            from ..names import did_you_mean

            raise FeatureError(f"FeatureArch: the batch has no key {missing[0]!r} (feature {missing[0]!r}): "
                               f"{did_you_mean(missing[0], list(batch))}")

    def dense(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not self.dense_features:
            ref = batch[self.input_names[0]]
            return torch.zeros(ref.shape[0], 0, device=ref.device)
        xs = [batch[f.name].to(torch.float32).reshape(batch[f.name].shape[0], len(f.fields))
              for f in self.dense_features]
        x = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
        if self.has_log1p:
            x = torch.where(self.log1p_mask, torch.log1p(torch.clamp(x, min=0.0)), x)
        return x

    def _scalar_ids(self, batch: Mapping[str, torch.Tensor]) -> List[torch.Tensor]:
        """The scalar features' ids after their torch ops (``[B]``, ``[B, k]`` for multi-hash)."""
        vals = [batch[n] for n in self._scalar]
        for step in self._steps:
            for g in step:
                if len(g.members) == 1:
                    i = g.members[0]
                    vals[i] = self._run_op(g, vals[i].unsqueeze(0))[0]
                else:
                    out = self._run_op(g, torch.stack([vals[i] for i in g.members], 0))
                    for j, i in enumerate(g.members):
                        vals[i] = out[j]
        return vals

    def ids(self, batch: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``{feature: ids}`` after the torch-side ops, within the feature's table: the table's row is
        ``id + 1``. A scalar feature ``[B]`` (``[B, k]`` for multi-hash); a sequence ``[B, L]``
        (``[B, L, k]``) with ``-1`` at padding."""
        self._inputs(batch)
        out = dict(zip(self._scalar, self._scalar_ids(batch)))
        for name in self._seq:
            rows, mask = self._seq_rows(self._feature[name], batch[name])
            out[name] = torch.where(mask.unsqueeze(-1) if rows.dim() == 3 else mask, rows - 1, torch.full_like(rows, -1))
        return {f.name: out[f.name] for f in self.sparse_features}

    def _slot_pieces(self, batch: Mapping[str, torch.Tensor]) -> List[torch.Tensor]:
        """Every slot as a ``[B, D]`` tensor, in declaration order (views of the lookups: the one
        copy is the caller's stack or cat)."""
        vals = self._scalar_ids(batch)
        groups: List[torch.Tensor] = []  # computed order: scalar lookups, then sequences
        for wkey, members, offname in self._lookups:
            if len(members) == 1:
                off = self._single_off[offname]
                ids = vals[members[0]]
                e = self._lookup(wkey, ids + off, [self._scalar[members[0]]], ids)  # [B, D] ([B, k, D])
                if e.dim() == 3:  # multi-hash: sum over k
                    e = e.sum(1)
                groups.append(e)
                continue
            ids = torch.stack([vals[i] for i in members], 0)  # [F, B] ([F, B, k])
            offs = getattr(self, offname)
            rows = ids + (offs.view(-1, 1, 1) if ids.dim() == 3 else offs.view(-1, 1))
            e = self._lookup(wkey, rows, [self._scalar[i] for i in members], ids)
            if e.dim() == 4:  # multi-hash: [F, B, k, D] -> sum over k
                e = e.sum(2)
            groups.extend(e.unbind(0))  # F contiguous [B, D]
        for name in self._seq:
            groups.extend(self._sequence(self._feature[name], batch[name]).unbind(1))
        return [groups[i] for i in self._perm]

    def _seq_rows(self, f: Feature, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """A sequence's rows within its table (``id + 1``, ``0`` at padding) and its mask."""
        if x.is_floating_point():  # numbers to bucketize, NaN = padding
            mask = ~torch.isnan(x)
            v = torch.where(mask, x, torch.zeros_like(x))
        else:
            mask = x > 0
            if not f.torch_ops:
                return x, mask
            v = x - 1
        for k in range(len(f.torch_ops)):
            v = self._seq_op(f, k, v)
        ids = v + 1
        m = mask.unsqueeze(-1) if ids.dim() == 3 else mask
        return torch.where(m, ids, torch.zeros_like(ids)), mask

    def _lookup(self, wkey: str, rows: torch.Tensor, names: List[str], ids: torch.Tensor) -> torch.Tensor:
        """``F.embedding`` of one weight; an id past its table (an identity feature whose size was taken
        from other data) is an error naming the feature, its size and the id, not torch's IndexError."""
        try:
            return F.embedding(rows, self.weights[wkey], sparse=self.sparse)
        except IndexError:
            stacked = ids.reshape(len(names), -1) if len(names) > 1 else ids.reshape(1, -1)
            for name, v in zip(names, stacked):
                n = self.cardinality[name]
                if v.numel() and (int(v.max()) >= n or int(v.min()) < -1):
                    bad = int(v.max()) if int(v.max()) >= n else int(v.min())
                    raise FeatureError(f"feature {name!r}: id {bad} is outside its table of {n} ids "
                                       f"(0..{n - 1}); size identity ids from every stage's data "
                                       f"(FeatureSet.data_sizes), or bound them with an op (hash, mod)") from None
            raise

    def _sequence(self, f: Feature, x: torch.Tensor) -> torch.Tensor:
        ids, mask = self._seq_rows(f, x)
        off = self.table_offset[f.table]
        e = self._lookup(self._wkey[f.table], ids + off if off else ids, [f.name], ids - 1)
        if e.dim() == 4:
            e = e.sum(2)
        m = mask.to(e.dtype).unsqueeze(-1)
        e = e * m
        comb = f.embedding["combiner"]
        if comb == "sum":
            return e.sum(1, keepdim=True)
        if comb == "mean":
            return (e.sum(1) / torch.clamp(m.sum(1), min=1.0)).unsqueeze(1)
        T = f.embedding["length"]
        pad = torch.zeros(e.shape[0], T, e.shape[2], dtype=e.dtype, device=e.device)
        return torch.cat([pad, e], 1)[:, -T:]

    def slots(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[B, num_slots, D]`` (one embedding dim for every slot)."""
        if len(set(self.slot_dims)) > 1:
            dims = {o: d for o, d in zip(self.slot_owner, self.slot_dims)}
            raise FeatureError(f"FeatureArch: the slots have different embedding dims {dims}; stacking them "
                               f"needs one dim: set the same embedding dim for every feature, pass dim=..., "
                               f"or use flat(batch)")
        if not self.slot_dims:
            ref = batch[self.input_names[0]]
            return torch.zeros(ref.shape[0], 0, 0, device=ref.device)
        return torch.stack(self._slot_pieces(batch), 1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        self._inputs(batch)
        return self.dense(batch), self.slots(batch)

    def flat(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[B, dense_dim + sum(slot_dims)]``: the dense part, then every slot in order."""
        self._inputs(batch)
        dense = self.dense(batch)
        if not self.slot_dims:
            return dense
        return torch.cat([dense] + self._slot_pieces(batch), 1)  # one copy

    @property
    def flat_dim(self) -> int:
        return self.dense_dim + sum(self.slot_dims)

    # ------------------------------------------------------------------ export
    def input_specs(self) -> Tuple[TensorSpec, ...]:
        """The device inputs, one per feature (its batch key), in declaration order."""
        out = []
        for f in self.features:
            if f.input == "dense":
                out.append(TensorSpec(f.name, "float32", ("batch", len(f.fields))))
                continue
            hashed = next((o for o in f.reader_ops if o["op"] == "hash"), None)
            if hashed is not None:
                high = hashed["buckets"] - 1 if hashed["buckets"] is not None else MAX_ID
            elif f.cardinality is None or not f.torch_ops:
                high = self.cardinality[f.name] - 1
            else:
                high = MAX_ID  # raw integers that a torch op bounds: any non-negative int64
            if f.input == "scalar":
                if f.dtype == "float32":
                    out.append(TensorSpec(f.name, "float32", ("batch",)))
                else:
                    out.append(TensorSpec(f.name, "int64", ("batch",), 0, int(high)))
            elif f.input == "cross":
                out.append(TensorSpec(f.name, "int64", ("batch", 2), 0, int(high)))
            else:
                axis = f"{f.name}_len" if f.length == "variable" else int(f.length)
                if f.dtype == "float32":  # numbers to bucketize, NaN = padding
                    out.append(TensorSpec(f.name, "float32", ("batch", axis)))
                else:
                    out.append(TensorSpec(f.name, "int64", ("batch", axis), 1, int(min(high + 1, MAX_ID)), padding=0))
        return tuple(out)

    def positional(self, flat: bool = True) -> "PositionalFeatures":
        """This arch as ``module(*tensors)`` in ``input_specs()`` order (for export)."""
        return PositionalFeatures(self, flat)

    def extra_repr(self) -> str:
        return (f"features={len(self.features)}, dense_dim={self.dense_dim}, num_slots={self.num_slots}, "
                f"tables={len(self.tables)}, fuse={self.fuse}")


class PositionalFeatures(nn.Module):
    """``FeatureArch`` called with positional tensors (``arch.input_names`` order): ``flat`` output
    ``[B, flat_dim]``, or ``(dense, slots)``."""

    def __init__(self, arch: FeatureArch, flat: bool = True):
        super().__init__()
        self.arch, self.flat = arch, bool(flat)
        self.names = list(arch.input_names)

    def forward(self, *xs: torch.Tensor):
        batch = dict(zip(self.names, xs))
        return self.arch.flat(batch) if self.flat else self.arch(batch)
