"""PINRec: plugin networks for long-tail user groups (docs/models.md, "PINRec").

A trunk scores ``(target item, click history)``; ``group_num`` copies of a residual bottleneck
adapter ("plugin") sit at two places in it, and each sample goes through the copy of its own
activity group (``batch["group_id"]``, 0 = least active users).

Trunk (``arch_config``: ``trunk: DIN | SASRec | GRU4Rec`` plus the keys of ``ARCH_DEFAULTS``):
item embeddings (0 = padding) -> *site "embedding"* on the target and on the history ->
``target_trans`` (Linear + Tanh) on the target -> the history is summarised into one vector by
the zoo's shared encoder of that model (``layers.encoders``: DIN's ``TargetAttentionEncoder``,
``seq_trans`` + target attention; SASRec's ``TransformerStack``, causal, the last position;
GRU4Rec's ``GRUStack``, the last position) -> *site "aggregated"* -> classifier on
``[target, aggregated]`` (2D -> 128 -> Tanh -> 64 -> Tanh -> 1 logit; ``product: true`` adds
``target * aggregated``).

The network is a plain module with named parts, ``PINRecNet``: ``features`` (``PINRecFeatures``:
``item_emb``, ``target_trans``, ``encoder``, ``plugins``) and ``classifier``; the ``PINRec`` tower
wraps it for training and evaluation and owns the plugin switch.

Sites. Without plugins a site is ``Tanh(x)``; with the plugin of group ``g`` it is
``Tanh(x + Up_g(Tanh(Down_g(x))))`` (Down D -> D*plugin_ratio, Up back to D; xavier gain 1e-3,
zero bias). The trunk owns the outer Tanh, so inserting freshly initialised plugins changes
the trunk's output by about 1e-3 only: "with the plugin inserted the model starts equal to the
trunk". Routing is batched, no loop over rows: rows of a batch go through every group's
adapter as G dense products and each row takes its own group's output (a history's positions:
each sample gathers its group's weight matrices, ``W[group_id] -> [B, D, r]``, and one
``torch.bmm`` applies them). The embedding site is a function of (group, item) only, so when a
batch holds more positions than there are such pairs (ml-1m: 1024 histories x 50 positions,
5 x 3.7k pairs) it is computed once per pair on the embedding table and gathered, and so is the
DIN trunk's ``seq_trans``; a training batch's positives and negatives share their histories
(``seq_unique``), which are read once. Same values and gradients as per position (tests);
docs/speed.md says what each step saves.

Plugins are off until switched on (``set_plugins(True)``, done by the ``PluginStage`` callback
at ``stage_switch_epoch``); the switch is a buffer (``plugins_on``), so a checkpoint taken
after it reloads with its plugins on. The protocol the callback relies on:
``plugin_sites() -> {name: module}`` (parameters with the group on the first axis),
``set_plugins(bool)``, ``plugins_enabled``, ``group_num``. The data must not carry more groups
than ``group_num`` (checked where the model meets its data, before training).

Evaluation: AUC / GAUC / logloss overall and per activity group (``auc_g0`` ...
``logloss_g{G-1}``, ``rows_g{k}``), as for every pointwise model whose evaluation batches carry
``group_id`` (``Recommender``, ``evaluation/groups.py``, which also prints the head-vs-tail table).

On-device part (``edge_parts``): one device model per group, variants ``"0"`` .. ``"G-1"``
serving the rows ``{"group_id": g}``: the trunk with a snapshot of group ``g``'s plugins (the
trunk alone while plugins are off), ``(item_id [B], seq [B, L]) -> probability [B]``, as named
stages (``features``, ``classifier.<i>``, ``output``) that split inference can cut. The cloud
part is the routed network of all groups, ``(item_id, seq, group_id) -> probability``.
"""
from __future__ import annotations

