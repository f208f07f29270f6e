"""CIGAR and its ablations: PNN, CIGAR_WO_PN, CIGAR_WO_CDGNN (docs/models.md, "CIGAR").

One implementation, four registered variants (``VARIANTS``: whether the CD-GNN and the prototype
network are on). Rows come from the ``cigar`` format (``data/formats/cigar.py``): user features,
item features, one behaviour sequence per item feature, the user's neighbour list, a label.

Network. Every feature field has its own embedding table of ``kv_dimension`` (8) columns (0 =
padding); a sequence shares its item feature's table. ``item_vec`` = the item features'
embeddings side by side, ``seq_vec`` = the masked mean of the sequence embeddings (field by field),
``user_vec`` = the user features' embeddings. The prediction layer sees
``[user_vec, item_vec, seq_vec, item_vec * seq_vec]`` (+ ``gnn_vec`` with the CD-GNN); its sizes are
``dim_hidden`` ("128,64,1"), ReLU between layers.

- CD-GNN (CIGAR_WO_PN, CIGAR): per-user memory tables ``mem_0 .. mem_{K-1}``, buffers (no gradient),
  one per GNN layer (``K = len(gnn_layers)``). Layer ``k`` reads the neighbours' ``mem_k`` rows,
  ``h_k = masked mean over neighbours of Tanh(Linear_k(mem_k[neighbour]))`` (neighbours whose memory
  was never written count as absent), and ``gnn_vec = mean_k h_k``. Memory ``0`` is ``seq_vec``'s
  width (the release's ``gnn_layers`` "40" is 5 item fields x 8; we take the width from the data),
  memory ``k > 0`` is the width of ``gnn_layers[k]``, every layer outputs ``mem_dimension``.
- The memory write is a separate step, ``update_memory(batch)``: under ``torch.no_grad()`` it writes
  the batch users' ``seq_vec`` into ``mem_0`` and ``h_k`` into ``mem_{k+1}``; when a user occurs
  twice in a batch the later row wins; the values are those of the model before the batch's
  optimiser step (every read of the batch happens before the write). ``compute_loss`` calls it
  (training only) after the loss is formed; ``forward`` / ``score`` never write. So memories are a
  deterministic function of the data order, are saved in the checkpoint (buffers), and evaluation
  reads the memories as training left them.
- Prototype network (CIGAR_WO_CDGNN, CIGAR): ``prototype_num`` (5) prototypes; the cosine similarity of
  the normalised (detached) ``seq_vec`` to the normalised prototypes; training mixes prototypes with
  a gumbel-softmax (``tau`` 0.1), inference takes the most similar one (argmax). Similarity loss
  ``mean(1 - sum(e * sim))``, diversity loss ``sum over i != j of cos(p_i, p_j)``.
- Group prediction layer: the plain prediction layer's weights and biases, each scaled elementwise by
  ``Tanh(Linear(prototype))`` generated from the (detached) prototype: a per-group network sharing the
  plain layer's weights. Both paths are trained: loss ``2 x BCE(group) + BCE(plain) + 0.1 x diversity +
  similarity``; the group path scores. PNN / CIGAR_WO_PN: BCE of the plain path.

Fixed from the release: memories were written into ``emb.weight[...]`` inside ``forward`` (an
in-place write into an embedding table on the autograd graph, also at evaluation); every variant
built memory tables because ``model == 'CIGAR_WO_PN' or 'CIGAR'`` is always true (``uses_cdgnn``);
the classifier input counted ``gnn_layers[-1]`` columns for a GNN output of ``mem_dimension``; a
batch with a user twice wrote its memory in an undefined order; training reported a 512-row
sliding-window AUC (we evaluate AUC / GAUC / logloss on the whole valid and test splits).

On-device part (``edge_parts``): the user-feature embeddings and the prediction layer (for the PN
variants: the prototypes and each prototype's generated layer weights, computed once at export,
``PrototypeLayers``, since inference only ever uses a prototype itself), one variant ``"edge"``:
``(user_feat [B, Fu], item_vec [B, D], seq_vec [B, D][, gnn_vec [B, M]]) -> probability [B]``. The
cloud part computes ``item_vec``, ``seq_vec`` and ``gnn_vec`` from ``item_feat``, ``seq_feat`` and
``neighbors`` (the item tables and the memories stay on the cloud).
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...edge.protocol import EdgeParts, Part, TensorSpec, dense, probability
from ...registry import register_model
from ..layers import MLP
from ..towers import TowerFree

log = logging.getLogger(__name__)

# variant -> (CD-GNN, prototype network)
VARIANTS = {"PNN": (False, False), "CIGAR_WO_PN": (True, False), "CIGAR_WO_CDGNN": (False, True), "CIGAR": (True, True)}


def uses_cdgnn(variant: str) -> bool:
    """Whether ``variant`` has the CD-GNN (the release tested ``model == 'CIGAR_WO_PN' or 'CIGAR'``,
    true for every variant)."""
    return VARIANTS[variant][0]


def uses_prototypes(variant: str) -> bool:
    return VARIANTS[variant][1]


def _sizes(value, name: str) -> List[int]:
    parts = value if isinstance(value, (list, tuple)) else [p for p in str(value).split(",") if p.strip()]
    try:
        out = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"model.{name}: expected comma-separated sizes, got {value!r}") from None
    if not out or min(out) < 1:
        raise ValueError(f"model.{name}: expected sizes >= 1, got {value!r}")
    return out


class FieldEmbedding(nn.Module):
    """One ``nn.Embedding(vocab_k, dim, padding_idx=0)`` per field; ids at or beyond a field's vocabulary
    read as 0 (unknown = padding), so one value range serves every field of an input."""

    def __init__(self, vocab: Sequence[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(int(v), dim, padding_idx=0) for v in vocab)
        for t in self.tables:  # the release's N(0, dim^-1/2), padding row zero
            nn.init.normal_(t.weight, 0.0, float(dim) ** -0.5)
            with torch.no_grad():
                t.weight[0].zero_()
        self.dim = int(dim)

    def lookup(self, k: int, x: torch.Tensor) -> torch.Tensor:
        t = self.tables[k]
        return t(torch.where(x < t.num_embeddings, x, torch.zeros_like(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, F]`` -> ``[B, F * dim]``."""
        return torch.cat([self.lookup(k, x[:, k]) for k in range(len(self.tables))], -1)

    def mean_sequences(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq [B, F, L]`` (0 = padding, field 0's padding masks every field) -> masked means ``[B, F * dim]``."""
        mask = (seq[:, 0] != 0).unsqueeze(-1).to(self.tables[0].weight.dtype)  # [B, L, 1]
        n = mask.sum(1).clamp(min=1.0)
        return torch.cat([(self.lookup(k, seq[:, k]) * mask).sum(1) / n for k in range(len(self.tables))], -1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, K, D]`` averaged over the rows of ``mask [B, K]`` (zeros where none)."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class CDGNN(nn.Module):
    """The cross-device GNN: aggregation layers and the per-user memories they read (buffers)."""

    def __init__(self, num_users: int, dims: Sequence[int]):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.Tanh()) for a, b in zip(self.dims[:-1], self.dims[1:]))
        for layer in self.layers:
            nn.init.xavier_uniform_(layer[0].weight)
            nn.init.zeros_(layer[0].bias)
        for k, d in enumerate(self.dims[:-1]):
            self.register_buffer(f"mem_{k}", torch.zeros(int(num_users), d))
        self.register_buffer("mem_written", torch.zeros(int(num_users), dtype=torch.bool))

    def memories(self) -> List[torch.Tensor]:
        return [getattr(self, f"mem_{k}") for k in range(len(self.layers))]

    def layer_outputs(self, neighbors: torch.Tensor) -> List[torch.Tensor]:
        """``h_k [B, dims[k+1]]`` per layer from the neighbours' memories (read, never written here)."""
        nb = neighbors.clamp(min=0, max=self.mem_written.numel() - 1)
        mask = (neighbors != 0) & self.mem_written[nb]
        return [masked_mean(layer(mem[nb]), mask) for layer, mem in zip(self.layers, self.memories())]

    def forward(self, neighbors: torch.Tensor) -> torch.Tensor:
        outs = self.layer_outputs(neighbors)
        return torch.stack(outs, 0).mean(0)

    @torch.no_grad()
    def write(self, user_id: torch.Tensor, seq_vec: torch.Tensor, outs: Sequence[torch.Tensor]) -> None:
        """``mem_0[u] = seq_vec``, ``mem_{k+1}[u] = h_k``; a user twice in the batch: its later row wins."""
        n = user_id.numel()
        if n == 0:
            return
        pos = torch.arange(n, device=user_id.device)
        last = torch.full((self.mem_written.numel(),), -1, dtype=torch.long, device=user_id.device)
        last.scatter_reduce_(0, user_id, pos, reduce="amax")
        users = torch.unique(user_id)
        rows = last[users]
        values = [seq_vec, *outs[:len(self.layers) - 1]]
        for mem, v in zip(self.memories(), values):
            mem[users] = v.detach()[rows].to(mem.dtype)
        self.mem_written[users] = True


