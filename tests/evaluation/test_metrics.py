import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.retrieval import (
    retrieval_average_precision,
    retrieval_hit_rate,
    retrieval_normalized_dcg,
    retrieval_precision,
    retrieval_recall,
    retrieval_reciprocal_rank,
)

from recstudio_edge.evaluation.metrics import (
    PointwiseAccumulator,
    RankingAccumulator,
    auc,
    gauc,
    logloss,
    mean_over_users,
    ranking_metrics,
)
from recstudio_edge.evaluation.topk import topk_hits

NAMES = ["recall", "precision", "hit", "mrr", "ndcg", "map"]
CUTOFFS = [1, 3, 5]

# discounts d_i = 1 / log2(i + 1)
D1, D2, D3, D4, D5 = 1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5), 1 / math.log2(6)

# ------------------------------------------------------------------------------------------
# Hand-computed case (K = 5):
#   u0: hits [1,0,1,0,0], num_pos 2
#   u1: hits [0,1,1,1,1], num_pos 6  (more positives than k: IDCG / map use min(6, k))
#   u2: hits [0,0,0,0,0], num_pos 3  (no hit: every metric 0)
#   u3: hits [0,0,0,0,0], num_pos 0  (no positives: NaN, excluded from the mean)
HITS = torch.tensor(
    [[1, 0, 1, 0, 0], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool
)
NUM_POS = torch.tensor([2, 6, 3, 0])
NAN = float("nan")
EXPECTED = {
    # recall = hits@k / num_pos: u0 1/2, 2/2, 2/2 | u1 0/6, 2/6, 4/6
    "recall@1": [1 / 2, 0, 0, NAN],
    "recall@3": [1.0, 2 / 6, 0, NAN],
    "recall@5": [1.0, 4 / 6, 0, NAN],
    # precision = hits@k / k: u0 1/1, 2/3, 2/5 | u1 0/1, 2/3, 4/5
    "precision@1": [1.0, 0, 0, NAN],
    "precision@3": [2 / 3, 2 / 3, 0, NAN],
    "precision@5": [2 / 5, 4 / 5, 0, NAN],
    # hit = any hit in top k
    "hit@1": [1.0, 0, 0, NAN],
    "hit@3": [1.0, 1, 0, NAN],
    "hit@5": [1.0, 1, 0, NAN],
    # mrr: u0 first hit at rank 1; u1 first hit at rank 2 (outside k = 1)
    "mrr@1": [1.0, 0, 0, NAN],
    "mrr@3": [1.0, 1 / 2, 0, NAN],
    "mrr@5": [1.0, 1 / 2, 0, NAN],
    # ndcg: u0 DCG@1 = d1, IDCG@1 = d1; DCG@3 = DCG@5 = d1 + d3, IDCG = d1 + d2 (min(2, k) = 2)
    #       u1 DCG@1 = 0; DCG@3 = d2 + d3, IDCG@3 = d1 + d2 + d3 (min(6, 3) = 3);
    #          DCG@5 = d2 + d3 + d4 + d5, IDCG@5 = d1 + ... + d5 (min(6, 5) = 5)
    "ndcg@1": [1.0, 0, 0, NAN],
    "ndcg@3": [(D1 + D3) / (D1 + D2), (D2 + D3) / (D1 + D2 + D3), 0, NAN],
    "ndcg@5": [(D1 + D3) / (D1 + D2), (D2 + D3 + D4 + D5) / (D1 + D2 + D3 + D4 + D5), 0, NAN],
    # map: u0 @1 (P@1 * 1) / min(2, 1) = 1; @3 = @5 = (1 + 2/3) / min(2, k) = (5/3) / 2
    #      u1 @1 0 / 1; @3 (1/2 + 2/3) / min(6, 3) = 7/18; @5 (1/2 + 2/3 + 3/4 + 4/5) / 5 = 163/300
    "map@1": [1.0, 0, 0, NAN],
    "map@3": [5 / 6, 7 / 18, 0, NAN],
    "map@5": [5 / 6, 163 / 300, 0, NAN],
}


def test_ranking_metrics_by_hand():
    values = ranking_metrics(HITS, NUM_POS, CUTOFFS, NAMES)
    assert list(values) == [f"{n}@{k}" for n in NAMES for k in CUTOFFS]
    for key, expected in EXPECTED.items():
        torch.testing.assert_close(values[key], torch.tensor(expected), equal_nan=True, msg=key)
        assert values[key].shape == (4,)


def test_mean_over_users_excludes_rows_without_positives():
    values = ranking_metrics(HITS, NUM_POS, CUTOFFS, NAMES)
    means = mean_over_users(values, NUM_POS)
    for key, expected in EXPECTED.items():
        # mean over u0, u1, u2 only (u3 has no positives)
        assert means[key] == pytest.approx(sum(expected[:3]) / 3, abs=1e-6), key
    assert math.isnan(mean_over_users(ranking_metrics(HITS[3:], NUM_POS[3:], [1], ["hit"]), NUM_POS[3:])["hit@1"])


def test_ranking_accumulator_over_batches_and_processes():
    # "process A" sees u0, u3 in two batches, "process B" sees u1, u2 in one
    acc_a, acc_b = RankingAccumulator(CUTOFFS, NAMES), RankingAccumulator(CUTOFFS, NAMES)
    acc_a.update(HITS[:1], NUM_POS[:1])
    acc_a.update(HITS[3:], NUM_POS[3:])
    acc_b.update(HITS[1:3], NUM_POS[1:3])
    (sa, ca), (sb, cb) = acc_a.state(), acc_b.state()
    assert ca.item() == 1 and cb.item() == 2
    res = acc_a.compute(sa + sb, ca + cb)  # what an all-reduce (sum) gives
    for key, expected in EXPECTED.items():
        assert res[key] == pytest.approx(sum(expected[:3]) / 3, abs=1e-6), key
    # own state only
    assert acc_a.compute()["ndcg@3"] == pytest.approx(EXPECTED["ndcg@3"][0])
    acc_a.reset()
    assert all(math.isnan(v) for v in acc_a.compute().values())


def test_unknown_metric_name_suggests_closest():
    with pytest.raises(ValueError, match="ndcg"):
        ranking_metrics(HITS, NUM_POS, [1], ["ndgc"])
    with pytest.raises(ValueError, match="'recall'"):
        RankingAccumulator([1], ["recal"])
    # names are case-insensitive, keys lower-case
    assert list(ranking_metrics(HITS, NUM_POS, [1], ["NDCG"])) == ["ndcg@1"]


def test_cutoff_larger_than_ranked_list_rejected():
    with pytest.raises(ValueError):
        ranking_metrics(HITS, NUM_POS, [6], ["recall"])


def test_ranking_metrics_match_torchmetrics_retrieval():
    """Cross-check against torchmetrics.functional.retrieval (1.9) per user.

    Definitional differences found (we keep RecBole's definitions):
    * retrieval_average_precision(top_k=k) divides by the number of hits in the
      top k; RecBole's map@k divides by min(num_pos, k). Checked below as
      ours * min(num_pos, k) == theirs * hits@k.
    * recall / precision / reciprocal_rank / average_precision in torchmetrics
      treat items scored <= 0 as irrelevant (target = where(preds > 0, target, 0)),
      hit_rate and ndcg do not; scores here are kept > 0 so they agree.
    * torchmetrics' ndcg averages gains over tied scores; scores here are distinct.
    * a user without positives gives 0 in torchmetrics, NaN (excluded) here.
    """
    g = torch.Generator().manual_seed(0)
    n_users, n_items, max_k = 40, 30, 10
    scores = torch.stack([torch.randperm(n_items, generator=g) for _ in range(n_users)]).float() + 1.0  # distinct, > 0
    target = torch.rand(n_users, n_items, generator=g) < 0.15
    target[0] = False  # one user without positives
    target[1] = True  # one user with more positives than any k
    rows, cols = target.nonzero(as_tuple=True)
    _, hits, num_pos = topk_hits(scores, max_k, rows, cols)
    cutoffs = [1, 3, 5, 10]
    ours = ranking_metrics(hits, num_pos, cutoffs, NAMES)
    refs = {
        "ndcg": retrieval_normalized_dcg,
        "recall": retrieval_recall,
        "precision": retrieval_precision,
        "mrr": retrieval_reciprocal_rank,
        "hit": retrieval_hit_rate,
    }
    checked = 0
    for u in range(n_users):
        if num_pos[u] == 0:
            assert all(math.isnan(v[u].item()) for v in ours.values())
            continue
        for k in cutoffs:
            for name, fn in refs.items():
                ref = fn(scores[u], target[u], top_k=k)
                assert ours[f"{name}@{k}"][u].item() == pytest.approx(ref.item(), abs=1e-5), (u, name, k)
                checked += 1
            n_hits = hits[u, :k].sum().item()
            ap_tm = retrieval_average_precision(scores[u], target[u], top_k=k).item()
            ours_map = ours[f"map@{k}"][u].item()
            assert ours_map * min(num_pos[u].item(), k) == pytest.approx(ap_tm * n_hits, abs=1e-5), (u, k)
            if 0 < n_hits < min(num_pos[u].item(), k):
                assert ours_map < ap_tm  # the denominators really differ
    assert checked > 500


# ------------------------------------------------------------------------------------------ AUC


def brute_auc(scores, labels):
    pos = scores[labels.bool()]
    neg = scores[~labels.bool()]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).double().sum() + 0.5 * (diff == 0).double().sum()) / (pos.numel() * neg.numel())


