"""ECRec (recstudio_edge/model/edge/ecrec.py) and MemoryUpdate (recstudio_edge/callbacks/memory_update.py):
the release's bugs, the loss, learning on planted structure, the memory refresh and its checkpoint."""
from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from recstudio_edge.callbacks.memory_update import MemoryUpdate, memory_update_from_config, refresh_memory
from recstudio_edge.data.datamodule import RecDataModule
from recstudio_edge.data.formats import ecrec
from recstudio_edge.evaluation.metrics import auc as auc_score
from recstudio_edge.model.ctr.din import DIN
from recstudio_edge.model.edge.ecrec import ECRec, MemoryAttention
from recstudio_edge.wiring import connect

L, E = 30, 5


class InstantDIN(DIN):
    """The baseline: DIN on the instant (device) sequence alone."""

    data_format = "ecrec"

    def score(self, batch):
        return self.net(batch["item_id"], batch["edge_item_seq"])


def datamodule(num_users=150, per_user=30, seed=0):
    data = ecrec.generate(num_users=num_users, per_user=per_user, p_taste=0.3, seed=2024)
    cfg = {"name": "generated", "format": "auto", "max_seq_len": L, "edge_len": E, "neg_per_pos": 1,
           "eval_neg_per_pos": 1}
    dm = RecDataModule(cfg, "unused", "ctr", batch_size=256, eval_batch_size=2048, seed=seed, data_format="ecrec")
    dm.data, dm.source = data, ecrec.from_interactions(data, dm.cfg, seed)
    dm.setup()
    return dm


def trainer(epochs, callbacks=(), root=None):
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=root is not None,
                      default_root_dir=root, enable_progress_bar=False, enable_model_summary=False,
                      use_distributed_sampler=False, num_sanity_val_steps=0, callbacks=list(callbacks))


def tiny(**kw):
    torch.manual_seed(0)
    return ECRec(num_users=6, num_items=20, num_cates=5, edge_len=3, max_seq_len=7, **kw)


def tiny_batch(B=5):
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, 20, (B, 7), generator=g)
    seq[0, :3] = 0
    edge = seq[:, -3:]
    return {"user_id": torch.arange(1, B + 1), "item_id": torch.randint(1, 20, (B,), generator=g),
            "cate_id": torch.randint(1, 5, (B,), generator=g), "item_seq": seq, "cate_seq": seq % 4 + 1,
            "edge_item_seq": edge, "edge_cate_seq": edge % 4 + 1, "seq_len": (seq != 0).sum(1),
            "label": (torch.arange(B) % 2).float()}


# ---- the release's bugs -----------------------------------------------------------------------------
def test_attention_is_scaled_once_by_sqrt_dh():
    torch.manual_seed(0)
    att = MemoryAttention(8, 2)
    q, keys = torch.randn(3, 8), torch.randn(3, 4, 8)
    keep = torch.ones(3, 4, dtype=torch.bool)
    Q = att.q(q).view(3, 2, 4)
    K, V = att.k(keys).view(3, 4, 2, 4), att.v(keys).view(3, 4, 2, 4)
    logits = torch.einsum("bhd,bnhd->bhn", Q, K)

    def out(scale):
        w = torch.softmax(logits / scale, -1)
        return att.o(torch.einsum("bhn,bnhd->bhd", w, V).reshape(3, 8)) + q

    got = att(q, keys, keep)
    torch.testing.assert_close(got, out(math.sqrt(4)))
    assert not torch.allclose(got, out(4.0), atol=1e-4)  # the release: / sqrt(d_h) twice = / d_h


def test_the_k_passes_start_from_the_same_memory():
    m = tiny(K=3, drop_rate=0.5).eval()  # eval: batch norm by running statistics, so passes compare row by row
    b = tiny_batch()
    masks = m.pass_masks(b["item_seq"], torch.Generator().manual_seed(3))
    together = m.pass_logits(b, masks)
    for k in range(3):  # each pass alone, from the trained memory: the release fed pass k-1's output to pass k
        torch.testing.assert_close(together[k], m.cloud_logit(b, masks[k]))
    assert not torch.allclose(together[0], together[1])  # the masks differ, so do the passes


def test_the_gate_reads_normalised_lengths():
    m = tiny()
    f = m.net.features
    x = f.gate_input(torch.tensor([7, 3, 0, 100]), torch.tensor([[1, 2, 3], [0, 2, 3], [0, 0, 0], [4, 5, 6]]))
    assert x.min() >= 0 and x.max() <= 1  # the release fed the raw seq_len (here 100)
    torch.testing.assert_close(x[:, 0], torch.tensor([1.0, 3 / 7, 0.0, 1.0]))
    torch.testing.assert_close(x[:, 1], torch.tensor([1.0, 2 / 3, 0.0, 1.0]))


def test_loss_is_k_cross_entropies_plus_the_consistency_term():
    b = tiny_batch()
    m = tiny(K=4, drop_rate=0.0).train()  # nothing masked: four equal passes, no inconsistency
    with torch.no_grad():
        ce = torch.nn.functional.binary_cross_entropy_with_logits(m.cloud_logit(b), b["label"])
        torch.testing.assert_close(m.compute_loss(b), 4 * ce)
    m = tiny(K=4, drop_rate=0.5, consistency=10.0).train()
    with torch.no_grad():
        torch.manual_seed(5)
        with_c = m.compute_loss(b)
        m.consistency = 0.0
        torch.manual_seed(5)
        assert float(with_c) > float(m.compute_loss(b))


