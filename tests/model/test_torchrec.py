"""TorchRec behind DLRM: 2 CPU processes (gloo, table-wise sharding) train the same model as one
process (bench/torchrec_check.py). Skipped where torchrec is not installed: it is not in
requirements.txt (its metadata pulls the CUDA fbgemm-gpu, which breaks a CPU install); the
versions that work with torch 2.13 and how to install them are in bench/torchrec_check.py."""
import json
from pathlib import Path

import pytest

pytest.importorskip("torchrec")
pytest.importorskip("fbgemm_gpu")

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_two_sharded_processes_match_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # mp.spawn's children import the worker by module name
    import torchrec_check as mod

    out = tmp_path / "figures.json"
    assert mod.main(["--steps", "300", "--json", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["loss_diff"] < 1e-4
    assert max(fig["weight_diff"].values()) < 1e-3
    assert set(fig["placement"].values()) == {0, 1}  # both ranks own tables: it really is sharded
    first, last = sum(fig["ref_losses"][:20]) / 20, sum(fig["ref_losses"][-20:]) / 20
    assert last < first - 0.03  # the planted signal is learned
