import pytest
import torch

from recstudio_edge.evaluation.topk import csr_rows, mask_scores_, topk_hits

NEG_INF = float("-inf")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _csr(lists):
    """Build (indptr, indices) from a list of per-user item lists."""
    lengths = torch.tensor([len(x) for x in lists], dtype=torch.long)
    indptr = torch.zeros(len(lists) + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(lengths, 0)
    indices = torch.tensor([i for x in lists for i in x], dtype=torch.long)
    return indptr, indices


# ----------------------------------------------------------------- csr_rows


def test_csr_rows_expands_batch_in_order_with_repeats():
    # user 0 -> [3, 1], user 1 -> [], user 2 -> [4, 0, 2]
    indptr, indices = _csr([[3, 1], [], [4, 0, 2]])
    rows, cols = csr_rows(indptr, indices, torch.tensor([2, 0, 1, 2]))
    assert rows.dtype == torch.long and cols.dtype == torch.long
    assert rows.tolist() == [0, 0, 0, 1, 1, 3, 3, 3]
    assert cols.tolist() == [4, 0, 2, 3, 1, 4, 0, 2]


def test_csr_rows_empty_cases():
    indptr, indices = _csr([[3, 1], [], [4]])
    rows, cols = csr_rows(indptr, indices, torch.tensor([1, 1]))
    assert rows.numel() == 0 and cols.numel() == 0
    rows, cols = csr_rows(indptr, indices, torch.zeros(0, dtype=torch.long))
    assert rows.numel() == 0 and cols.numel() == 0


def test_csr_rows_matches_python_reference_on_random_csr():
    g = torch.Generator().manual_seed(0)
    lists = [torch.randperm(50, generator=g)[: int(torch.randint(0, 12, (1,), generator=g))].tolist() for _ in range(40)]
    indptr, indices = _csr(lists)
    users = torch.randint(0, 40, (25,), generator=g)
    rows, cols = csr_rows(indptr, indices, users)
    expected = [(b, i) for b, u in enumerate(users.tolist()) for i in lists[u]]
    assert list(zip(rows.tolist(), cols.tolist())) == expected


# ------------------------------------------------------------- mask_scores_


def test_mask_scores_in_place():
    scores = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    out = mask_scores_(scores, torch.tensor([0, 1, 1, 1]), torch.tensor([5, 0, 2, 2]))  # duplicate pair ok
    assert out is scores
    assert scores[0, 5] == NEG_INF and scores[1, 0] == NEG_INF and scores[1, 2] == NEG_INF
    assert torch.isinf(scores).sum() == 3
    mask_scores_(scores, torch.tensor([0]), torch.tensor([1]), value=-1.0)
    assert scores[0, 1] == -1.0
    mask_scores_(scores, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))  # no-op


# ---------------------------------------------------------------- topk_hits


@pytest.mark.parametrize("device", DEVICES)
def test_topk_hits_with_history_masking(device):
    # 2 users x 7 items (item 0 = padding); raw scores rank items 6 > 5 > ... > 0
    scores = torch.tensor([[9.0, 6, 5, 4, 3, 2, 1], [9.0, 1, 2, 3, 4, 5, 6]], device=device)
    hist_indptr, hist_indices = _csr([[1, 3], [6]])  # user 0 saw items 1, 3; user 1 saw item 6
    test_indptr, test_indices = _csr([[3, 2, 4], [5, 1]])  # user 0's target 3 is also in its history
    users = torch.tensor([0, 1])
    mask_scores_(scores, *csr_rows(hist_indptr, hist_indices, users))
    scores[:, 0] = NEG_INF  # padding
    t_rows, t_cols = csr_rows(test_indptr, test_indices, users)
    items, hits, num_pos = topk_hits(scores, 3, t_rows, t_cols)
    # user 0: unmasked order 2 (5) > 4 (3) > 5 (2) > 6 (1); user 1: 5 > 4 > 3 > 2 > 1
    assert items.tolist() == [[2, 4, 5], [5, 4, 3]]
    assert hits.tolist() == [[True, True, False], [True, False, False]]
    assert num_pos.tolist() == [3, 2]  # the masked target still counts as a positive (recall denominator)
    assert hits.device.type == device and num_pos.dtype == torch.long
    for banned in (0, 1, 3):
        assert banned not in items[0].tolist()
    assert 0 not in items[1].tolist() and 6 not in items[1].tolist()


def test_topk_hits_masked_target_never_a_hit_even_when_k_exceeds_unmasked():
    # 6 items; user masks padding 0 and history {1, 2, 3}: only items 4, 5 remain, k = 5
    scores = torch.tensor([[0.0, 10, 9, 8, 1, 2]])
    mask_scores_(scores, torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 2, 3]))
    items, hits, num_pos = topk_hits(scores, 5, torch.tensor([0, 0]), torch.tensor([2, 4]))
    assert items[0, :2].tolist() == [5, 4]  # the real recommendations
    assert set(items[0, 2:].tolist()) <= {0, 1, 2, 3}  # -inf filler slots
    # item 2 is a target but masked -> its -inf slot is not a hit; only item 4 (rank 2) is
    assert hits.tolist() == [[False, True, False, False, False]]
    assert num_pos.tolist() == [2]


def test_topk_hits_duplicate_targets_counted_once_and_no_targets():
    scores = torch.tensor([[0.0, 3, 2, 1], [0.0, 1, 2, 3]])
    items, hits, num_pos = topk_hits(scores, 2, torch.tensor([0, 0, 0]), torch.tensor([1, 1, 3]))
    assert num_pos.tolist() == [2, 0]
    assert hits.tolist() == [[True, False], [False, False]]
    items, hits, num_pos = topk_hits(scores, 2, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert num_pos.tolist() == [0, 0] and not hits.any()


def test_topk_hits_rejects_bad_k():
    with pytest.raises(ValueError):
        topk_hits(torch.zeros(2, 4), 5, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError):
        topk_hits(torch.zeros(2, 4), 0, torch.tensor([0]), torch.tensor([1]))


def test_topk_hits_matches_python_reference_on_random_data():
    g = torch.Generator().manual_seed(1)
    n_users, n_items, k = 30, 40, 10
    hist = [torch.randperm(n_items - 1, generator=g)[: int(torch.randint(0, 25, (1,), generator=g))].add(1).tolist() for _ in range(n_users)]
    test = [torch.randperm(n_items - 1, generator=g)[: int(torch.randint(0, 6, (1,), generator=g))].add(1).tolist() for _ in range(n_users)]
    scores = torch.rand(n_users, n_items, generator=g)
    users = torch.arange(n_users)
    masked = scores.clone()
    mask_scores_(masked, *csr_rows(*_csr(hist), users))
    masked[:, 0] = NEG_INF
    items, hits, num_pos = topk_hits(masked, k, *csr_rows(*_csr(test), users))
    for u in range(n_users):
        banned = set(hist[u]) | {0}
        allowed = sorted((i for i in range(n_items) if i not in banned), key=lambda i: -scores[u, i].item())
        expected_items = allowed[:k]
        got = items[u].tolist()
        assert got[: len(expected_items)] == expected_items
        expected_hits = [i in set(test[u]) and i not in banned for i in got]
        expected_hits = [h and idx < len(expected_items) for idx, h in enumerate(expected_hits)]
        assert hits[u].tolist() == expected_hits
        assert num_pos[u].item() == len(set(test[u]))
