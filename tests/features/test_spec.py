"""Feature declarations: every mistake named (feature, op, key), defaults, round trip."""
import pytest

from recstudio_edge.config import ConfigError
from recstudio_edge.features import FeatureError, FeatureSet

GOOD = [
    {"name": "dense", "type": "dense", "fields": ["I1", "I2"], "ops": [{"op": "fill_null", "value": 0}, {"op": "log1p"}]},
    {"name": "C1", "type": "sparse", "fields": ["C1"], "ops": [{"op": "hash", "buckets": 100, "fn": "farm"}]},
    {"name": "age", "type": "sparse", "fields": ["age"], "ops": [{"op": "bucketize", "boundaries": [18, 25]}]},
    {"name": "ux", "type": "sparse", "ops": [{"op": "cross", "fields": ["u", "i"], "buckets": 1000}]},
    {"name": "i", "type": "sparse", "fields": "i", "ops": [{"op": "mod", "value": 40}],
     "embedding": {"shared_name": "item", "init": "uniform"}},
    {"name": "mh", "type": "sparse", "fields": ["i"], "ops": [{"op": "multi_hash", "buckets": [7, 5]}]},
    {"name": "genre", "type": "sequence", "fields": ["genre"],
     "ops": [{"op": "hash", "buckets": 64}, {"op": "truncate", "length": 5}],
     "embedding": {"dim": 8, "combiner": "tile", "length": 3, "init": {"xavier": 2.0}}},
]


def err(specs, *needles):
    with pytest.raises(FeatureError) as e:
        FeatureSet.from_config(specs)
    msg = str(e.value)
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def one(**kw):
    spec = {"name": "C1", "type": "sparse", "fields": ["C1"], "ops": [{"op": "hash", "buckets": 10}]}
    spec.update(kw)
    return [spec]


def test_defaults_columns_and_round_trip():
    fs = FeatureSet.from_config(GOOD)
    assert fs.columns == ["I1", "I2", "C1", "age", "u", "i", "genre"]
    cfg = fs.to_config()
    assert FeatureSet.from_config(cfg).to_config() == cfg
    by = {c["name"]: c for c in cfg}
    assert by["C1"]["ops"] == [{"op": "hash", "buckets": 100, "fn": "farm", "seed": 0}]
    assert by["C1"]["embedding"] == {"dim": 16, "init": {"normal": 0.01}, "combiner": "sum"}
    assert by["ux"]["fields"] == ["u", "i"]
    assert by["i"]["embedding"]["init"] == {"uniform": None} and by["i"]["embedding"]["shared_name"] == "item"
    assert by["genre"]["length"] == "variable"
    assert by["genre"]["ops"][1] == {"op": "truncate", "side": "left", "length": 5}
    assert by["genre"]["embedding"]["init"] == {"xavier": 2.0}
    assert "embedding" not in by["dense"]
    assert issubclass(FeatureError, ConfigError)


@pytest.mark.parametrize("spec,needles", [
    (one(ops=[{"op": "hsh", "buckets": 10}]), ["data.features[0]", "'C1'", "ops[0]", "unknown op 'hsh'", "'hash'"]),
    (one(ops=[{"op": "hash", "bucket": 10}]), ["'C1'", "ops[0] 'hash'", "unknown key 'bucket'", "'buckets'"]),
    (one(ops=[{"op": "hash", "buckets": 0}]), ["ops[0] 'hash'", "'buckets'", "positive integer"]),
    (one(ops=[{"op": "hash", "fn": "murmer"}]), ["'fn'", "'murmur'"]),
    (one(ops=[{"op": "bucketize", "boundaries": [3, 1]}]), ["ops[0] 'bucketize'", "strictly increasing"]),
    (one(ops=[{"op": "bucketize"}]), ["ops[0] 'bucketize'", "missing key 'boundaries'"]),
    (one(ops=[{"op": "mod", "value": 3}, {"op": "hash", "buckets": 3}]), ["ops[1] 'hash'", "before the torch-side op 'mod'"]),
    (one(ops=[{"op": "multi_hash", "buckets": [3, 5]}, {"op": "mod", "value": 2}]), ["ops[1] 'mod'", "last op"]),
    (one(ops=[{"op": "hash"}]), ["'C1'", "without 'buckets'"]),
    (one(ops=[{"op": "truncate", "length": 3}]), ["op 'truncate' does not apply to a sparse feature"]),
    (one(ops=[{"op": "log1p"}]), ["op 'log1p' does not apply to a sparse"]),
    (one(typ="x"), ["unknown key 'typ'", "'type'"]),
    (one(type="spars"), ["key 'type'", "'sparse'"]),
    (one(fields=["a", "b"]), ["a sparse feature reads one field"]),
    (one(embedding={"dims": 4}), ["key 'embedding'", "unknown key 'dims'", "'dim'"]),
    (one(embedding={"combiner": "mean"}), ["combiner", "one id per row"]),
    (one(embedding={"init": {"gauss": 1}}), ["key 'init'", "unknown initialiser 'gauss'"]),
    (one(embedding={"init": {"normal": -1}}), ["key 'init'", "positive number"]),
    (one(length=3), ["'length' is for sequence features"]),
    ([{"name": "s", "type": "sequence", "fields": ["s"], "embedding": {"combiner": "tile"}}], ["'tile'", "'length'"]),
    ([{"name": "s", "type": "sequence", "fields": ["s"], "ops": [{"op": "truncate", "side": "middle", "length": 2}]}],
     ["ops[0] 'truncate'", "'side'"]),
    ([{"name": "x", "type": "sparse", "fields": ["a"], "ops": [{"op": "cross", "fields": ["a", "b"], "buckets": 9}]}],
     ["'fields' ['a']", "differs"]),
    ([{"name": "x", "type": "sparse", "ops": [{"op": "cross", "fields": ["a"], "buckets": 9}]}], ["exactly two fields"]),
    ([{"name": "d", "type": "dense", "fields": ["a"], "embedding": {"dim": 3}}], ["dense feature has no embedding"]),
    ([{"name": "x", "type": "sparse"}], ["missing key 'fields'"]),
    ([{"type": "sparse", "fields": ["a"]}], ["data.features[0]", "'name'"]),
    ([{"name": "label", "type": "sparse", "fields": ["a"]}], ["'label'", "rename"]),
    (one() + one(), ["data.features[1]", "taken by data.features[0]"]),
    ([{"name": "a", "type": "sparse", "fields": ["a"], "embedding": {"shared_name": "t", "dim": 4}},
      {"name": "b", "type": "sparse", "fields": ["b"], "embedding": {"shared_name": "t", "dim": 8}}],
     ["data.features[1]", "'b'", "shared_name 't'", "feature 'a'", "dim 4", "dim 8"]),
    ([], ["empty"]),
    ({"name": "x"}, ["expected a list"]),
])
def test_config_mistakes_are_named(spec, needles):
    err(spec, *needles)


def test_where_prefix_is_used():
    with pytest.raises(FeatureError, match=r"^configs/data/x.yaml data.features\[0\]"):
        FeatureSet.from_config(one(ops=[{"op": "nope"}]), where="configs/data/x.yaml data.features")
