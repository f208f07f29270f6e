"""ECRec: a memory trained on the cloud, inference on the device from the instant sequence (docs/models.md, "ECRec").

Network (``ECRecNet``, plain modules; ``d`` = ``d_model`` = ``d_memory``):

- ``item_emb`` / ``cate_emb``: item and category embeddings (0 = padding), ``[item; cat]`` of an
  id pair is ``2d``; ``mem_item`` / ``mem_cate``: per-user memories (``nn.Embedding(num_users, d)``
  each, trained by gradient); ``mem = [mem_item; mem_cate](user)``;
- cloud aggregation (``MemoryAttention``): multi-head attention (``num_head`` heads of
  ``d_h = 2d / num_head``) with the memory as the query over the keys ``[memory; long sequence]``
  (padding masked out, the memory always kept), scores divided by ``sqrt(d_h)`` once, output
  projection, plus the memory (residual): ``agg [B, 2d]``;
- gate ``g = sigmoid(MLP([min(seq_len, L) / L, n_edge / E]))`` (2 -> 16 -> PReLU -> 1) where
  ``n_edge`` is the number of real items of the instant sequence: both inputs in [0, 1];
- ``edge_mean``: masked mean of ``[item; cat](edge_item_seq, edge_cate_seq)`` (zeros when empty);
- head: BatchNorm -> 256 -> PReLU -> 128 -> PReLU -> 2-way softmax (column 0 = click) on
  ``[g * agg + (1 - g) * edge_mean, target]`` (``product: true``, not the release's: also the
  elementwise product of the two, as DIN's ``product``: an MLP on a plain concatenation is poor
  at similarity). ``score`` returns ``z0 - z1``, so
  ``sigmoid(score)`` is the softmax's click column and BCE on it is the 2-way cross-entropy.

Training (``compute_loss``): ``K`` stochastic passes, each from the same memory, each keeping every
real long-sequence position with probability ``1 - drop_rate`` (independent masks); loss = sum over
passes of the cross-entropy + ``consistency`` x the sum over passes of the mean squared difference
between the pass's click probability and the passes' mean. Evaluation: one pass, nothing masked.

Memory (the protocol of ``callbacks/memory_update.py``): ``memory_tables()`` are the buffers
``memory [num_users, 2d]`` (what the device reads) and ``memory_state`` (``[1]``: 1 once written);
``memory_pass(batch)`` is the aggregation over a training row's long sequence, no grad;
``memory_written()`` marks them written. Until the memory is written, evaluation scores with the
cloud aggregation over each row's long sequence; afterwards with the device path on the written
memory row (``serve: auto``). ``serve`` = ``cloud`` / ``device`` / ``device_trained`` forces one:
the cloud model, the device part on the written memory, the device part on the trained
``mem`` rows (the memory as trained, for comparison).

On-device part (``edge_parts``): variant ``edge``: ``(memory [B, 2d], edge_item_seq [B, E],
edge_cate_seq [B, E], seq_len [B], item_id [B], cate_id [B]) -> probability [B]``, no attention,
no long sequence. Cloud part: the memory writer, ``(user_id, item_seq, cate_seq) -> memory``: the
written row once the memory is written, else the aggregation over the given long sequence (so
``--backend=onnx`` and the sweep fill the device input the way ``score`` does).

What the release got wrong, fixed here (each has a test in tests/model/test_ecrec.py): the
attention scores were divided by ``sqrt(d_h)`` twice; the K passes chained each pass's output
memory into the next pass's query; the gate read the raw ``seq_len`` (e.g. 100: a saturated
sigmoid input); its memory update set a flag on the distributed wrapper and never ran; its
reader kept the oldest ``seq_length`` items.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...edge.modules import EdgeStages, Probability
from ...edge.protocol import EdgeParts, Part, TensorSpec, dense, history, ids, probability
from ...registry import register_model
from ..towers import TowerFree

SERVE = ("auto", "cloud", "device", "device_trained")


class MemoryAttention(nn.Module):
    """``(query [B, D], keys [B, N, D], keep [B, N] or [K, B, N] bool) -> [B, D]`` (or ``[K, B, D]``):
    multi-head attention of the query over the kept keys (logits scaled once by ``sqrt(D / heads)``),
    output projection, plus the query. With ``K`` masks the projections and logits are computed
    once and only the masked softmax is taken per mask: ``K`` passes from one query."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"ECRec: 2 * d_model = {dim} must be divisible by num_head = {heads}")
        self.dim, self.heads, self.d_h = int(dim), int(heads), int(dim) // int(heads)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Attention logits ``[B, H, N]`` (before the mask and softmax)."""
        B, N, _ = keys.shape
        q = self.q(query).view(B, self.heads, 1, self.d_h)
        k = self.k(keys).view(B, N, self.heads, self.d_h).transpose(1, 2)
        return (q @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(self.d_h)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        B, N, _ = keys.shape
        s = self.scores(query, keys)  # [B, H, N]
        v = self.v(keys).view(B, N, self.heads, self.d_h).transpose(1, 2)  # [B, H, N, d_h]
        if keep.dim() == 2:
            w = torch.softmax(s.masked_fill(~keep.unsqueeze(1), float("-inf")), dim=-1)  # memory key always kept
            return self.o((w.unsqueeze(2) @ v).squeeze(2).reshape(B, self.dim)) + query
        K = keep.shape[0]
        w = torch.softmax(s.unsqueeze(0).masked_fill(~keep.unsqueeze(2), float("-inf")), dim=-1)  # [K, B, H, N]
        out = torch.einsum("kbhn,bhnd->kbhd", w, v).reshape(K, B, self.dim)
        return self.o(out) + query


class ClickLogit(nn.Module):
    """Two-way logits ``[B, 2]`` (column 0 = click) -> the click logit ``z0 - z1`` ``[B]``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, 0] - z[:, 1]


def pair_embed(item_emb: nn.Embedding, cate_emb: nn.Embedding, items: torch.Tensor, cates: torch.Tensor):
    return torch.cat([item_emb(items), cate_emb(cates)], dim=-1)


class DeviceFeatures(nn.Module):
    """The device part up to the head: ``(memory, edge_item_seq, edge_cate_seq, seq_len, item_id,
    cate_id) -> [B, 4d]`` = ``[g * memory + (1 - g) * edge_mean, target]``."""

    def __init__(self, item_emb: nn.Embedding, cate_emb: nn.Embedding, gate: nn.Module, seq_length: int,
                 edge_len: int, product: bool = False):
        super().__init__()
        self.item_emb, self.cate_emb, self.gate = item_emb, cate_emb, gate
        self.seq_length, self.edge_len, self.product = int(seq_length), int(edge_len), bool(product)

    def gate_input(self, seq_len: torch.Tensor, edge_items: torch.Tensor) -> torch.Tensor:
        """``[B, 2]`` in [0, 1]: the long history's length over ``seq_length`` and the instant
        sequence's real items over ``edge_len`` (the release fed the raw ``seq_len``)."""
        n = (edge_items != 0).sum(1).to(torch.float32)
        s = seq_len.to(torch.float32).clamp(min=0, max=float(self.seq_length)) / float(self.seq_length)
        return torch.stack([s, n.clamp(max=float(self.edge_len)) / float(self.edge_len)], dim=1)

    def forward(self, memory, edge_item_seq, edge_cate_seq, seq_len, item_id, cate_id) -> torch.Tensor:
        real = (edge_item_seq != 0).unsqueeze(-1).to(memory.dtype)
        e = pair_embed(self.item_emb, self.cate_emb, edge_item_seq, edge_cate_seq)
        edge_mean = (e * real).sum(1) / real.sum(1).clamp(min=1.0)
        g = torch.sigmoid(self.gate(self.gate_input(seq_len, edge_item_seq)))  # [B, 1]
        rep = g * memory + (1 - g) * edge_mean  # memory [B, 2d], or [K, B, 2d] for K passes
        target = pair_embed(self.item_emb, self.cate_emb, item_id, cate_id).expand(rep.shape)
        return torch.cat([rep, target, rep * target] if self.product else [rep, target], dim=-1)


class MemoryWriter(nn.Module):
    """Cloud: ``(user_id, item_seq, cate_seq) -> memory [B, 2d]``: the attention of the user's memory
    over ``[memory; long sequence]`` (``keep`` masks positions; padding is never kept)."""

    def __init__(self, item_emb, cate_emb, mem_item, mem_cate, attention):
        super().__init__()
        self.item_emb, self.cate_emb, self.mem_item, self.mem_cate = item_emb, cate_emb, mem_item, mem_cate
        self.attention = attention

    def trained_rows(self, user_id: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mem_item(user_id), self.mem_cate(user_id)], dim=-1)

    def forward(self, user_id, item_seq, cate_seq, keep: Optional[torch.Tensor] = None,
                mem: Optional[torch.Tensor] = None) -> torch.Tensor:
        mem = self.trained_rows(user_id) if mem is None else mem
        seq = pair_embed(self.item_emb, self.cate_emb, item_seq, cate_seq)
        real = item_seq != 0
        keep = real if keep is None else keep & real  # [B, L] or [K, B, L]
        keys = torch.cat([mem.unsqueeze(1), seq], dim=1)
        keep = torch.cat([keep.new_ones(*keep.shape[:-1], 1), keep], dim=-1)
        return self.attention(mem, keys, keep)


