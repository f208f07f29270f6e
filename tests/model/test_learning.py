"""Models learn: on the generated data (low-rank taste + sequential drift + Zipf popularity)
each model beats the popularity baseline by a clear margin, under the same split."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import read_metrics

FAST = ["--trainer.enable_progress_bar=false", "--data.generator.num_users=400",
        "--data.generator.num_items=200", "--data.generator.mean_per_user=30"]


def _pop(run_cli, split):
    res, _ = run_cli("-m=Pop", f"--data.split.mode={split}", *FAST, tiny=False)
    return res["test"]


def test_bpr_beats_popularity(run_cli):
    pop = _pop(run_cli, "user_entry")
    res, run = run_cli("-m=BPR", "--epochs=15", "--lr=0.01", *FAST, tiny=False)
    assert res["test"]["recall@10"] > 1.5 * pop["recall@10"], (res["test"], pop)
    assert res["test"]["ndcg@10"] > 1.5 * pop["ndcg@10"]
    assert read_metrics(run)["test"] == res["test"]


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_sequence_models_beat_popularity(run_cli, model):
    pop = _pop(run_cli, "loo")
    res, _ = run_cli(f"-m={model}", "--epochs=15", "--lr=0.005", "--data.max_seq_len=30", *FAST, tiny=False)
    assert res["test"]["recall@10"] > 2 * pop["recall@10"], (res["test"], pop)
    assert res["test"]["ndcg@10"] > 2 * pop["ndcg@10"]


def test_din_beats_popularity_auc(run_cli):
    from recstudio_edge.evaluation.metrics import auc
    from recstudio_edge.data.datamodule import RecDataModule
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class

    res, run = run_cli("-m=DIN", "--epochs=8", "--lr=0.003", "--train.batch_size=256",
                       "--trainer.enable_progress_bar=false", "--data.generator.num_users=1000",
                       "--data.generator.num_items=300", "--data.generator.mean_per_user=40", tiny=False)
    # the popularity score of the same test rows: the item's training count
    cfg = build_config("DIN", None, str(run / "config.yaml"), {}, get_model_class("DIN"))
    dm = RecDataModule(cfg["data"], cfg["data_dir"], "ctr", seed=cfg["seed"])
    dm.setup()
    rows = dm.eval_dataset("test")[torch.arange(len(dm.eval_dataset("test")))]
    pop_auc = float(auc(dm.item_counts()[rows["item_id"]].float(), rows["label"]))
    assert res["test"]["auc"] > pop_auc + 0.03, (res["test"], pop_auc)
    assert res["test"]["gauc"] > 0.6
