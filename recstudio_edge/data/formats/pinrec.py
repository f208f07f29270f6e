"""PINRec's sample format: read, write, convert, and train from it (``data.format: pinrec``).

One sample per line, five ``;``-separated fields, no header::

    user_id;target_id;clk_sequence;label;group_id
    17;230;12,45,0,0;1;3

- ``user_id``: non-negative integer; ``target_id``: positive integer (0 is padding);
- ``clk_sequence``: comma list of item ids, oldest first, 0 = padding, any length, possibly
  empty. Reading drops the zeros (left or right padding alike), keeps the last ``max_seq_len``
  items and left-pads with 0, so a row becomes our ``seq [L]`` / ``seq_len``;
- ``label``: 0 or 1; ``group_id``: the user's activity group, ``0..group_num-1`` (0 = least active).

Ids are used as they are (no remapping): the ids a model trained on these files sees are the
ids an on-device model gets. Malformed rows raise ``DataError`` as ``file:line: field 'x':
what is wrong`` (or are skipped and counted with ``on_bad_line="skip"``). Written files may
carry a sixth field, ``probability`` (inference output); readers accept it and ignore it.

Python::

    s = read_samples("train.txt", max_seq_len=50)     # Samples (tensors), s.batch(idx) -> our batch fields
    write_samples("out.txt", s, probability=p)        # back to the format (p: optional sixth column)
    convert(data_cfg, data_dir, out_dir)              # our ctr samples of any dataset -> train/valid/test files

Command line (from the repository root)::

    python -m recstudio_edge.data.formats.pinrec convert -d ml-1m --data_dir DIR --out OUT \\
        [--group_num 5] [--max_seq_len 50] [--neg_per_pos 1] [--eval_neg_per_pos 20] [--seed 2024]
    python -m recstudio_edge.data.formats.pinrec check FILE [FILE ...] [--max_seq_len 50]

``convert`` builds our ``ctr`` samples of a dataset (time-ordered histories, sampled negatives,
activity-quantile groups) and writes ``train.txt`` (one epoch's draw of negatives), ``valid.txt``,
``test.txt``, and ``users.tsv`` / ``items.tsv`` (id -> the dataset's own token). On the command
line its data config is ``configs/base.yaml``'s ``data:``, then ``CONVERT_DEFAULTS`` (PINRec's
protocol: leave-one-out split by time, 5 groups, histories of 50, 1 training and 20 evaluation
negatives per positive), then ``configs/data/<d>.yaml``'s ``data:``, then the options given
(``--group_num``, ``--max_seq_len``, ``--neg_per_pos``, ``--eval_neg_per_pos``); no model's
config is read.

Training from files: ``data.format: pinrec`` makes ``RecDataModule`` read ``<data_dir>/<name>/``
``train.txt`` / ``valid.txt`` / ``test.txt`` (other names with ``data.files: {train: ..., valid:
..., test: ...}``) through ``SampleFiles`` and serve them as ``ctr`` batches with our field names
``user_id, item_id, seq, seq_len, label, group_id``: the split is the files'. Training rows are
shuffled per epoch (seeded), ``train.batch_size`` counts rows (the negatives are already in the
file); ``num_users`` / ``num_items`` are one more than the largest id in any file, ``group_num``
one more than the largest group id (or ``data.group_num``, checked); ``data.max_seq_len`` and
``data.on_bad_line`` apply.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ...progress import progress
from ..errors import DataError
from .staged import StagedSamples
from .fields import cli_data_config, command_line, int_field as _int, run_command

FIELDS = ("user_id", "target_id", "clk_sequence", "label", "group_id")
KINDS, HOLDS = ("ctr",), "CTR"  # the data kinds these files serve, and what they hold (in errors)
SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


@dataclass
class Samples:
    """Parsed samples: ``user_id, target_id [N]``, ``seq [N, L]`` (left-padded), ``seq_len``,
    ``label`` (float 0/1), ``group_id`` (long)."""

    user_id: torch.Tensor
    target_id: torch.Tensor
    seq: torch.Tensor
    seq_len: torch.Tensor
    label: torch.Tensor
    group_id: torch.Tensor
    path: str = ""
    skipped: int = 0
    lines: Optional[torch.Tensor] = field(default=None, repr=False)  # 1-based line of each sample

    def __len__(self) -> int:
        return int(self.user_id.numel())

    def batch(self, idx: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Rows ``idx`` with our batch field names (``item_id`` = the target)."""
        return {"user_id": self.user_id[idx], "item_id": self.target_id[idx], "seq": self.seq[idx],
                "seq_len": self.seq_len[idx], "label": self.label[idx], "group_id": self.group_id[idx]}


