"""One parametrised sweep over every registered model: it builds from the registry, trains a
step, evaluates, and a checkpoint reloads to the same scores."""
from __future__ import annotations

import math

import pytest
import torch

from recstudio_edge.model import create_model, get_model_class, list_models
from recstudio_edge.data.datamodule import RecDataModule
from recstudio_edge.edge.protocol import has_edge_part
from recstudio_edge.wiring import connect

DATA = {"name": "synthetic", "format": "auto", "generator": {"num_users": 120, "num_items": 80,
                                                            "mean_per_user": 20, "min_per_user": 6},
        "split": {"mode": "loo", "ratios": [0.8, 0.1, 0.1], "order": "random"}, "max_seq_len": 12,
        "neg_per_pos": 1, "eval_neg_per_pos": 3, "cache": False}


@pytest.fixture(scope="module")
def datamodules(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cache = {}

    def get(cls):
        """The data module of a model class: its data kind, built by its seed format when it has one
        (``data_format``: the same synthetic interactions turned into ECRec / CIGAR ... samples)."""
        key = (cls.data_kind, getattr(cls, "data_format", None))
        if key not in cache:
            dm = RecDataModule(DATA, root, cls.data_kind, batch_size=64, eval_batch_size=50, seed=1,
                               data_format=key[1])
            dm.setup()
            cache[key] = dm
        return cache[key]

    return get


def test_registry_lists_the_foundation_models():
    assert {"BPR", "Pop", "GRU4Rec", "SASRec", "DIN"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_model_trains_evaluates_and_reloads(name, datamodules):
    import lightning.pytorch as pl

    cls = get_model_class(name)
    dm = datamodules(cls)
    torch.manual_seed(0)
    model = create_model(name, **dm.model_args(), max_seq_len=12, topk=[5, 10])
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         use_distributed_sampler=False, num_sanity_val_steps=0)
    if cls.closed_form:
        model.fit_closed_form(dm)
        trainer.validate(model, datamodule=dm, verbose=False)
    else:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        connect(model, dm, trainer)
        trainer.fit(model, datamodule=dm)
        changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point
                   and not torch.equal(v, before[k])]
        assert changed, "no parameter moved after three training steps"
    valid = model.last_metrics["valid"]
    expected = {"pointwise": ["auc", "gauc", "logloss"], "ranking": ["recall@5", "ndcg@10", "hit@10"]}.get(
        cls.eval_kind, list(cls.metric_keys))
    assert expected, f"{name}: eval_kind {cls.eval_kind!r} declares no metric_keys"
    for key in expected:
        assert key in valid and math.isfinite(valid[key]), (key, valid)

    # the state dict alone (what a checkpoint holds) rebuilds the same scores
    model.eval()
    batch = dm.eval_dataset("test")[torch.arange(8)]
    fresh = create_model(name, **dm.model_args(), max_seq_len=12, topk=[5, 10])
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.no_grad():
        a, b = (m.full_scores(batch) if cls.eval_kind == "ranking" else m(batch) for m in (model, fresh))
    torch.testing.assert_close(a, b)


EDGE_MODELS = [m for m in list_models() if has_edge_part(get_model_class(m))]


def test_the_edge_sweep_covers_the_device_cloud_models():
    assert {"DIN", "PINRec"} <= set(EDGE_MODELS)


@pytest.mark.parametrize("name", EDGE_MODELS)
def test_edge_part_exports_and_serves_without_torch(name, datamodules, tmp_path):
    """Every model with an on-device part (``edge_parts()``) exports as ``--task=export`` does
    (default exporter, sidecar, parity check against PyTorch), and the torch-free runtime serves
    a real evaluation batch (its fields are the ONNX input names) with PyTorch's outputs; the list
    is taken from the registry, so a new model with ``edge_parts`` joins it. One variant per
    model (PINRec: the first group) keeps it short."""
    cls = get_model_class(name)
    from recstudio_edge.edge.onnx_export import export_edge_models
    from recstudio_edge.edge.protocol import edge_parts_of
    from recstudio_edge.edge.runtime import EdgeRouter

    dm = datamodules(cls)
    torch.manual_seed(0)
    model = create_model(name, **dm.model_args(), max_seq_len=12, topk=[5, 10]).eval()
    variant, part = edge_parts_of(model).first()
    reports = export_edge_models(model, tmp_path, variants=[variant])
    (report,) = reports.values()
    assert report["max_abs_diff"] <= 1e-4 and len(report["checks"]) >= 2
    router = EdgeRouter([report["path"]])
    batch = dm.eval_dataset("test")[torch.arange(8)]
    names = part.input_names
    from recstudio_edge.infer import _cloud_feed

    batch = _cloud_feed(edge_parts_of(model), batch)  # device inputs the rows lack: from the cloud part
    feed = {n: batch[n] for n in names} if set(names) <= set(batch) else part.example_inputs(8)
    feed.update({k: torch.full((8,), int(v)) for k, v in part.rows.items()})  # rows of the variant's kind
    with torch.no_grad():
        want = part(feed)
    got = router.predict({n: v.numpy() for n, v in feed.items()})
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)