import base64
import binascii
import copy
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ...edge.modules import EdgeStages, Probability
from ...edge.protocol import EdgeParts, Part, TensorSpec, history, ids, probability
from ...names import did_you_mean
from ...registry import register_model
from ..layers import (MLP, GRUStack, Tanh, TargetAttentionEncoder, TransformerStack, batch_histories, check_repeats,
                      padded_table, pair_features, tanh)
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

    routed = True  # the site reads each row's group

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
            return tanh(x)
        if x.dim() == 2 and x.size(0) >= 4 * self.group_num:
            # rows [B, D]: every group's adapter on every row as G dense products, then each row
            # takes its own group's (the same values; G x the arithmetic, but one gather of B rows
            # instead of B weight matrices gathered and B tiny matrix products, forward and back)
            return self.all_groups(x)[group, torch.arange(x.size(0), device=x.device)]
        x3 = x.unsqueeze(1) if x.dim() == 2 else x  # [B, L, D]
        h = tanh(torch.bmm(x3, self.down_w[group]) + self.down_b[group].unsqueeze(1))
        y = tanh(x3 + torch.bmm(h, self.up_w[group]) + self.up_b[group].unsqueeze(1))
        return y.squeeze(1) if x.dim() == 2 else y

    def all_groups(self, x: torch.Tensor) -> torch.Tensor:
        """Every group's adapter on the same rows: ``x [N, D]`` -> ``[G, N, D]``."""
        n, (G, D, r) = x.size(0), self.down_w.shape
        # every group's down map in one product [N, D] x [D, G * r], the biases fused into the products
        h = tanh(torch.addmm(self.down_b.reshape(-1), x, self.down_w.permute(1, 0, 2).reshape(D, G * r)))
        h = h.view(n, G, r).transpose(0, 1)  # [G, N, r]
        return tanh(torch.baddbmm(x.unsqueeze(0) + self.up_b.unsqueeze(1), h, self.up_w))

    def single(self, group: int) -> "Adapter":
        """A copy of group ``group``'s adapter as a plain module (for export)."""
        return Adapter(self.down_w[group], self.down_b[group], self.up_w[group], self.up_b[group])

    def extra_repr(self) -> str:
        return f"groups={self.group_num}, dim={self.dim}, bottleneck={self.bottleneck}"