# ---- reading ----------------------------------------------------------------------------------------
def parse_line(text: str, path, line: int, group_num: Optional[int] = None):
    """``(user, target, items (list, zeros dropped), label, group)`` of one line, or ``DataError``."""
    parts = text.split(";")
    if len(parts) not in (5, 6):
        raise DataError(path, line, None, f"expected 5 ';'-separated fields ({';'.join(FIELDS)}), "
                                          f"got {len(parts)}: {text[:80]!r}")
    user = _int(parts[0], path, line, "user_id")
    target = _int(parts[1], path, line, "target_id", low=1)
    items = []
    seq_text = parts[2].strip()
    if seq_text:
        for k, tok in enumerate(seq_text.split(",")):
            t = tok.strip()
            if not t.isdigit():
                raise DataError(path, line, "clk_sequence",
                                f"item {k + 1} is not a non-negative integer: {tok!r}")
            v = int(t)
            if v:
                items.append(v)
    label = parts[3].strip()
    if label not in ("0", "1"):
        raise DataError(path, line, "label", f"expected 0 or 1, got {parts[3]!r}")
    group = _int(parts[4], path, line, "group_id", 0, None if group_num is None else group_num - 1)
    if len(parts) == 6 and parts[5].strip():
        try:
            float(parts[5])
        except ValueError:
            raise DataError(path, line, "probability", f"expected a number, got {parts[5]!r}") from None
    return user, target, items, int(label), group


def _pack(rows: List[tuple], lines: List[int], max_seq_len: int, path: str, skipped: int) -> Samples:
    n, L = len(rows), int(max_seq_len)
    seq = torch.zeros(n, L, dtype=torch.long)
    seq_len = torch.zeros(n, dtype=torch.long)
    for r, (_, _, items, _, _) in enumerate(rows):
        keep = items[-L:] if L else []
        if keep:
            seq[r, L - len(keep):] = torch.tensor(keep, dtype=torch.long)
        seq_len[r] = len(keep)
    col = lambda i, dt=torch.long: torch.tensor([row[i] for row in rows], dtype=dt)  # noqa: E731
    return Samples(col(0), col(1), seq, seq_len, col(3, torch.float32), col(4), path, skipped,
                   torch.tensor(lines, dtype=torch.long))


def _read_strict(path: Path, max_seq_len: int, group_num: Optional[int], on_bad_line: str) -> Samples:
    rows, lines, skipped = [], [], 0
    with open(path, newline=None) as f:
        for n, text in enumerate(f, start=1):
            text = text.rstrip("\r\n")
            if not text.strip() or (n == 1 and text.replace(" ", "").lower().startswith("user_id;target_id")):
                continue
            try:
                rows.append(parse_line(text, str(path), n, group_num))
                lines.append(n)
            except DataError:
                if on_bad_line != "skip":
                    raise
                skipped += 1
    return _pack(rows, lines, max_seq_len, str(path), skipped)


