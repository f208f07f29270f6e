"""MCRec: the release's bugs (multiplied masks, the integer prior) each fail here on the release's
behaviour; the decision labels; the cloud budget; the one-command pipeline on generated data with
planted structure (through the CLI), a step rerun alone, --task=test / infer / export, and the
routed decision served end to end by the torch-free runtime."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from recstudio_edge.model.edge.mcrec import (DEVICE, REFRESH, SESSION, ControllerNet, MCRec, ORecNet, ScoreBlock,
                                             budget_route, prior_logit)
from recstudio_edge.pipelines.mcrec import decide, replay_losses


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one intra-op thread is faster, and the same numbers on every machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the release's bugs ---------------------------------------------------------------------------------
def _release_attention(att, target, hist, mask):
    """The release's masking: the 0/1 mask multiplied into the logits (padding keeps a zero logit)."""
    q = att.q(target).unsqueeze(1)
    logits = (q * att.k(hist)).sum(-1) * att.scale * mask.float()
    return torch.bmm(torch.softmax(logits, -1).unsqueeze(1), att.v(hist)).squeeze(1)


def test_padding_is_masked_additively_so_it_changes_nothing():
    torch.manual_seed(0)
    block = ScoreBlock(50, 8)
    seq = torch.randint(1, 50, (4, 5))
    padded = torch.cat([torch.zeros(4, 7, dtype=torch.long), seq], 1)
    item = torch.randint(1, 50, (4,))
    torch.testing.assert_close(block(item, padded), block(item, seq))  # ours: padding gets weight 0
    ctrl = ControllerNet(50, 8, recent=3)
    torch.testing.assert_close(ctrl(padded), ctrl(seq))
    # the release's multiplied mask gives the padding the weight of a zero logit: the test above fails on it
    enc = block.encoder
    t = block.item_emb(item)
    mult = lambda s: _release_attention(enc.attention, t, enc.seq_trans(block.item_emb(s)), s != 0)  # noqa: E731
    assert (mult(padded) - mult(seq)).abs().max() > 1e-3


def test_the_prior_is_the_clipped_logit_of_a_float_score():
    torch.manual_seed(0)
    net = ORecNet(50, 4, eps=1e-4)
    item, seq = torch.randint(1, 50, (3,)), torch.randint(0, 50, (3, 6))
    base = net.block(item, seq)
    outs = [net(item, seq, torch.full((3,), p)) for p in (0.1, 0.3, 0.6, 0.9)]
    for lo, hi in zip(outs, outs[1:]):  # an integer cast makes 0.1 .. 0.9 the same prior (0): no order at all
        assert bool((hi > lo + 0.5).all())
    torch.testing.assert_close(outs[1] - base, torch.full((3,), math.log(0.3 / 0.7)))
    edge = net(item, seq, torch.tensor([0.0, 1.0, 0.5]))  # 0 and 1 clipped: finite
    assert torch.isfinite(edge).all() and float(prior_logit(torch.tensor(1.0))) == pytest.approx(math.log(1 / 1e-4 - 1), rel=1e-3)
    release = lambda p: net.block(item, seq) + prior_logit(p.long().float())  # noqa: E731  (the release's int cast)
    assert torch.equal(release(torch.full((3,), 0.3)), release(torch.full((3,), 0.6)))


def test_orec_trains_on_crec_float_session_scores():
    torch.manual_seed(0)
    m = MCRec(num_items=30, embed_dim=8, orec_dim=4, controller_dim=4)
    m.set_phase("orec")
    b = {"item_id": torch.randint(1, 30, (6,)), "seq": torch.randint(0, 30, (6, 5)),
         "session_seq": torch.randint(0, 30, (6, 5)), "label": torch.tensor([1.0, 0, 1, 0, 1, 0])}
    m.compute_loss(b).backward()
    assert m.crec.item_emb.weight.grad is None and m.orec.block.item_emb.weight.grad is not None  # CRec frozen
    logits = m.choice_logits(b)
    prior = torch.sigmoid(m.crec(b["item_id"], b["session_seq"]))
    assert bool(((prior > 0.01) & (prior < 0.99)).all())  # a float, not 0/1
    torch.testing.assert_close(logits[:, DEVICE], m.orec(b["item_id"], b["seq"], prior))


