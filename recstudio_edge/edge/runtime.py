"""Serve an exported on-device model with numpy and onnxruntime only (no torch, no Lightning).

``EdgePredictor(path)`` loads ``edge_0.onnx`` (or its sidecar ``edge_0.json``; either names
the other), checks that the sidecar was written for that very file (sha256) and that the graph
takes the inputs the sidecar lists, and serves ``predict(batch)``: ``batch`` is a mapping
from input name (the batch's field names, e.g. ``item_id``, ``seq``) to an array. Before
running, every input is checked against the sidecar, and a bad one raises ``EdgeInputError``
naming the input and what it allows:

- the names: a missing input, or an unknown one (with the closest known name; extra batch
  fields are dropped instead with ``ignore_extra=True``);
- the dtype: integer ids must be integers (any width: cast to the graph's int64), float
  inputs floating point (cast to float32);
- the shape: number of dimensions, fixed sizes, named axes agreeing across inputs (one
  ``batch`` size), no empty axis, and the sidecar's limits (``seq`` at most the model's
  ``max_seq_len``);
- the ids: every value of an input with a ``range`` inside ``[lo, hi]`` (an embedding table
  has no row for an id out of range; onnxruntime would fail with an index error, or read
  another row).

``EdgePredictor(..., threads=1)`` pins onnxruntime to that many intra-op threads (one, the
device case, by default). ``EdgeRouter`` serves the several files of one model (one per user
group, say) as one, each row going to the file whose sidecar ``rows`` name it. This module must keep importing without torch:
``tests/edge/test_runtime.py`` imports it with torch and Lightning blocked.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import onnxruntime as ort

SIDECAR_FORMAT = "recstudio_edge.onnx/1"


class EdgeInputError(ValueError):
    """An input that does not match the exported model's sidecar."""


class EdgeModelError(RuntimeError):
    """An ONNX file and sidecar that do not belong together, or cannot be loaded."""


def _describe(spec: Mapping[str, Any]) -> str:
    shape = ", ".join(str(d) for d in spec["shape"])
    rng = f" in [{spec['range'][0]}, {spec['range'][1]}]" if spec.get("range") else ""
    return f"{spec['name']} [{shape}] {spec['dtype']}{rng}"


MANIFEST = "manifest.json"  # written last by an export (edge.bundle): every file of the set with its sha256
MANIFEST_FORMAT = "recstudio_edge.export/1"


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file (what sidecars and manifests record)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest(files: Mapping[str, str]) -> Dict[str, Any]:
    """The ``manifest.json`` of one folder of a complete export set: ``files`` is ``{name: sha256}``."""
    return {"format": MANIFEST_FORMAT, "complete": True, "files": dict(files)}


def exported_files(folder: str | Path) -> List[Path]:
    """The exported device models of a folder: every ``edge*.onnx`` with its sidecar, not the int8 copies."""
    return sorted(p for p in Path(folder).glob("edge*.onnx")
                  if ".int8." not in p.name and p.with_suffix(".json").exists())


