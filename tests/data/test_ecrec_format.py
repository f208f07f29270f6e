"""ECRec's 9-column sample format: reader, writer, errors, sources (recstudio_edge/data/formats/ecrec.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recstudio_edge.data.errors import DataError
from recstudio_edge.data.formats import ecrec

ROOT = Path(__file__).resolve().parents[2]
CFG = {"max_seq_len": 6, "edge_len": 3, "neg_per_pos": 1, "eval_neg_per_pos": 1}


def line(u=1, i=5, c=2, y=1, seq="1,2,3", cseq="1,1,2", edge="2,3", cedge="1,2", n=3):
    return f"{u}\t{i}\t{c}\t{y}\t{seq}\t{cseq}\t{edge}\t{cedge}\t{n}"


@pytest.fixture(scope="module")
def source():
    return ecrec.from_interactions(ecrec.generate(num_users=12, per_user=12, num_cates=4, items_per_cate=5), CFG, 3)


def test_files_round_trip_to_the_same_batches(source, tmp_path):
    ecrec.write_files(source, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    files = ecrec.open_source(tmp_path, CFG)
    for stage in ("train", "valid", "test"):
        ds = source.train("ctr") if stage == "train" else source.eval("ctr", stage)
        want = ds[((0, 0, 0), torch.arange(len(ds)))] if stage == "train" else ds[torch.arange(len(ds))]
        got = files.samples[stage].batch(torch.arange(len(files.samples[stage])))
        for k in ecrec.FIELDS:
            assert torch.equal(got[k].to(want[k].dtype), want[k]), (stage, k)
        # the strict (line by line) reader agrees with the vectorised one
        strict = ecrec._read_strict(tmp_path / f"{stage}.txt", 6, 3, "error")
        for k in ecrec.FIELDS:
            assert torch.equal(getattr(strict, k), getattr(files.samples[stage], k)), (stage, k)
    assert files.model_args()["num_cates"] == source.num_cates or files.num_cates <= source.num_cates


def test_reading_keeps_the_latest_items_and_drops_padding(tmp_path):
    # the release kept the oldest seq_length items: [1, 2, 3] of this row; ours keeps the latest
    p = tmp_path / "a.txt"
    p.write_text(line(seq="1,2,3,4,5,6,7,8", cseq="1,1,1,2,2,2,3,3", edge="6,7,8,0,0", cedge="2,3,3,0,0", n=8) + "\n"
                 + line(seq="4,0,0", cseq="2,0,0", edge="", cedge="", n=1) + "\n")
    for s in (ecrec.read_samples(p, max_seq_len=3, edge_len=2), ecrec._read_strict(p, 3, 2, "error")):
        assert s.item_seq.tolist() == [[6, 7, 8], [0, 0, 4]]
        assert s.cate_seq.tolist() == [[2, 3, 3], [0, 0, 2]]
        assert s.edge_item_seq.tolist() == [[7, 8], [0, 0]]
        assert s.edge_cate_seq.tolist() == [[3, 3], [0, 0]]
        assert s.seq_len.tolist() == [3, 1]  # min(seq_len, seq_length)


@pytest.mark.parametrize("bad,where", [
    (line(y=2), "field 'label'"),
    (line(cseq="1,1"), "field 'cate_seq'"),
    (line(edge="2,x"), "field 'edge_item_seq'"),
    (line(i=0), "field 'item_id'"),
    (line(n=-1), "field 'seq_len'"),
    ("1\t2\t3", "expected 9 tab-separated fields"),
])
def test_errors_name_file_line_and_field(tmp_path, bad, where):
    p = tmp_path / "bad.txt"
    p.write_text(line() + "\n" + line() + "\n" + bad + "\n")
    with pytest.raises(DataError) as e:
        ecrec.read_samples(p)
    assert f"{p}:3:" in str(e.value) and where in str(e.value)


def test_bad_lines_can_be_skipped_and_are_counted(tmp_path):
    (tmp_path / "train.txt").write_text(line() + "\n" + line(y=7) + "\n" + line(u=2) + "\n")
    src = ecrec.open_source(tmp_path, {"on_bad_line": "skip", "max_seq_len": 5, "edge_len": 2})
    assert len(src.samples["train"]) == 2 and src.stats["skipped_lines"] == 1


def test_categories_come_from_the_first_genre_else_a_hashed_bucket():
    d = ecrec.generate(num_users=3, per_user=5, num_cates=2, items_per_cate=2)
    d.item_attrs = {"genre": ["", "Comedy Drama", "Action", "", "Action Thriller"]}
    cate, num, where = ecrec.item_categories(d, buckets=4)
    assert where == "genre" and cate[1] != cate[2] and cate[2] == cate[4] and int(cate[3]) > 2
    assert num == 1 + 2 + 4 and int(cate.max()) < num
    d.item_attrs = {}
    cate, num, where = ecrec.item_categories(d, buckets=4)
    assert where == "hashed" and num == 5 and int(cate[1:].min()) >= 1


def test_interaction_samples_follow_time(source):
    data = source.data
    test = source.eval("ctr", "test")
    b = test[torch.arange(len(test))]
    pos = b["label"] > 0.5
    last = {}
    for u, i in zip(data.user.tolist(), data.item.tolist()):
        last[u] = i  # sorted by (user, time): the user's latest interaction
    assert all(last[u] == i for u, i in zip(b["user_id"][pos].tolist(), b["item_id"][pos].tolist()))
    # instant history = the latest edge_len of the long history; categories gathered from the items
    assert torch.equal(b["edge_item_seq"], b["item_seq"][:, -3:])
    assert torch.equal(b["cate_seq"], source.cate[b["item_seq"]]) and torch.equal(b["cate_id"], source.cate[b["item_id"]])
    # negatives: items the user never touched
    seen = set(zip(data.user.tolist(), data.item.tolist()))
    assert not any((u, i) in seen for u, i in zip(b["user_id"][~pos].tolist(), b["item_id"][~pos].tolist()))


def test_infer_input_files_read_with_the_sources_lengths(source, tmp_path):
    test = source.eval("ctr", "test")
    b = test[torch.arange(len(test))]
    ecrec.write_samples(tmp_path / "in.txt", b)
    back = source.read_input(tmp_path / "in.txt")
    got = back[torch.arange(len(back))]
    assert all(torch.equal(got[k].to(b[k].dtype), b[k]) for k in ecrec.FIELDS)


def test_max_requests_per_user_keeps_each_users_latest_requests():
    data = ecrec.generate(num_users=5, per_user=12, num_cates=3, items_per_cate=4)
    full = ecrec.from_interactions(data, CFG, 0).train("ctr")
    few = ecrec.from_interactions(data, {**CFG, "max_requests_per_user": 4}, 0).train("ctr")
    assert len(few) == 5 * 4 and len(full) == 5 * 9  # 10 training items each, the first is no request
    b = few[((0, 0, 0), torch.arange(len(few)))]
    pos = b["label"] > 0.5
    assert (b["seq_len"][pos] >= 5).all()  # the latest four of nine requests


def test_command_line_check_and_convert(tmp_path, capsys):
    assert ecrec.main(["check", str(ROOT / "datasets/sample-ecrec/train.txt"), "--max_seq_len", "8"]) == 0
    assert "samples" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text(line(y=3) + "\n")
    assert ecrec.main(["check", str(bad)]) == 2
    assert f"{bad}:1: field 'label'" in capsys.readouterr().err
    assert ecrec.main(["convert", "-d", "sample-atomic", "--data_dir", str(ROOT / "datasets"), "--out",
                       str(tmp_path / "out"), "--max_seq_len", "5"]) == 0
    s = ecrec.read_samples(tmp_path / "out" / "test.txt", 5, 10)
    assert len(s) > 0 and int(s.label.sum()) * 2 == len(s)


def test_the_committed_sample_trains_through_the_data_module(tmp_path):
    from recstudio_edge.data.datamodule import RecDataModule

    dm = RecDataModule({"name": "sample-ecrec", "format": "ecrec", "max_seq_len": 8, "edge_len": 4},
                       ROOT / "datasets", "ctr", batch_size=16, data_format="ecrec")
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert set(ecrec.FIELDS) <= set(b) and b["item_seq"].shape[1] == 8 and b["edge_item_seq"].shape[1] == 4
    assert dm.model_args()["num_cates"] >= 2
