"""PINRec: plugin networks for long-tail user groups (MODELS.md, "PINRec").

A trunk scores ``(target item, click history)``; ``group_num`` copies of a residual bottleneck
adapter ("plugin") sit at two places in it, and each sample goes through the copy of its own
activity group (``batch["group_id"]``, 0 = least active users).

Trunk (``arch_config``: ``trunk: DIN | SASRec | GRU4Rec`` plus the keys of ``ARCH_DEFAULTS``):
item embeddings (0 = padding) -> *site "embedding"* on the target and on the history ->
``target_trans`` (Linear + Tanh) on the target -> the history is aggregated into one vector
(DIN: ``seq_trans`` + target attention; SASRec: causal transformer, last position; GRU4Rec:
GRU, last position) -> *site "aggregated"* -> classifier on ``[target, aggregated]``
(2D -> 128 -> Tanh -> 64 -> Tanh -> 1 logit; ``product: true`` adds ``target * aggregated``).

Sites. Without plugins a site is ``Tanh(x)``; with the plugin of group ``g`` it is
``Tanh(x + Up_g(Tanh(Down_g(x))))`` (Down D -> D*plugin_ratio, Up back to D; xavier gain 1e-3,
zero bias). The trunk owns the outer Tanh, so inserting freshly initialised plugins changes
the trunk's output by about 1e-3 only: "with the plugin inserted the model starts equal to the
trunk". Routing is batched, no loop over rows: every sample gathers its group's weight
matrices (``W[group_id] -> [B, D, r]``) and one ``torch.bmm`` applies them. The embedding site
is a function of (group, item) only, so when a batch holds more positions than there are such
pairs (ml-1m: 2048 x 51 positions, 5 x 3.7k pairs) it is computed once per pair on the
embedding table and gathered: same values, a third less time per training step.

Plugins are off until switched on (``set_plugins(True)``, done by the ``PluginStage`` callback
at ``stage_switch_epoch``); the switch is a buffer (``plugins_on``), so a checkpoint taken
after it reloads with its plugins on. The protocol the callback relies on:
``plugin_sites() -> {name: module}`` (parameters with the group on the first axis),
``set_plugins(bool)``, ``plugins_enabled``, ``group_num``.

Evaluation adds, next to the overall AUC / GAUC / logloss, the same three per activity group
(``auc_g0`` ... ``logloss_g{G-1}``, with ``rows_g{k}``); ``group_table`` prints the head-vs-tail
table of one or several runs.

On-device part: ``edge_model(group)`` is trunk + that group's plugins (a snapshot of the
plugin weights), inputs named after the batch fields, ``item_id [B]`` (the target) and
``seq [B, L]`` (left-padded, 0 = padding), output the click probability ``[B]``, built as
named stages (``features``, ``classifier.<i>``, ``output``) that split inference can cut;
``example_inputs()``, ``edge_dynamic_axes()``, ``edge_input_ranges()`` and ``edge_variants()``
(the groups) are what export needs.
"""
from __future__ import annotations

import base64
import binascii
import copy
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ...evaluation.metrics import PointwiseAccumulator, auc, gauc, logloss
from ...edge.modules import EdgeStages, Probability
from ...names import did_you_mean
from ...registry import register_model
from ..layers import (MLP, FastDropout, GRUEncoder, TargetAttention, TransformerBlock, causal_padding_mask,
                      right_aligned_positions, run_blocks)
from ..towers import TowerFree

TRUNKS = ("DIN", "SASRec", "GRU4Rec")
# keys every trunk takes, then the keys of each trunk (defaults)
ARCH_COMMON = {"trunk": "DIN", "hidden": [128, 64], "activation": "tanh", "product": False}
ARCH_DEFAULTS = {
    "DIN": {},
    "SASRec": {"num_blocks": 2, "num_heads": 1, "inner_dim": 128, "dropout": 0.1},
    "GRU4Rec": {"hidden_size": 64, "num_layers": 1, "dropout": 0.1},
}


