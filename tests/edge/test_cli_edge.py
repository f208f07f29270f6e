"""The command line's edge paths: --task=export (sidecar, int8 copy), --task=infer --backend=onnx
(the same rows and probabilities as PyTorch), export after training, and the checked keys."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

QUIET = "--trainer.enable_progress_bar=false"
FAST = "--export.exporter=torchscript"


def probs(path):
    rows = [ln.split("\t") for ln in Path(path).read_text().splitlines()[1:]]
    return [r[:2] for r in rows], np.array([float(r[2]) for r in rows])


def test_export_quantize_and_onnx_infer_match_pytorch(run_cli):
    _, run = run_cli("-m=DIN", "--epochs=1", "--model.embed_dim=8", QUIET)
    res, out = run_cli("--task=export", f"--ckpt={run / 'best.ckpt'}", "--export.quantize=true", FAST, QUIET)
    assert {"edge.onnx", "edge.json", "edge.int8.onnx", "edge.int8.json", "export.json"} <= {p.name for p in out.iterdir()}
    side = json.loads((out / "edge.json").read_text())
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert side["config_source"] == "run config"
    assert side["config_hash"] == hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
    assert [i["name"] for i in side["inputs"]] == ["item_id", "seq"] and side["axes"]["seq"] == 50
    q = res["export"]["edge"]["int8"]
    assert q["bytes"] < q["float_bytes"] and q["rows"] > 100 and abs(q["auc_delta"]) < 0.02, q
    torch_res, _ = run_cli("--task=infer", f"--ckpt={run / 'best.ckpt'}", QUIET)
    onnx_res, _ = run_cli("--task=infer", "--backend=onnx", f"--ckpt={out / 'edge.onnx'}", QUIET)
    (keys_t, p_t), (keys_o, p_o) = probs(torch_res["output"]), probs(onnx_res["output"])
    assert keys_t == keys_o and len(keys_t) > 100
    np.testing.assert_allclose(p_o, p_t, atol=2e-5)


def test_pinrec_exports_after_training_and_routes_rows_by_group(run_cli):
    args = ["-m=PINRec", "--epochs=1", "--stage_switch_epoch=0", "--model.group_num=2", "--data.group_num=2",
            "--model.embed_dim=8", "--eval_neg_per_pos=3", "--export.after_fit=true", FAST, QUIET]
    _, run = run_cli(*args)
    assert {"edge_0.onnx", "edge_0.json", "edge_1.onnx", "edge_1.json", "export.json"} <= {p.name for p in run.iterdir()}
    torch_res, _ = run_cli("--task=infer", f"--ckpt={run / 'best.ckpt'}", QUIET)
    onnx_res, onnx_run = run_cli("--task=infer", "--backend=onnx", f"--ckpt={run / 'best.ckpt'}", FAST, QUIET)
    (keys_t, p_t), (keys_o, p_o) = probs(torch_res["output"]), probs(onnx_res["output"])
    assert keys_t == keys_o
    np.testing.assert_allclose(p_o, p_t, atol=2e-5)
    # what the callback exported at the end of training is the best checkpoint's edge part
    from recstudio_edge.edge.runtime import EdgePredictor

    ex = {"item_id": np.arange(1, 9), "seq": np.tile(np.arange(0, 10), (8, 1))}
    for g in (0, 1):
        np.testing.assert_allclose(EdgePredictor(run / f"edge_{g}.onnx").predict(ex),
                                   EdgePredictor(onnx_run / f"edge_{g}.onnx").predict(ex), atol=1e-6)
    # plugins on from epoch 0, so the best checkpoint has them: the two group files disagree
    assert json.loads((run / "edge_1.json").read_text())["variant"] == "1"
    from recstudio_edge.edge.runtime import EdgePredictor

    ex = {"item_id": np.arange(1, 9), "seq": np.tile(np.arange(1, 11), (8, 1))}
    assert np.abs(EdgePredictor(run / "edge_0.onnx").predict(ex) - EdgePredictor(run / "edge_1.onnx").predict(ex)).max() > 0


@pytest.mark.parametrize("args,message", [
    (["--backend=onnnx"], "unknown backend 'onnnx': did you mean 'onnx'?"),
    (["--backend=onnx"], "--backend=onnx applies to --task=infer only (got --task=train)"),
    (["--export.exporter=dynamic"], "unknown export.exporter 'dynamic'"),
    (["--export.quantise=true"], "unknown key 'export.quantise'"),
])
def test_edge_keys_are_checked(run_cli, capsys, args, message):
    with pytest.raises(SystemExit):
        run_cli("-m=DIN", "--epochs=1", *args, QUIET)
    assert message in capsys.readouterr().err


def test_a_model_without_an_edge_part_is_refused_before_any_run_folder(run_cli, capsys, tmp_path):
    _, run = run_cli("--epochs=1", QUIET)  # BPR
    before = sorted((tmp_path / "out" / "BPR" / "synthetic").iterdir())
    for args in (["--task=infer", "--backend=onnx"], ["--task=export"]):
        with pytest.raises(SystemExit):
            run_cli(*args, f"--ckpt={run / 'best.ckpt'}", QUIET)
        assert "BPR has no on-device part (it defines no edge_parts())" in capsys.readouterr().err
    assert sorted((tmp_path / "out" / "BPR" / "synthetic").iterdir()) == before


def test_export_split_writes_verified_halves_that_compose_to_the_whole(run_cli):
    """--export.split=<stage>: every device model is also cut there; the device half's output
    (``cut``) fed to the cloud half gives the whole file's probabilities, in onnxruntime."""
    from recstudio_edge.edge.runtime import EdgePredictor

    _, run = run_cli("-m=PINRec", "--epochs=1", "--stage_switch_epoch=0", "--model.group_num=2", "--data.group_num=2",
                     "--model.embed_dim=8", "--eval_neg_per_pos=3", QUIET)
    res, out = run_cli("--task=export", f"--ckpt={run / 'best.ckpt'}", "--export.split=classifier.2", FAST, QUIET)
    ex = {"item_id": np.arange(1, 9), "seq": np.tile(np.arange(0, 10), (8, 1))}
    for g in ("0", "1"):
        sp = res["export"][g]["split"]
        assert sp["layer"] == "classifier.2" and sp["variant"] == g and sp["composed_max_abs_diff"] <= 1e-5
        dev, cloud = EdgePredictor(out / f"split_{g}" / "device.onnx"), EdgePredictor(out / f"split_{g}" / "cloud.onnx")
        assert dev.sidecar["split"] == {"part": "device", "layer": "classifier.2"} and dev.sidecar["rows"] == {"group_id": int(g)}
        cut = dev.run(ex)["cut"]
        assert cut.shape == (8, 128)
        np.testing.assert_allclose(cloud.predict({"cut": cut}), EdgePredictor(out / f"edge_{g}.onnx").predict(ex), atol=1e-6)


def test_export_split_names_the_cut_points_of_a_wrong_stage(run_cli, capsys):
    _, run = run_cli("-m=DIN", "--epochs=1", "--model.embed_dim=8", QUIET)
    with pytest.raises(SystemExit):
        run_cli("--task=export", f"--ckpt={run / 'best.ckpt'}", "--export.split=clasifier", FAST, QUIET)
    assert "cannot cut at 'clasifier': the cut points are ['classifier.0'" in capsys.readouterr().err


def test_the_cli_knows_the_exporters_the_exporter_knows():
    from recstudio_edge import cli
    from recstudio_edge.edge import onnx_export

    assert cli.EXPORTERS == onnx_export.EXPORTERS