class PrototypeNet(nn.Module):
    """Prototypes and the choice of one per row: gumbel-softmax mix in training, argmax at inference."""

    def __init__(self, num: int, dim: int, tau: float = 0.1):
        super().__init__()
        self.prototypes = nn.Parameter(torch.empty(int(num), int(dim)))
        nn.init.xavier_uniform_(self.prototypes)
        self.tau = float(tau)

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine ``[B, P]`` of the (detached) rows to the prototypes (ONNX-friendly: sums and sqrt)."""
        x = x.detach()
        xn = x / (x * x).sum(-1, keepdim=True).sqrt().clamp(min=1e-12)
        p = self.prototypes
        pn = p / (p * p).sum(-1, keepdim=True).sqrt().clamp(min=1e-12)
        return xn @ pn.t(), pn

    def forward(self, x: torch.Tensor, train: bool):
        """``(prototype [B, D], similarity loss, diversity loss)`` (losses 0 at inference)."""
        sim, pn = self.similarity(x)
        if train:
            e = F.gumbel_softmax(sim, tau=self.tau)
            pt = e @ pn
            sim_loss = (1.0 - (e * sim).sum(-1)).mean()
            gram = pn @ pn.t()
            div_loss = gram.sum() - torch.diagonal(gram).sum()
            return pt, sim_loss, div_loss
        pt = pn[torch.argmax(sim, dim=-1)]
        zero = sim.new_zeros(())
        return pt, zero, zero

    def choose(self, x: torch.Tensor):
        """Inference: ``(normalised prototypes [P, D], the most similar one per row [B])``."""
        sim, pn = self.similarity(x)
        return pn, torch.argmax(sim, dim=-1)


class GroupHead(nn.Module):
    """The prediction layer (``plain``, an ``MLP``) and its group version: each layer's weight and bias
    scaled elementwise by ``Tanh(Linear(prototype))``."""

    def __init__(self, in_dim: int, hidden: Sequence[int], pt_dim: Optional[int]):
        super().__init__()
        self.plain = MLP(in_dim, list(hidden), activation="relu", last_activation=False)
        linears = [m for m in self.plain if isinstance(m, nn.Linear)]
        if pt_dim is None:
            self.gen_w = self.gen_b = None
        else:
            self.gen_w = nn.ModuleList(nn.Sequential(nn.Linear(pt_dim, l.out_features * l.in_features), nn.Tanh())
                                       for l in linears)
            self.gen_b = nn.ModuleList(nn.Sequential(nn.Linear(pt_dim, l.out_features), nn.Tanh()) for l in linears)

    def linears(self) -> List[nn.Linear]:
        return [m for m in self.plain if isinstance(m, nn.Linear)]

    def plain_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain(x).squeeze(-1)

    def group_logit(self, x: torch.Tensor, pt: torch.Tensor) -> torch.Tensor:
        h = x
        lins = self.linears()
        for i, (lin, gw, gb) in enumerate(zip(lins, self.gen_w, self.gen_b)):
            w = gw(pt).reshape(-1, lin.out_features, lin.in_features) * lin.weight.unsqueeze(0)
            b = gb(pt) * lin.bias.unsqueeze(0)
            h = torch.bmm(w, h.unsqueeze(-1)).squeeze(-1) + b
            if i < len(lins) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def chosen_logit(self, x: torch.Tensor, prototypes: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """``group_logit(x, prototypes[choice])`` computed once per prototype instead of once per row: every
        prototype's generated layers on every row (``P`` plain MLPs), then each row's own. Same numbers,
        a fraction of the time and memory at inference (no ``[B, out, in]`` weights)."""
        h = x.unsqueeze(0).expand(prototypes.shape[0], -1, -1)  # [P, B, in]
        lins = self.linears()
        for i, (lin, gw, gb) in enumerate(zip(lins, self.gen_w, self.gen_b)):
            w = gw(prototypes).reshape(-1, lin.out_features, lin.in_features) * lin.weight.unsqueeze(0)  # [P, out, in]
            b = gb(prototypes) * lin.bias.unsqueeze(0)  # [P, out]
            h = torch.bmm(h, w.transpose(1, 2)) + b.unsqueeze(1)
            if i < len(lins) - 1:
                h = torch.relu(h)
        every = h.squeeze(-1)  # [P, B]
        return torch.gather(every, 0, choice.unsqueeze(0)).squeeze(0)


class CIGARNet(nn.Module):
    """The whole network (the module docstring); ``vectors`` is the cloud side, ``head`` the device side."""

    def __init__(self, num_users: int, user_vocab, item_vocab, kv: int, gnn_dims: Optional[List[int]],
                 hidden: List[int], prototype_num: Optional[int], tau: float):
        super().__init__()
        self.user_emb = FieldEmbedding(user_vocab, kv)
        self.item_emb = FieldEmbedding(item_vocab, kv)
        d = len(item_vocab) * kv
        self.gnn = CDGNN(num_users, gnn_dims) if gnn_dims else None
        in_dim = len(user_vocab) * kv + 3 * d + (gnn_dims[-1] if gnn_dims else 0)
        self.pn = PrototypeNet(prototype_num, d, tau) if prototype_num else None
        self.head = GroupHead(in_dim, hidden, d if prototype_num else None)

    def vectors(self, item_feat, seq_feat, neighbors=None) -> Dict[str, torch.Tensor]:
        out = {"item_vec": self.item_emb(item_feat), "seq_vec": self.item_emb.mean_sequences(seq_feat)}
        if self.gnn is not None:
            out["gnn_outs"] = self.gnn.layer_outputs(neighbors)
            out["gnn_vec"] = torch.stack(out["gnn_outs"], 0).mean(0)
        return out

    def features(self, user_feat, item_vec, seq_vec, gnn_vec=None) -> torch.Tensor:
        parts = [self.user_emb(user_feat), item_vec, seq_vec, item_vec * seq_vec]
        if gnn_vec is not None:
            parts.append(gnn_vec)
        return torch.cat(parts, -1)


class PrototypeLayers(nn.Module):
    """The group prediction layer as inference uses it: the prototypes' generated weights computed once
    (``[P, out, in]`` per layer) instead of the generators (``prototype dim x out x in`` each), and the
    choice of the most similar prototype. Same output as ``GroupHead.chosen_logit``; for the device,
    ``prototype_num / (item fields x kv_dimension)`` of the generators' size."""

    def __init__(self, head: GroupHead, pn: PrototypeNet):
        super().__init__()
        with torch.no_grad():
            p = pn.prototypes
            self.register_buffer("prototypes", p / (p * p).sum(-1, keepdim=True).sqrt().clamp(min=1e-12))
            ws, bs = [], []
            for lin, gw, gb in zip(head.linears(), head.gen_w, head.gen_b):
                ws.append(nn.Parameter(gw(self.prototypes).reshape(-1, lin.out_features, lin.in_features)
                                       * lin.weight.unsqueeze(0)))
                bs.append(nn.Parameter((gb(self.prototypes) * lin.bias.unsqueeze(0)).unsqueeze(1)))
        self.weights, self.biases = nn.ParameterList(ws), nn.ParameterList(bs)

    def forward(self, x: torch.Tensor, seq_vec: torch.Tensor) -> torch.Tensor:
        s = seq_vec / (seq_vec * seq_vec).sum(-1, keepdim=True).sqrt().clamp(min=1e-12)
        choice = torch.argmax(s @ self.prototypes.t(), dim=-1)
        h = x.unsqueeze(0).expand(self.prototypes.shape[0], -1, -1)
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.bmm(h, w.transpose(1, 2)) + b
            if i < n - 1:
                h = torch.relu(h)
        return torch.gather(h.squeeze(-1), 0, choice.unsqueeze(0)).squeeze(0)


