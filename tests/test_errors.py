"""Ordinary mistakes get one clear ``error:`` line, and nothing is lost (issue 13, section 3).

A corpus of bad commands, each run through the command line in-process: the message is asserted
(it names the file, key or models), there is no traceback, and every file under the outputs is as
it was before the command (same names, sizes and bytes)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY

QUIET = "--trainer.enable_progress_bar=false"


def snapshot(root: Path) -> dict:
    """Every file under ``root``: relative path -> sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny trained BPR run and a few broken checkpoints beside it."""
    from recstudio_edge.cli import main
    from recstudio_edge.runner import RUN_DIR_ENV

    root = tmp_path_factory.mktemp("errors")
    os.environ.pop(RUN_DIR_ENV, None)
    res = main([f"--data_dir={root / 'data'}", f"--output_dir={root / 'out'}", "--epochs=1", QUIET, *TINY])
    os.environ.pop(RUN_DIR_ENV, None)
    run = Path(res["run_dir"])
    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.ckpt").write_bytes((run / "best.ckpt").read_bytes()[:100])
    (bad / "random.ckpt").write_bytes(bytes(range(256)) * 8)
    (bad / "folder.ckpt").mkdir()
    shutil.copy(run / "best.ckpt", bad / "loose_bpr.ckpt")  # no config.yaml beside it: the checkpoint names BPR
    return root, run


def fails(root: Path, capsys, *args) -> str:
    """Run the CLI with ``args``; it must exit 2 with one ``error:`` line and leave every file as it was."""
    from recstudio_edge.cli import main
    from recstudio_edge.runner import RUN_DIR_ENV

    before = snapshot(root / "out")
    os.environ.pop(RUN_DIR_ENV, None)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([f"--data_dir={root / 'data'}", f"--output_dir={root / 'out'}", QUIET, *TINY, *args])
    os.environ.pop(RUN_DIR_ENV, None)
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert snapshot(root / "out") == before, "the command changed the outputs"
    return lines[0]


CKPT_CASES = [
    (["--task=test", "--ckpt={bad}/truncated.ckpt"], r"truncated\.ckpt is not a readable PyTorch checkpoint"),
    (["--task=test", "--ckpt={bad}/random.ckpt"], r"random\.ckpt is not a readable PyTorch checkpoint"),
    (["--task=test", "--ckpt={bad}/folder.ckpt"], r"folder\.ckpt is a folder, not a \.ckpt file"),
    (["--task=test", "--ckpt={bad}/missing.ckpt"], r"checkpoint not found: .*missing\.ckpt"),
    (["-m=NCF", "--task=test", "--ckpt={run}/best.ckpt"], r"checkpoint of BPR .*not of NCF"),
    (["-m=NCF", "--task=test", "--ckpt={bad}/loose_bpr.ckpt"], r"loose_bpr\.ckpt was written by BPR, not NCF"),
    (["--task=test", "--ckpt={run}/best.ckpt", "--embed_dim=16"],
     r"parameter 'item_emb\.weight' has shape \[201, 64\] in the checkpoint but \[201, 16\]"),
    (["--task=infer", "--ckpt={run}/best.ckpt", "--embed_dim=16"], r"'item_emb\.weight' has shape \[201, 64\]"),
    (["--resume={run}", "--embed_dim=16"], r"--resume checkpoint .*last\.ckpt: parameter 'item_emb\.weight' has shape"),
    (["-m=NCF", "--resume={run}/last.ckpt"], r"last\.ckpt was written by BPR, not NCF"),
]


@pytest.mark.parametrize("args, message", CKPT_CASES, ids=[" ".join(a) for a, _ in CKPT_CASES])
def test_a_checkpoint_that_does_not_fit_is_one_line_and_changes_nothing(world, capsys, args, message):
    import re

    root, run = world
    line = fails(root, capsys, *(a.format(bad=root / "bad", run=run) for a in args))
    assert re.search(message, line), line


VALUE_CASES = [
    ("--train.batch_size=0", "train.batch_size: expected a whole number >= 1, got 0"),
    ("--epochs=-1", "epochs: expected a whole number >= 1, got -1"),
    ("--epochs=0", "epochs: expected a whole number >= 1, got 0"),
    ("--epochs=1.5", "epochs: expected a whole number >= 1, got 1.5"),
    ("--epochs=abc", "epochs: expected a whole number >= 1, got 'abc'"),
    ("--topk=[0]", "eval.topk: expected a list of whole numbers >= 1 (e.g. [10, 20]), got [0]"),
    ("--topk=[]", "eval.topk: expected a list of whole numbers >= 1"),
    ("--eval.batch_size=-3", "eval.batch_size: expected a whole number >= 1, got -3"),
    ("--lr=0", "train.lr: expected a number > 0, got 0"),
    ("--lr=null", "train.lr: expected a number, got None"),  # not float()'s TypeError
    ("--seed=null", "seed: expected a whole number, got None"),
    ("--weight_decay=null", "train.weight_decay: expected a number >= 0, got None"),
]


@pytest.mark.parametrize("arg, message", VALUE_CASES, ids=[a for a, _ in VALUE_CASES])
def test_a_value_that_cannot_work_names_its_key(world, capsys, arg, message):
    root, _ = world
    line = fails(root, capsys, arg)
    assert message in line and "recall@0" not in line, line


def test_a_failed_resume_leaves_the_run_testable(world, capsys):
    """The resume above refused another embed_dim without touching config.yaml: the run still tests."""
    from recstudio_edge.cli import main
    from recstudio_edge.runner import RUN_DIR_ENV

    root, run = world
    cfg_before = (run / "config.yaml").read_text()
    fails(root, capsys, f"--resume={run}", "--embed_dim=16")
    assert (run / "config.yaml").read_text() == cfg_before
    os.environ.pop(RUN_DIR_ENV, None)
    res = main([f"--data_dir={root / 'data'}", f"--output_dir={root / 'out'}", "--task=test",
                f"--ckpt={run / 'best.ckpt'}", QUIET, *TINY])
    os.environ.pop(RUN_DIR_ENV, None)
    assert res["test"]["recall@10"] >= 0
    shutil.rmtree(res["run_dir"])


def test_a_checkpoint_given_to_a_training_run_is_refused_not_ignored(world, capsys):
    """``--ckpt`` without ``--task`` takes the run's own config (task: train): it would train a new model
    from scratch, ignoring the checkpoint; it says so and points to --resume, and writes no folder."""
    root, run = world
    line = fails(root, capsys, f"--ckpt={run / 'best.ckpt'}")
    assert "--task=train would start afresh" in line and "--resume=<run folder>" in line


def test_an_all_digit_sha256_stays_text():
    from recstudio_edge.config import ConfigError, build_config, check_values
    from recstudio_edge.model import get_model_class

    digits = "0" + "1" * 63
    cfg = build_config("BPR", None, None, {"data.sha256": digits}, get_model_class("BPR"))
    assert cfg["data"]["sha256"] == digits
    cfg["data"]["sha256"] = 123  # what an unquoted digest in a YAML file becomes
    with pytest.raises(ConfigError, match=r"data\.sha256: expected the hex digest as text"):
        check_values(cfg)


def test_pointwise_models_take_any_topk():
    """CTR models score given rows and never rank: a cutoff above the item count is no error for them."""
    from recstudio_edge.model import create_model

    m = create_model("DIN", num_users=10, num_items=20, topk=[10, 50])
    assert m.topk == [10, 50]
    with pytest.raises(ValueError, match=r"eval\.topk \[10, 50\]: every cutoff must be in 1\.\.19"):
        create_model("BPR", num_users=10, num_items=20, topk=[10, 50])


# ---- the export set and the runtime --------------------------------------------------------------
@pytest.fixture(scope="module")
def export_set(tmp_path_factory):
    """A small two-group PINRec exported by ``export_run`` (TorchScript), in its own folder."""
    from recstudio_edge.edge.bundle import export_run
    from tests.edge.conftest import small_pinrec

    out = tmp_path_factory.mktemp("export_set")
    export_run(small_pinrec(), out, exporter="torchscript")
    return out


def test_an_export_set_is_complete_and_signed(export_set):
    man = json.loads((export_set / "manifest.json").read_text())
    assert man["complete"] is True
    assert {"edge_0.onnx", "edge_0.json", "edge_1.onnx", "edge_1.json", "export.json"} <= set(man["files"])
    for name, sha in man["files"].items():
        assert hashlib.sha256((export_set / name).read_bytes()).hexdigest() == sha
    assert not list(export_set.glob(".export-*")) and not list(export_set.glob(".*tmp*"))


def test_a_killed_export_leaves_no_half_set(tmp_path, monkeypatch):
    """The second group's file fails: nothing of the new set is in place, and no manifest marks it complete."""
    from recstudio_edge.edge import bundle, onnx_export
    from tests.edge.conftest import small_pinrec

    real = onnx_export.export_part
    calls = []

    def dies_on_second(part, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(part, path, *a, **k)

    monkeypatch.setattr(onnx_export, "export_part", dies_on_second)
    (tmp_path / "config.yaml").write_text("kept: 1\n")
    with pytest.raises(KeyboardInterrupt):
        bundle.export_run(small_pinrec(), tmp_path, exporter="torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def _copy_set(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("text, message", [
    ("", r"edge_0\.json: the sidecar is empty"),
    ("{not json", r"edge_0\.json:1: the sidecar is not valid JSON"),
    ("[1, 2]", r"edge_0\.json: the sidecar must be a JSON object, got list"),
    ('{"format": "recstudio_edge.onnx/1", "onnx": "edge_0.onnx"}', r"edge_0\.json: 'inputs' must be a non-empty list"),
])
def test_a_broken_sidecar_names_its_file(export_set, tmp_path, text, message):
    from recstudio_edge.edge.runtime import EdgeModelError, EdgePredictor

    d = _copy_set(export_set, tmp_path / "set")
    (d / "edge_0.json").write_text(text)
    with pytest.raises(EdgeModelError, match=message):
        EdgePredictor(d / "edge_0.onnx")