def test_the_regret_objective_is_the_expected_regret_of_the_choice():
    torch.manual_seed(0)
    m = MCRec(num_items=30, embed_dim=8, orec_dim=4, controller_dim=4, controller_loss="regret")
    m.set_phase("controller")
    b = {"seq": torch.randint(0, 30, (4, 5)), "choice": torch.tensor([0, 1, 2, 0]),
         "regret": torch.tensor([[0.0, 0.3, 0.1], [0.2, 0.0, 0.4], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])}
    p = torch.softmax(m.controller(b["seq"]), -1)
    torch.testing.assert_close(m.compute_loss(b), (p * b["regret"]).sum(-1).mean())
    m.controller_loss = "ce"
    torch.testing.assert_close(m.compute_loss(b), torch.nn.functional.cross_entropy(m.controller(b["seq"]), b["choice"]))


# ---- decision labels and routing -------------------------------------------------------------------------
def test_labels_are_the_lowest_logloss_with_ties_to_the_cheaper_choice():
    logits = torch.tensor([[2.0, 2.0, -1.0], [2.0, 2.0, -1.0], [-1.0, 2.0, 1.0], [-1.0, 2.0, 1.0], [0.5, 0.5, 0.5]])
    label = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    local = torch.tensor([0, 0, 1, 1, 2])
    losses = replay_losses(logits, label, local)
    assert losses.shape == (3, 3)
    assert decide(losses).tolist() == [SESSION, REFRESH, SESSION]  # 0 == 1: the cheaper; all equal: 0
    assert decide(torch.tensor([[0.5, 0.45, 0.45]])).tolist() == [DEVICE]  # 1 == 2: the device (cheaper than a call)
    assert decide(torch.tensor([[0.5, 0.45, 0.6]]), margin=0.1).tolist() == [SESSION]  # within the margin: a tie


def test_balanced_routing_divides_by_the_training_decisions_shares():
    torch.manual_seed(0)
    m = MCRec(num_items=30, embed_dim=8, orec_dim=4, controller_dim=4)
    seq = torch.randint(0, 30, (6, 5))
    raw = torch.softmax(m.controller(seq), -1)
    m.choice_prior.copy_(torch.tensor([0.8, 0.1, 0.1]))
    want = raw / m.choice_prior
    torch.testing.assert_close(m.routing_probs(seq), want / want.sum(-1, keepdim=True))
    assert m.route(seq).tolist() == want.argmax(-1).tolist()
    torch.testing.assert_close(m.edge_parts().device["controller"].module(seq), m.routing_probs(seq))
    plain = MCRec(num_items=30, embed_dim=8, orec_dim=4, controller_dim=4, route="argmax")
    plain.load_state_dict(m.state_dict())
    torch.testing.assert_close(plain.routing_probs(seq), raw)