class WrittenOrWriter(nn.Module):
    """The cloud part as served: the written memory row when ``written`` (a snapshot), else the writer."""

    def __init__(self, writer: MemoryWriter, memory: Optional[torch.Tensor]):
        super().__init__()
        self.writer = writer
        self.register_buffer("memory", memory.clone() if memory is not None else torch.zeros(0))
        self.written = memory is not None

    def forward(self, user_id, item_seq, cate_seq):
        return self.memory[user_id] if self.written else self.writer(user_id, item_seq, cate_seq)


class ECRecNet(nn.Module):
    def __init__(self, num_users: int, num_items: int, num_cates: int, d_model: int = 16, num_head: int = 4,
                 seq_length: int = 100, edge_len: int = 10, product: bool = False):
        super().__init__()
        d = int(d_model)
        self.item_emb = nn.Embedding(num_items, d, padding_idx=0)
        self.cate_emb = nn.Embedding(num_cates, d, padding_idx=0)
        self.mem_item = nn.Embedding(num_users, d)
        self.mem_cate = nn.Embedding(num_users, d)
        for emb in (self.mem_item, self.mem_cate):
            nn.init.normal_(emb.weight, std=0.1)
        self.writer = MemoryWriter(self.item_emb, self.cate_emb, self.mem_item, self.mem_cate,
                                   MemoryAttention(2 * d, num_head))
        self.features = DeviceFeatures(self.item_emb, self.cate_emb,
                                       nn.Sequential(nn.Linear(2, 16), nn.PReLU(), nn.Linear(16, 1)),
                                       seq_length, edge_len, product)
        h = (6 if product else 4) * d
        self.head = nn.Sequential(nn.BatchNorm1d(h), nn.Linear(h, 256), nn.PReLU(), nn.Linear(256, 128),
                                  nn.PReLU(), nn.Linear(128, 2), ClickLogit())

    def device_logit(self, memory, b) -> torch.Tensor:
        """Click logits ``[B]`` from memory rows ``[B, 2d]`` (or ``[K, B]`` from ``[K, B, 2d]``)."""
        x = self.features(memory, b["edge_item_seq"], b["edge_cate_seq"], b["seq_len"], b["item_id"], b["cate_id"])
        return self.head(x.reshape(-1, x.shape[-1])).view(x.shape[:-1])