def test_auc_by_hand_with_ties():
    assert auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])).item() == 0.5
    # sklearn's doc example: pairs (0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4) -> 3/4
    assert auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])).item() == 0.75
    # pos {0.5, 0.9}, neg {0.2, 0.5, 0.5}: 0.5 beats 0.2 (1) + ties 0.5, 0.5 (0.5 + 0.5); 0.9 beats all (3) -> 5/6
    s = torch.tensor([0.2, 0.5, 0.5, 0.5, 0.9])
    y = torch.tensor([0, 1, 0, 0, 1])
    assert auc(s, y).item() == pytest.approx(5 / 6)
    assert auc(s, y.bool()).item() == pytest.approx(5 / 6)
    assert auc(s, y.float()).item() == pytest.approx(5 / 6)
    # all tied -> 0.5; perfectly inverted -> 0
    assert auc(torch.ones(6), torch.tensor([1, 0, 1, 0, 0, 1])).item() == 0.5
    assert auc(torch.tensor([3.0, 2, 1]), torch.tensor([0, 1, 1])).item() == 0.0


def test_auc_single_class_or_empty_is_nan():
    assert math.isnan(auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 1])).item())
    assert math.isnan(auc(torch.tensor([0.1, 0.9]), torch.tensor([0, 0])).item())
    assert math.isnan(auc(torch.zeros(0), torch.zeros(0)).item())


