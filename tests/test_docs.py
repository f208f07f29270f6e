"""The documentation stays true to the code.

- docs/extending.md: every fenced code block preceded by a ``<!-- test: NAME -->`` comment
  line is extracted by NAME. The ``extending-example`` python block is executed (it
  registers ``MeanPool``), and the model is trained end to end through
  ``recstudio_edge.cli.main`` with the ``extending-config`` YAML block as ``--config`` on a
  tiny generated dataset; it must write its run folder and beat ``Pop`` (run on the same
  data) on test recall@10. The ``towerfree-example`` block (``HistoryDot``) must train and
  report AUC above chance.
- docs/configuration.md mentions every key of configs/base.yaml, so the page cannot fall
  behind the config.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TINY = ["--data.generator.num_users=300", "--data.generator.num_items=200",
        "--data.generator.mean_per_user=30"]
QUIET = "--trainer.enable_progress_bar=false"

_MARKED = re.compile(r"^<!--\s*test:\s*([\w.-]+)\s*-->\s*\n+```(\w*)[^\n]*\n(.*?)^```\s*$",
                     re.MULTILINE | re.DOTALL)


def marked_blocks(path: Path) -> dict:
    """``{name: (language, code)}`` for every fenced block right after ``<!-- test: name -->``."""
    out = {}
    for m in _MARKED.finditer(path.read_text()):
        name, lang, code = m.group(1), m.group(2), m.group(3)
        assert name not in out, f"{path.name}: two blocks marked {name!r}"
        out[name] = (lang, code)
    return out


def test_marked_blocks_are_found():
    blocks = marked_blocks(DOCS / "extending.md")
    assert blocks["extending-example"][0] == "python"
    assert blocks["extending-config"][0] == "yaml"
    assert blocks["towerfree-example"][0] == "python"


@pytest.fixture()
def doc_models():
    """Execute the python examples of extending.md; unregister their models afterwards."""
    from recstudio_edge.model import list_models
    from recstudio_edge.registry import MODELS

    list_models()  # import the zoo first, as the command line does
    blocks = marked_blocks(DOCS / "extending.md")
    added = []
    for name in ("extending-example", "towerfree-example"):
        namespace = {"__name__": f"docs_extending_{name.replace('-', '_')}"}
        before = set(MODELS.names())
        exec(compile(blocks[name][1], f"docs/extending.md[{name}]", "exec"), namespace)
        added += sorted(set(MODELS.names()) - before)
    yield blocks, added
    for name in added:  # the registry has no public unregister
        MODELS._table.pop(name.lower(), None)


@pytest.fixture()
def cli(tmp_path):
    from recstudio_edge.cli import main
    from recstudio_edge.runner import RUN_DIR_ENV

    def run(*args):
        os.environ.pop(RUN_DIR_ENV, None)  # a new run folder for every call
        try:
            return main([f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}",
                         QUIET, *TINY, *args])
        finally:
            os.environ.pop(RUN_DIR_ENV, None)

    return run


def test_extending_example_trains_and_beats_pop(doc_models, cli, tmp_path):
    blocks, added = doc_models
    assert sorted(added) == ["HistoryDot", "MeanPool"]
    cfg_text = blocks["extending-config"][1]
    config = tmp_path / "meanpool.yaml"
    config.write_text(cfg_text)

    res = cli("-m=MeanPool", f"--config={config}")
    run = Path(res["run_dir"])
    assert run.parts[-3:-1] == ("MeanPool", "synthetic")
    for name in ("config.yaml", "best.ckpt", "last.ckpt", "metrics.json", "run.log"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == yaml.safe_load(cfg_text)["epochs"]  # it trained every epoch
    assert metrics["test"] == res["test"]

    # Pop on the same data: the example's data: section, nothing else
    pop_config = tmp_path / "pop.yaml"
    pop_config.write_text(yaml.safe_dump({"data": yaml.safe_load(cfg_text)["data"]}))
    pop = cli("-m=Pop", f"--config={pop_config}")
    pop_cfg = yaml.safe_load((Path(pop["run_dir"]) / "config.yaml").read_text())
    mine_cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert pop_cfg["data"] == mine_cfg["data"] and pop_cfg["seed"] == mine_cfg["seed"]
    assert res["test"]["recall@10"] > pop["test"]["recall@10"], (res["test"], pop["test"])


def test_towerfree_example_trains(doc_models, cli):
    res = cli("-m=HistoryDot", "--epochs=5", "--lr=0.01", "--train.batch_size=256")
    metrics = json.loads((Path(res["run_dir"]) / "metrics.json").read_text())
    assert metrics["val_metric"] == "auc" and metrics["epochs"] == 5
    auc = metrics["test"]["auc"]
    assert math.isfinite(metrics["test"]["logloss"]) and auc > 0.55, metrics["test"]


def base_keys() -> list:
    """Every key of configs/base.yaml, dotted (``data.split.mode``), sections included."""
    base = yaml.safe_load((ROOT / "configs" / "base.yaml").read_text())
    out = []

    def walk(node, prefix):
        for k, v in node.items():
            out.append(prefix + k)
            if isinstance(v, dict):
                walk(v, prefix + k + ".")

    walk(base, "")
    return out


def test_configuration_doc_mentions_every_base_key():
    text = (DOCS / "configuration.md").read_text()
    missing = [k for k in base_keys() if f"`{k}`" not in text and f"`{k}:" not in text]
    assert not missing, f"docs/configuration.md does not mention: {missing}"
