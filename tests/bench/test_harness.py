"""The benchmark harness's quick path, end to end on tiny data, our side only (RecBole's venv is not
built here): gen_synth -> convert_ml -> bench/ours_worker.py (one BPR run in its own process, through
common.run_ours) -> speed.py's table beside a RecBole result as run_peer.py writes it; the set-up's
one-line errors; the PNG helper."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import common
        import convert_ml
        import gen_synth
        import speed
        yield {"common": common, "gen_synth": gen_synth, "convert_ml": convert_ml, "speed": speed}
    finally:
        sys.path.remove(str(BENCH))


# what bench/peer/run_peer.py writes (the fields speed.peer_summary reads), for the table
PEER_JSON = {"model": "BPR", "dataset": "tiny", "samples_per_s": 12000.0, "s_per_full_epoch_est": 0.2,
             "train_s_per_epoch_measured": [0.2], "train_samples_per_epoch": 2400, "valid_eval_s": [0.05],
             "load_s": 0.4, "split_s": 0.3, "epochs_equivalent": 1.0, "max_batches_per_epoch": None,
             "torch_threads": 1, "test": {"ndcg@10": 0.1234, "recall@10": 0.2345}}


def test_quick_path_on_tiny_data(tmp_path, bench_modules):
    common, gen_synth, convert_ml, speed = (bench_modules[k] for k in ("common", "gen_synth", "convert_ml", "speed"))
    data = tmp_path / "data"
    raw = gen_synth.main(["--out-dir", str(tmp_path / "raw"), "--name", "tiny", "--n-users", "60",
                          "--n-items", "80", "--n-inter", "3000", "--min-per-user", "20", "--max-per-user", "80"])
    path = convert_ml.main([raw, "tiny", str(data)])
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert len(lines) == 3001 and len({ln.split("\t")[0] for ln in lines[1:]}) == 60

    spec = {"task": "train", "model": "BPR", "dataset": "tiny", "data_dir": str(data), "epochs": 2, "threads": 1,
            "output_dir": str(tmp_path / "runs"), "overrides": {"eval.val_metric": "ndcg@10", "train.batch_size": 256}}
    out = tmp_path / "out"
    out.mkdir()
    r = common.run_ours(spec, "bpr_tiny", out, 300, common.thread_env(1))
    assert r["proc"]["rc"] == 0, (out / "ours_bpr_tiny.log").read_text()[-3000:]
    assert r["proc"]["maxrss_mb"] > 50 and r["torch_threads"] == 1
    assert [e["epoch"] for e in r["epochs"]] == [0, 1]
    for e in r["epochs"]:
        assert e["samples"] == e["targets"] > 0 and e["train_s"] > 0 and e["valid_s"] > 0
        assert 0 <= e["valid"]["ndcg@10"] <= 1
    test = r["result"]["test"]
    assert {"ndcg@10", "recall@10"} <= set(test)
    assert Path(r["result"]["run_dir"]).is_relative_to(tmp_path / "runs")

    o = speed.train_summary(r)
    assert o["epochs"] == 2 and o["samples_per_s"] == pytest.approx(o["samples_per_epoch"] / o["s_per_epoch"])
    res = {"machine": {"date": "d", "cpu": "c", "cores": 2, "torch_threads": 1, "torch": "t", "lightning": "l",
                       "python": "p", "gpu": "none", "peer_torch_recbole_threads": None, "loadavg_at_start": [],
                       "code": {"head": "abc", "dirty": []}, "bench_threads": 1, "omp_wait_policy": "default"},
           "parse": {}, "seq": {},
           "bpr": {"tiny": {"ours": o, "peer": speed.peer_summary({"proc": {"rc": 0, "maxrss_mb": 500.0}, **PEER_JSON})}}}
    table = speed.render(res, "tiny")
    rows = {ln.split(" | ")[0].lstrip("| "): ln.split(" | ") for ln in table.splitlines() if ln.startswith("| BPR tiny")}
    assert list(rows) == ["BPR tiny: samples/s", "BPR tiny: s/epoch (median)",
                          "BPR tiny: full-sort valid eval, all users (s, median)",
                          "BPR tiny: peak RSS (MB, whole process)", "BPR tiny: test ndcg@10 / recall@10 after the epochs"]
    assert rows["BPR tiny: samples/s"][1] == f"{o['samples_per_s']:,.0f}" and rows["BPR tiny: samples/s"][2] == "12,000"
    assert rows["BPR tiny: samples/s"][3] == f"{o['samples_per_s'] / 12000:.1f}x"
    assert rows["BPR tiny: test ndcg@10 / recall@10 after the epochs"][1] == \
        f"{test['ndcg@10']:.4f} / {test['recall@10']:.4f}"
    assert rows["BPR tiny: test ndcg@10 / recall@10 after the epochs"][2] == "0.1234 / 0.2345"


def _run(args, bench_data, *extra_env):
    env = {**os.environ, "BENCH_DATA": str(bench_data), "PYTHONPATH": str(REPO)}
    env.pop("PEER_PY", None)
    env.pop("PEER_RUNNER", None)
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_missing_setup_is_one_line(tmp_path):
    empty = tmp_path / "bench-data"
    p = _run([BENCH / "speed.py", "--quick"], empty)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: benchmark set-up incomplete")
    assert str(empty / "data" / "ml-100k" / "ml-100k.inter") in err[0] and "python bench/setup.py" in err[0]
    assert str(REPO / "bench" / "peer" / "run_peer.py") not in err[0]  # the in-repo runner is there
    p = _run([BENCH / "setup.py", "--check", "--no-peer"], empty)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"error: ml-100k: {empty / 'ml-100k-atomic' / 'ml-100k.inter'} missing"
    assert not empty.exists()  # --check makes nothing


def test_peer_configs_and_plot(tmp_path, bench_modules):
    spec = importlib.util.spec_from_file_location("bench_setup", BENCH / "setup.py")
    bench_setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_setup)

    for t in sorted((BENCH / "peer" / "configs").glob("*.yaml")):
        text = bench_setup.peer_config_text(t.read_text(), tmp_path)
        assert f"data_path: {tmp_path / 'data'}" in text and f"checkpoint_dir: {tmp_path / 'saved'}" in text
        assert text.count("\n") == t.read_text().count("\n")
    pytest.importorskip("matplotlib")
    png = bench_modules["common"].save_plot(tmp_path / "p.png", [
        {"label": "a", "x": [1, 2, None], "y": [0.1, 0.2, 0.3], "labels": ["x", "y", "z"]},
        {"label": "b", "x": [3], "y": [float("nan")]}], xlabel="x", ylabel="y", title="t", logx=True)
    assert png == tmp_path / "p.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_scripts_write_their_charts(tmp_path, bench_modules):
    """ann.py, edge.py and quality.py draw their PNG from the records they keep in their JSON."""
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(BENCH))
    try:
        import quality
        from bench import ann, edge
    finally:
        sys.path.remove(str(BENCH))
    runs = [{"index": "IVF1024,Flat", "nprobe": 4, "search_s": 0.1, "recall": 0.8, "build_s": 1.0},
            {"index": "IVF1024,Flat", "nprobe": 8, "search_s": 0.2, "recall": 0.9, "build_s": 1.0},
            {"index": "HNSW32", "efSearch": 64, "search_s": 0.05, "recall": 0.95, "build_s": 3.0}]
    assert ann.plot_runs(tmp_path / "ann.png", runs, 10.0, 10, "head") == tmp_path / "ann.png"
    codecs = [{"codec": c, "payload_bytes_1row": b, "auc_loss": l} for c, b, l in
              (("none", 400, 0.0), ("fp16", 200, 0.0), ("int8", 100, 0.001), ("topk0.25", 80, 0.03))]
    assert edge.plot_codecs(tmp_path / "edge.png", {"DIN": {"split": {"layer": "classifier", "codecs": codecs}}})
    res = {"dataset": "tiny", "runs": {"sasrec": {
        "ours": {"probes": [{"train_s_cum": 1.0, "test": {"ndcg@10": 0.01}}, {"train_s_cum": 5.0, "test": {"ndcg@10": 0.05}}]},
        "peer": {"test": {"ndcg@10": 0.02}, "train_s_per_epoch_measured": [30.0], "epochs_equivalent": 0.1}}}}
    series = quality.seq_series(res)
    assert [(s["label"], s["x"], s["y"]) for s in series] == [
        ("SASRec, ours", [1.0, 5.0], [0.01, 0.05]), ("SASRec, RecBole 1.2.1 (0.10 epoch)", [30.0], [0.02])]
    assert quality.plot_seq(tmp_path / "q.png", res) == tmp_path / "q.png"
    assert quality.plot_seq(tmp_path / "none.png", {"dataset": "tiny", "runs": {}}) is None
    for name in ("ann.png", "edge.png", "q.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