class Adapter(nn.Module):
    """One group's adapter ``Tanh(x + Up(Tanh(Down(x))))`` with its own (copied) weights: the site
    of a one-group snapshot, the same for every row (``group`` is ignored)."""

    routed = False

    def __init__(self, down_w, down_b, up_w, up_b):
        super().__init__()
        self.down_w = nn.Parameter(down_w.detach().clone())
        self.down_b = nn.Parameter(down_b.detach().clone())
        self.up_w = nn.Parameter(up_w.detach().clone())
        self.up_b = nn.Parameter(up_b.detach().clone())

    def forward(self, x: torch.Tensor, group: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = torch.tanh(x @ self.down_w + self.down_b)
        return torch.tanh(x + h @ self.up_w + self.up_b)


class BareSite(nn.Module):
    """A site without a plugin, ``Tanh(x)``, the same for every row (``group`` is ignored)."""

    routed = False

    def forward(self, x: torch.Tensor, group: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.tanh(x)


SITES = ("embedding", "aggregated")


# ---- the network -----------------------------------------------------------------------------------
def make_encoder(arch: Dict[str, Any], dim: int, max_seq_len: int) -> nn.Module:
    """The trunk's history encoder: the zoo's own DIN, SASRec or GRU4Rec encoder (``layers.encoders``)."""
    trunk = arch["trunk"]
    if trunk == "DIN":
        return TargetAttentionEncoder(dim)
    if trunk == "SASRec":  # Xavier positions as SASRec: N(0, 1) positions drown the items
        return TransformerStack(dim, max_seq_len, int(arch["num_blocks"]), int(arch["num_heads"]),
                                int(arch["inner_dim"]), float(arch["dropout"]), "gelu", mask="causal",
                                position_init=nn.init.xavier_normal_)
    return GRUStack(dim, int(arch["hidden_size"]), int(arch["num_layers"]), float(arch["dropout"]))


class PINRecFeatures(nn.Module):
    """The trunk up to its classifier, with the plugin sites: ``(item_id [B], seq [B, L], group [B] or
    None) -> [B, 2D]`` (``[B, 3D]`` with ``product``); ``group=None``: the bare sites (the trunk alone).

    ``plugins`` maps each site (``SITES``) to a module ``site(x, group)``: ``GroupAdapters`` routes
    every row to its group's copy; a snapshot for one group (``for_group``) holds that group's
    ``Adapter`` or a ``BareSite`` and serves every row alike. ``embed_mode`` is how the embedding
    site (and the DIN trunk's history maps) are computed (``_mode``): ``"auto"``, ``"table"`` or ``"rows"``.
    """

    def __init__(self, item_emb: nn.Embedding, target_trans: nn.Module, encoder: nn.Module,
                 plugins: Mapping[str, nn.Module], product: bool):
        super().__init__()
        self.item_emb, self.target_trans, self.encoder = item_emb, target_trans, encoder
        self.plugins = nn.ModuleDict(dict(plugins))
        self.product = bool(product)
        self.routed = bool(getattr(self.plugins["embedding"], "routed", False))
        self.embed_mode = "auto"

    def forward(self, item_id: torch.Tensor, seq: torch.Tensor, group: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``seq`` may hold ``P`` histories shared by ``B = R * P`` rows (row ``b`` has history
        ``b % P``, ``layers.batch_histories``; its group is then row ``b % P``'s too: checked)."""
        if not self.routed:
            group = None
        P = seq.size(0)
        hist_group = group
        if group is not None and P != group.size(0):
            check_repeats(group, group[:P])
            hist_group = group[:P]
        if self._mode(group, seq.numel() + item_id.numel()) == "rows":
            site = self.plugins["embedding"]
            t = self.target_trans(site(self.item_emb(item_id), group))
            a = self.summarise(t, site(self.item_emb(seq), hist_group), seq)
        else:
            table, offset = self._site_table(group)
            hist_ids = seq if offset is None else seq + offset[:P].unsqueeze(1)
            t = self.target_trans(F.embedding(item_id if offset is None else item_id + offset, table))
            if isinstance(self.encoder, TargetAttentionEncoder):  # seq_trans once per table row
                a = self.encoder.forward_table(t, table, hist_ids, seq)
            else:
                a = self.summarise(t, F.embedding(hist_ids, table), seq)
        a = self.plugins["aggregated"](a, group)
        return pair_features(t, a, self.product)

    def summarise(self, target: torch.Tensor, seq_emb: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """The history (embeddings ``seq_emb [P, L, D]`` of ``seq``) as one vector per target row
        ``[B, D]``: the attended history (DIN), or the encoder's output at the latest position
        (SASRec, GRU4Rec; zeros for an empty history), computed once per history and repeated to the
        ``B = R * P`` rows when histories are shared."""
        enc = self.encoder
        if isinstance(enc, TargetAttentionEncoder):
            return enc(target, seq_emb, seq)
        if isinstance(enc, TransformerStack):
            out = enc(seq_emb, seq, last_only=True)[:, -1] * (seq != 0)[:, -1:]
        else:
            n = (seq != 0).sum(1)
            out = enc(seq_emb, n, last_only=True)[:, -1]
            out = out * (n > 0).unsqueeze(-1).to(out.dtype)
        return out if out.size(0) == target.size(0) else out.repeat(target.size(0) // out.size(0), 1)

    def _mode(self, group: Optional[torch.Tensor], positions: int) -> str:
        """How this batch computes the embedding site (and DIN's history maps): ``embed_mode``, or
        for ``"auto"`` ``"table"`` when the batch has more positions than there are (group, item)
        pairs, else ``"rows"``."""
        if self.embed_mode != "auto":
            return self.embed_mode
        copies = 1 if group is None else self.plugins["embedding"].group_num
        return "table" if copies * self.item_emb.weight.size(0) < positions else "rows"

    def _site_table(self, group: Optional[torch.Tensor]):
        """The embedding site on every item of the table, once per (group, item) pair: ``(table,
        offset)``, ``table [N, D]`` (no group) or ``[G * N, D]`` and ``offset [B]`` (row ``b`` reads
        rows ``group[b] * N + id``; None without groups). The site is a function of the item and the
        row's group, so gathering from this table gives the same values as the site per position;
        the padding row 0 enters as zeros and gets no gradient, as in ``nn.Embedding``."""
        weight = self.item_emb.weight
        site = self.plugins["embedding"]
        table = padded_table(weight)
        if group is None:
            return site(table, None), None
        return site.all_groups(table).reshape(-1, weight.size(1)), group * weight.size(0)

    def for_group(self, group: Optional[int]) -> "PINRecFeatures":
        """A snapshot (copies) for the rows of one group: its plugins' weights (``None``: the bare
        sites, the trunk alone), the embedding site computed per position."""
        sites = {name: BareSite() if group is None else site.single(int(group)) for name, site in self.plugins.items()}
        out = PINRecFeatures(copy.deepcopy(self.item_emb), copy.deepcopy(self.target_trans),
                             copy.deepcopy(self.encoder), sites, self.product)
        out.embed_mode = "rows"
        return out


class PINRecNet(nn.Module):
    """PINRec as a plain module: ``features`` (``PINRecFeatures``) then ``classifier``;
    ``forward(item_id, seq, group=None) -> logits [B]``."""

    def __init__(self, num_items: int, dim: int, arch: Dict[str, Any], max_seq_len: int, group_num: int,
                 bottleneck: int, plugin_init_gain: float = 1e-3):
        super().__init__()
        # parts made in this order (embedding, target_trans, encoder, classifier, plugins): a seed
        # gives the same initial weights as before the network was split into parts
        item_emb = nn.Embedding(num_items, dim, padding_idx=0)
        target_trans = nn.Sequential(nn.Linear(dim, dim), Tanh())
        encoder = make_encoder(arch, dim, max_seq_len)
        product = bool(arch["product"])
        classifier = MLP((3 if product else 2) * dim, [*arch["hidden"], 1], activation=arch["activation"],
                         last_activation=False)
        plugins = {site: GroupAdapters(group_num, dim, bottleneck, plugin_init_gain) for site in SITES}
        self.features = PINRecFeatures(item_emb, target_trans, encoder, plugins, product)
        self.classifier = classifier

    def forward(self, item_id: torch.Tensor, seq: torch.Tensor, group: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.classifier(self.features(item_id, seq, group)).squeeze(-1)


# ---- the model ------------------------------------------------------------------------------------
def _after_load(module, incompatible_keys) -> None:
    """After ``load_state_dict``: the Python flag follows the loaded ``plugins_on`` buffer."""
    module._sync_plugin_flag()


@register_model
class PINRec(TowerFree):
    """PINRec (docs/models.md): a DIN / SASRec / GRU4Rec trunk with per-group plugins at two sites."""

    data_kind = "ctr"

    def __init__(self, num_items: int, embed_dim: int = 32, group_num: int = 5, arch_config: Any = None,
                 plugin_ratio: float = 0.5, plugin_init_gain: float = 1e-3, **base):
        base.setdefault("num_users", 0)
        super().__init__(num_items=num_items, **base)
        if int(group_num) < 1:
            raise ValueError(f"group_num must be >= 1, got {group_num}")
        self.embed_dim, self.group_num = int(embed_dim), int(group_num)
        self.arch = load_arch_config(arch_config)
        r = max(1, int(round(self.embed_dim * float(plugin_ratio))))
        self.net = PINRecNet(self.num_items, self.embed_dim, self.arch, self.max_seq_len, self.group_num, r,
                             float(plugin_init_gain))
        self.register_buffer("plugins_on", torch.zeros((), dtype=torch.bool))
        self._plugins_enabled = False  # mirror of the buffer (no device sync per forward)
        self.register_load_state_dict_post_hook(_after_load)

    # plugin protocol (used by callbacks.plugin_stage.PluginStage) ------------------------------
    def plugin_sites(self) -> Dict[str, nn.Module]:
        """The plugin sites: modules whose parameters carry the group on their first axis."""
        return dict(self.net.features.plugins.items())

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
        return self.net(target, seq, group)

    def score(self, batch) -> torch.Tensor:
        group = None
        if self._plugins_enabled:
            group = batch.get("group_id")
            if group is None:
                raise ValueError("PINRec with plugins on needs batch['group_id'] (set data.group_num, or read "
                                 "sample files that carry group_id)")
        return self.logits(batch["item_id"], batch_histories(batch), group)  # a training batch: each history once

    # on-device part -----------------------------------------------------------------------------
    def edge_parts(self) -> EdgeParts:
        """One device model per group, ``"0"`` .. ``"G-1"`` (rows ``{"group_id": g}``): the trunk with a
        snapshot of that group's plugins, the trunk alone while plugins are off. The cloud part: the
        routed network of every group, ``(item_id, seq, group_id) -> probability`` (the trunk alone,
        ``group_id`` unread, while plugins are off). Copies, on the CPU, in eval mode."""
        on = self._plugins_enabled

        def stages(features: PINRecFeatures) -> EdgeStages:
            return EdgeStages(features=features, classifier=copy.deepcopy(self.net.classifier),
                              output=Probability()).cpu().eval()

        inputs = (ids("item_id", self.num_items), history("seq", self.num_items))
        limits = {"seq": self.max_seq_len}
        device = {str(g): Part(stages(self.net.features.for_group(g if on else None)), inputs, (probability(),),
                               rows={"group_id": g}, axis_limits=limits) for g in range(self.group_num)}
        routed = copy.deepcopy(self.net.features) if on else self.net.features.for_group(None)
        routed.embed_mode = "rows"
        group_id = TensorSpec("group_id", "int64", ("batch",), 0, self.group_num - 1)
        cloud = Part(stages(routed), (*inputs, group_id), (probability(),), axis_limits=limits)
        return EdgeParts(device=device, cloud=cloud)


__all__ = ["PINRec", "PINRecNet", "PINRecFeatures", "GroupAdapters", "Adapter", "BareSite", "make_encoder",
           "load_arch_config", "read_arch_text", "TRUNKS", "ARCH_DEFAULTS", "SITES"]
