"""NNI tuning (``--mode=tune`` / ``--mode=trial``).

1. Search spaces without NNI running: model YAML, ``--search_space``, default space, errors,
   parameters applied to a config.
2. A trial launched by hand (no manager) runs standalone.
3. Real experiments (NNI's manager, local training service) on the tiny generated dataset:
   3 trials, one failing on purpose (an unknown scorer among GridSearch's choices); and Ctrl-C
   in the middle of one. Both check that no NNI process is left afterwards and that the web UI
   listened on 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recstudio_edge.config import ConfigError, build_config
from recstudio_edge.model import get_model_class
from recstudio_edge.tune import apply_params, default_space, resolve_space, search_space
from recstudio_edge.tune.experiment import (check_host, format_table, parse_duration, sort_trials, trial_command,
                                            tuner_name)
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def cfg_for(model: str, **over):
    cls = get_model_class(model)
    return build_config(cls.registry_name, None, None, {k: str(v) for k, v in over.items()}, cls), cls


# ---- 1. search spaces -------------------------------------------------------------------------------
def test_space_from_model_yaml():
    cfg, cls = cfg_for("BPR")
    space, source = search_space(cfg, cls)
    assert "configs/model/BPR.yaml" in source
    assert space["train.lr"]["_type"] == "loguniform"
    assert space["model.embed_dim"] == {"_type": "choice", "_value": [32, 64, 128]}
    for name in ("SASRec", "GRU4Rec", "DIN"):  # every trainable model ships a space that validates
        c, k = cfg_for(name)
        sp, src = search_space(c, k)
        assert "tune: section" in src and "train.lr" in sp


def test_search_space_file_overrides_and_nested_keys(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("train:\n  lr: {_type: uniform, _value: [0.001, 0.01]}\n"
                 "negative_count: {_type: randint, _value: [1, 4]}\n")
    cfg, cls = cfg_for("BPR", search_space=f)  # bare flag -> nni.search_space
    assert cfg["nni"]["search_space"] == str(f)
    space, source = search_space(cfg, cls)
    assert source == f"--search_space={f}"
    assert set(space) == {"train.lr", "model.negative_count"}  # the model's tune: section is replaced
    # a file holding a whole `tune:` section, as in a model YAML, works too
    g = tmp_path / "tune.yaml"
    g.write_text("tune:\n  train.lr: {_type: loguniform, _value: [0.0001, 0.01]}\n")
    cfg, cls = cfg_for("BPR", search_space=g)
    assert set(search_space(cfg, cls)[0]) == {"train.lr"}


def test_default_space_when_the_model_has_none():
    cfg, cls = cfg_for("SASRec")
    cfg["tune"] = {}
    space, source = search_space(cfg, cls)
    assert source == "the default space"
    assert set(space) == {"train.lr", "train.weight_decay", "model.embed_dim", "model.dropout"}
    assert set(default_space(get_model_class("BPR"))) == {"train.lr", "train.weight_decay", "model.embed_dim"}


def test_unknown_keys_and_bad_distributions_are_clear_errors():
    _, cls = cfg_for("BPR")
    with pytest.raises(ConfigError, match=r"'train\.lrr'.*'train\.lr'"):
        resolve_space({"train.lrr": {"_type": "uniform", "_value": [0.1, 0.2]}}, cls)
    with pytest.raises(ConfigError, match=r"model\.embed_dimm.*'model\.embed_dim'"):
        resolve_space({"model.embed_dimm": {"_type": "choice", "_value": [8]}}, cls)
    with pytest.raises(ConfigError, match="loguniform needs low > 0"):
        resolve_space({"train.lr": {"_type": "loguniform", "_value": [0, 0.1]}}, cls)
    with pytest.raises(ConfigError, match="did you mean 'loguniform'"):
        resolve_space({"train.lr": {"_type": "logunform", "_value": [0.01, 0.1]}}, cls)
    with pytest.raises(ConfigError, match=r"quniform takes _value \[low, high, q\]"):
        resolve_space({"model.embed_dim": {"_type": "quniform", "_value": [16, 64]}}, cls)
    with pytest.raises(ConfigError, match="cannot be tuned"):
        resolve_space({"output_dir": {"_type": "choice", "_value": ["a"]}}, cls)
    pop_cfg, pop = cfg_for("Pop")
    with pytest.raises(ConfigError, match="Pop has nothing to tune"):
        search_space(pop_cfg, pop)


def test_bad_search_space_stops_the_cli_before_anything_starts(tmp_path, capsys):
    from recstudio_edge.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text("train.learning_rate: {_type: loguniform, _value: [0.0001, 0.01]}\n")
    with pytest.raises(SystemExit) as e:
        main(["-m=BPR", "--mode=tune", f"--search_space={f}", f"--output_dir={tmp_path / 'out'}",
              f"--data_dir={tmp_path / 'data'}", *TINY])
    assert e.value.code == 2
    assert "unknown key 'train.learning_rate'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no experiment folder, no manager
    with pytest.raises(SystemExit):
        main(["-m=Pop", "--mode=tune", f"--output_dir={tmp_path / 'out'}"])
    assert "Pop has nothing to tune" in capsys.readouterr().err


def test_apply_params_sets_validates_and_keeps_types():
    cfg, cls = cfg_for("DIN")
    space = resolve_space(cfg["tune"], cls)
    assert space["model.hidden"]["_value"][0] == "[128, 64]"  # NNI's choices are numbers or strings
    out = apply_params(cfg, {"train.lr": 0.01, "model.embed_dim": 64.0, "model.hidden": "[64, 32]",
                             "weight_decay": 1e-5}, cls)
    assert out["train"]["lr"] == 0.01 and out["train"]["weight_decay"] == 1e-5
    assert out["model"]["embed_dim"] == 64 and isinstance(out["model"]["embed_dim"], int)
    assert out["model"]["hidden"] == [64, 32]
    assert cfg["train"]["lr"] == 0.001  # the input is not modified
    assert apply_params(cfg, {}, cls) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        apply_params(cfg, {"train.nope": 1}, cls)


def test_options():
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration(None) is None and parse_duration(45) == 45
    with pytest.raises(ConfigError):
        parse_duration("soon")
    assert check_host("127.0.0.1") == "127.0.0.1" and check_host("localhost") == "127.0.0.1"
    assert check_host("0.0.0.0") is None
    with pytest.raises(ConfigError, match="loopback"):
        check_host("192.168.1.7")
    assert tuner_name("tpe") == "TPE" and tuner_name("Evolution") == "Evolution"
    with pytest.raises(ConfigError, match="did you mean 'Random'"):
        tuner_name("Randm")
    cmd = trial_command(["-m=BPR", "--mode=tune", "--lr=0.01"], Path("/x/trials"))
    assert cmd.endswith("--mode=tune --lr=0.01 --mode=trial --output_dir=/x/trials") and "run.py" in cmd
    rows = [{"trial_id": "a", "status": "FAILED", "metric": None, "sequence": 0, "duration": 1.0,
             "parameters": {"train.lr": 0.1}, "error": "error: boom", "nni_dir": "/n/a"},
            {"trial_id": "b", "status": "SUCCEEDED", "metric": 0.2, "sequence": 1, "duration": 2.0,
             "parameters": {"train.lr": 0.01}, "error": None, "nni_dir": "/n/b"},
            {"trial_id": "c", "status": "SUCCEEDED", "metric": 0.3, "sequence": 2, "duration": 3.0,
             "parameters": {"train.lr": 0.001}, "error": None, "nni_dir": "/n/c"}]
    assert [r["trial_id"] for r in sort_trials(rows, maximize=True)] == ["c", "b", "a"]
    assert [r["trial_id"] for r in sort_trials(rows, maximize=False)] == ["b", "c", "a"]
    table = format_table(sort_trials(rows, True), "recall@10")
    assert "recall@10" in table.splitlines()[0] and "a FAILED: error: boom" in table


# ---- 2. a trial launched by hand ------------------------------------------------------------------
def test_trial_mode_standalone_trains_and_reports(run_cli):
    res, run = run_cli("-m=BPR", "--mode=trial", "--epochs=2")
    assert (run / "best.ckpt").exists() and run.parts[-3:-1] == ("BPR", "synthetic")
    rec = json.loads((run / "nni_trial.json").read_text())
    assert rec["trial_id"] == "STANDALONE" and rec["parameters"] == {}
    assert len(rec["intermediate"]) == 2  # one per epoch; not the post-training validations
    assert rec["final"]["default"] == pytest.approx(res["valid"]["recall@10"])
    assert set(rec["final"]) >= {"default", "recall@10", "ndcg@10"}


# ---- 3. real experiments ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nni_processes(since: float, marker: str):
    """Processes started since ``since`` whose command line mentions nni, or that carry ``marker``
    (the experiment folder) on their command line."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            if p.pid == os.getpid() or p.info["create_time"] < since - 1:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if "nni" in cmd.lower() or marker in cmd:
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append((p.pid, cmd[:200]))
        except psutil.Error:
            continue
    return found


