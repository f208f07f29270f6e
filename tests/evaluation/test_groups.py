"""Per-group metrics (``evaluation/groups.py``) against hand computations, and the rule that any
pointwise model whose evaluation rows carry ``group_id`` reports them (DIN here, through a
Lightning ``Trainer``)."""
from __future__ import annotations

import math

import pytest
import torch

from recstudio_edge.evaluation.groups import (GroupedAccumulator, group_count, group_table, head_tail_table,
                                              per_group_metrics)


# ---- by hand ------------------------------------------------------------------------------------
def auc_by_hand(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y > 0.5]
    neg = [s for s, y in zip(scores, labels) if y <= 0.5]
    if not pos or not neg:
        return math.nan
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def gauc_by_hand(scores, labels, users):
    num = den = 0.0
    for u in sorted(set(users)):
        rows = [i for i, x in enumerate(users) if x == u]
        a = auc_by_hand([scores[i] for i in rows], [labels[i] for i in rows])
        if not math.isnan(a):
            num, den = num + len(rows) * a, den + len(rows)
    return num / den if den else math.nan


def logloss_by_hand(logits, labels):
    p = [1 / (1 + math.exp(-x)) for x in logits]
    return -sum(y * math.log(q) + (1 - y) * math.log(1 - q) for q, y in zip(p, labels)) / len(p)


def metrics_by_hand(logits, labels, users, groups, group_num):
    out = {}
    for g in range(group_num):
        rows = [i for i, x in enumerate(groups) if x == g]
        out[f"rows_g{g}"] = float(len(rows))
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        out[f"auc_g{g}"] = auc_by_hand(pick(logits), pick(labels)) if rows else math.nan
        out[f"gauc_g{g}"] = gauc_by_hand(pick(logits), pick(labels), pick(users)) if rows else math.nan
        out[f"logloss_g{g}"] = logloss_by_hand(pick(logits), pick(labels)) if rows else math.nan
    return out


def assert_same(got, want):
    assert set(want) <= set(got), sorted(set(want) - set(got))
    for k, v in want.items():
        if math.isnan(v):
            assert math.isnan(got[k]), (k, got[k])
        else:
            assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_per_group_metrics_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.1, -0.3, 1.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    users = torch.tensor([1, 1, 2, 2, 3, 3])
    groups = torch.tensor([0, 0, 1, 1, 1, 1])
    m = per_group_metrics(logits, labels, users, groups, 3)
    assert m["auc_g0"] == 1.0 and m["rows_g1"] == 4 and m["auc_g1"] == 0.25 and math.isnan(m["auc_g2"])
    assert m["gauc_g1"] == 0.5  # user 2 right, user 3 wrong
    assert_same(m, metrics_by_hand(logits.tolist(), labels.tolist(), users.tolist(), groups.tolist(), 3))
    assert math.isnan(per_group_metrics(logits, labels, None, groups, 2)["gauc_g0"])


def test_group_table_and_head_tail_table():
    m = {"auc": 0.7, "gauc": 0.6, **{f"auc_g{g}": 0.5 + 0.1 * g for g in range(4)},
         **{f"gauc_g{g}": 0.4 + 0.1 * g for g in range(4)}, **{f"rows_g{g}": 10.0 for g in range(4)}}
    assert group_count(m) == 4 and group_count({"auc": 0.7}) == 0
    text = group_table({"trunk": m, "plugins": m}, 4)
    assert "plugins" in text.splitlines()[0]
    rows = {line[:16].strip(): line[16:].split() for line in text.splitlines()[1:]}
    assert rows["auc tail"] == ["0.5500", "0.5500"]  # mean of groups 0 and 1
    assert rows["auc head"] == ["0.8000", "0.8000"]  # the top group
    assert rows["gauc g2"] == ["0.6000", "0.6000"]
    one = head_tail_table(m, name="test")
    assert one.splitlines()[0].split() == ["test"] and one == group_table({"test": m}, 4)
    single = {"auc": 0.7, "auc_g0": 0.7, "gauc_g0": 0.6, "rows_g0": 3.0}
    rows = {line[:16].strip(): line[16:].split() for line in head_tail_table(single).splitlines()[1:]}
    assert rows["auc tail"] == rows["auc head"] == ["0.7000"]  # tail keeps the groups that exist
    assert head_tail_table({"auc": 0.7}) is None


