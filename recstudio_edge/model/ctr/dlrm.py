"""DLRM (Naumov et al., 2019), from named parts as torchrec's ``DLRM``.

``DLRMNet(sparse_arch, dense_arch, interaction, over_arch)``:

- ``sparse_arch``: the feature pipeline (``recstudio_edge.features.FeatureArch``): a batch ->
  ``(dense [B, Dd], slots [B, F, D])``, the raw dense features and one embedding per sparse feature;
- ``dense_arch``: the bottom MLP on the dense features, ``Dd -> ... -> D`` (ReLU after every layer,
  as the reference's ``--arch-mlp-bot``); ``None`` when the data has no dense feature;
- ``interaction``: ``dot`` (pairwise inner products of the bottom MLP's output and the F
  embeddings, the reference's strict triangle; ``self_interaction`` adds each vector with itself)
  or ``cat`` (``layers.interaction``);
- ``over_arch``: the top MLP, ReLU between layers, its last layer the logit (the reference's
  sigmoid is in the loss: BCE with logits).

MLP weights start as the reference's (``W ~ N(0, sqrt(2 / (fan_in + fan_out)))``,
``b ~ N(0, sqrt(1 / fan_out))``); the embeddings as ``data.features`` says.
``configs/model/DLRM.yaml`` is the reference's Criteo Kaggle configuration, with its sparse
embedding gradients (``sparse_grad``: each SGD step updates only the rows the batch looked up; 26
tables of 200k rows x 16, batch 128, one thread: 5.6 ms per step instead of 48.8 ms).

On-device part (``edge_parts``): the whole network, ``"edge"``, from the feature pipeline's
inputs (``sparse_arch.input_specs()``) to the click probability, as ``EdgeStages``
``features`` (embeddings, bottom MLP, interaction) -> ``classifier`` (the top MLP) -> ``output``,
so split inference can cut at any top-MLP layer.
"""
from __future__ import annotations

import copy
from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from ...config import ConfigError
from ...edge.modules import EdgeStages, Probability
from ...edge.protocol import EdgeParts, Part, probability
from ...registry import register_model
from ..layers import MLP
from ..layers.interaction import INTERACTIONS, CatInteraction, DotInteraction
from ..towers import TowerFree

INTERACTION_NAMES = tuple(INTERACTIONS)  # dot, cat


def reference_init_(mlp: nn.Module, generator: Optional[torch.Generator] = None) -> nn.Module:
    """The reference DLRM's MLP initialisation, in place: every ``Linear(n -> m)`` gets
    ``W ~ N(0, sqrt(2 / (m + n)))`` and ``b ~ N(0, sqrt(1 / m))``."""
    with torch.no_grad():
        for layer in mlp.modules():
            if isinstance(layer, nn.Linear):
                m, n = layer.weight.shape
                layer.weight.normal_(0.0, (2.0 / (m + n)) ** 0.5, generator=generator)
                if layer.bias is not None:
                    layer.bias.normal_(0.0, (1.0 / m) ** 0.5, generator=generator)
    return mlp


class BatchOf(nn.Module):
    """``forward(*tensors)`` -> ``inner({name: tensor})``: a batch-dict module as one that takes
    its inputs positionally, in ``names`` order (how an exported graph is called)."""

    def __init__(self, names: Sequence[str], inner: nn.Module):
        super().__init__()
        self.names = list(names)
        self.inner = inner

    def forward(self, *tensors: torch.Tensor):
        return self.inner(dict(zip(self.names, tensors)))


SPARSE_OPTIMIZERS = ("sgd", "adagrad")  # torch's optimisers that take sparse gradients


def feature_arch(features, feature_sizes: Optional[Mapping[str, int]], dim: Optional[int], where: str,
                 sparse: bool = False):
    """A ``FeatureArch`` of ``data.features`` (a ``features.FeatureError`` names the feature, op and key);
    ``sparse``: the tables get sparse gradients (only the rows a batch looks up are updated)."""
    from ...features import FeatureArch

    if not features:
        raise ConfigError(f"{where}: no features: the model scores the rows' features, set data.features "
                          f"(a list of feature specs, docs/features.md) or use a CTR dataset that declares them")
    return FeatureArch(list(features), sizes=dict(feature_sizes or {}), dim=None if dim is None else int(dim),
                       sparse=bool(sparse))


