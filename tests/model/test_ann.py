"""``model.ann``: faiss top-k in evaluation and inference. Flat is the exact masked full sort,
IVF/HNSW recall well, masking is honoured, results are torch tensors, the MLP scorer is refused."""
from __future__ import annotations

import faiss  # noqa: F401 - a requirement (requirements.txt): a missing faiss fails here, it is not skipped
import pytest
import torch

from recstudio_edge.model import create_model
from tests.conftest import synthetic_datamodule
from recstudio_edge.wiring import connect

NU, NI, D = 64, 400, 16


def clustered(n, d, centers=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, d, generator=g) * 2
    return c[torch.randint(0, centers, (n,), generator=g)] + torch.randn(n, d, generator=g) * 0.5


def model_with(ann=None, scorer="inner_product", seed=0, num_items=NI):
    torch.manual_seed(seed)
    m = create_model("BPR", num_users=NU, num_items=num_items, embed_dim=D, scorer=scorer, ann=ann, topk=[10])
    with torch.no_grad():
        m.item_emb.weight.copy_(clustered(num_items, D, seed=seed))
        m.user_emb.weight.copy_(clustered(NU, D, seed=seed + 1))
    return m.eval()


def eval_batch(num_masked=30, seed=0, num_items=NI):
    g = torch.Generator().manual_seed(seed)
    users = torch.arange(1, NU)
    rows = torch.arange(users.numel()).repeat_interleave(num_masked)
    cols = torch.randint(1, num_items, (rows.numel(),), generator=g)
    return {"user_id": users, "seq": torch.zeros(users.numel(), 1, dtype=torch.long),
            "seq_len": torch.zeros(users.numel(), dtype=torch.long), "mask_rows": rows, "mask_cols": cols}


def exact(model, batch, k):
    with torch.no_grad():
        return model.topk_items(batch, k)


@pytest.mark.parametrize("scorer", ["inner_product", "cosine", "euclidean"])
def test_flat_index_gives_the_exact_masked_topk(scorer):
    ref_model = model_with(None, scorer)
    ann_model = model_with({"index": "Flat"}, scorer)
    batch = eval_batch()
    s_ref, i_ref = exact(ref_model, batch, 20)
    s_ann, i_ann = ann_model.recommend(batch, 20)
    assert isinstance(i_ann, torch.Tensor) and i_ann.dtype == torch.long and i_ann.device == ann_model.device
    assert torch.equal(i_ann, i_ref)
    torch.testing.assert_close(s_ann, s_ref, atol=1e-4, rtol=1e-4)


def test_masking_is_honoured_even_when_it_removes_the_whole_true_topk():
    model = model_with({"index": "Flat"})
    batch = eval_batch(num_masked=0)
    with torch.no_grad():
        _, top = model_with(None).topk_items(batch, 40)
    # mask every user's 40 best items: the answer must be the next ones
    rows = torch.arange(top.size(0)).repeat_interleave(40)
    batch["mask_rows"], batch["mask_cols"] = rows, top.flatten()
    s, i = model.recommend(batch, 10)
    s_ref, i_ref = model_with(None).recommend(batch, 10)
    assert torch.equal(i, i_ref)
    for r in range(i.size(0)):
        assert not set(i[r].tolist()) & set(top[r].tolist())
    assert (i != 0).all()  # the padding item is never returned
    # and without exclusion the masked items come back
    _, i_all = model.recommend(batch, 10, exclude=False)
    assert torch.equal(i_all, top[:, :10])


@pytest.mark.parametrize("spec, floor", [({"index": "IVF16,Flat", "nprobe": 4}, 0.85),
                                          ({"index": "HNSW16", "efSearch": 256, "ip_to_l2": True}, 0.95)])
def test_approximate_indexes_recall_well(spec, floor):
    n = 3000
    model = model_with(spec, num_items=n)
    batch = eval_batch(num_items=n)
    _, approx = model.recommend(batch, 10)
    _, truth = model_with(None, num_items=n).recommend(batch, 10)
    recall = sum(len(set(a.tolist()) & set(t.tolist())) for a, t in zip(approx, truth)) / truth.numel()
    assert recall >= floor, recall
    if "IVF" in spec["index"]:  # probing every list is exact
        model.ann.search_params["nprobe"] = 16
        model.ann.vectors = None
        _, full = model.recommend(batch, 10)
        assert torch.equal(full, truth)


