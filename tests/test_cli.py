"""The command line end to end: run folder, test and infer from a checkpoint, resume,
reproducibility, and DDP on CPU giving the same metrics as one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, read_metrics

ROOT = Path(__file__).resolve().parent.parent
QUIET = "--trainer.enable_progress_bar=false"


def test_default_run_writes_the_run_folder(run_cli):
    res, run = run_cli("--epochs=2", QUIET)
    assert run.parts[-3:-1] == ("BPR", "synthetic")
    for name in ("config.yaml", "best.ckpt", "last.ckpt", "metrics.json", "run.log"):
        assert (run / name).exists(), name
    m = read_metrics(run)
    assert set(m["test"]) >= {"recall@10", "ndcg@10", "precision@20", "map@10", "mrr@20", "hit@10"}
    assert m["epochs"] == 2 and m["val_metric"] == "recall@10"
    # the checkpoint loads with weights_only=True (no pickled objects inside)
    state = torch.load(run / "best.ckpt", weights_only=True)
    assert "state_dict" in state
    # the saved config repeats the run: --config=<run>/config.yaml is accepted as is
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class

    cfg = build_config("BPR", None, str(run / "config.yaml"), {}, get_model_class("BPR"))
    assert cfg["epochs"] == 2


def test_two_runs_in_one_process_get_two_folders(tmp_path):
    from recstudio_edge.cli import main

    args = [f"--data_dir={tmp_path / 'd'}", f"--output_dir={tmp_path / 'o'}", "--epochs=1", QUIET, *TINY]
    a, b = main(args), main(args)
    assert a["run_dir"] != b["run_dir"]


def test_same_seed_same_metrics_and_test_task_reproduces(run_cli):
    a, run_a = run_cli("--epochs=2", QUIET)
    b, _ = run_cli("--epochs=2", QUIET)
    assert a["test"] == b["test"]
    c, _ = run_cli("--epochs=2", "--seed=7", QUIET)
    assert c["test"] != a["test"]
    t, _ = run_cli("--task=test", f"--ckpt={run_a / 'best.ckpt'}", QUIET)
    for k, v in a["test"].items():
        assert t["test"][k] == pytest.approx(v, abs=1e-9)


def test_infer_writes_one_line_per_input_row_in_order(run_cli, tmp_path):
    _, run = run_cli("--epochs=1", QUIET)
    users = ["17", "3", "250", "3"]
    inp = tmp_path / "users.txt"
    inp.write_text("\n".join(users) + "\n")
    res, out_run = run_cli("--task=infer", f"--ckpt={run / 'best.ckpt'}", f"--input={inp}", "--topk=[5]", QUIET)
    lines = Path(res["output"]).read_text().splitlines()
    assert lines[0] == "user_id\titems\tscores"
    assert [ln.split("\t")[0] for ln in lines[1:]] == users
    items = lines[1].split("\t")[1].split(",")
    scores = [float(x) for x in lines[1].split("\t")[2].split(",")]
    assert len(items) == 5 and scores == sorted(scores, reverse=True)
    assert lines[2] == lines[4]  # the same user twice gets the same answer
    # a user the model has never seen is an error naming the file and line
    inp.write_text("17\nnobody\n")
    with pytest.raises(SystemExit):
        run_cli("--task=infer", f"--ckpt={run / 'best.ckpt'}", f"--input={inp}", QUIET)


def test_infer_ctr_scores_pairs(run_cli, tmp_path):
    _, run = run_cli("-m=DIN", "--epochs=1", QUIET)
    inp = tmp_path / "pairs.tsv"
    inp.write_text("user_id\titem_id\n5\t7\n5\t8\n2\t7\n")
    res, _ = run_cli("--task=infer", f"--ckpt={run / 'best.ckpt'}", f"--input={inp}", QUIET)
    lines = Path(res["output"]).read_text().splitlines()
    assert [ln.split("\t")[:2] for ln in lines[1:]] == [["5", "7"], ["5", "8"], ["2", "7"]]
    assert all(0.0 < float(ln.split("\t")[2]) < 1.0 for ln in lines[1:])


def test_resume_continues_from_last_checkpoint(run_cli):
    short, run = run_cli("--epochs=2", "--lr=0.02", QUIET)
    state = torch.load(run / "last.ckpt", weights_only=True)
    res, run2 = run_cli("--epochs=5", "--lr=0.02", f"--resume={run}", QUIET)
    assert run2 == run  # the same folder goes on
    resumed_steps = torch.load(run / "last.ckpt", weights_only=True)["global_step"]
    straight, run3 = run_cli("--epochs=5", "--lr=0.02", QUIET)
    assert resumed_steps == torch.load(run3 / "last.ckpt", weights_only=True)["global_step"] > state["global_step"]
    # it went on from the saved weights: the result is the 5-epoch one, not a 3-epoch restart
    three, _ = run_cli("--epochs=3", "--lr=0.02", QUIET)
    assert abs(res["test"]["recall@10"] - straight["test"]["recall@10"]) < \
        abs(three["test"]["recall@10"] - straight["test"]["recall@10"]), (res["test"], straight["test"], three["test"])


def _cli(args, tmp_path, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("RECSTUDIO_EDGE_RUN_DIR", None)
    env.update(env_extra or {})
    cmd = [sys.executable, str(ROOT / "run.py"), f"--data_dir={tmp_path / 'data'}",
           f"--output_dir={tmp_path / 'out'}", QUIET, *TINY, *args]
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_run_py_prints_test_metrics(tmp_path):
    p = _cli(["--epochs=1"], tmp_path)
    lines = p.stdout.splitlines()
    test = lines.index("test")  # the test table: a row per metric, a column per cutoff
    assert lines[test + 1].split() == ["@10", "@20"] and lines[test + 2].startswith("recall ")


def test_ddp_two_processes_on_cpu_matches_one(tmp_path):
    """Lightning's DDP (gloo on CPU) with our rank-sharded batches: evaluation of a given model
    is exactly the single-process figure, and training ends within noise of it."""
    one = _cli(["--epochs=3", "--lr=0.01"], tmp_path / "one")
    two = _cli(["--epochs=3", "--lr=0.01", "--trainer.strategy=ddp", "--trainer.devices=2",
                "--trainer.accelerator=cpu"], tmp_path / "two")
    # the evaluation figures are reduced by hand and logged with sync_dist: no Lightning advice
    assert "sync_dist" not in two.stderr and "Warning" not in two.stderr, two.stderr[-3000:]
    m1 = json.loads(next((tmp_path / "one" / "out").rglob("metrics.json")).read_text())
    runs2 = list((tmp_path / "two" / "out").rglob("metrics.json"))
    assert len(runs2) == 1, "both ranks must share one run folder"
    m2 = json.loads(runs2[0].read_text())
    assert abs(m1["test"]["recall@10"] - m2["test"]["recall@10"]) < 0.05, (m1["test"], m2["test"])
    # the DDP checkpoint, tested in one process, gives exactly the figures DDP reported
    ckpt = runs2[0].parent / "best.ckpt"
    t = _cli(["--task=test", f"--ckpt={ckpt}"], tmp_path / "three")
    m3 = json.loads(next((tmp_path / "three" / "out").rglob("metrics.json")).read_text())
    for k, v in m2["test"].items():
        assert m3["test"][k] == pytest.approx(v, abs=1e-6), k


def test_pinrec_trains_from_its_sample_files(run_cli, tmp_path):
    """Data moves both ways: our samples written in PINRec's ';' format train PINRec through run.py."""
    from recstudio_edge.data.formats.pinrec import convert
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class

    cfg = build_config("PINRec", None, None, {"data.generator.num_users": "300", "data.generator.num_items": "200",
                                               "data.generator.mean_per_user": "30"}, get_model_class("PINRec"))
    out = tmp_path / "files" / "pinsamples"
    convert(cfg["data"], tmp_path / "src", out)
    res, run = run_cli("-m=PINRec", "-d=pinsamples", "--data.format=pinrec", f"--data_dir={tmp_path / 'files'}",
                       "--epochs=3", QUIET, tiny=False)
    assert 0.5 < res["test"]["auc"] <= 1.0 and "auc_g0" in res["test"]
    assert (run / "best.ckpt").exists()