def test_auc_matches_brute_force_and_torchmetrics_on_random_data_with_ties():
    g = torch.Generator().manual_seed(0)
    for n in (7, 100, 1000):
        s = (torch.rand(n, generator=g) * 20).round() / 20  # many ties
        y = (torch.rand(n, generator=g) < 0.3).long()
        y[0], y[1] = 0, 1
        ours = auc(s, y).item()
        assert ours == pytest.approx(brute_auc(s, y).item(), abs=1e-12)
        # torchmetrics' binary_auroc counts ties half too (float32 trapezoids; 0 on one class)
        assert ours == pytest.approx(binary_auroc(s, y).item(), abs=1e-5)
    logits = torch.randn(500, generator=g)
    y = (torch.rand(500, generator=g) < 0.5).long()
    assert auc(logits, y).item() == pytest.approx(brute_auc(logits, y).item(), abs=1e-12)


# ----------------------------------------------------------------------------------------- GAUC

# group 7: s [0.9, 0.3, 0.3], y [1, 0, 1]: 0.9>0.3 (1) + tie 0.3=0.3 (0.5) over 2*1 pairs -> 0.75, n=3
# group 2: s [0.1, 0.2, 0.6, 0.4], y [1, 0, 0, 1]: pos 0.1 beats none, 0.4 beats 0.2 -> 1/4, n=4
# group 5: s [0.5, 0.7], y [1, 1]: single class -> excluded
# group 9: s [0.5, 0.5], y [0, 1]: tie -> 0.5, n=2
# GAUC = (3*0.75 + 4*0.25 + 2*0.5) / (3 + 4 + 2) = 4.25 / 9
G_ROWS = [
    (7, 0.9, 1), (7, 0.3, 0), (7, 0.3, 1),
    (2, 0.1, 1), (2, 0.2, 0), (2, 0.6, 0), (2, 0.4, 1),
    (5, 0.5, 1), (5, 0.7, 1),
    (9, 0.5, 0), (9, 0.5, 1),
]  # fmt: skip