def check_sparse_grad(model, sparse_grad: bool) -> None:
    """``model.sparse_grad`` needs an optimiser that takes sparse gradients, without weight decay."""
    if not sparse_grad:
        return
    if model.optimizer_name not in SPARSE_OPTIMIZERS:
        raise ConfigError(f"model.sparse_grad: true gives the embedding tables sparse gradients, which "
                          f"train.optimizer {model.optimizer_name!r} cannot take: use train.optimizer sgd or "
                          f"adagrad, or set model.sparse_grad=false")
    if model.weight_decay:
        raise ConfigError(f"model.sparse_grad: true: train.weight_decay must be 0 (torch applies no weight decay "
                          f"to sparse gradients), got {model.weight_decay}; or set model.sparse_grad=false")


def hidden_sizes(value, key: str) -> list:
    """A list of layer sizes from YAML (``[512, 256]`` or ``"512-256"``, the reference's spelling)."""
    if isinstance(value, str):
        parts = [p for p in value.replace(",", "-").split("-") if p.strip()]
    else:
        parts = list(value or [])
    try:
        sizes = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ConfigError(f"model.{key}: layer sizes must be whole numbers, got {value!r}") from None
    if any(s < 1 for s in sizes):
        raise ConfigError(f"model.{key}: layer sizes must be >= 1, got {sizes}")
    return sizes


def dense_grads_under_ddp(model) -> None:
    """Called from the models' ``setup``: with more than one process (DDP), the tables' sparse
    gradients become dense (torch's DDP reducer all-reduces dense gradient buckets and fails on a
    sparse one); one process keeps ``model.sparse_grad``."""
    from ..fastloop import attached_trainer

    trainer = attached_trainer(model)
    if trainer is None or trainer.world_size <= 1:
        return
    archs = [m for m in model.modules() if getattr(m, "sparse", False) is True and hasattr(m, "input_specs")]
    for arch in archs:
        arch.sparse = False
    if archs and getattr(trainer, "global_rank", 0) == 0:
        import logging

        logging.getLogger(__name__).info(f"model.sparse_grad: {trainer.world_size} processes: the embedding tables "
                                         f"train with dense gradients (DDP all-reduces dense gradients only)")


class DLRMFeatures(nn.Module):
    """Embeddings, bottom MLP and interaction: a batch -> the top MLP's input ``[B, out_dim]``."""

    def __init__(self, sparse_arch: nn.Module, dense_arch: Optional[nn.Module], interaction: nn.Module):
        super().__init__()
        self.sparse_arch, self.dense_arch, self.interaction = sparse_arch, dense_arch, interaction

    def forward(self, batch) -> torch.Tensor:
        dense, slots = self.sparse_arch(batch)
        return self.interact(dense, slots)

    def interact(self, dense: Optional[torch.Tensor], slots: torch.Tensor) -> torch.Tensor:
        d = self.dense_arch(dense) if self.dense_arch is not None else None
        return self.interaction(d, slots)


class DLRMNet(nn.Module):
    """DLRM as a plain module of named parts (module docstring); ``forward(batch) -> logits [B]``."""

    def __init__(self, sparse_arch: nn.Module, dense_arch: Optional[nn.Module], interaction: nn.Module,
                 over_arch: nn.Module):
        super().__init__()
        self.features = DLRMFeatures(sparse_arch, dense_arch, interaction)
        self.over_arch = over_arch

    @property
    def sparse_arch(self):
        return self.features.sparse_arch

    @property
    def dense_arch(self):
        return self.features.dense_arch

    @property
    def interaction(self):
        return self.features.interaction

    def forward(self, batch) -> torch.Tensor:
        return self.over_arch(self.features(batch)).squeeze(-1)

    def forward_tensors(self, dense: Optional[torch.Tensor], slots: torch.Tensor) -> torch.Tensor:
        """Logits from the sparse arch's outputs (the network after the embeddings)."""
        return self.over_arch(self.features.interact(dense, slots)).squeeze(-1)


