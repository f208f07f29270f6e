"""Every shipped data config that declares features parses, builds its FeatureArch and exports."""
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from recstudio_edge.config import load_yaml
from recstudio_edge.features import FeatureArch, FeatureError, FeatureSet

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs" / "data").glob("*.yaml")
                 if (load_yaml(p).get("data") or {}).get("features"))


def _capped(spec, cap=1000):
    """The spec with every table bound (hash / cross / mod buckets) capped: the shipped Criteo configs
    have tables of 10M-40M rows (tens of GB)."""
    spec = dict(spec, ops=[dict(o) for o in spec.get("ops", [])])
    for o in spec["ops"]:
        if o["op"] in ("hash", "cross") and o.get("buckets"):
            o["buckets"] = min(o["buckets"], cap)
        if o["op"] == "mod":
            o["value"] = min(o["value"], cap)
    return spec


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_feature_configs_build(path):
    fs = FeatureSet.from_config(load_yaml(path)["data"]["features"], where=f"{path.name} data.features")
    assert FeatureSet.from_config(fs.to_config()).to_config() == fs.to_config()
    small = FeatureSet.from_config([_capped(s) for s in fs.to_config()])
    sizes = {f.name: 50 for f in small.features if f.type != "dense" and f.cardinality is None}
    arch = FeatureArch(small, sizes)
    g = torch.Generator().manual_seed(0)
    batch = {s.name: s.example({"batch": 4, **{a: 3 for a in s.axes().values() if a != "batch"}}, g)
             for s in arch.input_specs()}
    flat = arch.flat(batch)
    assert flat.shape == (4, arch.flat_dim) and torch.isfinite(flat).all()
    with torch.device("meta"):  # the real sizes, without allocating them
        full = FeatureArch(fs, sizes)
    assert full.num_slots == arch.num_slots


def test_tables_larger_than_memory_are_refused_by_name(monkeypatch):
    import recstudio_edge.features.arch as arch_mod

    monkeypatch.setattr(arch_mod, "_available_memory", lambda: 2 ** 30)
    specs = [{"name": f"C{i}", "type": "sparse", "fields": [f"C{i}"], "ops": [{"op": "hash", "buckets": 10_000_000}],
              "embedding": {"dim": 16}} for i in range(3)]
    with pytest.raises(FeatureError, match=r"tables need 1.8 GiB \(C0: 10000001 x 16, .*more than the 1.0 GiB"):
        FeatureArch(specs)


def test_empty_table_encodes_to_empty_batches():
    fs = FeatureSet.from_config([{"name": "s", "type": "sparse", "fields": ["s"], "ops": [{"op": "hash", "buckets": 9}]},
                                 {"name": "l", "type": "sequence", "fields": ["l"]},
                                 {"name": "d", "type": "dense", "fields": ["x"]}])
    t = pa.table({"s": pa.array([], pa.string()), "l": pa.array([], pa.list_(pa.int64())), "x": pa.array([], pa.float64())})
    e = fs.encode(t)
    assert e["s"].shape == (0,) and e["l"].shape == (0, 1) and e["d"].shape == (0, 1)
    assert FeatureArch(fs, {"l": 3}).flat(e).shape == (0, 1 + 16 + 16)
