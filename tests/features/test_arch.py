"""Torch side: FeatureArch's ops against hand values, fusion, tables, combiners, export."""
import math

import pyarrow as pa
import pytest
import torch

from recstudio_edge.features import FeatureArch, FeatureError, FeatureSet

P = 2 ** 31 - 1


def sp(name, ops=(), fields=None, **emb):
    return {"name": name, "type": "sparse", "fields": fields or [name], "ops": list(ops), "embedding": {"dim": 4, **emb}}


def test_ops_against_hand_values():
    specs = [sp("age", [{"op": "bucketize", "boundaries": [18, 25, 35]}]),
             sp("m", [{"op": "mod", "value": 7}]),
             {"name": "x", "type": "sparse", "ops": [{"op": "cross", "fields": ["a", "b"], "buckets": 1000}],
              "embedding": {"dim": 4}},
             sp("mh", [{"op": "multi_hash", "buckets": [5, 3]}]),
             sp("mm", [{"op": "mod", "value": 100}, {"op": "mod", "value": 9}])]
    arch = FeatureArch(specs)
    batch = {"age": torch.tensor([10.0, 18.0, 30.0, 99.0]), "m": torch.tensor([0, 13, -1, 7]),
             "x": torch.tensor([[1, 2], [3, 4], [P + 1, 2], [0, 0]]), "mh": torch.tensor([0, 7, 14, 23]),
             "mm": torch.tensor([250, 99, 5, 1000])}
    ids = arch.ids(batch)
    assert ids["age"].tolist() == [0, 1, 2, 3]  # #{b: x >= b}
    assert ids["m"].tolist() == [0, 6, 6, 0]
    assert ids["x"].tolist() == [(1 * P + 2) % 1000, (3 * P + 4) % 1000, (1 * P + 2) % 1000, 0]
    assert ids["mh"].tolist() == [[0, 5 + 0], [2, 5 + 1], [4, 5 + 2], [3, 5 + 2]]  # x mod 5, 5 + x mod 3
    assert ids["mm"].tolist() == [50 % 9, 99 % 9, 5, 0]
    # cardinalities -> table rows (1 + ids: row 0 pads)
    assert {t: v["rows"] for t, v in arch.tables.items()} == {"age": 5, "m": 8, "x": 1001, "mh": 9, "mm": 10}
    # the embedding of a row is the table's row id + 1; multi-hash sums its two rows
    dense, slots = arch(batch)
    assert dense.shape == (4, 0) and slots.shape == (4, 5, 4)
    w = arch.table_weight
    assert torch.equal(slots[:, 0], w("age")[ids["age"] + 1])
    assert torch.allclose(slots[:, 3], w("mh")[ids["mh"][:, 0] + 1] + w("mh")[ids["mh"][:, 1] + 1])


def test_bucketize_a_sequence_of_numbers():
    fs = FeatureSet.from_config([{"name": "t", "type": "sequence", "fields": ["t"], "length": 3,
                                  "ops": [{"op": "bucketize", "boundaries": [1.5, 10]}],
                                  "embedding": {"dim": 2, "combiner": "sum"}}])
    e = fs.encode(pa.table({"t": [[0.5, 20.0], [None, 3.0, 1.5, 12.0], None]}))["t"]
    nan = float("nan")
    assert e.dtype == torch.float32
    assert torch.equal(torch.isnan(e), torch.tensor([[True, False, False], [False, False, False], [True, True, True]]))
    assert e[0, 1:].tolist() == [0.5, 20.0] and e[1].tolist() == [3.0, 1.5, 12.0]
    arch = FeatureArch(fs)
    assert arch.ids({"t": e})["t"].tolist() == [[-1, 0, 2], [1, 1, 2], [-1, -1, -1]]
    w = arch.table_weight("t")
    assert torch.allclose(arch({"t": e})[1][:, 0], torch.stack([w[1] + w[3], w[2] + w[2] + w[3], torch.zeros(2)]))
    assert arch.input_specs()[0].dtype == "float32" and nan != nan