def no_nni_left(since: float, marker: str, grace: float = 30.0):
    """The processes of ``nni_processes`` still alive after ``grace`` seconds (NNI's manager and its
    dispatcher can take a few seconds to exit after the experiment is stopped on a loaded machine)."""
    import time

    deadline = time.time() + grace
    left = nni_processes(since, marker)
    while left and time.time() < deadline:
        time.sleep(1.0)
        left = nni_processes(since, marker)
    return left


def listen_addresses(port: int):
    """Local addresses of LISTEN sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    out = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            addr, state = parts[1], parts[3]
            ip_hex, port_hex = addr.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                if name == "tcp":
                    out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(ip_hex)[::-1]))
                else:
                    b = bytes.fromhex(ip_hex)
                    out.add(socket.inet_ntop(socket.AF_INET6, b"".join(b[i:i + 4][::-1] for i in range(0, 16, 4))))
    return out


def start_tune(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RECSTUDIO_EDGE_RUN_DIR", None)
    cmd = [sys.executable, str(ROOT / "run.py"), "-m=BPR", "--mode=tune", f"--port={port}",
           f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", "--epochs=2", *TINY, *extra]
    return subprocess.Popen(cmd, cwd=str(tmp_path), env=env, stdout=open(tmp_path / "tune.log", "w"),
                            stderr=subprocess.STDOUT, preexec_fn=deliverable_sigint)


def deliverable_sigint() -> None:
    """In the child before it runs: SIGINT unblocked and at its default, as a shell starts a command
    (a signal mask or disposition left by an earlier test of the session is inherited otherwise)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def watch(proc: subprocess.Popen, port: int, timeout: float, until=None):
    """Wait for ``proc`` (or ``until()``), recording the addresses the web UI listens on."""
    seen = set()
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        seen |= listen_addresses(port)
        if until is not None and until():
            break
        time.sleep(0.3)
    return seen