def _g_tensors(rows):
    groups = torch.tensor([r[0] for r in rows])
    scores = torch.tensor([r[1] for r in rows])
    labels = torch.tensor([r[2] for r in rows])
    return scores, labels, groups


def test_gauc_by_hand_single_class_group_excluded_and_impression_weights():
    s, y, grp = _g_tensors(G_ROWS)
    assert gauc(s, y, grp).item() == pytest.approx(4.25 / 9)
    perm = torch.randperm(len(G_ROWS), generator=torch.Generator().manual_seed(3))
    assert gauc(s[perm], y[perm], grp[perm]).item() == pytest.approx(4.25 / 9)  # row order irrelevant
    # adding a single-class group of any size changes nothing
    s2 = torch.cat([s, torch.rand(50)])
    y2 = torch.cat([y, torch.zeros(50, dtype=torch.long)])
    g2 = torch.cat([grp, torch.full((50,), 11)])
    assert gauc(s2, y2, g2).item() == pytest.approx(4.25 / 9)


def test_gauc_edge_cases():
    s, y, grp = _g_tensors(G_ROWS)
    assert gauc(s, y, torch.zeros_like(grp)).item() == pytest.approx(auc(s, y).item())  # one group == AUC
    only_single = torch.tensor([0, 0, 1, 1])
    assert math.isnan(gauc(torch.rand(4), torch.tensor([1, 1, 0, 0]), only_single).item())
    assert math.isnan(gauc(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long)).item())


def test_gauc_matches_per_group_brute_force_on_random_data():
    g = torch.Generator().manual_seed(0)
    n = 3000
    s = (torch.rand(n, generator=g) * 10).round() / 10  # ties across and within groups
    y = (torch.rand(n, generator=g) < 0.4).long()
    grp = torch.randint(-5, 120, (n,), generator=g) * 1000  # sparse, negative ids too
    num, den = 0.0, 0
    for gid in grp.unique().tolist():
        m = grp == gid
        if 0 < y[m].sum() < m.sum():
            num += m.sum().item() * brute_auc(s[m], y[m]).item()
            den += m.sum().item()
    assert gauc(s, y, grp).item() == pytest.approx(num / den, abs=1e-12)


# -------------------------------------------------------------------------------------- logloss


def test_logloss_matches_torch_bce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, generator=g) * 3
    y = (torch.rand(1000, generator=g) < 0.3).long()
    ref = F.binary_cross_entropy_with_logits(logits, y.float())
    torch.testing.assert_close(logloss(logits, y), ref)
    probs = torch.sigmoid(logits)
    torch.testing.assert_close(logloss(probs, y, from_logits=False), F.binary_cross_entropy(probs, y.float()))


def test_logloss_clips_probabilities():
    p = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y = torch.tensor([1, 0])
    # both rows clipped to 1e-7 from the wrong side: -log(1e-7) each
    assert logloss(p, y, from_logits=False).item() == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert logloss(torch.tensor([1.0, 0.0], dtype=torch.float64), y, from_logits=False).item() == pytest.approx(
        -math.log(1 - 1e-7), rel=1e-6
    )


# --------------------------------------------------------------------------- PointwiseAccumulator


def test_pointwise_accumulator():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, generator=g)
    y = (torch.rand(300, generator=g) < 0.4).long()
    grp = torch.randint(0, 20, (300,), generator=g)
    acc = PointwiseAccumulator()
    for a, b in [(0, 100), (100, 250), (250, 300)]:
        acc.update(logits[a:b], y[a:b], grp[a:b])
    lg, lb, gr = acc.tensors()
    assert torch.equal(lg, logits) and torch.equal(lb, y) and torch.equal(gr, grp)
    res = acc.compute()
    assert set(res) == {"auc", "gauc", "logloss"}
    assert res["auc"] == pytest.approx(brute_auc(logits, y).item())
    assert res["gauc"] == pytest.approx(gauc(logits, y, grp).item())
    assert res["logloss"] == pytest.approx(F.binary_cross_entropy_with_logits(logits, y.float()).item(), rel=1e-6)
    # computing on caller-gathered tensors (e.g. after all_gather)
    assert acc.compute(lg, lb, gr) == res
    acc.reset()
    acc.update(logits, y)
    assert math.isnan(acc.compute()["gauc"])
    with pytest.raises(ValueError):
        acc.update(logits, y, grp)  # groups for some batches only
