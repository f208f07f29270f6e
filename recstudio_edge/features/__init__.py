"""Declarative CTR features: YAML-declared ops (RecIS's set) and embedding tables.

A data config lists its features under ``data.features``::

    features:
      - {name: dense, type: dense, fields: [I1, I2], ops: [{op: fill_null, value: 0}, {op: log1p}]}
      - {name: C1, type: sparse, fields: [C1], ops: [{op: hash, buckets: 100000, fn: murmur}], embedding: {dim: 16}}
      - {name: age, type: sparse, fields: [age], ops: [{op: bucketize, boundaries: [18, 25, 35]}]}
      - {name: user_x_item, type: sparse, ops: [{op: cross, fields: [user_id, item_id], buckets: 100000}]}
      - {name: item_id, type: sparse, fields: [item_id], embedding: {shared_name: item}}
      - {name: genre, type: sequence, fields: [genre], length: variable,
         ops: [{op: hash, buckets: 64}, {op: truncate, side: left, length: 5}], embedding: {combiner: mean}}

- ``FeatureSet.from_config(specs)``: validation (errors name the feature, the op and the key),
  ``columns``, the reader-side ``encode(table) -> {name: tensor}`` on pyarrow, ``data_sizes``,
  ``to_config`` (``encode.py``);
- ``FeatureArch(specs, sizes, dim)``: the torch-side ops fused across features and the
  embedding tables (``shared_name``, combiners ``sum`` / ``mean`` / ``tile``, initialisers),
  ``arch(batch) -> (dense, slots)``, ``flat``, ``input_specs`` for export (``arch.py``);
- ``spec.py``: the keys, defaults and rules of a declaration.
"""
from .arch import FeatureArch, PositionalFeatures
from .encode import FeatureSet, hash_values
from .spec import Feature, FeatureError, parse

__all__ = ["FeatureSet", "FeatureArch", "FeatureError", "Feature", "PositionalFeatures", "hash_values", "parse"]
