"""PINRec's ';'-separated sample format: reading (any length, padding, truncation), writing, the
round trip, malformed lines reported as file:line: field, the converter, and training from files
(``data.format: pinrec``, served by ``RecDataModule``)."""
from __future__ import annotations

import pytest
import torch

from recstudio_edge.data.errors import DataError
from recstudio_edge.data.formats import pinrec as fmt
from recstudio_edge.data.datamodule import RecDataModule
from recstudio_edge.data.formats.pinrec import _read_fast, _read_strict, convert, read_samples, write_samples
from recstudio_edge.wiring import connect

GOOD = (
    "1;5;3,4,7;1;0\n"
    "1;9;0,0,3,4,7;0;0\r\n"          # left padding, CRLF
    "2;6;8,2,0,0;1;2\n"              # right padding
    "\n"                              # blank lines are skipped
    "3;4;;0;1\n"                      # empty history
    "4;2;1,2,3,4,5,6,7,8,9,10;1;4\n"  # longer than max_seq_len: the last 4 are kept
)


@pytest.fixture()
def good(tmp_path):
    p = tmp_path / "good.txt"
    p.write_bytes(GOOD.encode())
    return p


@pytest.mark.parametrize("reader", ["auto", "strict"])
def test_read_pads_and_truncates(good, reader):
    s = read_samples(good, max_seq_len=4) if reader == "auto" else _read_strict(good, 4, None, "error")
    assert s.user_id.tolist() == [1, 1, 2, 3, 4] and s.target_id.tolist() == [5, 9, 6, 4, 2]
    assert s.seq.tolist() == [[0, 3, 4, 7], [0, 3, 4, 7], [0, 0, 8, 2], [0, 0, 0, 0], [7, 8, 9, 10]]
    assert s.seq_len.tolist() == [3, 3, 2, 0, 4]
    assert s.label.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0] and s.group_id.tolist() == [0, 0, 2, 1, 4]
    b = s.batch(torch.tensor([4, 0]))
    assert set(b) == {"user_id", "item_id", "seq", "seq_len", "label", "group_id"}
    assert b["item_id"].tolist() == [2, 5]