def read_json_object(path: Path, what: str) -> Dict[str, Any]:
    """A JSON object from ``path``; ``EdgeModelError`` naming the file when it cannot be read, is
    empty, is not JSON, or is not an object."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeModelError(f"{path}: cannot read the {what}: {e}") from None
    if not text.strip():
        raise EdgeModelError(f"{path}: the {what} is empty (re-export: python run.py --task=export --ckpt=...)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgeModelError(f"{path}:{e.lineno}: the {what} is not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise EdgeModelError(f"{path}: the {what} must be a JSON object, got {type(data).__name__}")
    return data


def _check_spec(side_path: Path, key: str, i: int, spec: Any, io: str) -> None:
    where = f"{side_path}: {key}[{i}]"
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise EdgeModelError(f"{where}: each {io} is an object with a 'name'")
    if io == "input":
        try:
            np.dtype(spec.get("dtype"))
        except TypeError:
            raise EdgeModelError(f"{where} ({spec['name']!r}): unknown dtype {spec.get('dtype')!r}") from None
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, (int, str)) and not isinstance(d, bool)
                                                  for d in shape):
            raise EdgeModelError(f"{where} ({spec['name']!r}): 'shape' must be a list of sizes or axis names")
        rng = spec.get("range")
        if rng is not None:
            ok = isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in rng)
            if not ok or rng[0] < 0 or rng[0] > rng[1]:
                raise EdgeModelError(f"{where} ({spec['name']!r}): 'range' must be [lo, hi] with 0 <= lo <= hi, "
                                     f"got {rng!r}")


def check_manifest(side_path: Path) -> None:
    """With the export's ``manifest.json`` beside the sidecar, the sidecar's sha256 must be the one it
    lists (an edited sidecar, e.g. a widened id range, is refused)."""
    man_path = side_path.with_name(MANIFEST)
    if not man_path.exists():
        return
    man = read_json_object(man_path, "export manifest")
    files = man.get("files")
    if not isinstance(files, dict):
        raise EdgeModelError(f"{man_path}: the export manifest has no 'files' object")
    want = files.get(side_path.name)
    if want is not None and file_sha256(side_path) != want:
        raise EdgeModelError(f"{side_path}: sha256 differs from the one {man_path} lists: the sidecar was changed "
                             f"after export (re-export, or restore it)")


def load_sidecar(path: str | Path) -> tuple:
    """``(onnx path, sidecar dict)`` from either file's path; every sidecar that is unreadable, not a
    JSON object, lacks what the runtime needs, or differs from the export manifest beside it is an
    ``EdgeModelError`` naming the file."""
    path = Path(path)
    side_path = path if path.suffix == ".json" else path.with_suffix(".json")
    if not side_path.exists():
        raise EdgeModelError(f"{side_path}: no sidecar next to the ONNX file (export writes one: "
                             f"python run.py --task=export --ckpt=...)")
    side = read_json_object(side_path, "sidecar")
    if side.get("format") != SIDECAR_FORMAT:
        raise EdgeModelError(f"{side_path}: sidecar format {side.get('format')!r}, expected {SIDECAR_FORMAT!r}")
    if not isinstance(side.get("onnx"), str) or not side["onnx"] or Path(side["onnx"]).name != side["onnx"]:
        raise EdgeModelError(f"{side_path}: 'onnx' must name the ONNX file beside it, got {side.get('onnx')!r}")
    for key, io in (("inputs", "input"), ("outputs", "output")):
        specs = side.get(key)
        if not isinstance(specs, list) or not specs:
            raise EdgeModelError(f"{side_path}: {key!r} must be a non-empty list")
        for i, spec in enumerate(specs):
            _check_spec(side_path, key, i, spec, io)
    for key in ("axes", "rows"):
        if side.get(key) is not None and not isinstance(side[key], dict):
            raise EdgeModelError(f"{side_path}: {key!r} must be an object")
    check_manifest(side_path)
    onnx_path = side_path.with_name(side["onnx"]) if path.suffix == ".json" else path
    if not onnx_path.exists():
        raise EdgeModelError(f"{onnx_path}: ONNX file named by {side_path} not found")
    return onnx_path, side


class EdgePredictor:
    """An exported model and its sidecar, served with onnxruntime (see the module docstring)."""

    def __init__(self, path: str | Path, threads: int = 1, verify_hash: bool = True,
                 providers: Optional[Sequence[str]] = None):
        self.path, self.sidecar = load_sidecar(path)
        data = self.path.read_bytes()
        if verify_hash and self.sidecar.get("sha256") and hashlib.sha256(data).hexdigest() != self.sidecar["sha256"]:
            raise EdgeModelError(f"{self.path}: sha256 differs from its sidecar's: the sidecar was written for "
                                 f"another file (re-export, or keep the pair together)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(data, sess_options=opts,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise EdgeModelError(f"{self.path}: onnxruntime cannot load it: {e}") from None
        self.inputs: List[Dict[str, Any]] = list(self.sidecar["inputs"])
        self.outputs: List[Dict[str, Any]] = list(self.sidecar["outputs"])
        graph_inputs = sorted(i.name for i in self.session.get_inputs())
        if graph_inputs != sorted(s["name"] for s in self.inputs):
            raise EdgeModelError(f"{self.path}: the graph takes {graph_inputs}, its sidecar lists "
                                 f"{[s['name'] for s in self.inputs]}")
        self.axes: Dict[str, Optional[int]] = dict(self.sidecar.get("axes") or {})
        self.output_names = [o["name"] for o in self.outputs]

    @property
    def input_names(self) -> List[str]:
        return [s["name"] for s in self.inputs]

    def signature(self) -> str:
        return "; ".join(_describe(s) for s in self.inputs)

    # ---- checks ------------------------------------------------------------------------
    def validate(self, batch: Mapping[str, Any], ignore_extra: bool = False) -> Dict[str, np.ndarray]:
        """The feed onnxruntime gets: ``batch`` checked and cast (see the module docstring)."""
        if not isinstance(batch, Mapping):
            raise EdgeInputError(f"a batch is a mapping from input name to array; got {type(batch).__name__} "
                                 f"(inputs: {self.signature()})")
        names = self.input_names
        missing = [n for n in names if n not in batch]
        if missing:
            raise EdgeInputError(f"missing input {missing[0]!r}: the model takes {self.signature()}")
        extra = [k for k in batch if k not in names]
        if extra and not ignore_extra:
            k = extra[0]
            near = difflib.get_close_matches(str(k), names, n=1, cutoff=0.3)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise EdgeInputError(f"unknown input {k!r}{hint}: the model takes {self.signature()} "
                                 f"(ignore_extra=True drops other batch fields)")
        feed: Dict[str, np.ndarray] = {}
        sizes: Dict[str, tuple] = {}  # axis name -> (size, input that set it)
        for spec in self.inputs:
            name = spec["name"]
            x = np.asarray(batch[name])
            feed[name] = x = self._cast(name, x, spec["dtype"])
            shape = spec["shape"]
            if x.ndim != len(shape):
                raise EdgeInputError(f"input {name!r}: expected {len(shape)} dimension(s) [{', '.join(map(str, shape))}], "
                                     f"got shape {tuple(x.shape)}")
            for ax, (want, got) in enumerate(zip(shape, x.shape)):
                if isinstance(want, int):
                    if got != want:
                        raise EdgeInputError(f"input {name!r}: axis {ax} must be {want}, got shape {tuple(x.shape)}")
                    continue
                if got == 0:
                    raise EdgeInputError(f"input {name!r}: axis {ax} ({want!r}) is empty, shape {tuple(x.shape)}")
                limit = self.axes.get(want)
                if limit is not None and got > limit:
                    raise EdgeInputError(f"input {name!r}: axis {ax} ({want!r}) is {got}, at most {limit} allowed "
                                         f"(the model's limit for {want!r})")
                if want in sizes and sizes[want][0] != got:
                    raise EdgeInputError(f"input {name!r}: axis {ax} ({want!r}) is {got} but input "
                                         f"{sizes[want][1]!r} has {want!r} = {sizes[want][0]}")
                sizes.setdefault(want, (got, name))
            rng = spec.get("range")
            if rng is not None and x.size:
                lo, hi = int(rng[0]), int(rng[1])
                xmin, xmax = int(x.min()), int(x.max())
                if xmin < lo or xmax > hi:
                    bad = np.argwhere((x < lo) | (x > hi))[0]
                    at = tuple(int(i) for i in bad)
                    raise EdgeInputError(f"input {name!r}: id {int(x[at])} at index {at} is out of range: allowed "
                                         f"[{lo}, {hi}] (vocabulary of {hi + 1} ids; 0 is padding)")
        return feed

    @staticmethod
    def _cast(name: str, x: np.ndarray, dtype: str) -> np.ndarray:
        want = np.dtype(dtype)
        if x.dtype == want:
            return x
        if want.kind in "iu":
            if x.dtype.kind not in "iu":
                raise EdgeInputError(f"input {name!r}: expected integer ids ({dtype}), got {x.dtype}")
            return x.astype(want)
        if want.kind == "f":
            if x.dtype.kind != "f":
                raise EdgeInputError(f"input {name!r}: expected floating point ({dtype}), got {x.dtype}")
            return x.astype(want)
        if want.kind == "b" and x.dtype.kind != "b":
            raise EdgeInputError(f"input {name!r}: expected bool, got {x.dtype}")
        return x.astype(want)

    # ---- serving -----------------------------------------------------------------------
    def run(self, batch: Mapping[str, Any], ignore_extra: bool = False) -> Dict[str, np.ndarray]:
        """Every output, by name."""
        feed = self.validate(batch, ignore_extra)
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))

    def predict(self, batch: Mapping[str, Any], ignore_extra: bool = False) -> np.ndarray:
        """The first output (the click probability ``[B]`` for the zoo's CTR edge models)."""
        feed = self.validate(batch, ignore_extra)
        return self.session.run(self.output_names[:1], feed)[0]

    def __repr__(self) -> str:
        return f"EdgePredictor({str(self.path)!r}: {self.signature()} -> {', '.join(self.output_names)})"


class EdgeRouter:
    """Several exported device models of one model, each serving the rows its sidecar names
    (``rows``: ``{"group_id": 3}``; ``{}`` = every row), served as one: ``predict(batch)`` sends
    every row to the file that serves it and returns the outputs in row order. A row no file
    serves, or that two files claim, is an ``EdgeInputError`` naming the row and its fields.

    ``EdgeRouter.from_folder(run_dir)`` loads every ``edge*.onnx`` with a sidecar in a folder
    (not the int8 copies); ``EdgeRouter(paths)`` the given files."""

    def __init__(self, paths: Sequence[str | Path], threads: int = 1):
        if not paths:
            raise EdgeModelError("EdgeRouter: no ONNX file given")
        self.predictors = [EdgePredictor(p, threads=threads) for p in paths]
        self.rows = [dict(p.sidecar.get("rows") or {}) for p in self.predictors]
        models = {p.sidecar.get("model") for p in self.predictors}
        if len(models) > 1:
            raise EdgeModelError(f"EdgeRouter: the files come from different models {sorted(map(str, models))}")

    @classmethod
    def from_folder(cls, folder: str | Path, threads: int = 1) -> "EdgeRouter":
        paths = exported_files(folder)
        if not paths:
            raise EdgeModelError(f"{folder}: no exported edge*.onnx with its sidecar (python run.py --task=export)")
        return cls(paths, threads)

    @property
    def input_names(self) -> List[str]:
        names: List[str] = []
        for p in self.predictors:
            names += [n for n in p.input_names if n not in names]
        return names

    def predict(self, batch: Mapping[str, Any], ignore_extra: bool = True) -> np.ndarray:
        """The first output of the file serving each row, in row order."""
        if len(self.predictors) == 1 and not self.rows[0]:
            return self.predictors[0].predict(batch, ignore_extra=ignore_extra)
        arrays = {k: np.asarray(v) for k, v in batch.items()}
        n = len(next(iter(arrays.values()))) if arrays else 0
        owner = np.full(n, -1, dtype=np.int64)
        for i, rows in enumerate(self.rows):
            mask = np.ones(n, dtype=bool)
            for key, value in rows.items():
                if key not in arrays:
                    raise EdgeInputError(f"the device models serve rows by {key!r} but the batch has no {key!r} "
                                         f"(it has {sorted(arrays)})")
                mask &= arrays[key].reshape(n, -1)[:, 0] == value
            clash = mask & (owner >= 0)
            if clash.any():
                r = int(np.argmax(clash))
                raise EdgeInputError(f"row {r} is served by two files: {self.predictors[int(owner[r])].path.name} "
                                     f"and {self.predictors[i].path.name}")
            owner[mask] = i
        if (owner < 0).any():
            r = int(np.argmax(owner < 0))
            keys = sorted({k for rows in self.rows for k in rows})
            raise EdgeInputError(f"row {r} ({', '.join(f'{k}={arrays[k][r]}' for k in keys)}) is served by no file: "
                                 f"the files serve {self.rows}")
        # with ignore_extra, only the inputs are sliced per file (no copies of fields that are dropped)
        fed = {k: arrays[k] for k in self.input_names if k in arrays} if ignore_extra else arrays
        out = None
        for i in np.unique(owner).tolist():
            sel = owner == i
            got = self.predictors[i].predict({k: v[sel] for k, v in fed.items()}, ignore_extra=ignore_extra)
            if out is None:
                out = np.zeros((n, *got.shape[1:]), dtype=got.dtype)
            out[sel] = got
        return out if out is not None else np.zeros(0, dtype=np.float32)

    def __repr__(self) -> str:
        return f"EdgeRouter({[p.path.name for p in self.predictors]}, rows {self.rows})"


__all__ = ["EdgePredictor", "EdgeRouter", "EdgeInputError", "EdgeModelError", "load_sidecar", "SIDECAR_FORMAT",
           "MANIFEST", "MANIFEST_FORMAT", "manifest", "file_sha256", "exported_files", "check_manifest",
           "read_json_object"]