# ---- arch_config ------------------------------------------------------------------------------
def read_arch_text(arch_config: Any) -> Dict[str, Any]:
    """``arch_config`` as a mapping: ``None`` (defaults), a mapping, a path to a YAML/JSON file,
    or that file's text base64-encoded (whitespace ignored)."""
    if arch_config is None:
        return {}
    if isinstance(arch_config, Mapping):
        return dict(arch_config)
    if not isinstance(arch_config, str):
        raise ValueError(f"arch_config: expected a file path or base64 text, got {type(arch_config).__name__}")
    text, where = None, "arch_config"
    try:
        path = Path(arch_config).expanduser()
        is_file = len(arch_config) < 4096 and path.is_file()
    except OSError:  # e.g. a base64 string too long for a file name
        is_file = False
    if is_file:
        text, where = path.read_text(), str(path)
    else:
        packed = "".join(arch_config.split())
        for decode in (lambda s: base64.b64decode(s, validate=True), base64.urlsafe_b64decode):
            try:
                text = decode(packed).decode("utf-8")
                break
            except (binascii.Error, ValueError, UnicodeDecodeError):
                continue
        if text is None:
            raise ValueError(f"arch_config {arch_config[:60]!r}: not an existing file and not base64 text")
        where = "arch_config (base64)"
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: invalid YAML/JSON: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping (trunk: ..., ...), got {type(data).__name__}")
    return data


def load_arch_config(arch_config: Any) -> Dict[str, Any]:
    """Resolved trunk architecture: defaults + the given keys, validated (unknown key -> error)."""
    given = read_arch_text(arch_config)
    name = str(given.get("trunk", ARCH_COMMON["trunk"]))
    by_lower = {t.lower(): t for t in TRUNKS}
    if name.lower() not in by_lower:
        raise ValueError(f"arch_config: unknown trunk {name!r}: {did_you_mean(name, TRUNKS)}")
    name = by_lower[name.lower()]
    arch = {**ARCH_COMMON, **ARCH_DEFAULTS[name], "trunk": name}
    for k, v in given.items():
        if k == "embed_dim":
            raise ValueError("arch_config: set the embedding size with model.embed_dim, not in arch_config")
        if k not in arch:
            raise ValueError(f"arch_config: unknown key {k!r} for trunk {name}: {did_you_mean(k, list(arch))}")
        if k != "trunk":
            arch[k] = v
    arch["hidden"] = [int(h) for h in arch["hidden"]]
    return arch


# ---- plugins ------------------------------------------------------------------------------------
class GroupAdapters(nn.Module):
    """``group_num`` residual bottleneck adapters over ``dim``, applied per sample.

    ``forward(x, group)``: ``x [B, D]`` or ``[B, L, D]``, ``group [B]`` (long) ->
    ``Tanh(x + Up_g(Tanh(Down_g(x))))`` with ``g = group[b]`` for every row ``b``; with
    ``group=None`` -> ``Tanh(x)`` (the site without a plugin). Weights are stored
    ``[G, in, out]`` so that one gather ``W[group]`` and one ``torch.bmm`` route the batch.
    """

    def __init__(self, group_num: int, dim: int, bottleneck: int, gain: float = 1e-3):
        super().__init__()
        self.group_num, self.dim, self.bottleneck = int(group_num), int(dim), int(bottleneck)
        self.down_w = nn.Parameter(torch.empty(group_num, dim, bottleneck))
        self.down_b = nn.Parameter(torch.zeros(group_num, bottleneck))
        self.up_w = nn.Parameter(torch.empty(group_num, bottleneck, dim))
        self.up_b = nn.Parameter(torch.zeros(group_num, dim))
        for g in range(group_num):  # xavier per copy, as nn.Linear(dim, bottleneck) would see it
            nn.init.xavier_uniform_(self.down_w.data[g], gain=gain)
            nn.init.xavier_uniform_(self.up_w.data[g], gain=gain)

    def forward(self, x: torch.Tensor, group: Optional[torch.Tensor]) -> torch.Tensor:
        if group is None:
            return torch.tanh(x)
        x3 = x.unsqueeze(1) if x.dim() == 2 else x  # [B, L, D]
        h = torch.tanh(torch.bmm(x3, self.down_w[group]) + self.down_b[group].unsqueeze(1))
        y = torch.tanh(x3 + torch.bmm(h, self.up_w[group]) + self.up_b[group].unsqueeze(1))
        return y.squeeze(1) if x.dim() == 2 else y

    def all_groups(self, x: torch.Tensor) -> torch.Tensor:
        """Every group's adapter on the same rows: ``x [N, D]`` -> ``[G, N, D]``."""
        h = torch.tanh(torch.einsum("nd,gdr->gnr", x, self.down_w) + self.down_b.unsqueeze(1))
        return torch.tanh(x.unsqueeze(0) + torch.einsum("gnr,grd->gnd", h, self.up_w) + self.up_b.unsqueeze(1))

    def single(self, group: int) -> "Adapter":
        """A copy of group ``group``'s adapter as a plain module (for export)."""
        return Adapter(self.down_w[group], self.down_b[group], self.up_w[group], self.up_b[group])

    def extra_repr(self) -> str:
        return f"groups={self.group_num}, dim={self.dim}, bottleneck={self.bottleneck}"