def test_an_edited_id_range_is_refused_by_the_manifest(export_set, tmp_path):
    from recstudio_edge.edge.runtime import EdgeModelError, EdgePredictor

    d = _copy_set(export_set, tmp_path / "set")
    side = json.loads((d / "edge_0.json").read_text())
    side["inputs"][0]["range"] = [0, 10 ** 6]
    (d / "edge_0.json").write_text(json.dumps(side))
    with pytest.raises(EdgeModelError, match=r"edge_0\.json: sha256 differs from the one .*manifest\.json lists"):
        EdgePredictor(d / "edge_0.onnx")
    side["inputs"][0]["range"] = [-5, 10]  # a negative low end would wrap to the last row: refused without a manifest
    (d / "edge_0.json").write_text(json.dumps(side))
    (d / "manifest.json").unlink()
    with pytest.raises(EdgeModelError, match=r"'range' must be \[lo, hi\] with 0 <= lo <= hi"):
        EdgePredictor(d / "edge_0.onnx")


def test_one_group_file_is_served_with_its_siblings(export_set):
    import numpy as np

    from recstudio_edge.edge.runtime import EdgePredictor
    from recstudio_edge.infer import onnx_router

    router = onnx_router(export_set / "edge_0.onnx")
    assert [p.path.name for p in router.predictors] == ["edge_0.onnx", "edge_1.onnx"]
    batch = {"item_id": np.array([1, 2]), "seq": np.tile(np.arange(0, 10), (2, 1)), "group_id": np.array([0, 1])}
    got = router.predict(batch)
    one = EdgePredictor(export_set / "edge_1.onnx").predict({"item_id": batch["item_id"][1:], "seq": batch["seq"][1:]})
    np.testing.assert_allclose(got[1:], one, atol=1e-6)


