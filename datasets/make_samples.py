"""Regenerate the small committed samples of this folder, one per input format, with the project's own
generators: ``python datasets/make_samples.py`` (from the repository root; ``--out DIR`` writes them
elsewhere). ``tests/data/test_samples.py`` checks that the committed files are byte for byte what this
writes, and that each trains with ``python run.py -d=<sample>``.

- ``sample-atomic/``: ``recstudio_edge.data.synthetic.write_atomic`` (RecBole atomic ``.inter`` + ``.item``);
- ``sample-csv/``: the same generated interactions and items as plain CSV with their own column names
  (``configs/data/sample-csv.yaml`` maps them with ``data.fields``);
- ``sample-pinrec/``: ``recstudio_edge.data.formats.pinrec.convert`` of ``sample-atomic`` (PINRec's
  ``;`` sample files ``train.txt`` / ``valid.txt`` / ``test.txt``, plus ``users.tsv`` / ``items.tsv``);
- ``sample-<format>/`` for every other seed format whose module has ``write_sample(out)`` (ECRec's,
  CIGAR's ... files, written by the format's own generator; ``format_samples``).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

# small on purpose: a few KB per file, yet every split and group has rows
GENERATOR = dict(num_users=24, num_items=40, mean_per_user=8.0, min_per_user=4, seed=2024)
PINREC = dict(group_num=5, max_seq_len=8, neg_per_pos=1, eval_neg_per_pos=3)
SEED = 2024
SAMPLES = ("sample-atomic", "sample-csv", "sample-pinrec")


def write_atomic_sample(out: Path) -> Path:
    from recstudio_edge.data.synthetic import write_atomic

    return write_atomic(Path(out) / "sample-atomic", "sample-atomic", **GENERATOR)


def write_csv_sample(out: Path) -> Path:
    """``ratings.csv`` (user,item,stars,time) and ``items.csv`` (item,genre): the generator's rows."""
    from recstudio_edge.data.synthetic import generate, DEFAULTS

    user, item, rating, ts, era = generate(**{**DEFAULTS, **GENERATOR})
    d = Path(out) / "sample-csv"
    d.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"u{u},i{i},{int(r)},{t}\n" for u, i, r, t in zip(user.tolist(), item.tolist(), rating.tolist(),
                                                                      ts.tolist()))
    (d / "ratings.csv").write_text("user,item,stars,time\n" + rows)
    genres = ("".join(f"i{k + 1},era{int(e * 10)}\n" for k, e in enumerate(era.tolist())))
    (d / "items.csv").write_text("item,genre\n" + genres)
    return d


def write_pinrec_sample(out: Path) -> Path:
    """``convert`` of the atomic sample (leave-one-out by time, 5 activity groups (PINRec's default), histories of 8)."""
    from recstudio_edge.config import CONFIG_DIR, load_yaml, merge
    from recstudio_edge.data.formats.pinrec import CONVERT_DEFAULTS, convert

    d = Path(out) / "sample-pinrec"
    with tempfile.TemporaryDirectory() as tmp:
        write_atomic_sample(Path(tmp))
        cfg = merge(merge(load_yaml(CONFIG_DIR / "base.yaml")["data"], CONVERT_DEFAULTS), PINREC)
        cfg.update(name="sample-atomic", format="atomic", cache=False)
        convert(cfg, tmp, d, seed=SEED)
    return d


def format_samples() -> dict:
    """``{"sample-<format>": writer}`` of every seed format whose module offers ``write_sample(out)``
    (it writes ``out/sample-<format>/`` with the format's own generator), pinrec aside (above)."""
    from recstudio_edge.data.formats import format_module, source_formats

    out = {}
    for name in source_formats():
        fn = getattr(format_module(name), "write_sample", None)
        if name != "pinrec" and callable(fn):
            out[f"sample-{name}"] = fn
    return out


def all_samples() -> dict:
    """Sample folder name -> its writer, in the order they are written."""
    return {**dict(zip(SAMPLES, (write_atomic_sample, write_csv_sample, write_pinrec_sample))), **format_samples()}


def write_samples(out: Path = ROOT / "datasets") -> list:
    """Write every sample folder under ``out``; return their paths."""
    out = Path(out)
    paths = []
    for name, fn in all_samples().items():
        if (out / name).exists():
            shutil.rmtree(out / name)
        paths.append(Path(fn(out)))
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "datasets"), help="folder to write the sample folders into")
    args = ap.parse_args(argv)
    for p in write_samples(Path(args.out)):
        files = sorted(f for f in p.iterdir() if f.is_file())
        print(f"{p}: " + ", ".join(f"{f.name} ({f.stat().st_size} B)" for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