def _read_fast(path: Path, max_seq_len: int, group_num: Optional[int]) -> Optional[Samples]:
    """Vectorised reader (pandas' C parser + numpy); ``None`` when anything looks wrong, so that
    the strict reader finds and reports the exact line."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep=";", header=None, dtype=str, keep_default_na=False, na_filter=False,
                         engine="c", skip_blank_lines=True, comment=None)
    except Exception:  # noqa: BLE001 - ragged rows, bad bytes: the strict reader says where
        return None
    if df.shape[1] not in (5, 6) or len(df) == 0:
        return None
    if df.shape[1] == 6 and not pd.to_numeric(df[5].replace("", "0"), errors="coerce").notna().all():
        return None
    if str(df.iloc[0, 0]).strip().lower() == "user_id":
        df = df.iloc[1:]
    try:
        user = df[0].astype(np.int64).to_numpy()
        target = df[1].astype(np.int64).to_numpy()
        label = df[3].astype(np.int64).to_numpy()
        group = df[4].astype(np.int64).to_numpy()
    except (ValueError, TypeError, OverflowError):
        return None
    if (user < 0).any() or (target < 1).any() or not np.isin(label, (0, 1)).all() or (group < 0).any():
        return None
    if group_num is not None and (group >= group_num).any():
        return None
    seqs = df[2].str.strip()
    nonempty = (seqs != "").to_numpy()
    counts = np.where(nonempty, seqs.str.count(",").to_numpy() + 1, 0)
    joined = ",".join(seqs[nonempty])
    total = int(counts.sum())
    if total:
        if any(c not in "0123456789," for c in set(joined)):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = np.fromstring(joined, dtype=np.int64, sep=",")
        if flat.size != total:
            return None
    else:
        flat = np.zeros(0, dtype=np.int64)
    # drop padding zeros, keep the last L items of each row, left-pad
    n, L = len(df), int(max_seq_len)
    row = np.repeat(np.arange(n), counts)
    real = flat != 0
    flat, row = flat[real], row[real]
    kept = np.bincount(row, minlength=n)
    end = np.cumsum(kept)
    pos_from_end = end[row] - np.arange(flat.size) - 1  # 0 = the row's latest item
    take = pos_from_end < L
    seq = np.zeros((n, L), dtype=np.int64)
    seq[row[take], L - 1 - pos_from_end[take]] = flat[take]
    t = lambda a, dt=torch.long: torch.tensor(np.asarray(a), dtype=dt)  # noqa: E731  (a copy: pandas arrays may be read-only)
    return Samples(t(user), t(target), torch.from_numpy(seq), t(np.minimum(kept, L)), t(label, torch.float32), t(group),
                   str(path), 0, None)


def read_samples(path: str | os.PathLike, max_seq_len: int = 50, group_num: Optional[int] = None,
                 on_bad_line: str = "error") -> Samples:
    """Read a PINRec sample file (see the module docstring)."""
    path = Path(path)
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    if not path.is_file():
        raise DataError(str(path), message="file not found")
    if int(max_seq_len) < 1:
        raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
    fast = _read_fast(path, max_seq_len, group_num)
    if fast is not None:
        return fast
    s = _read_strict(path, max_seq_len, group_num, on_bad_line)
    if len(s) == 0:
        raise DataError(str(path), message="no samples" + (f" ({s.skipped} malformed lines skipped)" if s.skipped else ""))
    return s


# ---- writing ------------------------------------------------------------------------------------------
def format_lines(user_id, target_id, seq, label, group_id, probability=None) -> List[str]:
    """Lines of the format (no newline) for tensors / arrays of one batch; ``seq`` rows keep
    their padding zeros out (the written sequence is the real items, oldest first)."""
    u = np.asarray(torch.as_tensor(user_id).cpu()).astype(np.int64)
    t = np.asarray(torch.as_tensor(target_id).cpu()).astype(np.int64)
    s = np.asarray(torch.as_tensor(seq).cpu()).astype(np.int64)
    y = np.asarray(torch.as_tensor(label).cpu()).astype(np.float64).round().astype(np.int64)
    g = np.asarray(torch.as_tensor(group_id).cpu()).astype(np.int64)
    p = None if probability is None else np.asarray(torch.as_tensor(probability).detach().cpu(), dtype=np.float64)
    out = []
    for r in range(u.shape[0]):
        items = s[r][s[r] != 0]
        line = f"{u[r]};{t[r]};{','.join(map(str, items.tolist()))};{y[r]};{g[r]}"
        if p is not None:
            line += f";{p[r]:.6g}"
        out.append(line)
    return out


def write_samples(path: str | os.PathLike, samples, probability=None, chunk: int = 65536) -> Path:
    """Write ``samples`` (``Samples`` or a batch dict with ``user_id, item_id, seq, label,
    group_id``) to ``path`` (temporary name, renamed when complete). ``probability``: an
    optional sixth column."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(samples, Samples):
        cols = dict(user_id=samples.user_id, target_id=samples.target_id, seq=samples.seq, label=samples.label,
                    group_id=samples.group_id)
    else:
        cols = dict(user_id=samples["user_id"], target_id=samples["item_id"], seq=samples["seq"],
                    label=samples["label"], group_id=samples["group_id"])
    n = int(cols["user_id"].numel())
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        for s in range(0, n, chunk):
            part = {k: v[s:s + chunk] for k, v in cols.items()}
            pr = None if probability is None else probability[s:s + chunk]
            lines = format_lines(part["user_id"], part["target_id"], part["seq"], part["label"], part["group_id"], pr)
            if lines:
                f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


