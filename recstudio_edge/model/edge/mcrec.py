"""MCRec: a meta controller that chooses, per request, the cloud's session recommendation, a cloud
real-time refresh, or the on-device rerank (docs/models.md, "MCRec").

Three networks on 50-long histories (``seq``, left-padded with 0):

- ``CRecNet`` (cloud, ``embed_dim`` 64): item embeddings, DIN's ``TargetAttentionEncoder`` (the
  candidate attends over the history; padding masked with an additive ``-inf`` before the
  softmax: the release multiplied the 0/1 mask into the logits, which gives padding the weight
  of a zero logit), a projection (Linear + ReLU on ``[cand, attended, cand * attended]``) and a
  2-way classifier; the click logit is the difference of its two logits (softmax over 2 classes
  = sigmoid of that difference).
- ``ORecNet`` (device, ``orec_dim`` 16): the same block, its logit plus ``logit(prior_score)``,
  the cloud's session score for the row, a float clipped to ``[prior_eps, 1 - prior_eps]`` (the
  release cast it to an integer first: every prior became 0 or 1).
- ``ControllerNet`` (device, ``controller_dim``): query = the masked mean of the history's
  embeddings, which attends over the history (``TargetAttention``); with the mean of the latest
  ``recent`` items, ``[query, attended, recent, query * recent]`` goes through an MLP to 3 logits:
  choice 0 (session recommendation), 1 (real-time refresh), 2 (on-device rerank). A request goes
  to the argmax of its probabilities, with ``route: balanced`` (default) divided by the choices'
  shares among the training decisions (``choice_prior``): the labels are imbalanced (ties go to
  the cheap choice) and a weak controller's plain argmax is then always the majority choice.

What the choices mean on our data (``data/formats/mcrec.py``): a request's rows carry the history
at the request (``seq``, what the device knows) and at the start of its session
(``session_seq``). Choice 0, *session recommendation*: CRec's scores computed when the session
started, from ``session_seq`` (already on the device; no new cloud call). Choice 1, *real-time
refresh*: CRec rescored on the cloud from the latest history ``seq`` (one cloud call). Choice 2,
*on-device rerank*: ORec on the device from the latest history, with choice 0's score as its
prior. Cost order (ties go to the cheaper): 0, then 2 (device compute), then 1 (a cloud call).

``MCRec`` holds the three; ``phase`` says what a training step trains (the pipeline,
``recstudio_edge/pipelines/mcrec.py``, sets it per step): ``crec`` (CRec's BCE on fresh
histories), ``orec`` (ORec's BCE, CRec frozen, its session score as the prior), ``controller``
(cross-entropy on the counterfactual choices, optional label smoothing; or, with
``controller_loss: regret``, the expected regret of its choice under the replayed log-losses),
``joint`` (CRec + ORec, the
controller too when a batch carries ``choice``: what a plain ``trainer.fit`` does). ``score`` is
phase's model in ``crec`` / ``orec``, else the routed system: the controller's choice per row.

On-device parts (``edge_parts``): ``orec`` (``item_id, seq, prior_score -> probability``) and
``controller`` (``seq -> choice_prob [B, 3]``); the cloud part is CRec's session score
(``item_id, session_seq -> prior_score``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...edge.modules import Probability
from ...edge.protocol import EdgeParts, Part, TensorSpec, history, ids, probability
from ...registry import register_model
from ..layers import MLP, TargetAttention, TargetAttentionEncoder, pair_features
from ..towers import TowerFree

SESSION, REFRESH, DEVICE = 0, 1, 2
COST_ORDER = (SESSION, DEVICE, REFRESH)  # cheapest first: ties in the decision labels go this way


def prior_logit(prior: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``logit(p)`` of a float probability, clipped to ``[eps, 1 - eps]`` (finite at 0 and 1)."""
    p = prior.float().clamp(float(eps), 1.0 - float(eps))
    return torch.log(p) - torch.log1p(-p)