def test_dense_log1p_only_where_declared():
    specs = [{"name": "d1", "type": "dense", "fields": ["a", "b"], "ops": [{"op": "log1p"}]},
             {"name": "d2", "type": "dense", "fields": ["c"]}, sp("s", [{"op": "mod", "value": 3}])]
    arch = FeatureArch(specs)
    batch = {"d1": torch.tensor([[0.0, math.e - 1], [-5.0, 3.0]]), "d2": torch.tensor([[-2.0], [7.0]]),
             "s": torch.tensor([1, 2])}
    dense, slots = arch(batch)
    assert arch.dense_dim == 3
    assert torch.allclose(dense, torch.tensor([[0.0, 1.0, -2.0], [0.0, math.log(4.0), 7.0]]))


def mixed_specs():
    return [
        {"name": "dense", "type": "dense", "fields": ["I1", "I2"], "ops": [{"op": "log1p"}]},
        sp("C1", [{"op": "hash", "buckets": 100}]), sp("C2", [{"op": "hash", "buckets": 50}, {"op": "mod", "value": 7}]),
        sp("C3", [{"op": "hash", "buckets": 30}, {"op": "mod", "value": 11}]),
        sp("age", [{"op": "bucketize", "boundaries": [18, 25, 35]}]),
        sp("age2", [{"op": "bucketize", "boundaries": [30]}, {"op": "mod", "value": 2}]),
        {"name": "ux", "type": "sparse", "ops": [{"op": "cross", "fields": ["user_id", "item_id"], "buckets": 1000}],
         "embedding": {"dim": 4}},
        {"name": "ix", "type": "sparse", "ops": [{"op": "cross", "fields": ["item_id", "user_id"], "buckets": 77}],
         "embedding": {"dim": 4}},
        sp("item_id", [{"op": "mod", "value": 40}], shared_name="item"),
        sp("item_mh", [{"op": "multi_hash", "buckets": [7, 5]}], fields=["item_id"]),
        sp("user_mh", [{"op": "multi_hash", "buckets": [3, 11]}], fields=["user_id"]),
        sp("user_id"),
        {"name": "genre", "type": "sequence", "fields": ["genre"], "ops": [{"op": "hash", "buckets": 64},
                                                                          {"op": "mod", "value": 9}],
         "embedding": {"dim": 4, "combiner": "mean"}},
        {"name": "gsum", "type": "sequence", "fields": ["genre"], "ops": [{"op": "hash", "buckets": 64},
                                                                         {"op": "multi_hash", "buckets": [5, 7]}],
         "embedding": {"dim": 4, "combiner": "sum"}},
        {"name": "hist", "type": "sequence", "fields": ["hist"], "length": 3,
         "embedding": {"dim": 4, "combiner": "tile", "length": 2, "shared_name": "item"}},
        {"name": "watch", "type": "sequence", "fields": ["watch"], "length": 4,
         "ops": [{"op": "bucketize", "boundaries": [-0.5, 0.0, 0.5]}], "embedding": {"dim": 4, "combiner": "mean"}},
    ]


