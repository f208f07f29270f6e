"""``--task=infer``: one output line per input row, in input order, with the row's ids.

Retrieval models: input rows are users (a file with one raw user id per line, or a TSV
whose header has ``user_id``; default: every user); output ``user_id<TAB>items<TAB>scores``
with the top-k items (largest cutoff of ``eval.topk``) among items the user has not
interacted with. Pointwise (CTR) models: input rows are ``user_id<TAB>item_id`` pairs
(default: the test rows, with the history they were evaluated on); output
``user_id<TAB>item_id<TAB>probability``. For rows from a file, and for retrieval, the
history a model sees is every known interaction of the user. ``--backend=onnx``
(``infer_onnx``) scores the same CTR rows with the exported edge model in onnxruntime.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import torch

from .data.dataset import windows
from .evaluation.topk import csr_rows
from .data.errors import DataError
from .utils import atomic_write_text


def read_input_text(path: Path) -> str:
    """The text of an ``--input`` file; ``DataError`` naming it when it is missing, a folder, or not text."""
    if not path.exists():
        raise DataError(str(path), message="--input file not found")
    if path.is_dir():
        raise DataError(str(path), message="--input is a folder, not a file of rows")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(str(path), line=line, message=f"not UTF-8 text (byte 0x{e.object[e.start]:02x}): "
                                                      f"a file of rows, one per line, is expected") from None
    except OSError as e:
        raise DataError(str(path), message=f"cannot read it: {e.strerror or e}") from None


def _read_rows(path: Path, columns: List[str]) -> List[List[str]]:
    lines = read_input_text(path).splitlines()
    if not lines:
        raise DataError(str(path), message="empty input file")
    first = lines[0].split("\t")
    start = 1 if first[0] == columns[0] else 0
    header_cols = first if start else columns
    idx = []
    for c in columns:
        if c not in header_cols:
            raise DataError(str(path), line=1, message=f"missing column {c!r} (found {header_cols})")
        idx.append(header_cols.index(c))
    rows = []
    for n, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) <= max(idx):
            raise DataError(str(path), line=n, message=f"expected {len(header_cols)} fields, got {len(parts)}")
        rows.append([parts[i] for i in idx] + [n])
    return rows


def _ids(tokens: List[str], vocab: List[str], field: str, path: Path, lines: List[int]) -> torch.Tensor:
    lookup = {t: i for i, t in enumerate(vocab)}
    out = []
    for t, n in zip(tokens, lines):
        if t not in lookup or lookup[t] == 0:
            raise DataError(str(path), line=n, field=field, message=f"unknown {field} {t!r}")
        out.append(lookup[t])
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def infer(cfg, model, dm, run_dir: Path) -> Path:
    data = dm.data
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(())).device
    ptr, items = data.user_ptr(torch.ones_like(data.split, dtype=torch.bool))
    L = int(cfg["data"]["max_seq_len"])
    bs = int(cfg["eval"]["batch_size"])
    inp = cfg.get("input")
    out_lines = []
    if model.eval_kind == "ranking":
        if inp:
            rows = _read_rows(Path(inp), ["user_id"])
            users = _ids([r[0] for r in rows], data.user_tokens, "user_id", Path(inp), [r[-1] for r in rows])
        else:
            users = torch.arange(1, data.num_users)
        k = max(cfg["eval"]["topk"])
        for s in range(0, users.numel(), bs):
            u = users[s:s + bs]
            seq, n = windows(items, ptr[u], ptr[u + 1], L)
            mr, mc = csr_rows(ptr, items, u)
            batch = {"user_id": u, "seq": seq, "seq_len": n, "mask_rows": mr, "mask_cols": mc}
            batch = {kk: v.to(device) for kk, v in batch.items()}
            scores, top = model.recommend(batch, k)
            for uu, it, sc in zip(u.tolist(), top.cpu().tolist(), scores.cpu().tolist()):
                out_lines.append(f"{data.user_tokens[uu]}\t{','.join(data.item_tokens[i] for i in it)}\t"
                                 f"{','.join(f'{x:.6g}' for x in sc)}")
        header = "user_id\titems\tscores"
    else:
        for batch in ctr_batches(cfg, dm):
            prob = model({kk: v.to(device) for kk, v in batch.items()}).cpu().tolist()
            out_lines.extend(f"{data.user_tokens[a]}\t{data.item_tokens[b_]}\t{p:.6g}"
                             for a, b_, p in zip(batch["user_id"].tolist(), batch["item_id"].tolist(), prob))
        header = "user_id\titem_id\tprobability"
    out = run_dir / "infer.tsv"
    atomic_write_text(out, header + "\n" + "\n".join(out_lines) + "\n")
    return out


def ctr_batches(cfg, dm):
    """Pointwise rows to score, as batches: the ``--input`` pairs (each with the user's whole
    known history), or by default the test rows with the history they were evaluated with."""
    data = dm.data
    ptr, items = data.user_ptr(torch.ones_like(data.split, dtype=torch.bool))
    L, bs, inp = int(cfg["data"]["max_seq_len"]), int(cfg["eval"]["batch_size"]), cfg.get("input")
    if inp:
        rows = _read_rows(Path(inp), ["user_id", "item_id"])
        lines = [r[-1] for r in rows]
        users = _ids([r[0] for r in rows], data.user_tokens, "user_id", Path(inp), lines)
        its = _ids([r[1] for r in rows], data.item_tokens, "item_id", Path(inp), lines)
        for s in range(0, users.numel(), bs):
            u, it = users[s:s + bs], its[s:s + bs]
            seq, n = windows(items, ptr[u], ptr[u + 1], L)
            yield dm.builder.with_group({"user_id": u, "item_id": it, "seq": seq, "seq_len": n})
    else:  # the test rows, each with the history it was evaluated with
        ds = dm.eval_dataset("test")
        for s in range(0, len(ds), bs):
            yield ds[torch.arange(s, min(s + bs, len(ds)))]


def onnx_router(path: Path, model=None):
    """The ``EdgeRouter`` of an exported ``.onnx`` (or its sidecar) given as ``--ckpt``: a file that serves
    only some rows (one per user group) is served with its sibling files of the same export, so that
    every row goes to the file of its group; a file that cannot be loaded, or was exported from another
    model, is one ``ConfigError`` naming it."""
    from .config import ConfigError
    from .edge.runtime import EdgeModelError, EdgeRouter, exported_files, load_sidecar

    try:
        _, side = load_sidecar(path)
        paths = [Path(path)]
        if side.get("rows"):  # one group's file: the whole set of its folder, when it is there
            sibs = exported_files(Path(path).parent)
            same = [p for p in sibs if p.with_suffix(".json") != Path(path).with_suffix(".json")]
            if same and all(load_sidecar(p)[1].get("model") == side.get("model") for p in same):
                paths = sibs
        router = EdgeRouter(paths)
    except EdgeModelError as e:
        raise ConfigError(f"--backend=onnx: {e}") from None
    exported = side.get("model")
    if model is not None and exported and exported != type(model).__name__:
        raise ConfigError(f"--ckpt={path} was exported from {exported}, not {type(model).__name__}: "
                          f"use -m={exported}")
    return router


def infer_onnx(cfg, model, dm, run_dir: Path, router=None) -> Path:
    """``--task=infer --backend=onnx``: the same rows and output as the PyTorch path, scored by the
    exported device models in onnxruntime (``recstudio_edge.edge.runtime.EdgeRouter``, one thread).

    ``--ckpt`` is an exported ``.onnx`` file (with its sidecar), which scores every row it serves
    (``router``: the ``EdgeRouter`` the runner opened for it, else opened here); or a ``.ckpt``, whose
    weights ``model`` already holds (the runner loaded them) and whose device parts are exported (and
    verified) into the run folder first. A
    model with several device files (PINRec: one per user group) routes each row to the file whose
    sidecar ``rows`` name it."""
    from .config import ConfigError
    from .edge.runtime import EdgeInputError, EdgeRouter

    if model.eval_kind != "pointwise":
        raise ConfigError(f"--backend=onnx serves pointwise edge models; {type(model).__name__} ranks items "
                          f"(use --backend=torch)")
    ckpt = Path(str(cfg["ckpt"]))
    if ckpt.suffix in (".onnx", ".json"):
        router = router if router is not None else onnx_router(ckpt, model)
    else:
        from .edge.onnx_export import export_edge_models

        reports = export_edge_models(model, run_dir, tol=float(cfg["export"]["tolerance"]),
                                     exporter=str(cfg["export"]["exporter"]), config=cfg)
        router = EdgeRouter([r["path"] for r in reports.values()])
    data = dm.data
    out_lines = []
    for batch in ctr_batches(cfg, dm):
        try:
            prob = router.predict({k: v.numpy() for k, v in batch.items()}, ignore_extra=True)
        except EdgeInputError as e:
            raise ConfigError(f"--backend=onnx: {e}") from None
        out_lines.extend(f"{data.user_tokens[a]}\t{data.item_tokens[b_]}\t{p:.6g}"
                         for a, b_, p in zip(batch["user_id"].tolist(), batch["item_id"].tolist(), prob.tolist()))
    out = run_dir / "infer.tsv"
    atomic_write_text(out, "user_id\titem_id\tprobability\n" + "\n".join(out_lines) + "\n")
    return out


# ---- seed-format sources (data/formats/__init__.py) --------------------------------------------------
ID_COLUMNS = ("user_id", "item_id", "node_id", "label", "group_id")


def _source_rows(cfg, dm):
    """The rows ``--task=infer`` scores on a source: ``--input`` (read by the source's ``read_input``)
    or the test split."""
    from .config import ConfigError

    if cfg.get("input"):
        read = getattr(dm.source, "read_input", None)
        if not callable(read):
            raise ConfigError(f"--input: the {dm.cfg.get('format')} source reads no input file; drop --input to "
                              f"score the test rows")
        return read(Path(str(cfg["input"])))
    return dm.eval_dataset("test")


def _output_columns(out: torch.Tensor) -> (List[str], torch.Tensor):
    """``score`` for ``[B]`` outputs, ``score_0 .. score_{C-1}`` for ``[B, C]``."""
    out = out.detach().float().cpu()
    if out.dim() == 1:
        return ["score"], out.unsqueeze(1)
    out = out.reshape(out.shape[0], -1)
    return [f"score_{c}" for c in range(out.shape[1])], out


def _cloud_feed(parts, batch):
    """Device inputs the batch lacks, from the model's cloud part (its outputs named by the device
    part's inputs: an ECRec memory row, a profile), computed in PyTorch."""
    if parts.cloud is None:
        return batch
    _, dev = parts.first()
    missing = [n for n in dev.input_names if n not in batch]
    if not missing:
        return batch
    with torch.no_grad():
        out = parts.cloud(batch)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    feed = dict(batch)
    feed.update({n: t for n, t in zip(parts.cloud.output_names, outs)})
    return feed


@torch.no_grad()
def infer_source(cfg, model, dm, run_dir: Path, router=None) -> Path:
    """``--task=infer`` on a seed format's samples: one line per row, in row order, with the row's id
    fields (``user_id``, ``item_id``, ``node_id``, ``label``, ``group_id`` where the batch has them)
    and the model's output (``model(batch)``: a probability per row, or one column per class). With
    ``--backend=onnx`` the exported device files score them in onnxruntime (``router``, or exported
    here from the loaded weights); inputs the rows lack come from the cloud part."""
    from .config import ConfigError
    from .edge.runtime import EdgeInputError, EdgeRouter

    ds = _source_rows(cfg, dm)
    bs = int(cfg["eval"]["batch_size"])
    parts = None
    if cfg.get("backend") == "onnx":
        from .edge.protocol import edge_parts_of

        parts = edge_parts_of(model)
        if router is None:
            from .edge.onnx_export import export_edge_models

            reports = export_edge_models(model, run_dir, tol=float(cfg["export"]["tolerance"]),
                                         exporter=str(cfg["export"]["exporter"]), config=cfg)
            router = EdgeRouter([r["path"] for r in reports.values()])
    model.eval()
    header, lines = None, []
    for start in range(0, len(ds), bs):
        batch = ds[torch.arange(start, min(start + bs, len(ds)))]
        if router is not None:
            feed = _cloud_feed(parts, batch)
            try:
                out = torch.from_numpy(router.predict({k: v.numpy() for k, v in feed.items()}, ignore_extra=True))
            except EdgeInputError as e:
                raise ConfigError(f"--backend=onnx: {e}") from None
        else:
            out = model(batch)
        ids = [c for c in ID_COLUMNS if c in batch and batch[c].dim() == 1 and batch[c].numel() == out.shape[0]]
        names, values = _output_columns(out)
        if header is None:
            header = ids + names
        cols = [batch[c].tolist() for c in ids]
        for r, row in enumerate(values.tolist()):
            lines.append("\t".join([*(f"{col[r]:g}" for col in cols), *(f"{v:.6g}" for v in row)]))
    out_path = run_dir / "infer.tsv"
    atomic_write_text(out_path, "\t".join(header or ["score"]) + "\n" + "\n".join(lines) + ("\n" if lines else ""))
    return out_path
