"""Reader side: FeatureSet.encode over pyarrow tables with nulls, strings and lists."""
import mmh3
import farmhash
import numpy as np
import pyarrow as pa
import pytest
import torch

from recstudio_edge.features import FeatureError, FeatureSet, hash_values


def enc(specs, table):
    return FeatureSet.from_config(specs).encode(table)


def test_dense_fill_null_and_columns():
    t = pa.table({"a": pa.array([1, None, 3], pa.int32()), "b": [0.5, 2.0, None], "z": [9, 9, 9]})
    fs = FeatureSet.from_config([{"name": "d", "type": "dense", "fields": ["a", "b"],
                                  "ops": [{"op": "fill_null", "value": -1}, {"op": "log1p"}]}])
    assert fs.columns == ["a", "b"]
    x = fs.encode(t)["d"]
    assert x.dtype == torch.float32 and x.tolist() == [[1.0, 0.5], [-1.0, 2.0], [3.0, -1.0]]
    with pytest.raises(FeatureError, match=r"feature 'd' field 'a': 1 null values; add \{op: fill_null"):
        enc([{"name": "d", "type": "dense", "fields": ["a"]}], t)


def test_hash_strings_murmur_and_farm_distinct_values_only():
    vals = ["a", None, "b", "a", "ccc"]
    t = pa.table({"s": vals})
    m = enc([{"name": "s", "type": "sparse", "fields": ["s"],
              "ops": [{"op": "fill_null", "value": "NA"}, {"op": "hash", "buckets": 1000}]}], t)["s"]
    want = [(mmh3.hash64(v.encode(), 0, signed=False)[0] & (2 ** 63 - 1)) % 1000 for v in ["a", "NA", "b", "a", "ccc"]]
    assert m.dtype == torch.int64 and m.tolist() == want
    f = enc([{"name": "s", "type": "sparse", "fields": ["s"],
              "ops": [{"op": "fill_null", "value": "NA"}, {"op": "hash", "buckets": 977, "fn": "farm", "seed": 5}]}], t)["s"]
    assert f.tolist() == [(farmhash.FarmHash64WithSeed(v, 5) & (2 ** 63 - 1)) % 977 for v in ["a", "NA", "b", "a", "ccc"]]
    # integers hash as their decimal text; dictionary columns hash their dictionary
    assert hash_values([123])[0] == hash_values(["123"])[0]
    d = pa.table({"s": pa.array(["x", "y", "x"]).dictionary_encode()})
    assert enc([{"name": "s", "type": "sparse", "fields": ["s"], "ops": [{"op": "hash", "buckets": 50}]}], d)["s"].tolist() \
        == [int(h % 50) for h in hash_values(["x", "y", "x"])]


def test_hash_hashes_each_distinct_value_once():
    fs = FeatureSet.from_config([{"name": "s", "type": "sparse", "fields": ["s"], "ops": [{"op": "hash", "buckets": 10}]}])
    op = fs._hash["s"]
    calls = []
    inner = op.hash_many
    op.hash_many = lambda keys: calls.append(sorted(keys)) or inner(keys)
    t = pa.table({"s": ["a", "b"] * 500})
    x = fs.encode(t)["s"]
    assert calls == [[b"a", b"b"]]  # 1000 rows: two hashes
    assert x.tolist() == [int(h % 10) for h in hash_values(["a", "b"])] * 500


def test_feature_set_pickles_for_loader_workers():
    import pickle

    fs = FeatureSet.from_config([{"name": "s", "type": "sparse", "fields": ["s"],
                                  "ops": [{"op": "hash", "buckets": 10, "fn": "farm"}]}])
    t = pa.table({"s": ["a", "b", "c"]})
    assert torch.equal(pickle.loads(pickle.dumps(fs)).encode(t)["s"], fs.encode(t)["s"])