def test_infer_on_sample_files_scores_the_test_rows_in_torch_and_onnx(run_cli, tmp_path):
    """--task=infer on a seed format's files (infer.infer_source): one line per test row, in order,
    with the row's ids and label and the model's probability; the exported edge model in
    onnxruntime (--backend=onnx) writes the same figures."""
    import shutil

    from recstudio_edge.data.formats.pinrec import read_samples

    data = tmp_path / "files"
    shutil.copytree(ROOT / "datasets" / "sample-pinrec", data / "sample-pinrec")
    common = ("-m=DIN", "-d=sample-pinrec", f"--data_dir={data}", QUIET)
    _, run = run_cli(*common, "--epochs=1", tiny=False)
    outs = {}
    for backend in ("torch", "onnx"):
        res, inf = run_cli(*common, "--task=infer", f"--ckpt={run / 'best.ckpt'}", f"--backend={backend}", tiny=False)
        lines = Path(res["output"]).read_text().splitlines()
        outs[backend] = lines
    test = read_samples(data / "sample-pinrec" / "test.txt", 50)
    header, *rows = outs["torch"]
    assert header.split("\t") == ["user_id", "item_id", "label", "group_id", "score"] and len(rows) == len(test)
    first = rows[0].split("\t")
    assert [int(first[0]), int(first[1]), int(float(first[2]))] == [int(test.user_id[0]), int(test.target_id[0]),
                                                                   int(test.label[0])]
    torch_p = torch.tensor([float(r.split("\t")[-1]) for r in rows])
    onnx_p = torch.tensor([float(r.split("\t")[-1]) for r in outs["onnx"][1:]])
    assert ((torch_p > 0) & (torch_p < 1)).all() and torch_p.std() > 0
    torch.testing.assert_close(onnx_p, torch_p, atol=1e-5, rtol=1e-4)
