"""The committed samples of datasets/ (one per input format) are exactly what datasets/make_samples.py
writes with the project's generators today, read back through the project's readers, and train."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ROOT / "datasets"


def make_samples():
    spec = importlib.util.spec_from_file_location("make_samples", DATASETS / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def data_config(name: str) -> dict:
    from recstudio_edge.config import CONFIG_DIR, find_named_config, load_yaml, merge

    return merge(load_yaml(CONFIG_DIR / "base.yaml")["data"], load_yaml(find_named_config("data", name))["data"])


def test_committed_samples_are_what_the_generators_write(tmp_path):
    mod = make_samples()
    written = mod.write_samples(tmp_path)
    names = list(mod.all_samples())
    assert [p.name for p in written] == names and names[:3] == ["sample-atomic", "sample-csv", "sample-pinrec"]
    assert all(n in names for n in mod.format_samples())
    for name in names:
        want, have = files(tmp_path / name), files(DATASETS / name)
        assert sorted(have) == sorted(want), f"{name}: regenerate with python datasets/make_samples.py"
        for f in want:
            assert have[f] == want[f], f"datasets/{name}/{f} differs from the generator's; run python datasets/make_samples.py"
            assert len(want[f]) < 8192, f"{name}/{f}: a sample is a few KB"
    assert sorted(files(DATASETS / "sample-pinrec")) == ["items.tsv", "test.txt", "train.txt", "users.tsv", "valid.txt"]
    # never a MovieLens file among the samples, and the default run's generated set is not committed
    every = [p.name for p in DATASETS.rglob("*") if p.is_file()]
    assert not {"u.data", "ratings.dat", "ml-100k.inter", "ml-1m.inter"} & set(every)
    if (ROOT / ".git").exists() and shutil.which("git"):
        ignored = lambda rel: subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT).returncode == 0  # noqa: E731
        assert ignored("datasets/synthetic/synthetic.inter") and ignored("datasets/.cache/x.pt")
        assert not any(ignored(f"datasets/{n}/{f}") for n in names for f in files(DATASETS / n))
        assert not ignored("datasets/README.md") and not ignored("datasets/make_samples.py")


def test_atomic_and_csv_samples_read_back_as_the_same_interactions():
    from recstudio_edge.data.loading import load_interactions

    a = load_interactions(DATASETS, data_config("sample-atomic"), 2024, False)
    c = load_interactions(DATASETS, data_config("sample-csv"), 2024, False)
    lines = (DATASETS / "sample-atomic" / "sample-atomic.inter").read_text().splitlines()
    assert a.user.numel() == c.user.numel() == len(lines) - 1
    assert a.num_users == c.num_users == 25 and a.num_items == c.num_items  # 24 users + padding
    assert [f"u{t}" for t in a.user_tokens[1:]] == c.user_tokens[1:]
    assert [f"i{t}" for t in a.item_tokens[1:]] == c.item_tokens[1:]
    assert a.rating.tolist() == c.rating.tolist() and a.time.tolist() == c.time.tolist()
    assert a.split.tolist() == c.split.tolist()


def test_pinrec_sample_reads_back_with_every_group():
    from recstudio_edge.data.formats.pinrec import SampleFiles, read_samples

    s = SampleFiles(DATASETS / "sample-pinrec", max_seq_len=8)
    assert set(s.samples) == {"train", "valid", "test"} and s.group_num == 5
    for stage, smp in s.samples.items():
        lines = (DATASETS / "sample-pinrec" / f"{stage}.txt").read_text().splitlines()
        assert len(smp) == len(lines) and 0 < float(smp.label.mean()) < 1, stage
    test = read_samples(DATASETS / "sample-pinrec" / "test.txt", 8)
    assert sorted(set(test.group_id.tolist())) == [0, 1, 2, 3, 4]
    assert float(test.label.sum()) * 4 == len(test)  # one positive and 3 negatives per user


SAMPLE_RUNS = {"csv": (("-d=sample-csv",), "recall@10"), "pinrec": (("-m=PINRec", "-d=sample-pinrec"), "auc"),
               "ecrec": (("-m=ECRec", "-d=sample-ecrec"), "auc"), "cigar": (("-m=CIGAR", "-d=sample-cigar"), "auc"),
               "mcrec": (("-m=MCRec", "-d=sample-mcrec"), "auc"), "ggcn": (("-m=GGCN", "-d=sample-ggcn"), "micro_f1")}


@pytest.mark.parametrize("args,key", list(SAMPLE_RUNS.values()), ids=list(SAMPLE_RUNS))
def test_a_sample_trains_with_its_config(run_cli, tmp_path, args, key):
    """Each committed sample trains its model with its own config (``-d=sample-<format>``), from a
    copy that the run never writes into (MCRec: its whole pipeline, the routed system's AUC)."""
    name = args[-1].split("=")[1]
    shutil.copytree(DATASETS / name, tmp_path / "data" / name)
    before = files(tmp_path / "data" / name)
    res, run = run_cli(*args, "--epochs=1", "--trainer.enable_progress_bar=false", tiny=False)
    assert run.parent.name == name and (run / "metrics.json").is_file()
    assert 0.0 <= res["test"][key] <= 1.0
    assert files(tmp_path / "data" / name) == before  # a run reads the sample, never writes into it