# ---- converting our datasets -------------------------------------------------------------------------
# the command line's data defaults over configs/base.yaml (PINRec's protocol; the module docstring)
CONVERT_DEFAULTS = {"split": {"mode": "loo"}, "group_num": 5, "max_seq_len": 50, "neg_per_pos": 1,
                    "eval_neg_per_pos": 20}


def convert(data_cfg: Dict[str, Any], data_dir: str | os.PathLike, out_dir: str | os.PathLike,
            seed: int = 2024) -> Dict[str, Any]:
    """Write our ctr samples of a dataset (``data_cfg``: a merged ``data:`` config) as PINRec files
    ``train.txt`` / ``valid.txt`` / ``test.txt`` plus ``users.tsv`` / ``items.tsv``; returns counts."""
    from ..dataset import KindBuilder
    from ..loading import load_interactions

    cfg = dict(data_cfg)
    if not int(cfg.get("group_num") or 0):
        raise ValueError("convert: data.group_num must be > 0 (the group_id column)")
    data = load_interactions(Path(data_dir), cfg, seed, cfg.get("cache", True))
    builder = KindBuilder.from_config(data, cfg, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    torch.manual_seed(seed)  # the training negatives drawn for this file
    for name in ("train", "valid", "test"):
        ds = builder.train("ctr") if name == "train" else builder.eval("ctr", name)
        batch = ds[torch.arange(len(ds))]
        write_samples(out / SPLIT_FILES[name], batch)
        counts[name] = int(batch["user_id"].numel())
    for fname, tokens in (("users.tsv", data.user_tokens), ("items.tsv", data.item_tokens)):
        text = "id\ttoken\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(tokens) if i)
        tmp = out / f".{fname}.tmp{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out / fname)
    return {"out_dir": str(out), "rows": counts, "num_users": data.num_users - 1, "num_items": data.num_items - 1,
            "group_num": int(cfg["group_num"]), "max_seq_len": int(cfg.get("max_seq_len", 50))}


# ---- the files as a data source of RecDataModule --------------------------------------------------------
def _split_paths(folder: Path, files: Optional[Dict[str, Any]] = None) -> Dict[str, Path]:
    if not files:
        return {k: folder / v for k, v in SPLIT_FILES.items()}
    paths = {k: folder / Path(v) for k, v in dict(files).items()}  # an absolute path stays as it is
    unknown = set(paths) - set(SPLIT_FILES)
    if unknown or "train" not in paths:
        raise ValueError(f"data.files for sample files: expected keys train (required), valid, test; got {sorted(paths)}")
    return paths


class SampleFiles(StagedSamples):
    """The sample files of one dataset, read once: what ``RecDataModule`` serves for
    ``data.format: pinrec`` (see the module docstring). Offers the facts the data module passes
    on (``num_users``, ``num_items``, ``group_num``, ``item_counts()``, ``train_keys()``,
    ``stats``) and, as ``KindBuilder`` does for interactions, ``train(kind)`` / ``eval(kind, stage)``
    datasets of the ``ctr`` kind."""

    FORMAT, TARGET = "pinrec", "target_id"

    def __init__(self, folder, files: Optional[Dict[str, Any]] = None, max_seq_len: int = 50,
                 group_num: Optional[int] = None, on_bad_line: str = "error"):
        self.folder = Path(folder)
        self.paths = _split_paths(self.folder, files)
        self.samples: Dict[str, Samples] = {}
        for stage, p in progress(list(self.paths.items()), desc="pinrec sample files", unit="file"):
            if stage == "train" or p.exists():
                self.samples[stage] = read_samples(p, max_seq_len, group_num, on_bad_line)
        every = list(self.samples.values())
        self.num_users = max(int(s.user_id.max()) for s in every) + 1
        self.num_items = max(max(int(s.target_id.max()), int(s.seq.max())) for s in every) + 1
        self.group_num = int(group_num or max(int(s.group_id.max()) for s in every) + 1)
        self.stats = {f"{k}_rows": float(len(s)) for k, s in self.samples.items()}
        self.stats.update(skipped_lines=float(sum(s.skipped for s in every)))

    def model_args(self) -> Dict[str, Any]:
        return {}


def open_source(folder, cfg: Dict[str, Any]) -> SampleFiles:
    """``data.format: pinrec``: the sample files of ``folder`` as ``RecDataModule``'s source
    (``data.files``, ``data.max_seq_len``, ``data.group_num``, ``data.on_bad_line`` apply)."""
    return SampleFiles(folder, cfg.get("files") or None, int(cfg.get("max_seq_len", 50)),
                       int(cfg.get("group_num") or 0) or None, cfg.get("on_bad_line", "error"))


# ---- command line --------------------------------------------------------------------------------------
def _data_config(dataset: Optional[str], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The command line's data config (the module docstring; ``fields.cli_data_config``)."""
    return cli_data_config(dataset, CONVERT_DEFAULTS, overrides)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap, sub, c = command_line("pinrec", "PINRec sample files: convert a dataset to them, or check them.",
                              "write a dataset's PINRec samples (train/valid/test.txt)")
    c.add_argument("--group_num", type=int)
    c.add_argument("--max_seq_len", type=int)
    c.add_argument("--neg_per_pos", type=int)
    c.add_argument("--eval_neg_per_pos", type=int)
    k = sub.add_parser("check", help="read sample files and print their sizes (errors as file:line)")
    k.add_argument("files", nargs="+")
    k.add_argument("--max_seq_len", type=int, default=50)
    k.add_argument("--group_num", type=int)
    args = ap.parse_args(argv)

    def work():
        if args.cmd == "convert":
            cfg = _data_config(args.dataset, {"group_num": args.group_num, "max_seq_len": args.max_seq_len,
                                              "neg_per_pos": args.neg_per_pos,
                                              "eval_neg_per_pos": args.eval_neg_per_pos})
            res = convert(cfg, args.data_dir, args.out, seed=args.seed)
            print(f"wrote {res['out_dir']}: " + ", ".join(f"{k} {v} rows" for k, v in res["rows"].items())
                  + f"; {res['num_users']} users, {res['num_items']} items, {res['group_num']} groups")
        else:
            for f in args.files:
                s = read_samples(f, args.max_seq_len, args.group_num)
                print(f"{f}: {len(s)} samples, {int(s.label.sum())} positive, groups "
                      f"{sorted(set(s.group_id.tolist()))}, max item id {int(max(s.target_id.max(), s.seq.max()))}")

    return run_command(work)


if __name__ == "__main__":
    raise SystemExit(main())
