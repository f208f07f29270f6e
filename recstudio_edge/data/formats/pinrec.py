"""PINRec's sample format: read, write, convert, and train from it.

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

``convert`` builds the samples exactly as ``-m PINRec`` trains on them (time-ordered histories,
sampled negatives, activity-quantile groups, leave-one-out split by time; the data config is
``configs/data/<d>.yaml`` over ``configs/base.yaml``, with the ``data.*`` defaults of
``configs/model/PINRec.yaml``) and writes ``train.txt`` (one epoch's draw of negatives),
``valid.txt``, ``test.txt``, and ``users.tsv`` / ``items.tsv`` (id -> the dataset's own token).

Training from files: ``SampleFileDataModule(folder)`` serves ``train.txt`` / ``valid.txt`` /
``test.txt`` (or any three files) as batches with our field names ``user_id, item_id, seq,
seq_len, label, group_id``: the split is the files'. Training rows are shuffled per epoch
(seeded), ``batch_size`` counts rows (the negatives are already in the file); ``num_users`` /
``num_items`` are one more than the largest id in any file, ``group_num`` one more than the
largest group id (or the given one, checked). It offers what the trainer, the model and the
runner read from ``RecDataModule``: ``num_users``, ``num_items``, ``group_num``,
``item_counts()``, ``eval_dataset(stage)``, the three dataloaders, and ``stats``.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError

FIELDS = ("user_id", "target_id", "clk_sequence", "label", "group_id")
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
def _int(text: str, path, line: int, name: str, low: int = 0, high: Optional[int] = None) -> int:
    t = text.strip()
    try:
        v = int(t)
    except ValueError:
        raise DataError(path, line, name, f"expected an integer, got {text!r}") from None
    if v < low or (high is not None and v > high):
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise DataError(path, line, name, f"expected an integer {rng}, got {v}")
    return v


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
PINREC_DATA_DEFAULTS = {"split": {"mode": "loo"}, "group_num": 5, "max_seq_len": 50, "neg_per_pos": 1,
                        "eval_neg_per_pos": 20}


def convert(data_cfg: Dict[str, Any], data_dir: str | os.PathLike, out_dir: str | os.PathLike,
            seed: int = 2024) -> Dict[str, Any]:
    """Write our ctr samples of a dataset (``data_cfg``: a merged ``data:`` config) as PINRec files
    ``train.txt`` / ``valid.txt`` / ``test.txt`` plus ``users.tsv`` / ``items.tsv``; returns counts."""
    from ..datamodule import RecDataModule

    cfg = dict(data_cfg)
    if not int(cfg.get("group_num") or 0):
        raise ValueError("convert: data.group_num must be > 0 (the group_id column)")
    dm = RecDataModule(cfg, data_dir, "ctr", seed=seed)
    dm.setup()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    torch.manual_seed(seed)  # the training negatives drawn for this file
    train = dm.builder.train("ctr")
    for name, ds in (("train", train), ("valid", dm.eval_dataset("valid")), ("test", dm.eval_dataset("test"))):
        batch = ds[torch.arange(len(ds))]
        write_samples(out / SPLIT_FILES[name], batch)
        counts[name] = int(batch["user_id"].numel())
    for fname, tokens in (("users.tsv", dm.data.user_tokens), ("items.tsv", dm.data.item_tokens)):
        text = "id\ttoken\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(tokens) if i)
        tmp = out / f".{fname}.tmp{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out / fname)
    return {"out_dir": str(out), "rows": counts, "num_users": dm.num_users - 1, "num_items": dm.num_items - 1,
            "group_num": int(cfg["group_num"]), "max_seq_len": int(cfg.get("max_seq_len", 50))}


# ---- a data module over sample files --------------------------------------------------------------------
def _split_paths(source) -> Dict[str, Path]:
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        return {k: folder / v for k, v in SPLIT_FILES.items()}
    paths = {k: Path(v) for k, v in dict(source).items()}
    unknown = set(paths) - set(SPLIT_FILES)
    if unknown or "train" not in paths:
        raise ValueError(f"sample files: expected keys train (required), valid, test; got {sorted(paths)}")
    return paths


try:  # the data module needs Lightning; reading and writing do not
    import lightning.pytorch as _pl

    _Base = _pl.LightningDataModule
except ImportError:  # pragma: no cover
    _Base = object


class SampleFileDataModule(_Base):
    """Batches from PINRec sample files, split by file (see the module docstring)."""

    def __init__(self, source, max_seq_len: int = 50, group_num: Optional[int] = None, batch_size: int = 2048,
                 eval_batch_size: int = 4096, seed: int = 0, num_workers: int = 0, on_bad_line: str = "error",
                 steps_per_call: int = 1):
        super().__init__()
        self.paths = _split_paths(source)
        self.max_seq_len, self.seed, self.num_workers = int(max_seq_len), int(seed), int(num_workers)
        self.steps_per_call = max(1, int(steps_per_call))
        self.loader_steps = 1  # set by recstudio_edge.wiring.connect
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.on_bad_line = on_bad_line
        self._given_groups = group_num
        self.samples: Dict[str, Samples] = {}
        self.stats: Dict[str, float] = {}

    def prepare_data(self) -> None:
        if self.samples:
            return
        for stage, p in self.paths.items():
            if stage == "train" or p.exists():
                self.samples[stage] = read_samples(p, self.max_seq_len, self._given_groups, self.on_bad_line)
        every = list(self.samples.values())
        self.num_users = max(int(s.user_id.max()) for s in every) + 1
        self.num_items = max(max(int(s.target_id.max()), int(s.seq.max())) for s in every) + 1
        self.group_num = int(self._given_groups or max(int(s.group_id.max()) for s in every) + 1)
        self.stats = {f"{k}_rows": float(len(s)) for k, s in self.samples.items()}
        self.stats.update(skipped_lines=float(sum(s.skipped for s in every)))

    def setup(self, stage: Optional[str] = None) -> None:
        self.prepare_data()

    # facts the model needs
    def item_counts(self) -> torch.Tensor:
        tr = self.samples["train"]
        return torch.bincount(tr.target_id[tr.label > 0.5], minlength=self.num_items)

    def eval_dataset(self, stage: str):
        from ..dataset import BatchDataset

        if stage not in self.samples:
            raise DataError(str(self.paths.get(stage, stage)), message=f"no {stage} sample file")
        s = self.samples[stage]
        return BatchDataset(len(s), s.batch)

    def _loader(self, stage: str, batch_size: int, shuffle: bool, pad: bool, steps: int = 1):
        from ..dataset import make_loader

        return make_loader(self.eval_dataset(stage), batch_size, shuffle, self.seed, pad, self.num_workers, steps)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        from ..datamodule import transfer_flat_batch

        return transfer_flat_batch(batch, device, dataloader_idx, super().transfer_batch_to_device)

    def train_dataloader(self):
        return self._loader("train", self.batch_size, True, True, self.loader_steps)

    def val_dataloader(self):
        return self._loader("valid", self.eval_batch_size, False, False)

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size, False, False)


# ---- command line --------------------------------------------------------------------------------------
def _data_config(dataset: Optional[str], overrides: Dict[str, Any]) -> Dict[str, Any]:
    from ...config import CONFIG_DIR, find_named_config, load_yaml, merge

    cfg = load_yaml(CONFIG_DIR / "base.yaml")["data"]
    cfg = merge(cfg, PINREC_DATA_DEFAULTS)
    mpath = find_named_config("model", "PINRec")
    if mpath is not None:
        cfg = merge(cfg, load_yaml(mpath).get("data") or {})
    if dataset:
        dpath = find_named_config("data", dataset)
        if dpath is not None:
            cfg = merge(cfg, load_yaml(dpath).get("data") or {})
        cfg["name"] = dpath.stem if dpath is not None else dataset
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recstudio_edge.data.formats.pinrec",
                                 description="PINRec sample files: convert a dataset to them, or check them.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="write a dataset's PINRec samples (train/valid/test.txt)")
    c.add_argument("-d", "--dataset", default="synthetic")
    c.add_argument("--data_dir", default="datasets")
    c.add_argument("--out", required=True)
    c.add_argument("--group_num", type=int)
    c.add_argument("--max_seq_len", type=int)
    c.add_argument("--neg_per_pos", type=int)
    c.add_argument("--eval_neg_per_pos", type=int)
    c.add_argument("--seed", type=int, default=2024)
    k = sub.add_parser("check", help="read sample files and print their sizes (errors as file:line)")
    k.add_argument("files", nargs="+")
    k.add_argument("--max_seq_len", type=int, default=50)
    k.add_argument("--group_num", type=int)
    args = ap.parse_args(argv)
    try:
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
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
