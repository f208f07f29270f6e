"""DLRM, DeepFM, DCNv2 and their layers: interactions against hand values, the FM identity, the cross
layer's formula, each model learning planted feature crosses that a first-order model cannot, the
device parts in ONNX equal to PyTorch, and the AUC-threshold stop in a plain Trainer."""
from __future__ import annotations

import itertools

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from recstudio_edge.config import ConfigError
from recstudio_edge.model.layers.interaction import (CatInteraction, CrossNetV2, DotInteraction,
                                                     FactorizationMachine, pair_index)


# ---- layers against hand values ------------------------------------------------------------------
def test_dot_interaction_is_the_strict_lower_triangle_of_inner_products_in_the_reference_order():
    dense = torch.tensor([[1.0, 0.0]])
    sparse = torch.tensor([[[0.0, 2.0], [3.0, 1.0]]])  # v0 = dense, v1, v2
    out = DotInteraction(3)(dense, sparse)
    # dense, then <v1,v0>=0, <v2,v0>=3, <v2,v1>=2
    assert out.tolist() == [[1.0, 0.0, 0.0, 3.0, 2.0]]
    # with the vectors themselves: (0,0) (1,0) (1,1) (2,0) (2,1) (2,2)
    out = DotInteraction(3, self_interaction=True)(dense, sparse)
    assert out.tolist() == [[1.0, 0.0, 1.0, 0.0, 4.0, 3.0, 2.0, 10.0]]
    assert DotInteraction(3).out_dim(2) == 5 and DotInteraction(27).num_pairs == 27 * 26 // 2  # Kaggle: 351
    # without a dense vector: the pairs of the sparse vectors only
    assert DotInteraction(2)(None, sparse).tolist() == [[2.0]]
    assert pair_index(3).tolist() == [3, 6, 7]
    with pytest.raises(ValueError, match="built for 3 vectors, got 2"):
        DotInteraction(3)(None, sparse)
    with pytest.raises(ValueError, match="no pair to take"):
        DotInteraction(1)


def test_dot_interaction_equals_a_loop_over_pairs_on_random_vectors():
    g = torch.Generator().manual_seed(0)
    dense, sparse = torch.randn(4, 3, generator=g), torch.randn(4, 5, 3, generator=g)
    t = torch.cat([dense.unsqueeze(1), sparse], 1)
    want = torch.stack([(t[:, i] * t[:, j]).sum(-1) for i in range(6) for j in range(i)], 1)
    torch.testing.assert_close(DotInteraction(6)(dense, sparse), torch.cat([dense, want], 1))
    assert CatInteraction()(dense, sparse).tolist() == torch.cat([dense, sparse.flatten(1)], 1).tolist()


def test_fm_second_order_identity_equals_the_explicit_pair_sum():
    v = torch.tensor([[[1.0], [2.0], [3.0]]])
    assert FactorizationMachine()(v).tolist() == [11.0]  # 1*2 + 1*3 + 2*3
    g = torch.Generator().manual_seed(1)
    v = torch.randn(6, 7, 4, generator=g, dtype=torch.float64)
    want = sum((v[:, i] * v[:, j]).sum(-1) for i, j in itertools.combinations(range(7), 2))
    torch.testing.assert_close(FactorizationMachine()(v), want)


def test_cross_layer_formula_full_low_rank_and_mixture():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    full = CrossNetV2(6, num_layers=2).double()
    with torch.no_grad():
        full.bias.copy_(torch.randn(2, 6, generator=g))
    x = x0
    for i in range(2):  # x_{l+1} = x0 * (W x_l + b) + x_l
        x = x0 * (x @ full.w[i].weight.T + full.bias[i]) + x
    torch.testing.assert_close(full(x0), x)
    # low rank = full rank with W = U V^T
    low = CrossNetV2(6, num_layers=2, low_rank=3).double()
    with torch.no_grad():
        low.bias.copy_(full.bias)
        for i in range(2):
            full.w[i].weight.copy_(low.u[i].weight @ low.v[i].weight)
    torch.testing.assert_close(low(x0), full(x0))
    assert sum(p.numel() for p in low.parameters()) == 2 * (2 * 6 * 3 + 6)
    # mixture: sum_e softmax(G x)_e * x0 * (U_e tanh(C_e tanh(V_e^T x)) + b) + x
    mix = CrossNetV2(6, num_layers=1, low_rank=3, num_experts=2).double()
    gate = torch.softmax(x0 @ mix.gate.weight.T, -1)
    want = x0.clone()
    for e in range(2):
        h = torch.tanh(torch.tanh(x0 @ mix.V[0, e]) @ mix.C[0, e])
        want = want + gate[:, e:e + 1] * x0 * (h @ mix.U[0, e] + mix.bias[0])
    torch.testing.assert_close(mix(x0), want)
    with pytest.raises(ValueError, match="mixture of 4 experts is a mixture of low-rank experts: set low_rank"):
        CrossNetV2(6, num_experts=4)