def test_cloud_budget_keeps_the_most_confident_refreshes():
    prob = torch.tensor([[0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    assert budget_route(prob).tolist() == [1, 1, 1, 0, 1]
    got = budget_route(prob, 0.4)  # 2 of 5 may call the cloud: the 0.8 and the 0.7
    assert got.tolist() == [1, 0, 2, 0, 1] and int((got == REFRESH).sum()) == 2


# ---- the pipeline ----------------------------------------------------------------------------------------
ARGS = ["-m=MCRec", "-d=mcrec-gen", "--data.max_seq_len=10", "--embed_dim=32", "--orec_dim=16", "--controller_dim=16",
        "--data.requests_per_user=0", "--data.exposures=3", "--data.split.ratios=[0.7,0.15,0.15]",
        "--mcrec.crec_epochs=8", "--mcrec.orec_epochs=6", "--mcrec.controller_epochs=30", "--train.lr=0.005",
        "--eval.patience=100", "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    from recstudio_edge.cli import main
    from recstudio_edge.data.formats.mcrec import write_atomic
    from recstudio_edge.runner import RUN_DIR_ENV

    root = tmp_path_factory.mktemp("mcrec")
    write_atomic(root / "data", "mcrec-gen", num_users=300)

    def run(*args):
        os.environ.pop(RUN_DIR_ENV, None)
        res = main([f"--data_dir={root / 'data'}", f"--output_dir={root / 'out'}", *ARGS, *args])
        os.environ.pop(RUN_DIR_ENV, None)
        return res, Path(res["run_dir"])

    return run


@pytest.fixture(scope="module")
def trained(cli):
    return cli()


def test_one_command_runs_the_pipeline_and_routing_beats_device_and_random(trained):
    res, run = trained
    for f in ("crec.ckpt", "orec.ckpt", "controller.ckpt", "best.ckpt", "decisions_valid.tsv", "decisions_test.tsv",
              "metrics.json"):
        assert (run / f).is_file(), f
    t = json.loads((run / "metrics.json").read_text())["test"]
    assert t == res["test"]
    # the routed system: at least always-device, better than a random router with its mix, fewer cloud calls
    assert t["auc_routed"] >= t["auc_always2"] and t["auc_routed"] > t["auc_random"] + 0.002, t
    assert t["logloss_routed"] < t["logloss_always2"] and 0.0 < t["cloud_share"] < 1.0, t
    assert t["auc_oracle"] > max(t["auc_always0"], t["auc_always1"], t["auc_always2"], t["auc_routed"])
    assert abs(sum(t[f"share_{c}"] for c in range(3)) - 1) < 1e-6 and 0.34 < t["accuracy"] <= 1
    from recstudio_edge.data.formats.mcrec import read_rows

    dec = read_rows(run / "decisions_test.tsv", "controller", 10)
    assert set(dec["choice"].tolist()) == {0, 1, 2} and res["routing"]["requests"] == dec["choice"].numel()


def test_a_step_reruns_alone_from_the_artefacts(cli, trained):
    _, first = trained
    res, run = cli("--mcrec.step=controller", f"--mcrec.from={first}", "--mcrec.cloud_budget=0.1")
    assert (run / "controller.ckpt").is_file() and not (run / "crec").exists()
    assert (run / "decisions_valid.tsv").read_bytes() == (first / "decisions_valid.tsv").read_bytes()
    assert res["test"]["cloud_share"] <= 0.1 + 1e-9
    # the always-* rows come from the same CRec and ORec
    assert res["test"]["auc_always2"] == pytest.approx(trained[0]["test"]["auc_always2"], abs=1e-9)


def test_test_infer_and_export_and_the_runtime_serves_the_routed_decision(cli, trained):
    import numpy as np

    from recstudio_edge.pipelines.mcrec import routed_on_device

    res, run = trained
    t, _ = cli("--task=test", f"--ckpt={run / 'best.ckpt'}")
    assert t["test"]["auc_routed"] == pytest.approx(res["test"]["auc_routed"], abs=1e-6)
    inf, inf_run = cli("--task=infer", f"--ckpt={run / 'best.ckpt'}")
    lines = (inf_run / "infer.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["request", "user_id", "item_id", "label", "choice", "probability"]
    assert len(lines) - 1 == res["routing"]["rows"]
    ex, ex_run = cli("--task=export", f"--ckpt={run / 'best.ckpt'}")
    assert {"orec", "controller"} == set(ex["export"]) and all(r["max_abs_diff"] < 1e-4 for r in ex["export"].values())
    # the torch-free runtime: the exported controller routes, the exported ORec scores the device rows
    from recstudio_edge.checkpoint import load_weights
    from recstudio_edge.pipelines.mcrec import choice_logits, controller_probs, requests_of

    model = MCRec(num_items=int(json.loads((ex_run / "edge_orec.json").read_text())["vocab"]["num_items"]),
                  embed_dim=32, orec_dim=16, controller_dim=16, max_seq_len=10)
    load_weights(model, run / "best.ckpt")
    rows = _test_rows(cli, run)
    logits = choice_logits(model, rows)
    got, choice = routed_on_device({"orec": ex_run / "edge_orec.onnx", "controller": ex_run / "edge_controller.onnx"},
                                   rows, logits[:, :2])
    local, first = requests_of(rows)
    want_choice = controller_probs(model, rows["seq"][first]).argmax(-1)[local]
    assert np.array_equal(choice, want_choice.numpy()) and (choice == DEVICE).any()
    want = torch.sigmoid(logits.gather(1, want_choice.unsqueeze(1)).squeeze(1)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    served = np.array([float(x.split("\t")[-1]) for x in lines[1:]])
    np.testing.assert_allclose(served, want, atol=1e-5)


def _test_rows(cli, run):
    """The test rows of the run's data (the same config)."""
    import yaml

    from recstudio_edge.model import get_model_class
    from recstudio_edge.runner import build_datamodule

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return build_datamodule(cfg, get_model_class("MCRec")).source.stage_rows("test").rows
