"""What a run prints: the final tables, one line per epoch where stdout is no terminal, no
warnings from Lightning or torch, the run folder in one form, numbers like 1e-3 read as numbers."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parent.parent


def _table(text: str, title: str):
    """``{row label: [cells]}`` of the table under the line ``title`` (until a blank or a
    line that is not a row), and its header cells."""
    lines = text.splitlines()
    i = lines.index(title)
    header = lines[i + 1].split()
    rows = {}
    for line in lines[i + 2:]:
        label, cells = line[:16].strip(), line[16:].split()
        if not label or len(cells) != len(header):
            break
        rows[label] = cells
    return header, rows


def test_ranking_metrics_print_as_metric_rows_and_cutoff_columns():
    from recstudio_edge.runner import _format_metrics

    values = {"recall@10": 0.25, "recall@20": 0.5, "ndcg@10": 0.125, "ndcg@20": 0.1875}
    text = _format_metrics("test", values)
    header, rows = _table(text, "test")
    assert header == ["@10", "@20"]
    assert rows == {"recall": ["0.2500", "0.5000"], "ndcg": ["0.1250", "0.1875"]}


def test_pointwise_metrics_with_groups_print_one_table_with_a_row_per_group():
    from recstudio_edge.evaluation.groups import head_tail_table
    from recstudio_edge.runner import _format_metrics

    m = {"auc": 0.7, "gauc": 0.65, "logloss": 0.5}
    text = _format_metrics("valid (best by auc, epoch 2)", m)
    header, rows = _table(text, "valid (best by auc, epoch 2)")
    assert header == ["valid"] and rows == {"auc": ["0.7000"], "gauc": ["0.6500"], "logloss": ["0.5000"]}
    for g in range(3):
        m.update({f"auc_g{g}": 0.6 + g / 10, f"gauc_g{g}": 0.5, f"logloss_g{g}": 0.4, f"rows_g{g}": 10.0})
    text = _format_metrics("test", m)
    assert head_tail_table(m, name="test") in text  # the table groups.txt holds, printed once
    _, rows = _table(text, "test")
    assert rows["auc g2"] == ["0.8000"] and rows["auc tail"] == ["0.6500"] and rows["logloss"] == ["0.5000"]
    assert len(re.findall(r"^auc g0 ", text, re.M)) == 1 and "rows_g" not in text and not math.isnan(float(rows["gauc head"][0]))


def _run(args, cwd: Path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("RECSTUDIO_EDGE_RUN_DIR", None)
    env.pop("PYTHONWARNINGS", None)
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--data_dir=data", "--output_dir=out", *TINY, *args],
                       capture_output=True, text=True, env=env, timeout=300, cwd=cwd)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_a_run_into_a_file_prints_one_line_per_epoch_no_bars_and_no_warnings(tmp_path):
    """stdout captured (not a terminal): no carriage-return bar, one line per epoch, the final
    tables, the best epoch named, no warning at all on stderr (Lightning's LeafSpec FutureWarning
    included), and the run folder relative to the working directory."""
    p = _run(["--epochs=3"], tmp_path)
    out = p.stdout
    assert "\r" not in out and "\r" not in p.stderr
    assert p.stderr.strip() == "", p.stderr[-3000:]
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3, out
    assert re.fullmatch(r"epoch 2: [0-9.]+s  train loss [0-9.]+  recall@10 [0-9.]+", epochs[2]), epochs
    # the estimate of the time left: on every epoch but the last
    assert re.fullmatch(r"epoch 0: [0-9.]+s  train loss [0-9.]+  recall@10 [0-9.]+  \(at most [0-9.]+s left\)",
                        epochs[0]), epochs
    run = next((tmp_path / "out").rglob("metrics.json")).parent
    best = torch.load(run / "best.ckpt", weights_only=True)["epoch"]
    assert f"valid (best by recall@10, epoch {best})" in out
    header, rows = _table(out, "test")
    assert header == ["@10", "@20"] and {"recall", "ndcg", "hit"} <= set(rows)
    folder = run.relative_to(tmp_path)
    assert out.splitlines()[-1] == f"run folder: {folder}"
    # the value best epoch's line shows is the one the table repeats
    shown = _table(out, f'valid (best by recall@10, epoch {best})')[1]['recall'][0]
    assert re.sub(r"  \(at most .* left\)$", "", epochs[best]).endswith(f"recall@10 {shown}")


def test_resumed_and_tested_runs_print_their_folder_like_a_new_one(run_cli, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    quiet = "--trainer.enable_progress_bar=false"
    _, run = run_cli("--epochs=1", "--output_dir=o", quiet)
    first = capsys.readouterr().out.splitlines()[-1]
    assert first == f"run folder: {run}" and run.parts[0] == "o"  # relative, as --output_dir=o
    _, again = run_cli("--epochs=2", "--output_dir=o", f"--resume={run}", quiet)
    assert again.resolve() == run.resolve()
    assert capsys.readouterr().out.splitlines()[-1] == first  # not the absolute form
    res, tested = run_cli("--task=test", "--output_dir=o", f"--ckpt={run / 'best.ckpt'}", quiet)
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"run folder: {tested}" and tested != run
    assert _table(out, "test")[1]["recall"][0] == f"{res['test']['recall@10']:.4f}"


@pytest.mark.parametrize("text,value", [("1e-3", 0.001), ("5E+2", 500.0), ("-2e5", -200000.0), ("1.5e-3", 0.0015),
                                        ("10", 10), ("1e", "1e"), ("e5", "e5"), ("[5,10]", [5, 10])])
def test_command_line_numbers_like_1e_3_are_floats(text, value):
    from recstudio_edge.config import parse_value

    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_lr_1e_3_is_stored_as_a_float_in_config_yaml(tmp_path):
    import yaml

    from recstudio_edge.config import build_config, dump, load_yaml
    from recstudio_edge.model import get_model_class

    cfg = build_config("BPR", None, None, {"lr": "1e-3"}, get_model_class("BPR"))
    assert cfg["train"]["lr"] == 0.001 and isinstance(cfg["train"]["lr"], float)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump(cfg))
    assert yaml.safe_load(saved.read_text())["train"]["lr"] == 0.001  # written as a float, read back by anyone
    layer = tmp_path / "my.yaml"
    layer.write_text("train:\n  lr: 2e-4\n")
    assert load_yaml(layer)["train"]["lr"] == 0.0002


def test_the_documented_midx_uni_command_line_trains_bpr(run_cli):
    """docs/samplers_ann.md: ``--model.sampler=midx_uni --model.sampler_args.exclude_seen=false``
    (BPR's config asks exclude_seen, which only the uniform sampler offers)."""
    text = (ROOT / "docs" / "samplers_ann.md").read_text()
    assert "`--model.sampler=midx_uni --model.sampler_args.exclude_seen=false" in text
    res, run = run_cli("-m=BPR", "--model.sampler=midx_uni", "--model.sampler_args.exclude_seen=false",
                       "--model.sampler_args.num_clusters=4", "--epochs=1", "--trainer.enable_progress_bar=false")
    assert res["test"]["recall@10"] >= 0 and (run / "best.ckpt").exists()
    from recstudio_edge.config import ConfigError

    with pytest.raises((SystemExit, ConfigError, ValueError)):  # without it: the error the docs describe
        run_cli("-m=BPR", "--model.sampler=midx_uni", "--epochs=1", "--trainer.enable_progress_bar=false")


def test_csv_without_sep_reads_commas(tmp_path, run_cli):
    """docs/data.md: ``sep`` defaults to ``,`` (base.yaml's null)."""
    assert "`sep` defaults to `,`" in (ROOT / "docs" / "data.md").read_text()
    d = tmp_path / "data" / "mycsv"
    d.mkdir(parents=True)
    rows = ["uid,movie,ts"] + [f"{u},{(u * 7 + j * 3) % 40},{u * 100 + j}" for u in range(40) for j in range(8)]
    (d / "r.csv").write_text("\n".join(rows) + "\n")
    res, run = run_cli("-d=mycsv", "--data.format=csv", "--data.files.inter=r.csv", "--data.fields.user_id=uid",
                       "--data.fields.item_id=movie", "--data.fields.timestamp=ts", "--epochs=1",
                       "--trainer.enable_progress_bar=false", tiny=False)
    assert "recall@10" in res["test"]


@pytest.mark.parametrize("tty", [True, False])
def test_the_progress_bar_only_on_a_terminal(tmp_path, monkeypatch, tty):
    """On a terminal: Lightning's TQDM bar; elsewhere no bar (its carriage returns would fill a
    log file) and MetricsTable's line per epoch instead."""
    import io

    from lightning.pytorch.callbacks import TQDMProgressBar

    from recstudio_edge.callbacks.metrics_table import MetricsTable
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class
    from recstudio_edge.runner import build_trainer

    class Out(io.StringIO):
        def isatty(self):
            return tty

    cfg = build_config("BPR", None, None, {}, get_model_class("BPR"))
    monkeypatch.setattr(sys, "stdout", Out())
    trainer, _ = build_trainer(cfg, tmp_path, "recall@10", "max", epochs=1)
    bars = [c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)]
    table = next(c for c in trainer.callbacks if isinstance(c, MetricsTable))
    assert bool(bars) is tty and table.lines is (not tty)
    cfg["trainer"] = {"enable_progress_bar": False}  # turned off on a terminal too: the lines
    trainer, _ = build_trainer(cfg, tmp_path, "recall@10", "max", epochs=1)
    assert not any(isinstance(c, TQDMProgressBar) for c in trainer.callbacks)
    assert next(c for c in trainer.callbacks if isinstance(c, MetricsTable)).lines


def test_the_time_left_is_the_mean_pace_times_the_epochs_to_run(monkeypatch):
    from types import SimpleNamespace

    from recstudio_edge.callbacks import metrics_table

    cb = metrics_table.MetricsTable("valid/auc", lines=True)
    clock = iter([100.0, 130.0, 100.0 + 3 * 25 * 60])
    monkeypatch.setattr(metrics_table.time, "perf_counter", lambda: next(clock))
    cb.on_train_start(SimpleNamespace(current_epoch=0), None)
    assert cb.time_left(SimpleNamespace(current_epoch=1, max_epochs=12)) == "  (at most 2m 30s left)"  # 15 s x 10
    assert cb.time_left(SimpleNamespace(current_epoch=2, max_epochs=200)) == "  (at most 82h 05m left)"  # 25 m x 197
    assert cb.time_left(SimpleNamespace(current_epoch=199, max_epochs=200)) == ""  # the last epoch
