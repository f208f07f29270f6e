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
