"""Micro- and macro-F1 of the multi-label evaluation against values worked out by hand."""
import pytest
import torch

from recstudio_edge.evaluation.multilabel import MultiLabelAccumulator, multilabel_f1

# 3 nodes x 4 classes; class 3: nobody has it, nobody predicts it
LABEL = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
PROB = torch.tensor([[0.9, 0.2, 0.4, 0.1], [0.6, 0.7, 0.1, 0.0], [0.8, 0.3, 0.2, 0.3]])
# predicted (> 0.5): [[1,0,0,0],[1,1,0,0],[1,0,0,0]]
# class 0: tp 2 fp 1 fn 0 -> F1 4/5; class 1: tp 1 fp 0 fn 1 -> 2/3; class 2: tp 0 fp 0 fn 1 -> 0; class 3: undefined
# micro: tp 3, fp 1, fn 2 -> 6 / 9
MICRO, MACRO = 6 / 9, (4 / 5 + 2 / 3 + 0.0) / 3


def test_f1_matches_the_hand_computed_values():
    got = multilabel_f1(PROB, LABEL)
    assert got["micro_f1"] == pytest.approx(MICRO)
    # the class with no F1 is left out: counting it as 0 would give 0.3667, as 1 0.6167
    assert got["macro_f1"] == pytest.approx(MACRO)
    assert multilabel_f1(PROB, LABEL, threshold=0.65)["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 2))
    assert multilabel_f1(LABEL, LABEL) == {"micro_f1": 1.0, "macro_f1": 1.0}
    assert multilabel_f1(torch.zeros(2, 3), torch.zeros(2, 3)) == {"micro_f1": 0.0, "macro_f1": 0.0}


def test_the_accumulator_sums_batches_and_processes():
    class Model:  # update(model, batch) scores the batch with model(batch)
        def __call__(self, batch):
            return batch["prob"]

    acc = MultiLabelAccumulator()
    acc.update(Model(), {"prob": PROB[:2], "label": LABEL[:2]})
    acc.update(Model(), {"prob": PROB[2:], "label": LABEL[2:]})
    one = acc.compute()
    assert one["micro_f1"] == pytest.approx(MICRO) and one["macro_f1"] == pytest.approx(MACRO)
    assert one["rows_nodes"] == 3
    # two processes holding the same counts: sums of the gathered counts, same F1, twice the rows
    two = acc.compute(lambda t: torch.cat([t, t]))
    assert two["micro_f1"] == pytest.approx(MICRO) and two["rows_nodes"] == 6
    assert MultiLabelAccumulator().compute()["micro_f1"] == 0.0