def test_grouped_accumulator_collects_group_ids_for_every_batch_or_none():
    acc = GroupedAccumulator()
    acc.update(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 0.0]), torch.tensor([1, 2]), torch.tensor([0, 3]))
    acc.update(torch.tensor([0.3]), torch.tensor([1.0]), torch.tensor([1]), torch.tensor([1]))
    assert acc.group_ids().tolist() == [0, 3, 1]
    with pytest.raises(ValueError, match="every evaluation batch or for none"):
        acc.update(torch.tensor([0.3]), torch.tensor([1.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="group_id has 1"):
        acc.update(torch.tensor([0.3, 0.1]), torch.tensor([1.0, 0.0]), torch.tensor([1, 1]), torch.tensor([1]))
    plain = GroupedAccumulator()
    plain.update(torch.tensor([0.1]), torch.tensor([1.0]), torch.tensor([1]))
    assert plain.group_ids() is None
    with pytest.raises(ValueError, match="every evaluation batch or for none"):
        plain.update(torch.tensor([0.1]), torch.tensor([1.0]), torch.tensor([1]), torch.tensor([0]))


# ---- any pointwise model with group_id: DIN through a Trainer --------------------------------------------
def eval_batches(num_items=30, n_batches=3, B=40, groups=(0, 2), seed=3):
    """Evaluation batches whose rows carry group_id in ``groups`` only (group 1 has no rows)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        seq = torch.randint(1, num_items, (B, 6), generator=g)
        n = torch.randint(0, 7, (B,), generator=g)
        seq = seq.masked_fill(torch.arange(6).unsqueeze(0) < (6 - n).unsqueeze(1), 0)
        out.append({"user_id": torch.randint(1, 9, (B,), generator=g),
                    "item_id": torch.randint(1, num_items, (B,), generator=g), "seq": seq, "seq_len": n, "label": (torch.rand(B, generator=g) < 0.4).float(),
                    "group_id": torch.tensor(groups)[torch.randint(0, len(groups), (B,), generator=g)]})
    return out


def validate(model, batches):
    import lightning.pytorch as pl

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.validate(model, dataloaders=[torch.utils.data.DataLoader(batches, batch_size=None)], verbose=False)
    return model.last_metrics["valid"]


def validate_and_score(model, batches):
    """``(metrics of a validation pass, the logits of every row, column -> list of every row)``."""
    got = validate(model, batches)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model.score(b) for b in batches]).tolist()
    return got, logits, lambda k: torch.cat([b[k] for b in batches]).tolist()


def test_a_pointwise_model_without_group_num_gets_per_group_metrics_from_group_id():
    from recstudio_edge.model.ctr.din import DIN

    torch.manual_seed(0)
    model = DIN(num_items=30, embed_dim=8, hidden=(16, 8), max_seq_len=6)
    assert not hasattr(model, "group_num")
    got, logits, cat = validate_and_score(model, eval_batches())
    # no group_num: groups 0 .. the largest id (2); group 1 has no rows
    want = metrics_by_hand(logits, cat("label"), cat("user_id"), cat("group_id"), 3)
    assert want["rows_g1"] == 0 and want["rows_g0"] + want["rows_g2"] == 120
    assert_same(got, want)
    assert "rows_g3" not in got and "auc_g3" not in got
    assert got["auc"] == pytest.approx(auc_by_hand(logits, cat("label")), rel=1e-6)


def test_without_group_id_there_are_no_group_metrics():
    from recstudio_edge.model.ctr.din import DIN

    torch.manual_seed(0)
    batches = [{k: v for k, v in b.items() if k != "group_id"} for b in eval_batches()]
    got = validate(DIN(num_items=30, embed_dim=8, hidden=(16, 8), max_seq_len=6), batches)
    assert set(got) == {"auc", "gauc", "logloss"}


def test_a_model_with_group_num_reports_every_group():
    """PINRec (group_num=4): groups 0..3 are reported, those without rows as NaN."""
    from recstudio_edge.model.edge.pinrec import PINRec

    torch.manual_seed(0)
    model = PINRec(num_items=30, embed_dim=8, group_num=4, max_seq_len=6)
    model.set_plugins(True)
    got, logits, cat = validate_and_score(model, eval_batches())
    assert_same(got, metrics_by_hand(logits, cat("label"), cat("user_id"), cat("group_id"), 4))
    assert got["rows_g3"] == 0 and math.isnan(got["auc_g3"])