def experiment_dir(tmp_path: Path) -> Path:
    found = sorted((tmp_path / "out" / "BPR" / "synthetic").glob("tune-*"))
    assert len(found) == 1, found
    return found[0]


def test_real_experiment_with_a_failing_trial(tmp_path):
    pytest.importorskip("nni")
    space = tmp_path / "space.yaml"
    space.write_text("model.scorer: {_type: choice, _value: [inner_product, no_such_scorer, cosine]}\n"
                     "train.lr: {_type: choice, _value: [0.005]}\n")
    port = since = None
    port, since = free_port(), time.time()
    proc = start_tune(tmp_path, port, "--tuner=GridSearch", "--max_trials=3", f"--search_space={space}")
    try:
        seen = watch(proc, port, timeout=170)
        assert proc.poll() is not None, "the experiment did not finish in time"
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "tune.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert seen == {"127.0.0.1"}, seen  # the web UI listened on loopback only
    exp = experiment_dir(tmp_path)
    data = json.loads((exp / "trials.json").read_text())
    rows = data["trials"]
    assert len(rows) == 3 and data["ended"] == "DONE"
    by_scorer = {r["parameters"]["model.scorer"]: r for r in rows}
    assert by_scorer["no_such_scorer"]["status"] == "FAILED"
    assert "unknown scorer 'no_such_scorer'" in by_scorer["no_such_scorer"]["error"]
    assert by_scorer["inner_product"]["status"] == by_scorer["cosine"]["status"] == "SUCCEEDED"
    ok = [r for r in rows if r["status"] == "SUCCEEDED"]
    assert ok[0]["metric"] >= ok[1]["metric"] and rows[-1]["status"] == "FAILED"  # sorted by the metric
    for r in ok:  # each trial's run folder is under the experiment's folder, with its final result
        rec = json.loads((Path(r["run_dir"]) / "nni_trial.json").read_text())
        assert Path(r["run_dir"]).parent == exp / "trials" and rec["final"]["default"] == pytest.approx(r["metric"])
        assert len(rec["intermediate"]) == 2
    # the table printed at the end
    table = (exp / "trials.txt").read_text()
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["rank", "trial", "status", "recall@10", "seconds"]
    assert [ln.split()[2] for ln in lines[2:5]] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]
    assert table in log
    # the best config: a full config that run.py --config= accepts, with the best parameters
    best = exp / "best_config.yaml"
    cfg = build_config("BPR", None, str(best), {}, get_model_class("BPR"))
    assert cfg["model"]["scorer"] == ok[0]["parameters"]["model.scorer"] and cfg["train"]["lr"] == 0.005
    assert cfg["mode"] == "light" and yaml.safe_load(best.read_text())["model_name"] == "BPR"
    # the best trial re-evaluated on the test split
    assert json.loads((exp / "best_test" / "metrics.json").read_text())["test"]["recall@10"] >= 0
    assert "best trial on the test split" in log
    assert no_nni_left(since, str(exp)) == []


def test_ctrl_c_stops_the_experiment_and_its_manager(tmp_path):
    pytest.importorskip("nni")
    port, since = free_port(), time.time()
    # trials far longer than the signal takes to arrive (with the fast loop, 200 of these tiny BPR epochs
    # could end the whole experiment first)
    proc = start_tune(tmp_path, port, "--tuner=Random", "--max_trials=4", "--epochs=20000",
                      "--eval.patience=1000")
    try:
        def a_trial_runs():  # the manager has started (its start returned: the line after it) and a trial runs
            started = "nni: experiment" in (tmp_path / "tune.log").read_text()
            return started and bool(list((tmp_path / "out").glob("BPR/synthetic/tune-*/trials/*/run.log")))

        watch(proc, port, timeout=80, until=a_trial_runs)
        assert proc.poll() is None and a_trial_runs(), (tmp_path / "tune.log").read_text()[-3000:]
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "tune.log").read_text()
    assert proc.returncode == 130, log[-3000:]
    assert "interrupted: stopping the experiment" in log and "Traceback" not in log
    exp = experiment_dir(tmp_path)
    data = json.loads((exp / "trials.json").read_text())
    assert data["ended"] == "INTERRUPTED" and any(r["status"] == "CANCELED" for r in data["trials"])
    time.sleep(0.5)
    assert no_nni_left(since, str(exp)) == []