def random_batch(arch, B=6, L=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {s.name: s.example({"batch": B, "genre_len": L, "gsum_len": L}, g) for s in arch.input_specs()}


def test_fused_equals_per_feature_and_groups_fewer_ops():
    fused = FeatureArch(mixed_specs(), {"user_id": 10, "hist": 40}, fuse_max_table=1 << 20)
    single = FeatureArch(mixed_specs(), {"user_id": 10, "hist": 40}, fuse=False)
    ops_only = FeatureArch(mixed_specs(), {"user_id": 10, "hist": 40})  # the default: a weight per table
    ops_only.copy_tables_from(fused)
    single.copy_tables_from(fused)
    for seed in range(3):
        b = random_batch(fused, seed=seed)
        d1, s1 = fused(b)
        d2, s2 = single(b)
        assert torch.equal(d1, d2) and torch.allclose(s1, s2, atol=0, rtol=0)
        assert torch.equal(fused.flat(b), single.flat(b)) and torch.equal(fused.flat(b), ops_only.flat(b))
    n_f = sum(len(step) for step in fused._steps)
    n_s = sum(len(step) for step in single._steps)
    assert (n_f, n_s) == (5, 10)  # step 0: mod, bucketize, cross, multi_hash(k=2)... step 1: mod
    assert len(fused._lookups) == 2 and len(single._lookups) == 11  # per dim (+ multi-hash) vs per feature
    assert sum(len(step) for step in ops_only._steps) == 5 and len(ops_only._lookups) == 11
    assert list(dict(fused.named_parameters())) == ["weights.d4"] and len(list(single.parameters())) == 14
    # training either layout from the same start gives the same tables
    b = random_batch(fused, seed=5)
    for arch in (fused, single):
        opt = torch.optim.SGD(arch.parameters(), lr=0.5)
        for _ in range(3):
            opt.zero_grad()
            arch.flat(b).square().sum().backward()
            opt.step()
    assert all(torch.allclose(fused.table_weight(t), single.table_weight(t), atol=1e-6) for t in fused.tables)


def test_large_tables_keep_their_own_weight():
    specs = [sp("a", [{"op": "mod", "value": 100}]), sp("b", [{"op": "mod", "value": 100}]),
             sp("big", [{"op": "mod", "value": 1000}])]
    fused = FeatureArch(specs, fuse_max_table=1000)  # big: 1001 x 4 values
    assert dict((k, tuple(v.shape)) for k, v in fused.weights.items()) == {"d4": (202, 4), "t2": (1001, 4)}
    single = FeatureArch(specs, fuse=False)
    single.copy_tables_from(fused)
    b = {"a": torch.tensor([1, 250]), "b": torch.tensor([7, 3]), "big": torch.tensor([999, 5])}
    assert torch.equal(fused(b)[1], single(b)[1]) and len(fused._lookups) == 2


def test_sparse_gradients_train_with_sparse_adam():
    arch = FeatureArch([sp("a", [{"op": "mod", "value": 100}])], sparse=True)
    b = {"a": torch.tensor([1, 2, 3])}
    before = arch.table_weight("a").detach().clone()
    opt = torch.optim.SparseAdam(list(arch.parameters()), lr=0.1)
    arch(b)[1].sum().backward()
    assert next(arch.parameters()).grad.is_sparse
    opt.step()
    changed = (arch.table_weight("a") != before).any(1).nonzero().flatten().tolist()
    assert changed == [2, 3, 4]  # rows id + 1


def test_forward_keeps_to_the_module_device():
    """On the meta device (a stand-in for a GPU here): no tensor of the forward is made on the CPU."""
    arch = FeatureArch(mixed_specs(), {"user_id": 10, "hist": 40})
    b = random_batch(arch)
    dense, slots = arch.to("meta")({k: v.to("meta") for k, v in b.items()})
    assert dense.device.type == slots.device.type == "meta" and slots.shape == (6, arch.num_slots, 4)


def test_shared_name_is_one_table_and_learns_together():
    specs = [sp("item_id", shared_name="item"),
             {"name": "hist", "type": "sequence", "fields": ["hist"], "embedding": {"dim": 4, "shared_name": "item",
                                                                                  "combiner": "sum"}}]
    arch = FeatureArch(specs, {"item_id": 10, "hist": 6})
    assert list(arch.tables) == ["item"] and arch.tables["item"]["rows"] == 11  # max(10, 6) + 1
    assert sum(p.numel() for p in arch.parameters()) == 11 * 4
    # item 3 as a scalar and as the history [3] (stored 4) read the same row
    _, s = arch({"item_id": torch.tensor([3]), "hist": torch.tensor([[0, 4]])})
    assert torch.equal(s[0, 0], s[0, 1])
    s.sum().backward()
    assert next(arch.parameters()).grad[4].abs().sum() > 0


def test_combiners_sum_mean_tile():
    base = {"name": "h", "type": "sequence", "fields": ["h"]}
    x = torch.tensor([[0, 2, 3], [0, 0, 5], [0, 0, 0]])  # ids 1, 2 | 4 | empty
    out = {}
    for comb, extra in [("sum", {}), ("mean", {}), ("tile", {"length": 2}), ("tile", {"length": 4})]:
        arch = FeatureArch([{**base, "embedding": {"dim": 3, "combiner": comb, **extra}}], {"h": 6})
        torch.manual_seed(0)
        arch.reset_parameters()
        w = arch.table_weight("h")
        _, s = arch({"h": x})
        out[(comb, extra.get("length"))] = (s, w)
    s, w = out[("sum", None)]
    assert torch.allclose(s[:, 0], torch.stack([w[2] + w[3], w[5], torch.zeros(3)]))
    s, w = out[("mean", None)]
    assert torch.allclose(s[:, 0], torch.stack([(w[2] + w[3]) / 2, w[5], torch.zeros(3)]))
    s, w = out[("tile", 2)]
    z = torch.zeros(3)
    assert s.shape == (3, 2, 3)
    assert torch.allclose(s, torch.stack([torch.stack([w[2], w[3]]), torch.stack([z, w[5]]), torch.stack([z, z])]))
    s, w = out[("tile", 4)]  # longer than the sequence: left-padded with zeros
    assert s.shape == (3, 4, 3) and torch.allclose(s[0], torch.stack([z, z, w[2], w[3]]))


def test_initialisers_and_dim_override():
    specs = [sp("a", [{"op": "mod", "value": 20000}], init={"normal": 0.5}),
             sp("b", [{"op": "mod", "value": 10000}], init="uniform"),
             sp("c", [{"op": "mod", "value": 10000}], init={"uniform": 0.2}),
             sp("d", [{"op": "mod", "value": 10000}], init={"xavier": 1.0})]
    torch.manual_seed(0)
    arch = FeatureArch(specs)
    a, b, c, d = (arch.table_weight(t)[1:] for t in "abcd")
    assert abs(a.std().item() - 0.5) < 0.01
    bound = math.sqrt(1 / 10001)
    assert b.abs().max() <= bound and b.abs().max() > 0.95 * bound
    assert c.abs().max() <= 0.2 and c.abs().max() > 0.19
    xb = math.sqrt(6 / (10001 + 4))
    assert d.abs().max() <= xb and d.abs().max() > 0.95 * xb
    assert all(arch.table_weight(t)[0].abs().sum() == 0 for t in "abcd")  # padding rows
    one = FeatureArch(specs, dim=1)  # DeepFM's first-order part
    assert one.slot_dims == [1, 1, 1, 1] and one(random_batch(one, B=2))[1].shape == (2, 4, 1)


def test_an_id_past_its_table_is_named():
    arch = FeatureArch([sp("u"), sp("c", [{"op": "mod", "value": 5}]),
                        {"name": "h", "type": "sequence", "fields": ["h"], "embedding": {"dim": 4}}], {"u": 10, "h": 7})
    ok = {"u": torch.tensor([9, 0]), "c": torch.tensor([3, 4]), "h": torch.tensor([[0, 7], [0, 1]])}
    arch(ok)
    with pytest.raises(FeatureError, match=r"feature 'u': id 10 is outside its table of 10 ids \(0..9\)"):
        arch({**ok, "u": torch.tensor([10, 0])})
    with pytest.raises(FeatureError, match=r"feature 'h': id 7 is outside its table of 7 ids"):
        arch({**ok, "h": torch.tensor([[0, 8], [0, 1]])})


def test_mixed_dims_flat_and_errors():
    specs = [sp("a", [{"op": "mod", "value": 5}]), {**sp("b", [{"op": "mod", "value": 5}]), "embedding": {"dim": 2}},
             {"name": "d", "type": "dense", "fields": ["x"]}]
    arch = FeatureArch(specs)
    b = {"a": torch.tensor([1, 2]), "b": torch.tensor([3, 4]), "d": torch.tensor([[0.5], [1.5]])}
    with pytest.raises(FeatureError, match=r"different embedding dims \{'a': 4, 'b': 2\}"):
        arch(b)
    flat = arch.flat(b)
    assert flat.shape == (2, 1 + 4 + 2) == (2, arch.flat_dim)
    assert torch.equal(flat[:, 0], b["d"][:, 0])
    assert torch.equal(flat[:, 1:5], arch.table_weight("a")[b["a"] + 1])
    assert torch.equal(flat[:, 5:], arch.table_weight("b")[b["b"] + 1])
    with pytest.raises(FeatureError, match=r"no key 'b' \(feature 'b'\)"):
        arch({"a": b["a"], "d": b["d"]})
    with pytest.raises(FeatureError, match=r"feature 'u': identity ids need their table size: pass sizes"):
        FeatureArch([sp("u")])


def test_from_encoded_table_end_to_end():
    """FeatureSet.encode -> data_sizes -> FeatureArch, learning a planted signal quickly."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    u = torch.randint(0, 50, (n,), generator=g)
    c = torch.randint(0, 4, (n,), generator=g)
    y = ((u % 2) == (c % 2)).float()  # a cross: neither field alone tells
    t = pa.table({"u": u.numpy(), "c": [f"c{v}" for v in c.tolist()], "label": y.numpy()})
    specs = [{"name": "uc", "type": "sparse", "ops": [{"op": "hash", "buckets": 1 << 20},
                                                      {"op": "cross", "fields": ["u", "c"], "buckets": 4096}],
              "embedding": {"dim": 4}},
             {"name": "u", "type": "sparse", "fields": ["u"], "embedding": {"dim": 4}}]
    fs = FeatureSet.from_config(specs)
    e = fs.encode(t)
    arch = FeatureArch(fs, fs.data_sizes(e))
    head = torch.nn.Linear(arch.flat_dim, 1)
    opt = torch.optim.Adam([*arch.parameters(), *head.parameters()], lr=0.05)
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(arch.flat(e)).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_export_matches_pytorch(tmp_path, exporter):
    from recstudio_edge.edge.onnx_export import export_onnx

    arch = FeatureArch(mixed_specs(), {"user_id": 10, "hist": 40}).eval()
    specs = arch.input_specs()

    def make(sizes):
        g = torch.Generator().manual_seed(sum(sizes.values()))
        out = {s.name: s.example(sizes, g) for s in specs}
        out["watch"][:, :2] = float("nan")  # padding of the numbers' sequence
        return out

    rep = export_onnx(arch.positional(), make({"batch": 3, "genre_len": 4, "gsum_len": 2}), [s.name for s in specs],
                      tmp_path / "f.onnx", dynamic_axes={s.name: s.axes() for s in specs}, make_inputs=make,
                      exporter=exporter, opset=17)
    assert rep["exporter"] == exporter and rep["max_abs_diff"] < 1e-5 and len(rep["checks"]) == 8


def test_input_specs_describe_the_batch():
    arch = FeatureArch(mixed_specs(), {"user_id": 10, "hist": 40})
    specs = {s.name: s for s in arch.input_specs()}
    assert [s.name for s in arch.input_specs()] == arch.input_names == [f["name"] for f in mixed_specs()]
    assert (specs["dense"].dtype, specs["dense"].shape) == ("float32", ("batch", 2))
    assert (specs["C1"].low, specs["C1"].high) == (0, 99)  # hashed into 100 buckets on the reader
    assert (specs["user_id"].low, specs["user_id"].high) == (0, 9)  # identity ids: its size
    assert specs["age"].dtype == "float32" and specs["age"].low is None
    assert specs["ux"].shape == ("batch", 2) and specs["item_id"].high == 2 ** 63 - 2  # raw ints a device op bounds
    assert (specs["genre"].shape, specs["genre"].low, specs["genre"].high, specs["genre"].padding) == \
        (("batch", "genre_len"), 1, 64, 0)  # ids + 1 (hashed into 64), 0 pads
    assert (specs["hist"].shape, specs["hist"].high) == (("batch", 3), 40)
    assert specs["watch"].dtype == "float32" and specs["watch"].shape == ("batch", 4)