def test_fast_and_strict_readers_agree(good):
    a, b = _read_fast(good, 3, None), _read_strict(good, 3, None, "error")
    assert a is not None
    for k in ("user_id", "target_id", "seq", "seq_len", "label", "group_id"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_round_trip(good, tmp_path):
    s = read_samples(good, max_seq_len=50)
    out = write_samples(tmp_path / "again.txt", s, probability=torch.linspace(0, 1, len(s)))
    lines = out.read_text().splitlines()
    assert lines[0] == "1;5;3,4,7;1;0;0" and lines[3] == "3;4;;0;1;0.75"  # padding dropped, probability last
    again = read_samples(out, max_seq_len=50)  # the sixth column is accepted and ignored
    for k in ("user_id", "target_id", "seq", "seq_len", "label", "group_id"):
        assert torch.equal(getattr(s, k), getattr(again, k)), k
    # a batch dict with our field names writes the same lines
    write_samples(tmp_path / "batch.txt", s.batch(torch.arange(len(s))))
    assert (tmp_path / "batch.txt").read_text().splitlines() == [";".join(x.split(";")[:5]) for x in lines]


@pytest.mark.parametrize("line, where", [
    ("1;5;3,4;1", "bad.txt:2: expected 5 ';'-separated fields"),
    ("x;5;3,4;1;0", "bad.txt:2: field 'user_id': expected an integer, got 'x'"),
    ("1;0;3,4;1;0", "bad.txt:2: field 'target_id': expected an integer >= 1, got 0"),
    ("1;5;3,a,4;1;0", "bad.txt:2: field 'clk_sequence': item 2 is not a non-negative integer: 'a'"),
    ("1;5;3,-4;1;0", "bad.txt:2: field 'clk_sequence': item 2 is not a non-negative integer: '-4'"),
    ("1;5;3,4;2;0", "bad.txt:2: field 'label': expected 0 or 1, got '2'"),
    ("1;5;3,4;1;-1", "bad.txt:2: field 'group_id': expected an integer >= 0, got -1"),
    ("1;5;3,4;1;0;abc", "bad.txt:2: field 'probability': expected a number, got 'abc'"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path, line, where):
    p = tmp_path / "bad.txt"
    p.write_text("1;5;3,4;1;0\n" + line + "\n3;4;;0;1\n")
    with pytest.raises(DataError) as e:
        read_samples(p)
    assert str(e.value).startswith(f"{p}:2: ") and where.split(": ", 1)[1] in str(e.value), str(e.value)
    skipped = read_samples(p, on_bad_line="skip")
    assert len(skipped) == 2 and skipped.skipped == 1


def test_group_id_checked_against_group_num(good):
    with pytest.raises(DataError, match=r"good.txt:6: field 'group_id': expected an integer 0..2, got 4"):
        read_samples(good, group_num=3)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_samples(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="no samples"):
        read_samples(tmp_path / "empty.txt")


TINY = {"name": "synthetic", "format": "auto", "generator": {"num_users": 150, "num_items": 80,
                                                            "mean_per_user": 15, "min_per_user": 6},
        "split": {"mode": "loo", "ratios": [0.8, 0.1, 0.1], "order": "random"}, "max_seq_len": 8,
        "neg_per_pos": 1, "eval_neg_per_pos": 3, "cache": False, "group_num": 3}


def _files(root, name="files", **cfg):
    """The data module over the sample files ``root/name/{train,valid,test}.txt``."""
    dm = RecDataModule({"name": name, "format": "pinrec", "max_seq_len": 8, **cfg}, root, "ctr", batch_size=64,
                       eval_batch_size=200, seed=0)
    dm.setup()
    return dm


def test_convert_writes_our_samples_and_files_train_pinrec(tmp_path):
    import lightning.pytorch as pl

    from recstudio_edge.callbacks.plugin_stage import PluginStage
    from recstudio_edge.model.edge.pinrec import PINRec

    res = convert(TINY, tmp_path / "data", tmp_path / "files", seed=3)
    assert set(res["rows"]) == {"train", "valid", "test"} and res["group_num"] == 3
    assert (tmp_path / "files" / "items.tsv").read_text().startswith("id\ttoken\n1\t")

    # the test file holds exactly the rows our data module evaluates on (same ids, same order)
    ours = RecDataModule(TINY, tmp_path / "data", "ctr", seed=3)
    ours.setup()
    want = ours.eval_dataset("test")[torch.arange(len(ours.eval_dataset("test")))]
    files = _files(tmp_path)
    assert files.data is None and files.kind == "ctr"
    got = files.eval_dataset("test")[torch.arange(len(files.eval_dataset("test")))]
    for k in ("user_id", "item_id", "seq", "seq_len", "label", "group_id"):
        assert torch.equal(got[k].to(want[k].dtype), want[k]), k
    assert files.group_num == 3 and files.num_items <= ours.num_items and files.stats["train_rows"] == res["rows"]["train"]
    train = files.source.samples["train"]
    assert int(files.item_counts().sum()) == int((train.label > 0).sum())
    pos = train.label > 0
    assert torch.equal(files.train_keys(), torch.unique(train.user_id[pos] * files.num_items + train.target_id[pos]))
    # training batches: rows of train.txt, shuffled per epoch (seeded), batch_size rows each
    first = next(iter(files.train_dataloader()))
    assert first["user_id"].numel() == 64 and set(first) == {"user_id", "item_id", "seq", "seq_len", "label", "group_id"}
    assert not torch.equal(first["item_id"], train.target_id[:64])

    torch.manual_seed(0)
    model = PINRec(num_items=files.num_items, num_users=files.num_users, group_num=files.group_num, max_seq_len=8)
    trainer = pl.Trainer(max_epochs=2, callbacks=[PluginStage(stage_switch_epoch=1)], accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, num_sanity_val_steps=0, limit_train_batches=3)
    connect(model, files, trainer)
    trainer.fit(model, datamodule=files)
    trainer.test(model, datamodule=files, verbose=False)
    assert model.plugins_enabled and {"auc", "gauc", "auc_g0", "auc_g2"} <= set(model.last_metrics["test"])

    # the files' group count is checked against the model's plugin copies
    small = PINRec(num_items=files.num_items, num_users=files.num_users, group_num=2, max_seq_len=8)
    with pytest.raises(ValueError, match=r"the data has 3 activity groups \(data.group_num\) but PINRec has "
                                         r"model.group_num=2 plugin copies"):
        connect(small, files)


def test_sample_files_by_other_names_and_their_errors(tmp_path, good):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.txt").write_text(GOOD)
    (folder / "b.txt").write_text("1;5;3,4;1;0\n1;6;3,4;0;1\n")
    dm = _files(tmp_path, "mine", files={"train": "a.txt", "test": "b.txt"}, max_seq_len=4)
    assert dm.stats == {"train_rows": 5.0, "test_rows": 2.0, "skipped_lines": 0.0}
    assert dm.num_users == 5 and dm.num_items == 11 and dm.group_num == 5  # largest ids + 1
    assert len(dm.eval_dataset("test")) == 2
    with pytest.raises(DataError, match=r"mine: no valid sample file \(data.files names none for valid\)"):
        dm.eval_dataset("valid")
    (folder / "train.txt").write_text(GOOD)  # the default names: train.txt, valid.txt (absent), test.txt (absent)
    with pytest.raises(DataError, match=r"mine/valid.txt: no valid sample file"):
        _files(tmp_path, "mine").eval_dataset("valid")

    # data.group_num is checked against the files, data.on_bad_line applies
    with pytest.raises(DataError, match=r"a.txt:6: field 'group_id': expected an integer 0..2, got 4"):
        _files(tmp_path, "mine", files={"train": "a.txt"}, group_num=3)
    (folder / "c.txt").write_text(GOOD + "1;x;3;1;0\n")
    assert _files(tmp_path, "mine", files={"train": "c.txt"}, on_bad_line="skip").stats["skipped_lines"] == 1.0
    with pytest.raises(ValueError, match="expected keys train"):
        _files(tmp_path, "mine", files={"valid": "a.txt"})
    # the files hold CTR samples: a model of another data kind is told so before anything is read
    with pytest.raises(DataError, match="data.format=pinrec holds CTR samples; this model trains on 'mf' data"):
        RecDataModule({"name": "mine", "format": "pinrec"}, tmp_path, "mf")


def test_convert_command_line_reads_no_model_config(tmp_path, monkeypatch, capsys):
    """``convert``'s data config: base.yaml < the format's defaults < configs/data/<d>.yaml < options;
    no model's config file is looked up."""
    from recstudio_edge import config

    looked, real = [], config.find_named_config
    monkeypatch.setattr(config, "find_named_config", lambda kind, name: looked.append(kind) or real(kind, name))
    cfg = fmt._data_config("synthetic", {"group_num": 3, "max_seq_len": None})
    assert looked == ["data"]
    assert cfg["group_num"] == 3 and cfg["max_seq_len"] == 50 and cfg["eval_neg_per_pos"] == 20
    assert cfg["split"]["mode"] == "loo" and cfg["on_bad_line"] == "error"  # the format's default over base.yaml's
    args = ["convert", "-d", "synthetic", "--data_dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
            "--group_num", "2", "--eval_neg_per_pos", "2"]
    monkeypatch.setattr(fmt, "_data_config", lambda d, o: {**TINY, **{k: v for k, v in o.items() if v is not None}})
    assert fmt.main(args) == 0
    assert "2 groups" in capsys.readouterr().out
    assert _files(tmp_path, "out").group_num == 2


def test_command_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1;5;3,4;1;0\n1;5;3,4;7;0\n")
    assert fmt.main(["check", str(bad)]) == 2
    assert f"{bad}:2: field 'label'" in capsys.readouterr().err
    good = tmp_path / "good.txt"
    good.write_text(GOOD)
    assert fmt.main(["check", str(good), "--max_seq_len", "4"]) == 0
    assert "5 samples, 3 positive" in capsys.readouterr().out
