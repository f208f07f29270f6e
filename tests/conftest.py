"""Shared fixtures: a tiny generated dataset and a helper that runs the CLI in-process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = ["--data.generator.num_users=300", "--data.generator.num_items=200",
        "--data.generator.mean_per_user=30", "--data.generator.min_per_user=8"]


@pytest.fixture()
def run_cli(tmp_path):
    """``run_cli(*args) -> (result dict, run folder)`` with data and outputs under tmp_path."""
    from recstudio_edge.cli import main
    from recstudio_edge.runner import RUN_DIR_ENV
    import os

    def run(*args, tiny: bool = True):
        os.environ.pop(RUN_DIR_ENV, None)
        argv = [f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", *args]
        if tiny:
            argv += TINY
        res = main(argv)
        os.environ.pop(RUN_DIR_ENV, None)
        return res, Path(res["run_dir"])

    return run


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def synthetic_datamodule(root, kind: str = "mf", *, users: int, items: int, mean: int, min_per_user: int = 5,
                         split: str = "loo", batch_size: int = 128, eval_batch_size: int = 100, **data):
    """A set-up ``RecDataModule`` over a small generated dataset (no cache), for tests that fit or
    evaluate a model by hand; extra keyword arguments become data-config keys."""
    from recstudio_edge.data.datamodule import RecDataModule

    cfg = {"name": "synthetic", "format": "auto", "cache": False,
           "generator": {"num_users": users, "num_items": items, "mean_per_user": mean, "min_per_user": min_per_user},
           "split": {"mode": split, "ratios": [0.8, 0.1, 0.1], "order": "random"}, **data}
    dm = RecDataModule(cfg, root, kind, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=0)
    dm.setup()
    return dm


def assert_beats_popularity(run_cli, model: str, args, factor: float, common=()):
    """Train ``model`` and Pop through the CLI on the same data; the model's test recall@10 and
    ndcg@10 must exceed ``factor`` times Pop's."""
    pop, _ = run_cli("-m=Pop", *common, tiny=False)
    res, _ = run_cli(f"-m={model}", *args, *common, tiny=False)
    assert res["test"]["recall@10"] > factor * pop["test"]["recall@10"], (res["test"], pop["test"])
    assert res["test"]["ndcg@10"] > factor * pop["test"]["ndcg@10"], (res["test"], pop["test"])