class Adapter(nn.Module):
    """One group's adapter ``Tanh(x + Up(Tanh(Down(x))))`` with its own (copied) weights."""

    def __init__(self, down_w, down_b, up_w, up_b):
        super().__init__()
        self.down_w = nn.Parameter(down_w.detach().clone())
        self.down_b = nn.Parameter(down_b.detach().clone())
        self.up_w = nn.Parameter(up_w.detach().clone())
        self.up_b = nn.Parameter(up_b.detach().clone())

    def forward(self, x):
        h = torch.tanh(x @ self.down_w + self.down_b)
        return torch.tanh(x + h @ self.up_w + self.up_b)


# ---- trunks -------------------------------------------------------------------------------------
class DINAggregator(nn.Module):
    """``seq_trans`` (Linear + Tanh) on the history, then target attention (MODELS.md)."""

    def __init__(self, dim: int, arch: Dict[str, Any], max_seq_len: int):
        super().__init__()
        self.seq_trans = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.attention = TargetAttention(dim)

    def forward(self, target: torch.Tensor, history: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        return self.attention(target, self.seq_trans(history), seq != 0)


class SASRecAggregator(nn.Module):
    """Causal transformer over the (left-padded) history; the last position's output."""

    def __init__(self, dim: int, arch: Dict[str, Any], max_seq_len: int):
        super().__init__()
        self.max_seq_len = int(max_seq_len)
        self.pos_emb = nn.Embedding(self.max_seq_len, dim)
        nn.init.xavier_normal_(self.pos_emb.weight)  # as SASRec: N(0, 1) positions drown the items
        self.drop = FastDropout(float(arch["dropout"]))
        self.blocks = nn.ModuleList(TransformerBlock(dim, int(arch["num_heads"]), int(arch["inner_dim"]),
                                                     float(arch["dropout"]), "gelu")
                                    for _ in range(int(arch["num_blocks"])))
        self.last_ln = nn.LayerNorm(dim, eps=1e-8)

    def forward(self, target, history, seq):
        pos = right_aligned_positions(seq, self.max_seq_len)
        keep = (seq != 0).unsqueeze(-1)
        x = self.drop(history + self.pos_emb(pos).unsqueeze(0)) * keep
        x = run_blocks(self.blocks, x, causal_padding_mask(seq), keep)
        return self.last_ln(x[:, -1]) * keep[:, -1]  # empty history -> zeros


class GRU4RecAggregator(nn.Module):
    """GRU over the history (exact for left padding); the last position, projected to D."""

    def __init__(self, dim: int, arch: Dict[str, Any], max_seq_len: int):
        super().__init__()
        self.drop = FastDropout(float(arch["dropout"]))
        self.encoder = GRUEncoder(dim, int(arch["hidden_size"]), int(arch["num_layers"]))
        self.proj = nn.Linear(int(arch["hidden_size"]), dim)

    def forward(self, target, history, seq):
        n = (seq != 0).sum(1)
        out = self.encoder(self.drop(history), n)[:, -1]
        return self.proj(out) * (n > 0).unsqueeze(-1).to(out.dtype)


AGGREGATORS = {"DIN": DINAggregator, "SASRec": SASRecAggregator, "GRU4Rec": GRU4RecAggregator}
Site = Any  # callable x -> x


class PINRecTrunk(nn.Module):
    """The trunk as a plain module; ``forward(target, seq, embed, agg_site) -> logits [B]``.

    ``embed``: item ids -> embeddings after the first site (``None``: the bare site,
    ``Tanh(item_emb(ids))``); ``agg_site``: the second site, ``x -> y`` (``torch.tanh`` for
    the bare trunk, a group's adapter, or the per-sample routed adapters)."""

    def __init__(self, num_items: int, dim: int, arch: Dict[str, Any], max_seq_len: int):
        super().__init__()
        self.item_emb = nn.Embedding(num_items, dim, padding_idx=0)
        self.target_trans = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.aggregator = AGGREGATORS[arch["trunk"]](dim, arch, max_seq_len)
        self.product = bool(arch["product"])
        self.classifier = MLP((3 if self.product else 2) * dim, [*arch["hidden"], 1], activation=arch["activation"],
                              last_activation=False)

    def features(self, target: torch.Tensor, seq: torch.Tensor, embed: Optional[Site], agg_site: Site) -> torch.Tensor:
        """The classifier's input ``[B, 2D]`` (``[B, 3D]`` with ``product``)."""
        if embed is None:
            embed = lambda ids: torch.tanh(self.item_emb(ids))  # noqa: E731
        t = self.target_trans(embed(target))
        a = agg_site(self.aggregator(t, embed(seq), seq))
        return torch.cat([t, a, t * a] if self.product else [t, a], dim=-1)

    def forward(self, target: torch.Tensor, seq: torch.Tensor, embed: Optional[Site], agg_site: Site) -> torch.Tensor:
        return self.classifier(self.features(target, seq, embed, agg_site)).squeeze(-1)


class PINRecFeatures(nn.Module):
    """The trunk up to the classifier for one group: ``(item_id [B], seq [B, L]) -> [B, 2D]``."""

    def __init__(self, trunk: PINRecTrunk, emb_plugin: Optional[nn.Module], agg_plugin: Optional[nn.Module]):
        super().__init__()
        self.trunk, self.emb_plugin, self.agg_plugin = trunk, emb_plugin, agg_plugin

    def forward(self, item_id: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        emb = None if self.emb_plugin is None else (lambda ids: self.emb_plugin(self.trunk.item_emb(ids)))
        agg = self.agg_plugin if self.agg_plugin is not None else torch.tanh
        return self.trunk.features(item_id, seq, emb, agg)


def PINRecEdge(trunk: PINRecTrunk, emb_plugin: Optional[nn.Module], agg_plugin: Optional[nn.Module]) -> EdgeStages:
    """On-device PINRec for one group: ``(item_id [B], seq [B, L]) -> probability [B]``, as named
    stages (``features``, ``classifier.<i>``, ``output``) so that it can be cut for split inference."""
    return EdgeStages(features=PINRecFeatures(trunk, emb_plugin, agg_plugin), classifier=trunk.classifier,
                      output=Probability())


# ---- evaluation per group -------------------------------------------------------------------------
class GroupedAccumulator(PointwiseAccumulator):
    """``PointwiseAccumulator`` that also keeps each row's activity group."""

    def reset(self) -> None:
        super().reset()
        self.activity: List[torch.Tensor] = []

    def add_activity(self, group: torch.Tensor) -> None:
        self.activity.append(group.detach().reshape(-1))


def per_group_metrics(logits, labels, users, groups, group_num: int) -> Dict[str, float]:
    """``auc_g{k}``, ``gauc_g{k}``, ``logloss_g{k}``, ``rows_g{k}`` for k in 0..group_num-1."""
    out: Dict[str, float] = {}
    for g in range(group_num):
        m = groups == g
        n = int(m.sum())
        out[f"rows_g{g}"] = float(n)
        if n == 0:
            out.update({f"auc_g{g}": math.nan, f"gauc_g{g}": math.nan, f"logloss_g{g}": math.nan})
            continue
        out[f"auc_g{g}"] = float(auc(logits[m], labels[m]))
        out[f"gauc_g{g}"] = float(gauc(logits[m], labels[m], users[m])) if users is not None else math.nan
        out[f"logloss_g{g}"] = float(logloss(logits[m], labels[m]))
    return out


def group_table(runs: Mapping[str, Mapping[str, float]], group_num: int, tail: Sequence[int] = (0, 1),
                head: Optional[Sequence[int]] = None, metrics: Sequence[str] = ("auc", "gauc")) -> str:
    """Text table of per-group metrics for runs side by side, plus tail / head means.

    ``runs``: ``{run name: metrics with auc_g0 ... keys}``; tail = mean over ``tail`` groups,
    head = mean over ``head`` groups (default: the top group)."""
    head = list(head) if head is not None else [group_num - 1]
    names = list(runs)
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["".join([f"{'':<16}", *(f"{n:>{width}}" for n in names)])]
    for metric in metrics:
        rows = [(f"{metric}", metric)] + [(f"{metric} g{g}", f"{metric}_g{g}") for g in range(group_num)]
        for label, key in rows:
            lines.append("".join([f"{label:<16}", *(f"{runs[n].get(key, math.nan):>{width}.4f}" for n in names)]))

        def mean(n, gs):
            vals = [runs[n].get(f"{metric}_g{g}", math.nan) for g in gs]
            return sum(vals) / len(vals) if vals else math.nan

        lines.append("".join([f"{metric + ' tail':<16}", *(f"{mean(n, tail):>{width}.4f}" for n in names)]))
        lines.append("".join([f"{metric + ' head':<16}", *(f"{mean(n, head):>{width}.4f}" for n in names)]))
    return "\n".join(lines)


# ---- the model ------------------------------------------------------------------------------------
def _after_load(module, incompatible_keys) -> None:
    """After ``load_state_dict``: the Python flag follows the loaded ``plugins_on`` buffer."""
    module._sync_plugin_flag()


@register_model
class PINRec(TowerFree):
    """PINRec (MODELS.md): a DIN / SASRec / GRU4Rec trunk with per-group plugins at two sites."""

    data_kind = "ctr"

    def __init__(self, num_items: int, embed_dim: int = 32, group_num: int = 5, arch_config: Any = None,
                 plugin_ratio: float = 0.5, plugin_init_gain: float = 1e-3, **base):
        base.setdefault("num_users", 0)
        super().__init__(num_items=num_items, **base)
        if int(group_num) < 1:
            raise ValueError(f"group_num must be >= 1, got {group_num}")
        self.embed_dim, self.group_num = int(embed_dim), int(group_num)
        self.arch = load_arch_config(arch_config)
        self.trunk = PINRecTrunk(self.num_items, self.embed_dim, self.arch, self.max_seq_len)
        r = max(1, int(round(self.embed_dim * float(plugin_ratio))))
        self.plugins = nn.ModuleDict({site: GroupAdapters(self.group_num, self.embed_dim, r, float(plugin_init_gain))
                                      for site in ("embedding", "aggregated")})
        self.embed_mode = "auto"  # "table" | "rows": how the embedding site is computed (see _embed)
        self.register_buffer("plugins_on", torch.zeros((), dtype=torch.bool))
        self._plugins_enabled = False  # mirror of the buffer (no device sync per forward)
        self.register_load_state_dict_post_hook(_after_load)

    # plugin protocol (used by callbacks.plugin_stage.PluginStage) ------------------------------
    def plugin_sites(self) -> Dict[str, nn.Module]:
        """The plugin sites: modules whose parameters carry the group on their first axis."""
        return dict(self.plugins.items())

    def set_plugins(self, enabled: bool) -> None:
        self.plugins_on.fill_(bool(enabled))
        self._plugins_enabled = bool(enabled)

    @property
    def plugins_enabled(self) -> bool:
        return self._plugins_enabled

    @plugins_enabled.setter
    def plugins_enabled(self, value: bool) -> None:
        self.set_plugins(value)

    def _sync_plugin_flag(self) -> None:
        self._plugins_enabled = bool(self.plugins_on)

    # scoring -------------------------------------------------------------------------------------
    def logits(self, target: torch.Tensor, seq: torch.Tensor, group: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``[B]``; ``group [B]`` routes each row through its group's plugins (None: trunk only)."""
        agg = self.plugins["aggregated"]
        return self.trunk(target, seq, self._embed(group, seq.numel() + target.numel()),
                          torch.tanh if group is None else (lambda x: agg(x, group)))

    def _embed(self, group: Optional[torch.Tensor], positions: int):
        """``ids -> site(item_emb(ids))`` for this batch. The embedding site is a function of the
        item (and the row's group), so when the batch has more positions than there are
        (group, item) pairs it is computed once per pair on the embedding table and gathered
        (``embed_mode="table"``); otherwise per position (``"rows"``). Same values either way;
        the padding row 0 stays zero and gets no gradient, as in ``nn.Embedding``."""
        weight = self.trunk.item_emb.weight
        copies = 1 if group is None else self.group_num
        mode = self.embed_mode
        if mode == "auto":
            mode = "table" if copies * weight.size(0) < positions else "rows"
        site = self.plugins["embedding"]
        if mode == "rows":
            return None if group is None else (lambda ids: site(self.trunk.item_emb(ids), group))
        table = torch.cat([weight.new_zeros(1, weight.size(1)), weight[1:]])  # row 0: padding, no gradient
        if group is None:
            table = torch.tanh(table)
            return lambda ids: F.embedding(ids, table)
        flat = site.all_groups(table).reshape(-1, weight.size(1))  # [G * N, D]
        offset = group * weight.size(0)
        return lambda ids: F.embedding(ids + offset.view(-1, *([1] * (ids.dim() - 1))), flat)

    def score(self, batch) -> torch.Tensor:
        group = None
        if self._plugins_enabled:
            group = batch.get("group_id")
            if group is None:
                raise ValueError("PINRec with plugins on needs batch['group_id'] (set data.group_num, or read "
                                 "sample files that carry group_id)")
        return self.logits(batch["item_id"], batch["seq"], group)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data_groups = getattr(dm, "group_num", None)
        if data_groups is None and isinstance(getattr(dm, "cfg", None), dict):
            data_groups = dm.cfg.get("group_num")
        if data_groups and int(data_groups) > self.group_num:
            raise ValueError(f"the data has {int(data_groups)} activity groups (data.group_num) but PINRec has "
                             f"model.group_num={self.group_num} plugin copies")

    # evaluation: overall and per activity group ---------------------------------------------------
    def _new_acc(self):
        return GroupedAccumulator()

    def _eval_step(self, batch, stage):
        super()._eval_step(batch, stage)
        if "group_id" in batch:
            self._acc[stage].add_activity(batch["group_id"])

    def _finish(self, stage):
        acc = self._acc[stage]
        grouped = bool(acc.activity) and len(acc.activity) == len(acc._logits)
        if grouped:
            logits, labels, users = (self._gather_cat(t.to(self.device)) for t in acc.tensors())
            groups = self._gather_cat(torch.cat(acc.activity).to(self.device))
        super()._finish(stage)
        if grouped:
            extra = per_group_metrics(logits, labels, users, groups, self.group_num)
            self.last_metrics[stage].update(extra)
            self.log_dict({f"{stage}/{k}": v for k, v in extra.items() if not k.startswith("rows_")},
                          sync_dist=False)

    # on-device part -----------------------------------------------------------------------------
    def edge_variants(self) -> List[int]:
        """One on-device model per group."""
        return list(range(self.group_num))

    def edge_model(self, group: int = 0) -> nn.Module:
        """Trunk + group ``group``'s plugins (trunk alone while plugins are off), in eval mode,
        on the CPU: ``(item_id [B], seq [B, L]) -> probability [B]``."""
        if not 0 <= int(group) < self.group_num:
            raise ValueError(f"group {group} is not in 0..{self.group_num - 1}")
        trunk = copy.deepcopy(self.trunk).cpu().eval()
        emb = agg = None
        if self._plugins_enabled:
            emb = self.plugins["embedding"].single(int(group)).cpu()
            agg = self.plugins["aggregated"].single(int(group)).cpu()
        return PINRecEdge(trunk, emb, agg).eval()

    def example_inputs(self, batch: int = 4, length: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """Valid inputs of ``edge_model``: item ids in 1..num_items-1, histories left-padded with 0."""
        L = int(length or self.max_seq_len)
        g = torch.Generator().manual_seed(0)
        target = torch.randint(1, self.num_items, (batch,), generator=g)
        seq = torch.randint(1, self.num_items, (batch, L), generator=g)
        n = torch.randint(0, L + 1, (batch,), generator=g)
        n[0] = L  # one full row
        seq = seq.masked_fill(torch.arange(L).unsqueeze(0) < (L - n).unsqueeze(1), 0)
        return {"item_id": target, "seq": seq}

    def edge_dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        return {"item_id": {0: "batch"}, "seq": {0: "batch", 1: "seq"}, "probability": {0: "batch"}}

    def edge_input_ranges(self) -> Dict[str, tuple]:
        """Valid ids of each input, inclusive (0 is padding, allowed in the history only)."""
        return {"item_id": (1, self.num_items - 1), "seq": (0, self.num_items - 1)}


__all__ = ["PINRec", "PINRecTrunk", "PINRecEdge", "PINRecFeatures", "GroupAdapters", "load_arch_config", "read_arch_text",
           "per_group_metrics", "group_table", "TRUNKS", "ARCH_DEFAULTS"]