# ---- the models learn planted crosses -----------------------------------------------------------
# hand-made batches in FeatureArch's vocabulary (recstudio_edge.features): a dense feature of 2 values,
# identity ids a and c (table sizes from the data), b raw integers bounded by a mod op, and a genre
# sequence (ids stored plus one, 0 = padding) averaged into one slot
SPECS = [
    {"name": "dense", "type": "dense", "fields": ["d1", "d2"]},
    {"name": "a", "type": "sparse", "fields": ["a"]},
    {"name": "b", "type": "sparse", "fields": ["b"], "ops": [{"op": "mod", "value": 8}]},
    {"name": "c", "type": "sparse", "fields": ["c"]},
    {"name": "genre", "type": "sequence", "fields": ["genre"], "length": 3, "embedding": {"combiner": "mean"}},
]
SIZES = {"a": 8, "c": 8, "genre": 5}
TINY = {
    "DLRM": dict(embed_dim=8, dense_arch=[16, 8], over_arch=[32, 1]),
    "DLRM-cat": dict(embed_dim=8, dense_arch=[16, 8], over_arch=[32, 1], interaction="cat"),
    "DeepFM": dict(embed_dim=8, hidden=[32]),
    "DCNv2": dict(embed_dim=8, num_cross_layers=2, parallel_hidden=[32]),
    "DCNv2-mix": dict(embed_dim=8, structure="stacked", num_cross_layers=2, low_rank=4, num_experts=2,
                      stacked_hidden=[32]),
}


def build(name: str, **kw):
    from recstudio_edge.model import create_model

    torch.manual_seed(0)
    return create_model(name.split("-")[0], features=SPECS, feature_sizes=SIZES, num_users=0, num_items=0,
                        **{**TINY[name], **kw})


