"""Layered config: precedence, validation with closest-name errors, command-line forms."""
from __future__ import annotations

import pytest

from recstudio_edge.cli import main, parse_argv
from recstudio_edge.config import ConfigError, build_config
from recstudio_edge.model import get_model_class


def cfg_for(model="BPR", dataset=None, config=None, **over):
    return build_config(model, dataset, config, over, get_model_class(model))


def test_layers_later_wins(tmp_path):
    base = cfg_for("BPR")
    assert base["train"]["lr"] == 0.001 and base["data"]["split"]["mode"] == "user_entry"
    seq = cfg_for("SASRec")  # the model file overrides the base split
    assert seq["data"]["split"]["mode"] == "loo" and seq["data"]["split"]["ratios"] == [0.8, 0.1, 0.1]
    mine = tmp_path / "my.yaml"
    mine.write_text("train:\n  lr: 0.05\nmodel:\n  embed_dim: 16\n")
    c = cfg_for("SASRec", config=str(mine), **{"model.embed_dim": "8"})
    assert c["train"]["lr"] == 0.05  # --config beats the model file
    assert c["model"]["embed_dim"] == 8  # the command line beats --config
    assert c["model"]["num_blocks"] == 2  # untouched keys keep the model file's value


def test_dataset_config_layer():
    c = cfg_for("BPR", dataset="ML-1M")  # case-insensitive
    assert c["data"]["name"] == "ml-1m" and c["data"]["archive_root"] == "ml-1m"


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr'.*'train.lr'"):
        cfg_for(**{"train.lrr": "0.1"})
    with pytest.raises(ConfigError, match=r"data.split.mod.*data.split.mode"):
        cfg_for(**{"data.split.mod": "loo"})


def test_model_key_checked_against_constructor():
    with pytest.raises(ConfigError, match=r"'model.embed_dimm' for BPR.*embed_dim"):
        cfg_for(**{"model.embed_dimm": "8"})
    with pytest.raises(ConfigError, match=r"model.lr.*train.lr"):
        cfg_for(**{"model.lr": "0.1"})


def test_model_parameters_work_as_leaf_names():
    # docs/configuration.md, "Command-line forms": a bare model key needs no ``model.`` prefix
    assert cfg_for("SASRec", embed_dim="32")["model"]["embed_dim"] == 32
    c = cfg_for("BPR", embed_dim="32", lr="0.5")
    assert c["model"]["embed_dim"] == 32 and c["train"]["lr"] == 0.5 and "lr" not in c["model"]
    # ... unless a key of base.yaml has the same last name: then the full key says which
    with pytest.raises(ConfigError, match=r"--group_num is ambiguous.*--data.group_num, --model.group_num"):
        cfg_for("PINRec", group_num="3")
    assert cfg_for("PINRec", **{"model.group_num": "3"})["model"]["group_num"] == 3


def test_trainer_keys_the_runner_owns_are_refused():
    with pytest.raises(ConfigError, match=r"trainer.max_epochs.*--epochs"):
        cfg_for(**{"trainer.max_epochs": "3"})


def test_trainer_key_checked_against_lightning():
    with pytest.raises(ConfigError, match=r"trainer.max_epoch.*max_epochs"):
        cfg_for(**{"trainer.max_epoch": "3"})
    assert cfg_for(**{"trainer.strategy": "ddp"})["trainer"]["strategy"] == "ddp"


def test_leaf_names_and_yaml_values():
    c = cfg_for(lr="0.01", topk="[5, 10]", epochs="3")
    assert c["train"]["lr"] == 0.01 and c["eval"]["topk"] == [5, 10] and c["epochs"] == 3
    with pytest.raises(ConfigError, match="ambiguous.*eval.batch_size.*train.batch_size"):
        cfg_for(batch_size="8")