def build_dlrm(sparse_arch: nn.Module, dense_dim: int, num_slots: int, slot_dims: Sequence[int],
               dense_arch: Sequence[int], over_arch: Sequence[int], interaction: str = "dot",
               self_interaction: bool = False, init: str = "reference",
               generator: Optional[torch.Generator] = None) -> DLRMNet:
    """A ``DLRMNet`` on a sparse arch with ``dense_dim`` dense inputs and ``num_slots`` embeddings of
    ``slot_dims``: the sizes are checked here, with what to change."""
    interaction = str(interaction).lower()
    if interaction not in INTERACTION_NAMES:
        from ...names import did_you_mean

        raise ConfigError(f"model.interaction {interaction!r}: {did_you_mean(interaction, INTERACTION_NAMES)}")
    if init not in ("reference", "torch"):
        raise ConfigError(f"model.init {init!r}: 'reference' (the reference DLRM's normal initialisation) or "
                          f"'torch' (nn.Linear's default)")
    dims = sorted(set(int(d) for d in slot_dims))
    if num_slots < 1:
        raise ConfigError("DLRM: the features give no sparse (embedded) feature; DLRM interacts embeddings")
    if len(dims) != 1:
        raise ConfigError(f"DLRM: every sparse feature needs the same embedding size (the interaction stacks "
                          f"them), got sizes {dims}: set model.embed_dim")
    D = dims[0]
    dense_arch, over_arch = list(dense_arch), list(over_arch)
    bottom = None
    if dense_dim > 0:
        if not dense_arch:
            raise ConfigError(f"model.dense_arch is empty but the features give {dense_dim} dense values: "
                              f"give the bottom MLP's sizes, the last = the embedding size {D}")
        if interaction == "dot" and dense_arch[-1] != D:
            raise ConfigError(f"model.dense_arch {dense_arch}: its last size must equal the embedding size {D} "
                              f"(the dot interaction takes inner products of the bottom MLP's output with "
                              f"the embeddings)")
        bottom = MLP(int(dense_dim), dense_arch, activation="relu", last_activation=True)
    if not over_arch or over_arch[-1] != 1:
        raise ConfigError(f"model.over_arch {over_arch}: the top MLP's sizes, the last being 1 (the logit)")
    if interaction == "dot":
        inter = DotInteraction(num_slots + (1 if bottom is not None else 0), self_interaction=bool(self_interaction))
        in_dim = inter.out_dim(dense_arch[-1] if bottom is not None else 0)
    else:
        if self_interaction:
            raise ConfigError("model.self_interaction applies to interaction: dot (a vector's inner product "
                              "with itself); cat has no pairs")
        inter = CatInteraction()
        in_dim = (dense_arch[-1] if bottom is not None else 0) + num_slots * D
    top = MLP(in_dim, over_arch, activation="relu", last_activation=False)
    if init == "reference":
        for mlp in (bottom, top):
            if mlp is not None:
                reference_init_(mlp, generator)
    return DLRMNet(sparse_arch, bottom, inter, top)


def edge_part_of(sparse_arch, module: nn.Module) -> Part:
    """The device part of a CTR model: the feature pipeline's inputs -> click probability."""
    specs = tuple(sparse_arch.input_specs())
    return Part(module, inputs=specs, outputs=(probability(),))


class FeatureTower(TowerFree):
    """What the CTR towers on the feature pipeline share (DLRM, DeepFM, DCNv2): rows of the ``ctr``
    source, ``self.net(batch) -> logits`` with a ``sparse_arch``, dense gradients under DDP, and one
    device model ``"edge"`` made of the stages ``edge_stages(net, names)`` names (a snapshot of the
    network on the CPU, the feature pipeline's inputs in ``names`` order -> probability)."""

    data_kind = "ctr"
    data_format = "ctr"

    def setup(self, stage: str) -> None:
        dense_grads_under_ddp(self)

    def score(self, batch):
        return self.net(batch)

    def edge_stages(self, net: nn.Module, names: Sequence[str]) -> dict:  # pragma: no cover - per model
        raise NotImplementedError

    def edge_parts(self) -> EdgeParts:
        """One device model, ``"edge"``: the whole network with a probability output (a snapshot)."""
        net = copy.deepcopy(self.net).cpu()
        names = [s.name for s in net.sparse_arch.input_specs()]
        module = EdgeStages(**self.edge_stages(net, names), output=Probability()).eval()
        return EdgeParts(device={"edge": edge_part_of(net.sparse_arch, module)})


@register_model
class DLRM(FeatureTower):
    """DLRM on the rows' features (``data.features``); the data's facts come from the ``ctr`` source."""


    def __init__(self, features: list = (), feature_sizes: Optional[dict] = None, embed_dim: Optional[int] = 16,
                 dense_arch: Sequence[int] = (512, 256, 64, 16), over_arch: Sequence[int] = (512, 256, 1),
                 interaction: str = "dot", self_interaction: bool = False, init: str = "reference",
                 sparse_grad: bool = False, **base):
        base.setdefault("num_users", 0)
        base.setdefault("num_items", 0)
        super().__init__(**base)
        check_sparse_grad(self, sparse_grad)
        arch = feature_arch(features, feature_sizes, embed_dim, "DLRM", sparse_grad)
        self.net = build_dlrm(arch, int(arch.dense_dim), int(arch.num_slots), list(arch.slot_dims),
                              hidden_sizes(dense_arch, "dense_arch"), hidden_sizes(over_arch, "over_arch"),
                              interaction, self_interaction, init)

    def edge_stages(self, net, names) -> dict:
        return {"features": BatchOf(names, net.features), "classifier": net.over_arch}