def planted(n: int, seed: int):
    """Rows whose label depends on the cross of ``a`` and ``b`` only (parity of a + b mod 8: every
    value of ``a`` or ``b`` alone is clicked half the time), plus noise: ``c``, the genres, 2 dense values."""
    g = torch.Generator().manual_seed(seed)
    batch = {"a": torch.randint(0, 8, (n,), generator=g), "b": torch.randint(0, 1000, (n,), generator=g),
             "c": torch.randint(0, 8, (n,), generator=g), "dense": torch.randn(n, 2, generator=g),
             "genre": torch.randint(0, 6, (n, 3), generator=g), "user_id": torch.randint(1, 20, (n,), generator=g)}
    s = 1.0 - 2.0 * ((batch["a"] + batch["b"] % 8) % 2).float()
    batch["label"] = (torch.rand(n, generator=g) < torch.sigmoid(2.5 * s)).float()
    return batch


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    ranks = torch.empty_like(scores)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit(model: nn.Module, train, steps: int = 250, batch: int = 256, lr: float = 0.01, seed: int = 0):
    """Adam on ``model.compute_loss`` (the towers' BCE) over random minibatches."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = train["label"].shape[0]
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        loss = model.compute_loss({k: v[idx] for k, v in train.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


class FirstOrderOnly(nn.Module):
    """Logistic regression on the same features (a FeatureArch of dim 1): what no cross can help."""

    def __init__(self):
        super().__init__()
        from recstudio_edge.features import FeatureArch

        self.arch = FeatureArch(SPECS, SIZES, dim=1)
        self.dense = nn.Linear(2, 1)

    def score(self, batch):
        dense, slots = self.arch(batch)
        return slots.sum((1, 2)) + self.dense(dense).squeeze(-1)

    def compute_loss(self, batch):
        return nn.functional.binary_cross_entropy_with_logits(self.score(batch), batch["label"])


def test_each_model_learns_planted_crosses_that_a_first_order_model_cannot():
    torch.set_num_threads(1)
    train, test = planted(6000, 0), planted(3000, 1)
    torch.manual_seed(0)
    base = auc(fit(FirstOrderOnly(), train).score(test).detach(), test["label"])
    assert base < 0.56, base  # the crosses are invisible to first-order terms
    bayes = auc(1.0 - 2.0 * ((test["a"] + test["b"] % 8) % 2).float(), test["label"])  # the planted score: 0.92
    for name in TINY:
        model = fit(build(name), train)
        with torch.no_grad():
            got = auc(model.score(test), test["label"])
        assert got > bayes - 0.02, (name, got, bayes, base)  # measured: within 0.005 of it for each


@pytest.mark.parametrize("name", list(TINY))
def test_the_device_part_in_onnx_equals_pytorch(name, tmp_path):
    """The whole network from the features' inputs (dense values, raw ids, the padded sequence) to the
    probability, exported and run in onnxruntime on valid inputs of several batch sizes."""
    from recstudio_edge.edge.onnx_export import export_part
    from recstudio_edge.edge.protocol import edge_parts_of

    model = build(name).eval()
    variant, part = edge_parts_of(model).first()
    assert variant == "edge" and part.input_names == ["dense", "a", "b", "c", "genre"]
    feed = planted(16, 3)
    with torch.no_grad():  # the part is the model: same probabilities on real rows
        torch.testing.assert_close(part(feed), model(feed))
    report = export_part(part, tmp_path / "edge.onnx", exporter="torchscript", model=model)
    assert report["max_abs_diff"] <= 1e-5 and len(report["checks"]) >= 2, report["checks"]
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: feed[n].numpy() for n in part.input_names})[0]
    np.testing.assert_allclose(got, model(feed).detach().numpy(), atol=1e-6)


def test_dlrm_kaggle_shapes_and_the_reference_initialisation():
    """The reference's Kaggle configuration on 13 dense and 26 hashed categorical features: 27
    vectors of 16 -> 351 pairs + 16 = 367 top-MLP inputs; MLP weights at the reference's spread."""
    from recstudio_edge.model import create_model

    specs = [{"name": "dense", "type": "dense", "fields": [f"I{i}" for i in range(1, 14)], "ops": [{"op": "log1p"}]}]
    specs += [{"name": f"C{i}", "type": "sparse", "fields": [f"C{i}"], "ops": [{"op": "hash", "buckets": 50}]}
              for i in range(1, 27)]
    torch.manual_seed(0)
    m = create_model("DLRM", features=specs, num_users=0, num_items=0)  # the constructor's network is the YAML's
    bottom, top = m.net.dense_arch, m.net.over_arch
    assert [l.in_features for l in bottom if isinstance(l, nn.Linear)] == [13, 512, 256, 64]
    assert [l.in_features for l in top if isinstance(l, nn.Linear)] == [367, 512, 256]
    assert isinstance(bottom[-1], nn.ReLU) and isinstance(top[-1], nn.Linear)  # the logit has no activation
    w = top[0].weight.detach()
    assert abs(float(w.std()) - (2 / (367 + 512)) ** 0.5) < 0.002
    assert abs(float(top[0].bias.detach().std()) - (1 / 512) ** 0.5) < 0.01
    # the C columns as the reader hands them over: already hashed into their 50 buckets
    batch = {"dense": torch.rand(4, 13) * 100, **{f"C{i}": torch.randint(0, 50, (4,)) for i in range(1, 27)}}
    assert m.score(batch).shape == (4,)


@pytest.mark.parametrize("name,kw,message", [
    ("DLRM", dict(dense_arch=[16, 4]), r"model.dense_arch \[16, 4\]: its last size must equal the embedding size 8"),
    ("DLRM", dict(over_arch=[32, 2]), r"model.over_arch \[32, 2\]: the top MLP's sizes, the last being 1"),
    ("DLRM", dict(interaction="dott"), "model.interaction 'dott': did you mean 'dot'"),
    ("DLRM-cat", dict(self_interaction=True), "self_interaction applies to interaction: dot"),
    ("DLRM", dict(dense_arch="16-x"), "model.dense_arch: layer sizes must be whole numbers, got '16-x'"),
    ("DCNv2", dict(structure="paralel"), "model.structure 'paralel': did you mean 'parallel'"),
    ("DCNv2", dict(num_experts=4), "a mixture of 4 experts is a mixture of low-rank experts: set low_rank"),
    ("DCNv2", dict(structure="stacked", stacked_hidden=[]), "model.stacked_hidden is empty"),
    ("DeepFM", dict(dropout=1.5), r"model.dropout must be in \[0, 1\), got 1.5"),
])
def test_model_config_mistakes_say_what_to_change(name, kw, message):
    with pytest.raises(ConfigError, match=message):
        build(name, **kw)


