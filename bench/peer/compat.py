"""Minimal monkeypatches so RecBole 1.2.1 runs on numpy 2.x and torch >= 2.6 (RecBole's own code
is never edited: the patches apply at import). Import this BEFORE importing recbole;
bench/peer/run_peer.py does, and bench/setup.py checks it in the peer venv.

Not patched: under pandas 3 RecBole's missing-value filling does nothing (no effect on the
benchmark sets, which have no blanks)."""
import numpy as np

# (1) numpy 2 removed these aliases; recbole.config.Configurator.compatibility_settings()
#     does `np.float = np.float_`, `np.complex = np.complex_`, `np.unicode = np.unicode_`
#     and crashes with AttributeError without them.
for _name, _val in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _name):
        setattr(np, _name, _val)

# (2) torch >= 2.6 defaults torch.load(weights_only=True); RecBole's checkpoints hold the
#     Config object etc., so Trainer.evaluate(load_best_model=True) fails to unpickle.
import torch

_orig_load = torch.load


def _load(*args, **kwargs):
    kwargs.setdefault("weights_only", False)
    return _orig_load(*args, **kwargs)


torch.load = _load
