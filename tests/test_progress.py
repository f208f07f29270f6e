"""The progress bars of the long non-epoch steps (``recstudio_edge/progress.py``): quiet in tests and
when stderr is not a terminal, drawn when forced, one step per stage / file / chunk / trial."""
from __future__ import annotations

import pytest
import torch

from recstudio_edge import progress as prog


def test_quiet_under_pytest_and_forced_by_the_environment(monkeypatch, capsys):
    monkeypatch.delenv(prog.ENV, raising=False)
    assert not prog.enabled()  # PYTEST_CURRENT_TEST is set
    for _ in prog.progress(range(3), desc="quiet bar"):
        pass
    assert "quiet bar" not in capsys.readouterr().err
    monkeypatch.setenv(prog.ENV, "1")
    assert prog.enabled()
    with prog.stages("two stages", ["read", "build"]) as step:
        step("read")
        step("build")
    err = capsys.readouterr().err
    assert "two stages" in err and "build" in err and "2/2" in err
    monkeypatch.setenv(prog.ENV, "0")
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert not prog.enabled()


def test_data_building_and_ann_build_show_their_steps(monkeypatch, capsys, tmp_path):
    from tests.conftest import synthetic_datamodule

    monkeypatch.setenv(prog.ENV, "1")
    synthetic_datamodule(tmp_path, users=50, items=40, mean=8)
    err = capsys.readouterr().err
    assert "data synthetic" in err and "filter + split" in err
    pytest.importorskip("faiss")
    from recstudio_edge.model.ann import AnnIndex

    idx = AnnIndex({"index": "Flat"}, "ip")
    monkeypatch.setattr("recstudio_edge.model.ann.ADD_CHUNK", 16)
    idx.build(torch.randn(40, 8))
    err = capsys.readouterr().err
    assert "ann Flat" in err and "/3 [" in err  # 40 items in chunks of 16
    assert idx.index.ntotal == 40


def test_nni_trials_bar_shows_trial_n_of_N_and_the_best(monkeypatch, capsys, tmp_path):
    import recstudio_edge.tune.experiment as ex

    monkeypatch.setenv(prog.ENV, "1")

    class Exp:
        states = iter(["RUNNING", "RUNNING", "DONE"])

        def get_status(self):
            return next(self.states)

    def row(i, metric):
        return {"trial_id": f"t{i}", "status": "SUCCEEDED", "metric": metric, "duration": 1.0,
                "parameters": {"lr": 0.1 * i}, "error": None}

    calls = iter([[row(1, 0.30)], [row(1, 0.30), row(2, 0.25)], [row(1, 0.30), row(2, 0.25)],
                  [row(1, 0.30), row(2, 0.25)]])
    monkeypatch.setattr(ex, "collect_trials", lambda *a: next(calls))
    monkeypatch.setattr(ex.time, "sleep", lambda s: None)
    bar = prog.progress(total=2, desc="nni trials", unit="trial")
    ended, rows = ex._poll(Exp(), {"nni": {}}, "recall@10", 2, None, tmp_path, tmp_path, 0.0, [], {}, bar)
    bar.close()
    err = capsys.readouterr().err
    assert ended == "DONE" and len(rows) == 2
    assert "/2 [" in err and "1/2" in err and "best recall@10=0.3000" in err