class ScoreBlock(nn.Module):
    """``(item_id [B], seq [B, L]) -> logit [B]``: embeddings, target attention (additive -inf mask),
    projection, 2-way classifier (logit = class 1 - class 0)."""

    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.item_emb = nn.Embedding(num_items, dim, padding_idx=0)
        self.encoder = TargetAttentionEncoder(dim)
        self.proj = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU())
        self.classifier = nn.Linear(dim, 2)

    def forward(self, item_id: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        t = self.item_emb(item_id)
        h = self.proj(pair_features(t, self.encoder(t, self.item_emb(seq), seq), True))
        two = self.classifier(h)
        return two[:, 1] - two[:, 0]


class CRecNet(ScoreBlock):
    """The cloud model (``embed_dim``)."""


class ORecNet(nn.Module):
    """The device model: ``(item_id, seq, prior_score) -> logit``, its block's logit plus the float
    prior's clipped logit."""

    def __init__(self, num_items: int, dim: int, eps: float = 1e-4):
        super().__init__()
        self.block = ScoreBlock(num_items, dim)
        self.eps = float(eps)

    def forward(self, item_id: torch.Tensor, seq: torch.Tensor, prior_score: torch.Tensor) -> torch.Tensor:
        return self.block(item_id, seq) + prior_logit(prior_score, self.eps)


class ControllerNet(nn.Module):
    """``seq [B, L] -> logits [B, 3]`` (module docstring)."""

    def __init__(self, num_items: int, dim: int, recent: int = 5, num_choices: int = 3):
        super().__init__()
        self.item_emb = nn.Embedding(num_items, dim, padding_idx=0)
        self.attention = TargetAttention(dim)
        self.recent = int(recent)
        self.classifier = MLP(4 * dim, [dim, num_choices], activation="relu", last_activation=False)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        real = seq != 0
        e = self.item_emb(seq)
        w = real.unsqueeze(-1).float()
        query = (e * w).sum(1) / w.sum(1).clamp(min=1.0)
        attended = self.attention(query, e, real)
        L = seq.shape[1]
        last = (torch.arange(L, device=seq.device) >= L - self.recent).unsqueeze(0) & real
        wl = last.unsqueeze(-1).float()
        recent = (e * wl).sum(1) / wl.sum(1).clamp(min=1.0)
        return self.classifier(torch.cat([query, attended, recent, query * recent], dim=-1))


class _ORecEdge(nn.Module):
    def __init__(self, net: ORecNet):
        super().__init__()
        self.net, self.out = net, Probability()

    def forward(self, item_id, seq, prior_score):
        return self.out(self.net(item_id, seq, prior_score))


class _ControllerEdge(nn.Module):
    """``seq -> choice_prob``: ``MCRec.routing_probs`` (the prior correction baked in, a constant)."""

    def __init__(self, net: ControllerNet, prior=None):
        super().__init__()
        self.net = net
        self.register_buffer("prior", prior.clone() if prior is not None else torch.ones(3))
        self.balanced = prior is not None

    def forward(self, seq):
        prob = torch.softmax(self.net(seq), dim=-1)
        if self.balanced:
            prob = prob / self.prior
            prob = prob / prob.sum(-1, keepdim=True)
        return prob


class _SessionScore(nn.Module):
    """Cloud: CRec's session score ``(item_id, session_seq) -> prior_score``."""

    def __init__(self, net: CRecNet):
        super().__init__()
        self.net = net

    def forward(self, item_id, session_seq):
        return torch.sigmoid(self.net(item_id, session_seq))


class DecisionAccumulator:
    """The controller's evaluation on decision rows (``seq``, ``choice``): accuracy and cross-entropy."""

    def __init__(self):
        self.logits, self.choice = [], []

    def update(self, model, batch):
        self.logits.append(model.controller(batch["seq"]).detach().float().cpu())
        self.choice.append(batch["choice"].cpu())

    def compute(self, gather):
        logits = gather(torch.cat(self.logits)) if self.logits else torch.zeros(0, 3)
        choice = gather(torch.cat(self.choice)) if self.choice else torch.zeros(0, dtype=torch.long)
        if choice.numel() == 0:
            return {"accuracy": 0.0, "choice_logloss": 0.0}
        return {"accuracy": float((logits.argmax(-1) == choice).float().mean()),
                "choice_logloss": float(F.cross_entropy(logits, choice))}


@register_model
class MCRec(TowerFree):
    """CRec + ORec + the meta controller (module docstring); ``python run.py -m=MCRec`` runs the
    pipeline of ``recstudio_edge/pipelines/mcrec.py``."""

    data_kind = "ctr"
    data_format = "mcrec"
    tasks = {"train": "recstudio_edge.pipelines.mcrec:train", "test": "recstudio_edge.pipelines.mcrec:test",
             "infer": "recstudio_edge.pipelines.mcrec:infer"}
    PHASES = ("joint", "crec", "orec", "controller")
    decision_metric_keys = ("accuracy", "choice_logloss")

    def __init__(self, num_items: int, embed_dim: int = 64, orec_dim: int = 16, controller_dim: int = 16,
                 recent: int = 5, prior_eps: float = 1e-4, label_smoothing: float = 0.0,
                 controller_loss: str = "ce", route: str = "balanced", **base):
        base.setdefault("num_users", 0)
        super().__init__(num_items=num_items, **base)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.crec = CRecNet(self.num_items, int(embed_dim))
        self.orec = ORecNet(self.num_items, int(orec_dim), prior_eps)
        self.controller = ControllerNet(self.num_items, int(controller_dim), recent)
        self.label_smoothing = float(label_smoothing)
        if controller_loss not in ("ce", "regret"):
            raise ValueError(f"controller_loss must be ce or regret, got {controller_loss!r}")
        self.controller_loss = controller_loss
        if route not in ("balanced", "argmax"):
            raise ValueError(f"route must be balanced or argmax, got {route!r}")
        self.route_rule = route
        # the share of each choice among the controller's training decisions (set by the pipeline):
        # ``balanced`` routing divides the controller's probabilities by it (prior shift correction)
        self.register_buffer("choice_prior", torch.full((3,), 1.0 / 3))
        self.cloud_budget = None  # share of requests the routed score may send to the cloud (None: no cap)
        self.phase = "joint"

    # ---- phases -------------------------------------------------------------------------------
    def set_phase(self, phase: str) -> None:
        """What training steps train and ``score`` scores; ``controller`` also evaluates the controller
        on decision rows (accuracy), every other phase the click rows (AUC)."""
        if phase not in self.PHASES:
            raise ValueError(f"phase must be one of {self.PHASES}, got {phase!r}")
        self.phase = phase
        self.eval_kind = "decision" if phase == "controller" else "pointwise"
        self.metric_keys = self.decision_metric_keys if phase == "controller" else ()

    def new_accumulator(self):
        return DecisionAccumulator()

    def metric_mode(self, metric: str) -> str:
        return "min" if metric.lower() in ("logloss", "choice_logloss") else "max"

    # ---- the three scores ---------------------------------------------------------------------------
    def session_logit(self, batch) -> torch.Tensor:
        return self.crec(batch["item_id"], batch.get("session_seq", batch["seq"]))

    def choice_logits(self, batch) -> torch.Tensor:
        """``[B, 3]``: the click logit of each row under choice 0, 1 and 2."""
        s0 = self.session_logit(batch)
        s1 = self.crec(batch["item_id"], batch["seq"])
        prior = batch["prior_score"] if "prior_score" in batch else torch.sigmoid(s0)
        s2 = self.orec(batch["item_id"], batch["seq"], prior)
        return torch.stack([s0, s1, s2], dim=-1)

    def routing_probs(self, seq: torch.Tensor) -> torch.Tensor:
        """``[B, 3]``: the controller's probabilities (``route: argmax``), or with ``route: balanced``
        the same divided by ``choice_prior`` and renormalised: the choice each request is routed to
        is their argmax. Balanced routing corrects for the decision labels' imbalance (the cheap
        choice wins most ties): a weak controller's argmax otherwise always says the majority choice."""
        prob = torch.softmax(self.controller(seq), dim=-1)
        if self.route_rule == "balanced":
            prob = prob / self.choice_prior.clamp(min=1e-3)
            prob = prob / prob.sum(-1, keepdim=True)
        return prob

    def route(self, seq: torch.Tensor, budget=None) -> torch.Tensor:
        """The routed choice per row of ``seq``; with ``budget`` (a share of rows), at most that share
        goes to the cloud refresh (the most confident ones), the rest to the likelier of the other two."""
        return budget_route(self.routing_probs(seq), budget)

    def score(self, batch) -> torch.Tensor:
        if self.phase == "crec":
            return self.crec(batch["item_id"], batch["seq"])
        logits = self.choice_logits(batch)
        if self.phase == "orec":
            return logits[:, DEVICE]
        choice = self.route(batch["seq"], self.cloud_budget)
        return logits.gather(1, choice.unsqueeze(1)).squeeze(1)

    def compute_loss(self, batch):
        y = batch.get("label")
        if self.phase == "controller":
            return self.choice_loss(batch)
        loss = 0.0
        if self.phase in ("crec", "joint"):
            loss = loss + F.binary_cross_entropy_with_logits(self.crec(batch["item_id"], batch["seq"]), y.float())
        if self.phase in ("orec", "joint"):
            if "prior_score" in batch:
                prior = batch["prior_score"]
            else:
                with torch.no_grad():
                    prior = torch.sigmoid(self.session_logit(batch))
            loss = loss + F.binary_cross_entropy_with_logits(self.orec(batch["item_id"], batch["seq"], prior),
                                                             y.float())
        if self.phase == "joint" and "choice" in batch:
            loss = loss + self.choice_loss(batch)
        return loss

    def choice_loss(self, batch) -> torch.Tensor:
        """The controller's loss on decision rows: cross-entropy on ``choice`` (``ce``, with label
        smoothing), or with ``regret`` (rows carrying ``regret [B, 3]``: each choice's replayed
        log-loss plus its cost, minus the row's best) the expected regret of choosing by the
        controller's probabilities: requests where the choice matters weigh more."""
        logits = self.controller(batch["seq"])
        if self.controller_loss == "regret" and "regret" in batch:
            return (torch.softmax(logits, -1) * batch["regret"]).sum(-1).mean()
        return F.cross_entropy(logits, batch["choice"], label_smoothing=self.label_smoothing)

    # ---- on device --------------------------------------------------------------------------------
    def edge_parts(self) -> EdgeParts:
        """``orec`` and ``controller`` on the device; CRec's session score on the cloud (snapshots)."""
        n, L = self.num_items, {"seq": self.max_seq_len}
        orec = _ORecEdge(copy.deepcopy(self.orec)).cpu().eval()
        prior = self.choice_prior.detach().cpu().clamp(min=1e-3) if self.route_rule == "balanced" else None
        ctrl = _ControllerEdge(copy.deepcopy(self.controller).cpu(), prior).cpu().eval()
        cloud = _SessionScore(copy.deepcopy(self.crec)).cpu().eval()
        return EdgeParts(
            device={"orec": Part(orec, inputs=(ids("item_id", n), history("seq", n), probability("prior_score")),
                                 outputs=(probability(),), axis_limits=L),
                    "controller": Part(ctrl, inputs=(history("seq", n),),
                                       outputs=(TensorSpec("choice_prob", "float32", ("batch", 3)),), axis_limits=L)},
            cloud=Part(cloud, inputs=(ids("item_id", n), history("session_seq", n)),
                       outputs=(probability("prior_score"),), axis_limits=L))


def budget_route(prob: torch.Tensor, budget=None) -> torch.Tensor:
    """Choices from the controller's probabilities ``[N, 3]``: the most likely one, except that with
    ``budget`` (a share in [0, 1]) at most ``floor(budget * N)`` rows keep the cloud refresh (those
    with the highest probability of it among the rows that chose it); the others get the more
    likely of the session recommendation and the on-device rerank."""
    choice = prob.argmax(-1)
    if budget is None or float(budget) >= 1.0:
        return choice
    cap = int(float(budget) * prob.shape[0])
    cloud = torch.nonzero(choice == REFRESH).flatten()
    if cloud.numel() > cap:
        order = torch.argsort(prob[cloud, REFRESH], descending=True, stable=True)
        demote = cloud[order[cap:]]
        other = torch.where(prob[demote, SESSION] >= prob[demote, DEVICE], SESSION, DEVICE)
        choice = choice.clone()
        choice[demote] = other
    return choice


__all__ = ["MCRec", "CRecNet", "ORecNet", "ControllerNet", "ScoreBlock", "prior_logit", "budget_route",
           "DecisionAccumulator", "SESSION", "REFRESH", "DEVICE", "COST_ORDER"]