@pytest.mark.parametrize("product", [False, True])
def test_the_device_part_takes_no_long_sequence(product):
    m = tiny(product=product)
    parts = m.edge_parts()
    dev = parts.device["edge"]
    assert "item_seq" not in dev.input_names and "cate_seq" not in dev.input_names
    assert dev.input_names[0] == "memory" and parts.cloud.output_names == ["memory"]
    b = tiny_batch()
    m.eval()
    feed = dict(b, memory=parts.cloud(b))
    torch.testing.assert_close(dev(feed), m(b))  # cloud writer + device part = the cloud model


# ---- learning, the memory refresh ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    dm = datamodule()
    torch.manual_seed(0)
    model = ECRec(**dm.model_args(), max_seq_len=L, lr=0.005)
    root = tmp_path_factory.mktemp("ecrec")
    cb = MemoryUpdate(batch_size=1000)
    tr = trainer(3, [cb], str(root))
    connect(model, dm, tr)
    before = model.memory.clone()
    model.serve = "cloud"
    tr.fit(model, datamodule=dm)
    return dm, model, tr, cb, before


def test_memory_update_writes_the_memory_and_into_the_best_checkpoint(trained):
    dm, model, tr, cb, before = trained
    assert model.memory_is_written and cb.refreshed == "fit end"
    assert not torch.equal(model.memory, before)
    best = tr.checkpoint_callback.best_model_path
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    torch.testing.assert_close(state["memory"], model.memory)
    assert float(state["memory_state"]) == 1.0
    # the memory written is the aggregate of each user's latest training row
    rows = dm.builder.train("ctr")
    b = rows[((0, 0, 0), torch.arange(len(rows)))]
    u = 7
    mine = torch.nonzero(b["user_id"] == u).flatten()
    latest = mine[b["seq_len"][mine].argmax()]
    model.eval()
    with torch.no_grad():
        want = model.net.writer(b["user_id"][latest:latest + 1], b["item_seq"][latest:latest + 1],
                                b["cate_seq"][latest:latest + 1])
    torch.testing.assert_close(model.memory[u], want[0])
    # resumable: the callback's state travels in checkpoints
    again = MemoryUpdate()
    again.load_state_dict(cb.state_dict())
    assert again.refreshed == "fit end"


def test_refreshed_memory_beats_the_memory_as_trained_and_the_baselines(trained):
    dm, model, tr, _, _ = trained
    aucs = {}
    for serve in ("cloud", "device", "device_trained"):
        model.serve = serve
        tr.test(model, datamodule=dm, verbose=False)
        aucs[serve] = model.last_metrics["test"]["auc"]
    model.serve = "auto"
    assert aucs["device"] > aucs["device_trained"] + 0.003, aucs
    assert abs(aucs["device"] - aucs["cloud"]) < 0.01, aucs
    # the baselines on the same rows: popularity, and a DIN on the instant sequence alone
    test = dm.eval_dataset("test")
    b = test[torch.arange(len(test))]
    pop = auc_score(dm.item_counts().float()[b["item_id"]], b["label"])
    torch.manual_seed(0)
    din = InstantDIN(num_items=dm.num_items, embed_dim=16, lr=0.005, max_seq_len=E)
    t2 = trainer(3)
    connect(din, dm, t2)
    t2.fit(din, datamodule=dm)
    t2.test(din, datamodule=dm, verbose=False)
    assert aucs["device"] > din.last_metrics["test"]["auc"] + 0.05 and aucs["device"] > pop + 0.05, (aucs, pop)


def test_memory_update_every_n_epochs_and_its_state_in_checkpoints(trained):
    _, _, tr, _, _ = trained
    state = torch.load(tr.checkpoint_callback.best_model_path, map_location="cpu", weights_only=True)
    assert any("MemoryUpdate" in k for k in state.get("callbacks", {}))  # restored on --resume
    dm = datamodule(num_users=20, per_user=12)
    torch.manual_seed(0)
    model = ECRec(**dm.model_args(), max_seq_len=L, lr=0.005)
    cb = MemoryUpdate(every_n_epochs=1, batch_size=64)
    t = trainer(2, [cb])
    connect(model, dm, t)
    t.fit(model, datamodule=dm)
    assert cb.epochs_written == [0, 1] and cb.refreshed == "fit end" and model.memory_is_written


def test_memory_update_needs_a_memory_and_is_switched_by_config():
    with pytest.raises(TypeError, match="memory_tables"):
        refresh_memory(DIN(num_items=5), None)
    assert memory_update_from_config({"memory_update": {"enabled": True}}, DIN) is None
    assert memory_update_from_config({"memory_update": {"enabled": False}}, ECRec) is None
    cb = memory_update_from_config({"memory_update": {"enabled": True, "every_n_epochs": 2}}, ECRec)
    assert isinstance(cb, MemoryUpdate) and cb.every_n_epochs == 2
