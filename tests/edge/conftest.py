"""Shared fixtures of the edge tests: a small PINRec whose groups differ, exported once."""
from __future__ import annotations

import pytest
import torch


def small_pinrec(trunk: str = "DIN", groups: int = 2, num_items: int = 40, embed_dim: int = 8, max_seq_len: int = 12):
    """A PINRec with plugins on and plugin weights that differ per group, as after training."""
    from recstudio_edge.model.edge.pinrec import PINRec

    torch.manual_seed(0)
    model = PINRec(num_items=num_items, embed_dim=embed_dim, group_num=groups, max_seq_len=max_seq_len,
                   arch_config={"trunk": trunk}).eval()
    model.set_plugins(True)
    with torch.no_grad():
        for p in (p for site in model.plugin_sites().values() for p in site.parameters()):
            p.add_(torch.randn(p.shape) * 0.3)
    return model


# the prelude of a subprocess in which any import of torch or Lightning raises (runtime tests)
TORCH_BLOCK = r'''
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "torchmetrics"):
            raise ImportError("blocked: " + name)
        return None
sys.meta_path.insert(0, Block())
try:
    import torch  # the block works, or this test proves nothing
    raise SystemExit("torch imported despite the block")
except ImportError:
    pass
'''


def device(model, variant="0"):
    """The model's device ``Part`` ``variant`` (``recstudio_edge.edge.protocol``)."""
    return model.edge_parts().device[str(variant)]


def examples(model, batch=4, length=None, variant="0"):
    """Valid inputs of a device model: ``{name: tensor}`` at this batch size and sequence length."""
    return device(model, variant).example_inputs(batch, {"seq": length} if length else None)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``(model, {variant: report})``: the small PINRec exported with the TorchScript exporter."""
    from recstudio_edge.edge.onnx_export import export_edge_models

    model = small_pinrec()
    out = tmp_path_factory.mktemp("edge_export")
    return model, export_edge_models(model, out, exporter="torchscript", config={"seed": 1, "model": {"x": 1}})