class DevicePart(nn.Module):
    """On the device: ``(user_feat, item_vec, seq_vec[, gnn_vec]) -> probability [B]``: the user
    embeddings, then the plain prediction layer or the prototypes' layers (``PrototypeLayers``)."""

    def __init__(self, net: CIGARNet):
        super().__init__()
        self.user_emb = copy.deepcopy(net.user_emb)
        if net.pn is None:
            self.plain, self.group = copy.deepcopy(net.head.plain), None
        else:
            self.plain, self.group = None, PrototypeLayers(net.head, net.pn)

    def forward(self, user_feat, item_vec, seq_vec, gnn_vec=None):
        parts = [self.user_emb(user_feat), item_vec, seq_vec, item_vec * seq_vec]
        if gnn_vec is not None:
            parts.append(gnn_vec)
        x = torch.cat(parts, -1)
        if self.group is None:
            return torch.sigmoid(self.plain(x).squeeze(-1))
        return torch.sigmoid(self.group(x, seq_vec))


class CloudPart(nn.Module):
    """On the cloud: ``(item_feat, seq_feat[, neighbors]) -> item_vec, seq_vec[, gnn_vec]``."""

    def __init__(self, net: CIGARNet):
        super().__init__()
        self.item_emb, self.gnn = net.item_emb, net.gnn

    def forward(self, item_feat, seq_feat, neighbors=None):
        item_vec, seq_vec = self.item_emb(item_feat), self.item_emb.mean_sequences(seq_feat)
        if self.gnn is None:
            return item_vec, seq_vec
        return item_vec, seq_vec, self.gnn(neighbors)