def test_evaluation_metrics_with_a_flat_index_equal_the_full_sort(tmp_path):
    import lightning.pytorch as pl

    dm = synthetic_datamodule(tmp_path, "mf", users=120, items=90, mean=15, split="user_entry", batch_size=256,
                              eval_batch_size=50, max_seq_len=10)
    results = []
    for ann in (None, {"index": "Flat"}):
        torch.manual_seed(0)
        m = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, ann=ann, topk=[5, 10], lr=0.05)
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
        connect(m, dm, trainer)
        trainer.fit(m, datamodule=dm)
        trainer.test(m, datamodule=dm, verbose=False)
        results.append((m.last_metrics["valid"], m.last_metrics["test"]))
    assert results[0][0]["recall@10"] > 0
    for a, b in zip(results[0], results[1]):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_index_is_rebuilt_when_the_item_tower_changes():
    model = model_with({"index": "Flat"})
    batch = eval_batch()
    _, before = model.recommend(batch, 10)
    with torch.no_grad():
        model.item_emb.weight.mul_(-1.0)  # in place, as an optimiser step
    _, after = model.recommend(batch, 10)
    ref = model_with(None)
    with torch.no_grad():
        ref.item_emb.weight.mul_(-1.0)
    _, truth = ref.recommend(batch, 10)
    assert not torch.equal(before, after)
    assert torch.equal(after, truth)


def test_mlp_scorer_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="scorer 'mlp' has no metric faiss can search"):
        create_model("BPR", num_users=NU, num_items=NI, scorer="mlp", ann={"index": "Flat"})


def test_bad_ann_settings_are_errors():
    with pytest.raises(ValueError, match="did you mean 'nprobe'"):
        model_with({"index": "IVF4,Flat", "nprob": 2})
    m = model_with({"index": "NotAnIndex"})
    with pytest.raises(ValueError, match="faiss cannot build it"):
        m.recommend(eval_batch(), 5)
    m = model_with({"index": "HNSW8", "nprobe": 4})
    with pytest.raises(ValueError, match="nprobe does not apply"):
        m.recommend(eval_batch(), 5)
    m = model_with({"index": "IVF1000,Flat"})
    with pytest.raises(ValueError, match="1000 lists for 399 items"):
        m.recommend(eval_batch(), 5)


def test_ann_key_from_the_command_line_reaches_the_model():
    from recstudio_edge.config import build_config
    from recstudio_edge.model import get_model_class
    from recstudio_edge.runner import build_model

    class DM:
        num_users, num_items = NU, NI

    cls = get_model_class("BPR")
    cfg = build_config("BPR", None, None, {"model.ann.index": "IVF8,Flat", "model.ann.nprobe": "3",
                                           "data.name": "x"}, model_cls=cls)
    model = build_model(cfg, cls, DM())
    assert model.ann.factory == "IVF8,Flat" and model.ann.search_params == {"nprobe": 3}


def test_evaluation_checks_the_index_once_per_epoch_not_per_batch(tmp_path, monkeypatch):
    import lightning.pytorch as pl

    from recstudio_edge.model.ann import AnnIndex

    dm = synthetic_datamodule(tmp_path, "mf", users=120, items=90, mean=15, split="user_entry", eval_batch_size=30)
    calls = []
    orig = AnnIndex.ensure
    monkeypatch.setattr(AnnIndex, "ensure", lambda self, *a, **k: (calls.append(1), orig(self, *a, **k))[1])
    m = create_model("BPR", num_users=dm.num_users, num_items=dm.num_items, ann={"index": "Flat"}, topk=[5, 10])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(m, datamodule=dm, verbose=False)
    assert len(dm.val_dataloader()) >= 3 and len(calls) == 1
    trainer.test(m, datamodule=dm, verbose=False)
    assert len(calls) == 2
    m.recommend(dm.eval_dataset("test")[torch.arange(4)], 5)  # outside a Trainer loop: checked at the call
    assert len(calls) == 3
