#!/usr/bin/env python3
"""RecBole 1.2.1 on CTR rows with a token_seq field (ml-1m-ctr's genres): bench/peer/run_peer.py, its
runner, after one more patch for today's pandas.

usage: [PEER_ANOMALY=0] PEER_PY bench/peer/ctr_recbole.py MODEL DATASET CONFIG.yaml OUT.json
(the arguments, the working directory and the JSON are run_peer.py's; bench/ctr.py starts it).

The patch (RecBole's own code is not edited; it applies in this process only): under pandas 3,
``Series.agg(len)`` is a reduction (the Series' length) instead of one length per row, so
``Dataset._remap`` (recbole/data/dataset/dataset.py:1217) splits the remapped ids of a token_seq
column at no point and fails with ``ValueError: Length of values (1) does not match length of index``.
Below is the same method with the per-row lengths taken by ``Series.map(len)``; nothing else changes.
"""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compat  # noqa: F401,E402  (numpy 2 / torch >= 2.6 patches, before recbole)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from recbole.data.dataset import dataset as _rb_dataset  # noqa: E402
from recbole.utils import FeatureType  # noqa: E402


def _remap(self, remap_list):
    """recbole.data.dataset.Dataset._remap (1.2.1) with per-row sequence lengths (module docstring)."""
    if len(remap_list) == 0:
        return
    tokens, split_point = self._concat_remaped_tokens(remap_list)
    new_ids_list, mp = pd.factorize(tokens)
    new_ids_list = np.split(new_ids_list + 1, split_point)
    mp = np.array(["[PAD]"] + list(mp))
    token_id = {t: i for i, t in enumerate(mp)}
    for (feat, field, ftype), new_ids in zip(remap_list, new_ids_list):
        if field not in self.field2id_token:
            self.field2id_token[field] = mp
            self.field2token_id[field] = token_id
        if ftype == FeatureType.TOKEN:
            feat[field] = new_ids
        elif ftype == FeatureType.TOKEN_SEQ:
            split_point = np.cumsum(feat[field].map(len).to_numpy())[:-1]
            feat[field] = pd.Series(np.split(new_ids, split_point), index=feat.index, dtype=object)


_rb_dataset.Dataset._remap = _remap
sys.argv = [os.path.join(HERE, "run_peer.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