def test_config_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        cfg_for(config=str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("eval:\n  topkk: [5]\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'eval.topkk'.*eval.topk"):
        cfg_for(config=str(typo))


def test_argv_forms():
    opts, over = parse_argv(["-m=sasrec", "-d", "ml-1m", "--epochs=3", "--resume", "--lr", "0.1"])
    assert opts["model"] == "sasrec" and opts["dataset"] == "ml-1m"
    assert over == {"epochs": "3", "resume": "true", "lr": "0.1"}


@pytest.mark.parametrize("argv, message", [
    (["-m=BPRR"], "unknown model 'BPRR': did you mean 'BPR'"),
    (["-m=sasrek"], "did you mean 'SASRec'"),
    (["--epochz=3"], "unknown key 'epochz'.*'epochs'"),
    (["--task=tune"], "a mode, not a task: use --mode=tune"),
    (["--task=trian"], "unknown task 'trian'.*'train'"),
    (["--data.split.mode=leave_one_out", "--data_dir=/tmp/rse-split"], "unknown split mode 'leave_one_out'"),
    (["--optimizer=adamm", "--data_dir=/tmp/rse-split"], "unknown optimizer 'adamm'.*adam"),
    (["-d=ml-1n", "--data_dir=/nonexistent-recstudio-edge"], "ml-1m"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as e:
        main([*argv, f"--output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()  # a run that cannot start leaves no folder behind
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err


def _configs_with(tmp_path, monkeypatch, model: str, text: str):
    """A copy of configs/ whose ``model/<model>.yaml`` is ``text``, used by build_config."""
    import shutil

    import recstudio_edge.config as config

    root = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, root)
    (root / "model" / f"{model}.yaml").write_text(text)
    monkeypatch.setattr(config, "CONFIG_DIR", root)
    return root


def test_keys_of_a_models_own_yaml_are_known_for_that_model_only(tmp_path, monkeypatch):
    _configs_with(tmp_path, monkeypatch, "BPR", "data:\n  extra_knob: 3\nbprx:\n  alpha: 1.0\n")
    bpr, din = get_model_class("BPR"), get_model_class("DIN")
    cfg = build_config("BPR", "ml-100k", None, {"bprx.alpha": "2.5", "extra_knob": "4"}, bpr)
    assert cfg["bprx"] == {"alpha": 2.5} and cfg["data"]["extra_knob"] == 4
    assert build_config("BPR", "ml-100k", None, {}, bpr)["bprx"]["alpha"] == 1.0
    with pytest.raises(ConfigError, match=r"unknown key 'bprx.alpah'.*bprx\.alpha"):
        build_config("BPR", "ml-100k", None, {"bprx.alpah": "2"}, bpr)
    with pytest.raises(ConfigError, match=r"unknown key 'bprx'"):  # another model does not know it
        build_config("DIN", "ml-100k", None, {"bprx.alpha": "2"}, din)


def test_every_key_a_model_yaml_adds_is_read_by_the_code():
    """A key that only a model's YAML has (beyond base.yaml) is a key nobody validates against a
    second source: it must at least be read somewhere in the package, so a typo in a model YAML
    (which would make a new, silently ignored key) fails here."""
    import re
    from pathlib import Path

    from recstudio_edge.config import CONFIG_DIR, leaves, load_yaml

    base = set(leaves(load_yaml(CONFIG_DIR / "base.yaml")))
    code = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "recstudio_edge").rglob("*.py"))
    unread = []
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        for key in leaves(load_yaml(path)):
            top = key.split(".", 1)[0]
            if key in base or top in ("model", "trainer", "tune") or any(key.startswith(b + ".") for b in base):
                continue
            leaf = key.rsplit(".", 1)[-1]
            if not re.search(rf"""["']{re.escape(leaf)}["']""", code):
                unread.append(f"{path.name}: {key}")
    assert not unread, f"model YAML keys no code reads (a typo?): {unread}"


def test_bf16_auto_precision_follows_the_device(monkeypatch):
    """``trainer.precision: bf16-auto`` is bf16-mixed only where bfloat16 is native, else 32-true;
    any other value passes through."""
    from recstudio_edge import runner

    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: True)
    assert runner.resolve_precision("bf16-auto", "cpu") == "bf16-mixed"
    assert runner.resolve_precision("bf16-auto", "auto") == "bf16-mixed"
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: False)
    assert runner.resolve_precision("bf16-auto", "auto") == "32-true"
    assert runner.resolve_precision("16-mixed", "cpu") == "16-mixed"
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runner.torch.cuda, "is_bf16_supported", lambda: False)
    assert runner.resolve_precision("bf16-auto", "gpu") == "32-true"
    monkeypatch.setattr(runner.torch.cuda, "is_bf16_supported", lambda: True)
    assert runner.resolve_precision("bf16-auto", "auto") == "bf16-mixed"


def test_threads_auto_or_a_count_sets_torch_threads():
    import torch

    from recstudio_edge.runner import apply_threads

    assert cfg_for()["threads"] == "auto"
    assert cfg_for(threads="1")["threads"] == 1
    for bad in ("0", "two", "1.5"):
        with pytest.raises(ConfigError, match="threads: expected auto or a whole number >= 1"):
            cfg_for(threads=bad)
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 == torch.get_num_threads()
        assert apply_threads("auto") == 1  # auto keeps what torch has
    finally:
        torch.set_num_threads(before)
