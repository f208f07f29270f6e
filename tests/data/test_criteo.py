"""The Criteo format: reading (values, nulls, day files, errors at file:line:field), the
generator (deterministic, long-tailed, planted crosses, the DLRM random mode), writing shards."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from recstudio_edge.data import criteo
from recstudio_edge.data.criteo import CRITEO_COLUMNS, read_criteo
from recstudio_edge.data.errors import DataError


def line(label="1", dense=None, sparse=None):
    dense = dense if dense is not None else [str(i) for i in range(13)]
    sparse = sparse if sparse is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join(([label] if label is not None else []) + dense + sparse) + "\n"


def test_read_values_nulls_and_types(tmp_path):
    dense = ["5", "", "-2"] + ["1"] * 10
    sparse = ["68fd1e64", ""] + ["05db9164"] * 24
    path = tmp_path / "train.txt"
    path.write_text(line("0", dense, sparse) + line() + "\n")  # a blank last line is ignored
    table = read_criteo(path)
    assert table.column_names == CRITEO_COLUMNS
    assert table.schema.field("label").type == pa.int32() and table.schema.field("I1").type == pa.int64()
    assert table.schema.field("C1").type == pa.string()
    assert table.column("label").to_pylist() == [0, 1]
    assert table.column("I1").to_pylist() == [5, 0] and table.column("I2").to_pylist() == [None, 1]
    assert table.column("I3").to_pylist() == [-2, 2]
    assert table.column("C1").to_pylist() == ["68fd1e64", "00000000"]
    assert table.column("C2").to_pylist() == [None, "00000001"]
    # Kaggle's test.txt: no label, 39 fields
    test = tmp_path / "test.txt"
    test.write_text(line(None) * 3)
    assert read_criteo(test).column_names == CRITEO_COLUMNS[1:]


@pytest.mark.parametrize("text, where", [
    (line() + line() + "1\t2\t3\n", r"train\.txt:3: expected 40 tab-separated fields .* got 3"),
    (line() + line(dense=["1"] * 4 + ["1x"] + ["1"] * 8), r"train\.txt:2: field 'I5': expected an integer, got '1x'"),
    (line() + "\n" + line(label="2"), r"train\.txt:3: field 'label': expected 0 or 1, got 2"),
    (line() + line(label=""), r"train\.txt:2: field 'label': the label is empty"),
    ("", r"train\.txt: empty file"),
    ("1\t2\n", r"train\.txt:1: expected 40 tab-separated fields .* or 39 \(no label\), got 2"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, text, where):
    path = tmp_path / "train.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=where):
        read_criteo(path)


def test_day_files_in_day_order_and_streamed_in_batches(tmp_path):
    for day in (10, 2, 0):
        (tmp_path / f"day_{day}").write_text(line(dense=[str(day)] * 13) * 3)
    (tmp_path / "notes.md").write_text("not data")
    files = criteo.criteo_files(tmp_path / "day_*")
    assert [f.name for f in files] == ["day_0", "day_2", "day_10"]
    assert [f.name for f in criteo.criteo_files(tmp_path)] == ["day_0", "day_2", "day_10"]
    assert read_criteo(tmp_path).column("I1").to_pylist() == [0] * 3 + [2] * 3 + [10] * 3
    # streaming: small blocks, a bad label deep in the second day is still located by its line
    (tmp_path / "day_2").write_text(line() * 40 + line(label="7") + line())
    batches = criteo.iter_criteo(tmp_path / "day_*", block_size=2048)
    with pytest.raises(DataError, match=r"day_2:41: field 'label': expected 0 or 1, got 7"):
        list(batches)
    # a parse error in a later block: the rows of the blocks read are skipped, the line still exact
    (tmp_path / "day_2").write_text(line() * 30 + "\n" + line() * 10 + line(dense=["9"] * 12 + ["9.5"]))
    with pytest.raises(DataError, match=r"day_2:42: field 'I13': expected an integer, got '9\.5'"):
        list(criteo.iter_criteo(tmp_path / "day_*", block_size=2048))


def test_generate_is_deterministic_and_formats_agree(tmp_path):
    kw = dict(rows=3000, seed=7, shards=2, row_group_size=400)
    paths = {fmt: criteo.generate(tmp_path / fmt, fmt=fmt, **kw) for fmt in ("tsv", "parquet", "orc")}
    assert [p.name for p in paths["parquet"]] == ["part-00000.parquet", "part-00001.parquet"]
    tsv = read_criteo(paths["tsv"])
    par = pa.concat_tables([pq.read_table(p) for p in paths["parquet"]])
    orcs = pa.concat_tables([orc.read_table(str(p)) for p in paths["orc"]])
    assert tsv.num_rows == 3000 and tsv.equals(par) and tsv.equals(orcs)
    assert pq.ParquetFile(paths["parquet"][0]).metadata.num_row_groups == 4  # 1500 rows / 400
    assert orc.ORCFile(str(paths["orc"][1])).nstripes == 4
    again = criteo.generate(tmp_path / "again", fmt="parquet", **kw)
    assert pq.read_table(again[0]).equals(pq.read_table(paths["parquet"][0]))
    other = criteo.generate(tmp_path / "other", fmt="parquet", **{**kw, "seed": 8})
    assert not pq.read_table(other[0]).equals(pq.read_table(paths["parquet"][0]))
    assert not list(tmp_path.rglob(".*tmp*"))  # written under a temporary name, renamed


def _target_encoding_auc(keys, y, half):
    df = pd.DataFrame({"k": keys, "y": y})
    rate = df.iloc[:half].groupby("k")["y"].mean()
    score = df.iloc[half:]["k"].map(rate).fillna(y[:half].mean()).to_numpy()
    return roc_auc_score(y[half:], score)


def test_planted_signal_long_tail_and_crosses():
    table = criteo.generate_table(20000, seed=3)
    y = table.column("label").to_numpy()
    assert 0.22 < y.mean() < 0.28
    # the true logit explains the labels (Bayes ceiling), far above chance
    assert roc_auc_score(y, criteo.planted_logit(table, seed=3)) > 0.78
    # long tail: the top value of C3 is frequent, yet most of its distinct values are rare
    counts = pd.Series(table.column("C3").to_pylist()).value_counts()
    assert counts.iloc[0] > 0.05 * len(y) and (counts == 1).mean() > 0.5
    # nulls where planted (I12 mostly null, I2 never)
    assert table.column("I12").null_count > 0.6 * len(y) and table.column("I2").null_count == 0
    # the planted cross (C6, C17): the pair predicts held-out labels better than either column
    a, b = (np.array(table.column(c).to_pylist(), dtype=object) for c in ("C6", "C17"))
    pair = np.array([f"{x}|{z}" for x, z in zip(a, b)], dtype=object)
    single = max(_target_encoding_auc(a, y, 10000), _target_encoding_auc(b, y, 10000))
    assert _target_encoding_auc(pair, y, 10000) > single + 0.05
    # an uncrossed column carries nothing
    assert abs(_target_encoding_auc(np.array(table.column("C9").to_pylist(), dtype=object), y, 10000) - 0.5) < 0.03


def test_random_mode_is_uniform_with_coin_labels():
    table = criteo.generate_table(20000, seed=1, mode="random")
    y = table.column("label").to_numpy()
    assert abs(y.mean() - 0.5) < 0.02
    assert all(table.column(c).null_count == 0 for c in CRITEO_COLUMNS)
    # C6 has 24 values: uniform, so each near 1/24 (the ends get half: round(u * 23))
    freq = pd.Series(table.column("C6").to_pylist()).value_counts(normalize=True)
    assert len(freq) == 24 and freq.max() < 1.3 / 23
    dense = table.column("I1").to_numpy()
    assert dense.min() >= 0 and dense.max() <= criteo.RANDOM_DENSE_MAX - 1


def test_hex_values_and_write_table(tmp_path):
    values, valid = criteo.hex_values(pa.array(["0000000a", None, "FFFFFFFF", "68fd1e64"]))
    assert values.tolist() == [10, 0, 0xFFFFFFFF, 0x68FD1E64] and valid.tolist() == [True, False, True, True]
    with pytest.raises(DataError, match="row 1: expected 8 hex digits, got 'xyz'"):
        criteo.hex_values(pa.array(["00000000", "xyz"]))
    table = criteo.generate_table(50, seed=0)
    with pytest.raises(ValueError, match="cannot tell the format"):
        criteo.write_table(table, tmp_path / "x.json")
    criteo.write_table(table, tmp_path / "day_3")
    assert read_criteo(tmp_path / "day_3").equals(table)


def test_convert_tsv_to_shards(tmp_path):
    src = criteo.generate(tmp_path / "raw", rows=1000, seed=2, shards=2, fmt="tsv", prefix="day_")
    assert [p.name for p in src] == ["day_0", "day_1"]
    out = criteo.convert_criteo(tmp_path / "raw", tmp_path / "orc", fmt="orc", rows_per_shard=300,
                                row_group_size=100)
    assert [orc.ORCFile(str(p)).nrows for p in out] == [300, 300, 300, 100]
    assert pa.concat_tables([orc.read_table(str(p)) for p in out]).equals(read_criteo(tmp_path / "raw"))


def test_command_line(tmp_path, capsys):
    assert criteo.main(["generate", "--out", str(tmp_path / "g"), "--rows", "200", "--shards", "2",
                        "--format", "parquet", "--row-group-size", "50"]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    bad = tmp_path / "bad.tsv"
    bad.write_text(line() + line(dense=["a"] + ["1"] * 12))
    assert criteo.main(["convert", str(bad), "--out", str(tmp_path / "c")]) == 2
    assert "bad.tsv:2: field 'I1': expected an integer, got 'a'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