def test_a_model_without_features_or_with_mixed_dims_says_so():
    from recstudio_edge.model import create_model

    with pytest.raises(ConfigError, match="DLRM: no features: .*set data.features"):
        create_model("DLRM", num_users=0, num_items=0)
    mixed = [{**SPECS[1], "embedding": {"dim": 4}}, {**SPECS[3], "embedding": {"dim": 6}}]
    for name in ("DLRM", "DeepFM"):
        with pytest.raises(ConfigError, match=rf"{name}: every sparse feature needs the same embedding size .* "
                                              r"got sizes \[4, 6\]: set model.embed_dim"):
            create_model(name, features=mixed, feature_sizes=SIZES, embed_dim=None, num_users=0, num_items=0)
    # DCNv2 concatenates: mixed sizes are fine
    m = create_model("DCNv2", features=mixed, feature_sizes=SIZES, embed_dim=None, parallel_hidden=[8],
                     num_users=0, num_items=0)
    assert m.score({"a": torch.tensor([1, 2]), "c": torch.tensor([0, 3])}).shape == (2,)


# ---- AucStop -------------------------------------------------------------------------------------
class Scripted(pl.LightningModule):
    """Logs a scripted ``valid/auc`` per validation, and trains a single weight."""

    def __init__(self, aucs):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.aucs, self.validations = list(aucs), 0

    def training_step(self, batch, batch_idx):
        return (self.w - batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("valid/auc", self.aucs[min(self.validations, len(self.aucs) - 1)])
        self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader(n=8):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(n, 1)), batch_size=2)


def test_auc_stop_stops_a_plain_trainer_at_the_first_validation_reaching_the_threshold(tmp_path):
    from recstudio_edge.callbacks.auc_stop import AucStop

    def run(threshold, aucs, **trainer):
        stop = AucStop(threshold)
        model = Scripted(aucs)
        pl.Trainer(max_epochs=10, callbacks=[stop], logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                   num_sanity_val_steps=0, **trainer).fit(model, _loader(), _loader())
        return stop, model

    stop, model = run(0.8025, [0.70, 0.79, 0.8026, 0.81])
    assert model.validations == 3 and stop.reached["epoch"] == 2 and stop.reached["global_step"] == 12
    assert stop.reached["value"] == pytest.approx(0.8026)
    stop, model = run(0.9, [0.70, 0.79])  # never reached: all 10 epochs
    assert model.validations == 10 and stop.reached is None
    # inside an epoch (val_check_interval): stops after the step of the validation that reached it
    stop, model = run(0.75, [0.70, 0.79, 0.9], val_check_interval=2)
    assert model.validations == 2 and stop.reached["global_step"] == 4 and stop.reached["epoch"] == 0


