"""The run report (``recstudio_edge/evaluation/report.py``): PNG plots and report.md of a training run
and of ``--task=test``, the head-vs-tail chart and stage switch of a PINRec run, and
``logs/metrics.csv`` kept across ``--resume``."""
from __future__ import annotations

import csv
import math

import pytest

import recstudio_edge.evaluation.report as report
from tests.conftest import read_metrics

QUIET = "--trainer.enable_progress_bar=false"


@pytest.fixture()
def captured(monkeypatch):
    """The data each report function of the run returned (what its plots are drawn from)."""
    got = {}
    for name in ("report_train", "report_test"):
        real = getattr(report, name)

        def wrap(*a, _real=real, _name=name, **kw):
            got[_name] = _real(*a, **kw)
            return got[_name]

        monkeypatch.setattr(report, name, wrap)
    return got


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, (path, len(data))


def csv_rows(run):
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_report_resume_keeps_csv_and_test_curve(run_cli, captured):
    res, run = run_cli("--epochs=2", QUIET)
    assert_png(run / "curves.png")
    md = (run / "report.md").read_text()
    assert "![curves.png](curves.png)" in md and "[config.yaml](config.yaml)" in md and "model_name: BPR" in md
    valid = read_metrics(run)["valid"]
    assert f"| recall | {valid['recall@10']:.4f} | {valid['recall@20']:.4f} |" in md  # metric rows, @k columns
    data = captured["report_train"]
    assert data["curves"]["panels"][:2] == ["train loss", "recall"]  # the validation metric's panel first
    assert list(data["history"]["loss"]) == [0, 1]

    # --resume to 4 epochs: the csv keeps epochs 0 and 1 and has every epoch 0..3 once
    res, run2 = run_cli("--epochs=4", f"--resume={run}", QUIET)
    assert run2 == run
    rows = csv_rows(run)
    loss_epochs = [int(r["epoch"]) for r in rows if r["train/loss_epoch"]]
    valid_epochs = [int(r["epoch"]) for r in rows if r["valid/recall@10"] and int(r["epoch"]) < 4]
    assert loss_epochs == [0, 1, 2, 3] and valid_epochs == [0, 1, 2, 3], (loss_epochs, valid_epochs)
    hist = captured["report_train"]["history"]
    assert list(hist["loss"]) == [0, 1, 2, 3] and list(hist["valid"]["recall@10"]) == [0, 1, 2, 3]
    best = captured["report_train"]["curves"]["best_epoch"]
    assert hist["valid"]["recall@10"][best] == max(hist["valid"]["recall@10"].values())

    # --task=test: the metric@k curve, equal to metrics.json at the topk cutoffs
    out, trun = run_cli("--task=test", f"--ckpt={run / 'best.ckpt'}", QUIET)
    assert_png(trun / "topk.png")
    curve = captured["report_test"]["topk"]["curve"]
    test = read_metrics(trun)["test"]
    assert set(test) == {f"{n}@{k}" for n in curve for k in (10, 20)}  # metrics.json keeps its cutoffs
    for name, ys in curve.items():
        assert len(ys) == 20
        assert ys[9] == pytest.approx(test[f"{name}@10"], abs=1e-9) and ys[19] == pytest.approx(test[f"{name}@20"], abs=1e-9)
    assert all(a <= b + 1e-12 for a, b in zip(curve["recall"], curve["recall"][1:]))  # recall@k grows with k
    assert "![topk.png](topk.png)" in (trun / "report.md").read_text()


def test_pinrec_report_marks_the_switch_and_draws_trunk_against_final(run_cli, captured):
    res, run = run_cli("-m=PINRec", "--epochs=2", "--plugin_stage.stage_switch_epoch=1", "--data.max_seq_len=10",
                       "--eval_neg_per_pos=5", QUIET)
    data = captured["report_train"]
    assert data["curves"]["events"] == [(1, "stage switch")]
    groups = data["groups"]
    assert groups["switch_epoch"] == 1 and groups["trunk_epoch"] == 0  # the best (only) epoch before the switch
    assert_png(run / "groups.png")
    assert_png(run / "curves.png")
    valid = read_metrics(run)["valid"]
    trunk_row = next(r for r in csv_rows(run) if r["epoch"] == "0" and r.get("valid/auc_g0"))
    bars = groups["bars"]["auc"]
    assert list(bars) == ["trunk (epoch 0)", "final"] and groups["labels"] == ["g0", "g1", "g2", "g3", "g4",
                                                                                "tail", "head"]
    for g in range(5):
        assert bars["final"][g] == pytest.approx(valid[f"auc_g{g}"])
        assert bars["trunk (epoch 0)"][g] == pytest.approx(float(trunk_row[f"valid/auc_g{g}"]))
    assert bars["final"][5] == pytest.approx((valid["auc_g0"] + valid["auc_g1"]) / 2)
    assert bars["final"][6] == pytest.approx(valid["auc_g4"])
    md = (run / "report.md").read_text()
    assert "![groups.png](groups.png)" in md and "stage switch at epoch 1" in md and "| g4 |" in md


def test_without_a_switch_the_group_chart_shows_the_final_model_alone(tmp_path):
    m = {"auc": 0.6, **{f"auc_g{g}": 0.5 + 0.05 * g for g in range(3)}, **{f"gauc_g{g}": 0.5 for g in range(3)}}
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text("epoch,step,train/loss_epoch,valid/auc\n0,0,,0.6\n0,0,0.7,\n")
    out = report.report_train(tmp_path, {"valid": m, "test": m, "val_metric": "auc", "epochs": 1})
    assert list(out["groups"]["bars"]["auc"]) == ["final"] and out["groups"]["trunk_epoch"] is None
    assert out["groups"]["bars"]["auc"]["final"][:3] == [0.5, 0.55, 0.6] and math.isclose(
        out["groups"]["bars"]["auc"]["final"][4], 0.6)
    assert_png(tmp_path / "groups.png")
    assert "| g2 |" in (tmp_path / "report.md").read_text()