def test_scalar_errors_name_feature_and_field():
    t = pa.table({"s": ["a", None], "i": [1, None], "f": [0.5, 1.5], "l": [[1], [2]]})
    with pytest.raises(FeatureError, match=r"feature 'x' field 's': a string column .* needs \{op: hash"):
        enc([{"name": "x", "type": "sparse", "fields": ["s"], "ops": [{"op": "fill_null", "value": "?"}]}], t)
    with pytest.raises(FeatureError, match=r"feature 'x' field 'i': 1 null values; add \{op: fill_null"):
        enc([{"name": "x", "type": "sparse", "fields": ["i"]}], t)
    with pytest.raises(FeatureError, match=r"feature 'x' field 'f': op 'hash' hashes strings or integers.*bucketize"):
        enc([{"name": "x", "type": "sparse", "fields": ["f"], "ops": [{"op": "hash", "buckets": 3}]}], t)
    with pytest.raises(FeatureError, match=r"feature 'x' op 'fill_null' key 'value': 'abc' does not fit field 'i' of type int64"):
        enc([{"name": "x", "type": "sparse", "fields": ["i"], "ops": [{"op": "fill_null", "value": "abc"}]}], t)
    with pytest.raises(FeatureError, match=r"feature 'x' field 's': op 'bucketize' reads numbers, the column is string"):
        enc([{"name": "x", "type": "sparse", "fields": ["s"],
              "ops": [{"op": "fill_null", "value": "?"}, {"op": "bucketize", "boundaries": [1]}]}], t)
    with pytest.raises(FeatureError, match=r"field 'f': float values are not ids"):
        enc([{"name": "x", "type": "sparse", "fields": ["f"]}], t)
    with pytest.raises(FeatureError, match=r"field 'l': a list column .* type 'sequence'"):
        enc([{"name": "x", "type": "sparse", "fields": ["l"]}], t)
    with pytest.raises(FeatureError, match=r"feature 'x': field 'usr' is not a column of the data: did you mean 's'"):
        enc([{"name": "x", "type": "sparse", "fields": ["usr"]}], pa.table({"s": [1], "usr_id": [1]}).drop(["usr_id"]))


def test_bucketize_input_is_float_cross_is_pair():
    t = pa.table({"age": [10, 20, 40], "u": ["a", "b", "a"], "i": [3, 4, 5]})
    e = enc([{"name": "age", "type": "sparse", "fields": ["age"], "ops": [{"op": "bucketize", "boundaries": [18, 25]}]},
             {"name": "ui", "type": "sparse", "ops": [{"op": "hash", "buckets": 100},
                                                      {"op": "cross", "fields": ["u", "i"], "buckets": 50}]}], t)
    assert e["age"].dtype == torch.float32 and e["age"].tolist() == [10, 20, 40]
    h = [int(x % 100) for x in hash_values(["a", "b", "a", "3", "4", "5"])]
    assert e["ui"].tolist() == [[h[0], h[3]], [h[1], h[4]], [h[2], h[5]]]


def test_sequences_truncate_pad_and_shift():
    t = pa.table({"l": [[1, 2, 3, 4], None, [5], [], [6, None, 7]]})
    seq = lambda **kw: [{"name": "l", "type": "sequence", "fields": ["l"], **kw}]
    # variable length, keep the last 3 (side left drops the oldest), left-padded, ids + 1, null = padding
    x = enc(seq(ops=[{"op": "truncate", "side": "left", "length": 3}]), t)["l"]
    assert x.tolist() == [[3, 4, 5], [0, 0, 0], [0, 0, 6], [0, 0, 0], [7, 0, 8]]
    x = enc(seq(ops=[{"op": "truncate", "side": "right", "length": 2}]), t)["l"]
    assert x.tolist() == [[2, 3], [0, 0], [0, 6], [0, 0], [7, 0]]
    x = enc(seq(length=5), t)["l"]  # fixed length: padded to 5
    assert x.tolist() == [[0, 2, 3, 4, 5], [0] * 5, [0, 0, 0, 0, 6], [0] * 5, [0, 0, 7, 0, 8]]
    x = enc(seq(length=2), t)["l"]  # fixed length cuts too (the newest kept)
    assert x.tolist() == [[4, 5], [0, 0], [0, 6], [0, 0], [0, 8]]
    x = enc(seq(ops=[{"op": "fill_null", "value": 0}]), t)["l"]  # variable: the longest row
    assert x.tolist() == [[2, 3, 4, 5], [0] * 4, [0, 0, 0, 6], [0] * 4, [0, 7, 1, 8]]
    # a sliced table (offsets into a larger buffer) and a chunked column
    sl = pa.concat_tables([t.slice(2, 3), t.slice(0, 1)])
    assert enc(seq(length=3), sl)["l"].tolist() == [[0, 0, 6], [0, 0, 0], [7, 0, 8], [3, 4, 5]]