class CIGARFamily(TowerFree):
    """PNN / CIGAR_WO_PN / CIGAR_WO_CDGNN / CIGAR (the module docstring); a subclass names its variant."""

    data_kind = "cigar"
    data_format = "cigar"
    variant = "CIGAR"

    def __init__(self, num_users: int, num_items: int, user_vocab: Sequence[int] = (), item_vocab: Sequence[int] = (),
                 num_neighbors: int = 10, kv_dimension: int = 8, mem_dimension: int = 40, gnn_layers="40",
                 dim_hidden="128,64,1", prototype_num: int = 5, tau: float = 0.1, **base):
        super().__init__(num_users=num_users, num_items=num_items, **base)
        if not user_vocab or not item_vocab:
            raise ValueError(f"{type(self).__name__} needs user_vocab and item_vocab (CIGAR rows: data.format cigar, "
                             f"or an interaction dataset such as -d=ml-1m)")
        self.user_vocab, self.item_vocab = [int(v) for v in user_vocab], [int(v) for v in item_vocab]
        self.num_neighbors, self.kv_dimension = int(num_neighbors), int(kv_dimension)
        hidden = _sizes(dim_hidden, "dim_hidden")
        if hidden[-1] != 1:
            raise ValueError(f"model.dim_hidden: the last size is the logit, 1; got {dim_hidden!r}")
        d = len(self.item_vocab) * self.kv_dimension
        self.gnn_dims = None
        if uses_cdgnn(self.variant):
            widths = _sizes(gnn_layers, "gnn_layers")
            if widths[0] != d:
                log.info("%s: memory 0 holds seq_vec, %d wide (%d item fields x kv_dimension %d), not gnn_layers[0]=%d",
                         self.variant, d, len(self.item_vocab), self.kv_dimension, widths[0])
            self.gnn_dims = [d, *widths[1:], int(mem_dimension)]
        pn = int(prototype_num) if uses_prototypes(self.variant) else None
        if pn is not None and pn < 1:
            raise ValueError(f"model.prototype_num must be >= 1, got {prototype_num}")
        self.net = CIGARNet(self.num_users, self.user_vocab, self.item_vocab, self.kv_dimension, self.gnn_dims,
                            hidden, pn, float(tau))

    # scoring ---------------------------------------------------------------------------------------
    def _logits(self, batch, train: bool):
        v = self.net.vectors(batch["item_feat"], batch["seq_feat"], batch.get("neighbors"))
        x = self.net.features(batch["user_feat"], v["item_vec"], v["seq_vec"], v.get("gnn_vec"))
        out = {"vectors": v, "plain": self.net.head.plain_logit(x)}
        if self.net.pn is not None and train:
            pt, sim_loss, div_loss = self.net.pn(v["seq_vec"], True)
            out.update(group=self.net.head.group_logit(x, pt.detach()), sim_loss=sim_loss, div_loss=div_loss)
        elif self.net.pn is not None:  # the argmax prototype: computed per prototype (GroupHead.chosen_logit)
            protos, choice = self.net.pn.choose(v["seq_vec"])
            out["group"] = self.net.head.chosen_logit(x, protos.detach(), choice)
        return out

    def score(self, batch) -> torch.Tensor:
        """Logits: the group path with the prototype network (argmax prototype), else the plain one. Pure:
        nothing is written."""
        out = self._logits(batch, train=False)
        return out.get("group", out["plain"])

    def compute_loss(self, batch) -> torch.Tensor:
        out = self._logits(batch, train=True)
        y = batch["label"].float()
        bce = F.binary_cross_entropy_with_logits
        if "group" in out:
            loss = 2.0 * bce(out["group"], y) + bce(out["plain"], y) + 0.1 * out["div_loss"] + out["sim_loss"]
        else:
            loss = bce(out["plain"], y)
        if self.training and self.net.gnn is not None:
            self.update_memory(batch, out["vectors"])
        return loss

    @torch.no_grad()
    def update_memory(self, batch, vectors: Optional[Dict[str, torch.Tensor]] = None) -> None:
        """The CD-GNN's memory write (the module docstring), outside autograd; ``vectors``: this batch's
        ``seq_vec`` / ``gnn_outs`` when already computed with the current weights (else recomputed)."""
        if self.net.gnn is None:
            return
        if vectors is None:
            vectors = self.net.vectors(batch["item_feat"], batch["seq_feat"], batch["neighbors"])
        self.net.gnn.write(batch["user_id"], vectors["seq_vec"], vectors["gnn_outs"])

    # on-device part -------------------------------------------------------------------------------------
    def edge_parts(self) -> EdgeParts:
        """Device: user embeddings + prediction layer (+ prototypes); cloud: item / sequence / GNN vectors."""
        d = len(self.item_vocab) * self.kv_dimension
        gnn = self.net.gnn is not None
        dev_in = [TensorSpec("user_feat", "int64", ("batch", len(self.user_vocab)), 0, max(self.user_vocab) - 1),
                  dense("item_vec", d), dense("seq_vec", d)]
        vec_out = [dense("item_vec", d), dense("seq_vec", d)]
        cloud_in = [TensorSpec("item_feat", "int64", ("batch", len(self.item_vocab)), 0, max(self.item_vocab) - 1),
                    TensorSpec("seq_feat", "int64", ("batch", len(self.item_vocab), "seq"), 0,
                               max(self.item_vocab) - 1, padding=0)]
        if gnn:
            dev_in.append(dense("gnn_vec", self.gnn_dims[-1]))
            vec_out.append(dense("gnn_vec", self.gnn_dims[-1]))
            cloud_in.append(TensorSpec("neighbors", "int64", ("batch", self.num_neighbors), 0, self.num_users - 1))
        device = DevicePart(self.net).cpu().eval()  # copies (the prototypes' layers: computed from the weights)
        cloud = copy.deepcopy(CloudPart(self.net)).cpu().eval()
        return EdgeParts(device={"edge": Part(device, dev_in, [probability()])},
                         cloud=Part(cloud, cloud_in, vec_out, axis_limits={"seq": self.max_seq_len}))


@register_model
class PNN(CIGARFamily):
    """The plain network: user, item, sequence mean and item x sequence into the prediction layer."""

    variant = "PNN"


@register_model
class CIGAR_WO_PN(CIGARFamily):  # noqa: N801 - the release's name
    """PNN plus the CD-GNN vector."""

    variant = "CIGAR_WO_PN"


@register_model
class CIGAR_WO_CDGNN(CIGARFamily):  # noqa: N801 - the release's name
    """PNN plus the prototype network and the group prediction layer."""

    variant = "CIGAR_WO_CDGNN"


@register_model
class CIGAR(CIGARFamily):
    """The CD-GNN and the prototype network."""

    variant = "CIGAR"


__all__ = ["CIGAR", "CIGAR_WO_PN", "CIGAR_WO_CDGNN", "PNN", "CIGARFamily", "CIGARNet", "CDGNN", "PrototypeNet",
           "GroupHead", "FieldEmbedding", "DevicePart", "CloudPart", "VARIANTS", "uses_cdgnn", "uses_prototypes"]