def test_a_tampered_onnx_through_the_cli_is_one_line(export_set, tmp_path, capsys):
    from recstudio_edge.infer import onnx_router
    from recstudio_edge.config import ConfigError

    d = _copy_set(export_set, tmp_path / "set")
    data = bytearray((d / "edge_0.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "edge_0.onnx").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"--backend=onnx: .*edge_0\.onnx: sha256 differs from its sidecar"):
        onnx_router(d / "edge_0.onnx")


# ---- data files ------------------------------------------------------------------------------------
def _atomic(folder: Path, name: str, bad_row: bytes) -> None:
    rows = [b"user_id:token\titem_id:token\ttimestamp:float"]
    rows += [f"{u}\t{i}\t{u * 10 + i}".encode() for u in range(1, 6) for i in range(1, 6)]
    rows.insert(3, bad_row)
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / f"{name}.inter").write_bytes(b"\n".join(rows) + b"\n")


DATA_CASES = [
    ("longid", b"9" * 200_000 + b"\t1\t5", r"longid\.inter:4: field 'user_id': id of 200000 characters, at most 256"),
    ("binary", b"\x00\x1b[2J\x7fELF\x01\t2\t5",
     r"binary\.inter:4: field 'user_id': id '\\x00\\x1b\[2J\\x7fELF\\x01' holds control characters"),
    ("badnum", b"1\t2\t\x1b[31m12", r"badnum\.inter:4: field 'timestamp': expected float, got '\\x1b\[31m12'"),
]


@pytest.mark.parametrize("name, row, message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_a_bad_data_file_is_one_escaped_line(world, capsys, name, row, message):
    import re

    root, _ = world
    _atomic(root / "data", name, row)
    line = fails(root, capsys, f"-d={name}", "--epochs=1")
    assert re.search(message, line), line
    assert "\x1b" not in line and "\x00" not in line and len(line) < 600


def test_pinrec_sample_files_say_up_front_what_is_missing(world, capsys):
    root, _ = world
    (root / "data" / "pins").mkdir(parents=True, exist_ok=True)
    (root / "data" / "pins" / "train.txt").write_text("1;5;3,4;1;0\n2;6;3;0;1\n")
    line = fails(root, capsys, "-m=DIN", "-d=pins", "--data.format=pinrec", "--epochs=1")
    assert "data.format: pinrec: --task=train reads the valid and test sample files beside train.txt" in line
    assert f"{root / 'data' / 'pins' / 'valid.txt'}, {root / 'data' / 'pins' / 'test.txt'}" in line


OTHER_CASES = [
    (["--task=infer", "--ckpt={run}/best.ckpt", "--input={bad}/nofile.txt"], r"nofile\.txt: --input file not found"),
    (["--task=infer", "--ckpt={run}/best.ckpt", "--input={bad}/random.ckpt"],
     r"random\.ckpt:2: not UTF-8 text \(byte 0x80\)"),
    (["--task=infer", "--ckpt={run}/best.ckpt", "--input={bad}/folder.ckpt"], r"folder\.ckpt: --input is a folder"),
    (["--task=infer", "--ckpt={run}/best.ckpt", "--input={bad}/users.txt"],
     r"users\.txt:2: field 'user_id': unknown user_id 'nobody'"),
    (["--config={bad}/random.ckpt"], r"random\.ckpt: not a YAML text file"),
    (["-m=NCF", "--trainer.devices=abc"], r"`devices` selected with `CPUAccelerator` should be an int > 0"),
]


@pytest.mark.parametrize("args, message", OTHER_CASES, ids=[" ".join(a) for a, _ in OTHER_CASES])
def test_a_task_that_fails_leaves_no_folder(world, capsys, args, message):
    """Inputs checked before the folder is made, and a task that fails after leaves none behind."""
    import re

    root, run = world
    (root / "bad" / "users.txt").write_text("user_id\nnobody\n")
    line = fails(root, capsys, *(a.format(bad=root / "bad", run=run) for a in args))
    assert re.search(message, line), line
    assert not (root / "out" / "NCF").exists()