def test_string_sequence_hashed_and_multi_field_sequence():
    t = pa.table({"g": [["x", "y"], ["y"], None], "a": [1, None, 3], "b": [4, 5, None]})
    x = enc([{"name": "g", "type": "sequence", "fields": ["g"], "ops": [{"op": "hash", "buckets": 10}]}], t)["g"]
    hx, hy = [int(h % 10) + 1 for h in hash_values(["x", "y"])]
    assert x.tolist() == [[hx, hy], [0, hy], [0, 0]]
    x = enc([{"name": "ab", "type": "sequence", "fields": ["a", "b"]}], t)["ab"]  # one element per field
    assert x.tolist() == [[2, 5], [0, 6], [4, 0]]


def test_record_batch_and_data_sizes():
    t = pa.table({"u": [3, 1, 7], "l": [[2, 9], [], [4]], "c": ["a", "b", "c"]})
    fs = FeatureSet.from_config([{"name": "u", "type": "sparse", "fields": ["u"]},
                                 {"name": "l", "type": "sequence", "fields": ["l"]},
                                 {"name": "c", "type": "sparse", "fields": ["c"], "ops": [{"op": "hash", "buckets": 5}]}])
    e = fs.encode(t.to_batches()[0])
    assert fs.data_sizes(e) == {"u": 8, "l": 10}  # identity ids: max + 1; c's size is its buckets
    with pytest.raises(FeatureError, match="feature 'u': negative ids"):
        fs.data_sizes({**e, "u": torch.tensor([-1, 2])})
    with pytest.raises(FeatureError, match="takes a pyarrow Table"):
        fs.encode({"u": [1]})


def test_encode_is_vectorised_enough():
    """100k rows of 3 string features with 1000 distinct values: well under a second."""
    import time

    rng = np.random.default_rng(0)
    cols = {f"c{i}": pa.array(np.char.add("v", rng.integers(0, 1000, 100_000).astype(str))) for i in range(3)}
    cols["l"] = pa.array([[1, 2, 3]] * 100_000)
    t = pa.table(cols)
    fs = FeatureSet.from_config([{"name": f"c{i}", "type": "sparse", "fields": [f"c{i}"],
                                  "ops": [{"op": "hash", "buckets": 100}]} for i in range(3)]
                                + [{"name": "l", "type": "sequence", "fields": ["l"], "length": 2}])
    t0 = time.perf_counter()
    e = fs.encode(t)
    assert time.perf_counter() - t0 < 1.5
    assert e["c0"].shape == (100_000,) and e["l"].shape == (100_000, 2)


def test_view_types_encode_like_plain_ones():
    fs = FeatureSet.from_config([{"name": "s", "type": "sparse", "fields": ["s"],
                                  "ops": [{"op": "fill_null", "value": "?"}, {"op": "hash", "buckets": 10}]},
                                 {"name": "l", "type": "sequence", "fields": ["l"], "ops": [{"op": "hash", "buckets": 10}]}])
    plain = pa.table({"s": pa.array(["a", "b", None]), "l": pa.array([["x"], ["y", "x"], None])})
    view = pa.table({"s": plain["s"].cast(pa.string_view()), "l": plain["l"].cast(pa.list_(pa.string_view()))})
    a, b = fs.encode(plain), fs.encode(view)
    assert all(torch.equal(a[k], b[k]) for k in a)