def test_auc_stop_config_off_on_and_its_mistakes():
    from recstudio_edge.callbacks.auc_stop import AucStop, auc_stop_from_config
    from recstudio_edge.model.towers import TowerFree, TwoTower

    assert auc_stop_from_config({}, TowerFree) is None
    assert auc_stop_from_config({"auc_stop": {"threshold": None}}, TowerFree) is None
    cb = auc_stop_from_config({"auc_stop": {"threshold": 0.8025, "metric": "auc"}}, TowerFree)
    assert isinstance(cb, AucStop) and cb.key == "valid/auc" and cb.threshold == 0.8025
    assert AucStop(0.44, "logloss")._hit(0.43) and not AucStop(0.44, "logloss")._hit(0.45)
    for section, message in [
        ({"threshhold": 0.8}, "auc_stop: unknown key 'threshhold': did you mean 'threshold'"),
        ({"threshold": 0.8, "metric": "acu"}, "auc_stop.metric 'acu': did you mean 'auc'"),
        ({"threshold": 80}, r"auc_stop.threshold 80.0: an auc target is in \(0, 1\]"),
        ({"threshold": "high"}, "auc_stop.threshold must be a number, got 'high'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            auc_stop_from_config({"auc_stop": section}, TowerFree)
    with pytest.raises(ConfigError, match="TwoTower is not a CTR model"):
        auc_stop_from_config({"auc_stop": {"threshold": 0.8}}, TwoTower)


class Batches(torch.utils.data.Dataset):
    """Whole batches of a dict of tensors (DataLoader(batch_size=None))."""

    def __init__(self, data, batch_size: int):
        self.data, self.bs = data, batch_size

    def __len__(self):
        return (self.data["label"].shape[0] + self.bs - 1) // self.bs

    def __getitem__(self, i):
        return {k: v[i * self.bs:(i + 1) * self.bs] for k, v in self.data.items()}


def test_auc_stop_ends_a_dlrm_run_once_its_validation_auc_reaches_the_target(tmp_path):
    """A real CTR model in a plain Trainer: the Recommender's pointwise validation logs valid/auc,
    AucStop ends the run at the first epoch whose AUC reaches 0.85 (the planted data allow 0.92)."""
    from recstudio_edge.callbacks.auc_stop import AucStop

    torch.set_num_threads(1)
    model = build("DLRM")  # Adam 1e-3: at chance for a few epochs, then the cross is found (0.87 at epoch 6)
    stop = AucStop(0.85)
    trainer = pl.Trainer(max_epochs=30, callbacks=[stop], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, accelerator="cpu")
    loader = lambda d: torch.utils.data.DataLoader(Batches(d, 256), batch_size=None)  # noqa: E731
    trainer.fit(model, loader(planted(6000, 0)), loader(planted(2000, 1)))
    assert stop.reached is not None and stop.reached["value"] >= 0.85 and stop.reached["epoch"] >= 3
    assert trainer.current_epoch == stop.reached["epoch"] + 1 < 30  # stopped right after it
    assert model.last_metrics["valid"]["auc"] == pytest.approx(stop.reached["value"])


def test_the_dlrm_device_part_cuts_inside_the_top_mlp_for_split_inference():
    from recstudio_edge.edge.protocol import edge_parts_of

    model = build("DLRM").eval()
    _, part = edge_parts_of(model).first()
    assert part.module.stage_names() == ["classifier.0", "classifier.1", "classifier.2", "output"]
    device, cloud = part.module.split("classifier.2")
    feed = planted(8, 4)
    xs = [feed[n] for n in part.input_names]
    with torch.no_grad():
        cut = device(*xs)
        assert cut.shape == (8, 32)  # the top MLP's hidden layer goes over the network
        torch.testing.assert_close(cloud(cut), part.module(*xs))


def test_sparse_grad_updates_only_the_rows_looked_up_and_equals_dense_sgd():
    torch.set_num_threads(1)
    dense, sparse = build("DLRM", optimizer="sgd", lr=0.1), build("DLRM", optimizer="sgd", lr=0.1, sparse_grad=True)
    sparse.load_state_dict(dense.state_dict())
    batch = planted(64, 5)
    w0 = sparse.net.sparse_arch.table_weight("genre").detach().clone()
    for m in (dense, sparse):
        opt = m.configure_optimizers()
        m.compute_loss(batch).backward()
        opt.step()
    grads = [p.grad for p in sparse.net.sparse_arch.parameters()]
    assert grads and all(g.is_sparse for g in grads)
    for (k, a), b in zip(dense.state_dict().items(), sparse.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)  # the same SGD step
    # the genre table: the ids of the batch moved, the others did not
    moved = (sparse.net.sparse_arch.table_weight("genre") != w0).any(1).nonzero().flatten().tolist()
    assert moved == sorted(set(batch["genre"][batch["genre"] > 0].tolist()))
    for kw, message in [(dict(optimizer="adam"),
                         "train.optimizer 'adam' cannot take: use train.optimizer sgd or adagrad"),
                        (dict(optimizer="sgd", weight_decay=1e-4), "train.weight_decay must be 0")]:
        with pytest.raises(ConfigError, match=message):
            build("DeepFM", sparse_grad=True, **kw)


def test_sparse_grad_turns_dense_under_several_processes():
    """DDP's reducer all-reduces dense gradients only: with world_size > 1 setup() makes them dense."""
    from types import SimpleNamespace

    for world, want in ((1, True), (2, False)):
        m = build("DeepFM", optimizer="sgd", sparse_grad=True)
        m._trainer = SimpleNamespace(world_size=world)
        m.setup("fit")
        assert m.net.sparse_arch.sparse is want and m.net.first_order.arch.sparse is want


@pytest.mark.parametrize("name", ["DLRM", "DeepFM", "DCNv2"])
def test_each_yaml_builds_its_model_with_its_own_optimiser(name):
    """configs/model/<name>.yaml's model and train sections go together (DLRM's sparse gradients with
    its SGD), and the YAML's network is the constructor's default one."""
    from pathlib import Path

    import yaml

    from recstudio_edge.model import create_model, get_model_class
    from recstudio_edge.registry import constructor_params

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "model" / f"{name}.yaml").read_text())
    train = cfg["train"]
    m = create_model(name, features=SPECS, feature_sizes=SIZES, num_users=0, num_items=0, optimizer=train["optimizer"],
                     lr=train["lr"], **cfg["model"])
    assert m.score(planted(4, 0)).shape == (4,)
    params = constructor_params(get_model_class(name))
    for key, value in cfg["model"].items():
        if key != "sparse_grad":  # off by default: the default optimiser (adam) cannot take it
            default = params[key].default
            assert (list(default) if isinstance(default, tuple) else default) == value, (name, key)