@register_model
class ECRec(TowerFree):
    data_kind = "ctr"
    data_format = "ecrec"

    def __init__(self, num_users: int, num_items: int, num_cates: int = 2, edge_len: int = 10, d_model: int = 16,
                 d_memory: int = 16, num_head: int = 4, K: int = 4, drop_rate: float = 0.3,
                 consistency: float = 10.0, serve: str = "auto", product: bool = False, **base):
        super().__init__(num_users=num_users, num_items=num_items, **base)
        if int(d_memory) != int(d_model):
            raise ValueError(f"ECRec: d_memory ({d_memory}) must equal d_model ({d_model}): the memory is the "
                             f"attention's query over [memory; item embeddings]")
        if int(K) < 1 or not 0 <= float(drop_rate) < 1:
            raise ValueError(f"ECRec: K must be >= 1 and drop_rate in [0, 1), got K={K}, drop_rate={drop_rate}")
        if serve not in SERVE:
            raise ValueError(f"ECRec: model.serve must be one of {SERVE}, got {serve!r}")
        self.num_cates, self.edge_len, self.d = int(num_cates), int(edge_len), int(d_model)
        self.K, self.drop_rate, self.consistency, self.serve = int(K), float(drop_rate), float(consistency), serve
        self.net = ECRecNet(self.num_users, self.num_items, self.num_cates, self.d, int(num_head), self.max_seq_len,
                            self.edge_len, bool(product))
        self.register_buffer("memory", torch.zeros(self.num_users, 2 * self.d))
        self.register_buffer("memory_state", torch.zeros(1))  # 1: memory written by MemoryUpdate

    # ---- the memory protocol (callbacks/memory_update.py) ----------------------------------------
    @property
    def memory_is_written(self) -> bool:
        return bool(self.memory_state.item() > 0)

    def memory_tables(self) -> Dict[str, torch.Tensor]:
        return {"memory": self.memory}

    @torch.no_grad()
    def memory_defaults(self) -> Dict[str, torch.Tensor]:
        """Every user's row before the pass: the aggregation over an empty long history."""
        users = torch.arange(self.num_users, device=self.memory.device)
        empty = users.new_zeros(self.num_users, 1)
        return {"memory": self.net.writer(users, empty, empty)}

    @torch.no_grad()
    def memory_pass(self, batch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """``(user_id [B], {"memory": [B, 2d]}, recency [B])`` for training rows: the aggregation over
        each row's long sequence; ``recency`` (the history length) picks each user's latest row."""
        agg = self.net.writer(batch["user_id"], batch["item_seq"], batch["cate_seq"])
        return batch["user_id"], {"memory": agg}, (batch["item_seq"] != 0).sum(1)

    def memory_written(self, written: bool = True) -> None:
        self.memory_state.fill_(1.0 if written else 0.0)

    # ---- scoring ----------------------------------------------------------------------------------
    def cloud_logit(self, batch, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        agg = self.net.writer(batch["user_id"], batch["item_seq"], batch["cate_seq"], keep)
        return self.net.device_logit(agg, batch)

    def score(self, batch) -> torch.Tensor:
        mode = self.serve
        if mode == "auto":
            mode = "device" if self.memory_is_written else "cloud"
        if mode == "cloud":
            return self.cloud_logit(batch)
        if mode == "device_trained":
            return self.net.device_logit(self.net.writer.trained_rows(batch["user_id"]), batch)
        return self.net.device_logit(self.memory[batch["user_id"]], batch)

    def pass_masks(self, item_seq: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``[K, B, L]`` bool: each pass keeps each position with probability ``1 - drop_rate``."""
        shape = (self.K, *item_seq.shape)
        u = torch.rand(shape, generator=generator, device="cpu" if generator is not None else item_seq.device)
        return u.to(item_seq.device) >= self.drop_rate

    def pass_logits(self, batch, masks: torch.Tensor) -> torch.Tensor:
        """``[K, B]`` click logits of the K passes (``masks [K, B, L]``), every pass from the same
        (trained) memory: one query, K masked softmaxes."""
        return self.cloud_logit(batch, masks)

    def compute_loss(self, batch) -> torch.Tensor:
        y = batch["label"].float()
        logits = self.pass_logits(batch, self.pass_masks(batch["item_seq"]))
        ce = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(1).sum()
        p = torch.sigmoid(logits)
        cons = (p - p.mean(0, keepdim=True)).pow(2).mean(1).sum()
        return ce + self.consistency * cons

    # ---- on-device part ---------------------------------------------------------------------------
    def edge_parts(self) -> EdgeParts:
        net = copy.deepcopy(self.net).cpu().eval()
        device = EdgeStages(features=net.features, classifier=net.head, output=Probability()).eval()
        E, d2 = self.edge_len, 2 * self.d
        seq_len = TensorSpec("seq_len", "int64", ("batch",), 0, self.max_seq_len)
        inputs = (dense("memory", d2), history("edge_item_seq", self.num_items, "edge"),
                  history("edge_cate_seq", self.num_cates, "edge"), seq_len, ids("item_id", self.num_items),
                  ids("cate_id", self.num_cates))
        part = Part(device, inputs, (probability(),), axis_limits={"edge": E})
        written = self.memory.detach().cpu() if self.memory_is_written else None
        cloud = Part(WrittenOrWriter(net.writer, written).eval(),
                     (ids("user_id", self.num_users), history("item_seq", self.num_items),
                      history("cate_seq", self.num_cates)),
                     (dense("memory", d2),), axis_limits={"seq": self.max_seq_len})
        return EdgeParts(device={"edge": part}, cloud=cloud)


__all__ = ["ECRec", "ECRecNet", "MemoryAttention", "MemoryWriter", "DeviceFeatures", "ClickLogit", "SERVE"]
