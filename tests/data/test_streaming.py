"""ShardedStream: disjoint per rank and worker, each row once per epoch, equal batch counts,
seeded orders, exact resume from a state_dict, clear errors."""

import numpy as np
import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
import torch

from recstudio_edge.data import streaming
from recstudio_edge.data.errors import DataError
from recstudio_edge.data.streaming import POS_KEY, ShardedStream

# unequal files and row groups: 3 files, 1563 rows, row groups of 97 / 64 / 50 rows
SIZES = (500, 730, 333)
GROUPS = (97, 64, 50)
ROWS = sum(SIZES)


def _write(folder, fmt):
    folder.mkdir(exist_ok=True)
    start = 0
    for i, (n, g) in enumerate(zip(SIZES, GROUPS)):
        ids = np.arange(start, start + n, dtype=np.int64)
        table = pa.table({"row_id": ids, "x": ids.astype(np.float64) / 7.0, "name": [f"r{v}" for v in ids]})
        path = folder / f"part-{i}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path, row_group_size=g)
        else:
            orc.write_table(table, str(path), batch_size=g, stripe_size=1)
        start += n
    return folder


@pytest.fixture(scope="module", params=["parquet", "orc"])
def shards(request, tmp_path_factory):
    return _write(tmp_path_factory.mktemp(request.param), request.param)


def ids_only(table):
    return {"row_id": torch.from_numpy(table.column("row_id").to_numpy().copy())}


def stream(path, **kw):
    kw.setdefault("batch_size", 64)
    kw.setdefault("shuffle_buffer", 150)
    kw.setdefault("columns", ["row_id"])
    return ShardedStream(path, convert=ids_only, **kw)


def epoch_batches(path, epoch, world=2, workers=2, **kw):
    """Per rank: the list of batches ((worker, index), row ids) one epoch yields through a DataLoader."""
    out = []
    for rank in range(world):
        ds = stream(path, rank=rank, world_size=world, num_workers=workers, **kw)
        ds.set_epoch(epoch)
        got = [(tuple(b[POS_KEY].tolist()), b["row_id"].numpy()) for b in ds.loader()]
        assert len(got) == len(ds)
        out.append(got)
    return out


def test_two_ranks_two_workers_read_every_row_once_per_epoch(shards):
    orders = []
    for epoch in (0, 1):
        ranks = epoch_batches(shards, epoch)
        counts = {len(r) for r in ranks}
        assert len(counts) == 1  # every rank the same number of batches (DDP)
        rows = np.concatenate([ids for r in ranks for _, ids in r])
        assert len(rows) == ROWS and np.array_equal(np.sort(rows), np.arange(ROWS))
        for r in ranks:
            assert {pos[0] for pos, _ in r} == {epoch}
            per_worker = {}
            for (_, worker, index), ids in r:
                per_worker.setdefault(worker, []).append((index, len(ids)))
            assert sorted(per_worker) == [0, 1]
            sizes = [[n for _, n in v] for v in per_worker.values()]
            assert len({len(s) for s in sizes}) == 1  # equal batch counts per worker
            for v in per_worker.values():
                assert [i for i, _ in v] == list(range(len(v)))
                assert max(n for _, n in v) - min(n for _, n in v) <= 1  # near-equal batch sizes
        # the two ranks read disjoint rows
        a = np.concatenate([ids for _, ids in ranks[0]])
        b = np.concatenate([ids for _, ids in ranks[1]])
        assert not set(a.tolist()) & set(b.tolist())
        orders.append(np.concatenate([ids for _, ids in ranks[0]]))
    assert not np.array_equal(orders[0], orders[1])  # a new epoch, a new order


def test_same_seed_same_order_other_seed_other_order(shards):
    a = epoch_batches(shards, 3, seed=5)
    b = epoch_batches(shards, 3, seed=5)
    c = epoch_batches(shards, 3, seed=6)
    flat = lambda ranks: np.concatenate([ids for r in ranks for _, ids in r])  # noqa: E731
    assert np.array_equal(flat(a), flat(b))
    assert not np.array_equal(flat(a), flat(c))


def test_unshuffled_single_reader_keeps_file_order(shards):
    ds = stream(shards, shuffle=False, rank=0, world_size=1)
    rows = np.concatenate([b["row_id"].numpy() for b in ds])
    assert np.array_equal(rows, np.arange(ROWS))
    # 1563 rows / 64 -> 25 batches of 62 or 63 rows
    assert len(ds) == 25
    assert sorted({len(b["row_id"]) for b in ds}) == [62, 63]


def test_shuffle_permutes_rows_within_windows(shards):
    ds = stream(shards, rank=0, world_size=1, shuffle_buffer=400)
    rows = np.concatenate([b["row_id"].numpy() for b in ds])
    assert np.array_equal(np.sort(rows), np.arange(ROWS))
    # consecutive rows of the stream are rarely consecutive rows of a file
    assert np.mean(np.diff(rows) == 1) < 0.05


def test_resume_from_state_dict_yields_exactly_the_unseen_rows(shards):
    for epoch, stop in ((0, 5), (1, 0), (1, 13)):
        ds = stream(shards, rank=1, world_size=2, num_workers=2, seed=3)
        ds.set_epoch(epoch)
        full = [(tuple(b[POS_KEY].tolist()), b["row_id"].numpy()) for b in ds.loader()]
        ds = stream(shards, rank=1, world_size=2, num_workers=2, seed=3)
        ds.set_epoch(epoch)
        seen = []
        for i, batch in enumerate(ds.loader()):
            if i == stop:
                break
            ds.consumed(batch)
            seen.append((tuple(batch[POS_KEY].tolist()), batch["row_id"].numpy()))
        state = ds.state_dict()
        assert state["epoch"] == epoch and sum(state["next"]) == stop
        fresh = stream(shards, rank=1, world_size=2, num_workers=2, seed=3)
        loader = fresh.loader()
        loader.load_state_dict(state)
        fresh.set_epoch(epoch)  # the same epoch keeps the loaded position
        rest = [(tuple(b[POS_KEY].tolist()), b["row_id"].numpy()) for b in loader]
        assert len(rest) == len(full) - stop
        # every batch is the uninterrupted run's batch of that (worker, index), each exactly once
        # (the DataLoader starts its round robin at worker 0 again: only the interleaving differs)
        want = dict(full)
        got = dict(seen + rest)
        assert len(got) == len(seen) + len(rest) == len(want)
        for pos, ids in got.items():
            assert np.array_equal(ids, want[pos])
        rows = np.concatenate([ids for _, ids in seen + rest])
        assert np.array_equal(np.sort(rows), np.sort(np.concatenate(list(want.values()))))
        # the position is used once: the next iteration of the loader is a whole epoch again
        assert len(list(loader)) == len(full)


def test_resume_rereads_only_the_current_window(shards, monkeypatch):
    reads = []
    real = streaming._read_unit
    monkeypatch.setattr(streaming, "_read_unit", lambda r, p, u, c: reads.append(u) or real(r, p, u, c))
    ds = stream(shards, rank=0, world_size=1, shuffle_buffer=300)
    it = iter(ds)
    for _ in range(12):
        ds.consumed(next(it))
    state = ds.state_dict()
    read_before = len(reads)
    reads.clear()
    fresh = stream(shards, rank=0, world_size=1, shuffle_buffer=300)
    fresh.load_state_dict(state)
    batch = next(iter(fresh))
    assert batch[POS_KEY].tolist() == [0, 0, 12]
    # the window holding batch 12 (and the next one if the batch straddles): >= 300 rows of the
    # smallest units is at most 8 units, far fewer than the 12 batches' units read before
    assert 0 < len(reads) <= 2 * (300 // 50 + 1) and len(reads) < read_before + 1
    assert sum(u.rows for u in reads) < 2 * (300 + 97)


def test_state_dict_after_epoch_change_and_layout_check(shards):
    ds = stream(shards, rank=0, world_size=1)
    assert ds.state_dict()["next"] == [0]
    ds.consumed(next(iter(ds)))
    ds.set_epoch(1)
    assert ds.state_dict()["epoch"] == 1 and ds.state_dict()["next"] == [0]
    other = stream(shards, rank=0, world_size=1, batch_size=32)
    with pytest.raises(ValueError, match="batch_size 64 then, 32 now"):
        other.load_state_dict(ds.state_dict())
    with pytest.raises(ValueError, match="world_size 1 then, 2 now"):
        stream(shards, rank=0, world_size=2).load_state_dict(ds.state_dict())


def test_default_convert_and_all_columns(shards):
    ds = ShardedStream(shards, columns=["row_id", "x"], batch_size=500, shuffle=False, rank=0, world_size=1)
    batch = next(iter(ds))
    assert batch["row_id"].dtype == torch.int64 and batch["x"].dtype == torch.float32
    assert torch.allclose(batch["x"], batch["row_id"].float() / 7.0)
    with pytest.raises(DataError, match="field 'name': type string has no default tensor"):
        next(iter(ShardedStream(shards, batch_size=500, rank=0, world_size=1)))


def test_errors_name_the_problem(shards, tmp_path):
    with pytest.raises(DataError, match=r"field 'row_ld': no such column; did you mean 'row_id'"):
        ShardedStream(shards, columns=["row_ld"])
    with pytest.raises(DataError, match="file not found"):
        ShardedStream(tmp_path / "nothing.parquet")
    with pytest.raises(DataError, match="no Parquet or ORC files"):
        ShardedStream(tmp_path)
    # 3 files with one row group each, read by 2 ranks x 2 workers
    one = _write(tmp_path / "one", "parquet")
    for f in one.iterdir():
        pq.write_table(pq.read_table(f), f, row_group_size=10_000)
    with pytest.raises(DataError, match=r"3 row groups / stripes in 3 file\(s\) for 2 rank\(s\) x 2 worker\(s\) = 4"):
        stream(one, rank=0, world_size=2, num_workers=2)
    ds = stream(one, num_workers=4)  # ranks decided at iteration: the error comes then
    with pytest.raises(DataError, match="= 4 readers: every reader needs at least one"):
        ds.assignment(0)
    with pytest.raises(ValueError, match=r"num_workers=2\) is read by a DataLoader with num_workers=0"):
        iter(stream(shards, rank=0, world_size=1, num_workers=2))
    with pytest.raises(ValueError, match="persistent workers"):
        stream(shards, num_workers=1).loader(persistent_workers=True)
    with pytest.raises(ValueError, match="give both rank and world_size"):
        stream(shards, rank=0)


def test_pack_tensors_one_storage_per_dtype():
    batch = {"a": torch.arange(6).reshape(2, 3), "b": torch.tensor([7, 8]), "x": torch.ones(2, 2),
             "y": torch.zeros(2)}
    packed = streaming.pack_tensors(batch)
    for key, value in batch.items():
        assert torch.equal(packed[key], value) and packed[key].shape == value.shape
    storage = lambda t: t.untyped_storage().data_ptr()  # noqa: E731
    assert storage(packed["a"]) == storage(packed["b"]) and storage(packed["x"]) == storage(packed["y"])


def _ddp_worker(rank, world, init, path, out):
    import datetime

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=60))
    try:
        ds = stream(path, num_workers=2, seed=1)  # rank and world from torch.distributed
        ds.set_epoch(2)
        rows, steps = [], 0
        for batch in ds.loader():
            step = torch.ones(1)
            torch.distributed.all_reduce(step)  # a DDP step: would hang if the ranks' counts differed
            rows.append(batch["row_id"])
            steps += 1
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, (steps, len(ds), torch.cat(rows).tolist()))
        if rank == 0:
            torch.save(gathered, out)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_from_torch_distributed(shards, tmp_path):
    out = tmp_path / "gathered.pt"
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, f"file://{tmp_path / 'init'}", str(shards), str(out)),
                                          nprocs=2, start_method="fork")
    gathered = torch.load(out)
    assert gathered[0][0] == gathered[1][0] == gathered[0][1]
    rows = gathered[0][2] + gathered[1][2]
    assert sorted(rows) == list(range(ROWS))


def test_mixed_formats_column_orders_and_type_mismatch(tmp_path):
    pq.write_table(pa.table({"row_id": np.arange(0, 40), "v": np.ones(40)}), tmp_path / "a.parquet", row_group_size=10)
    orc.write_table(pa.table({"v": np.ones(40), "row_id": np.arange(40, 80)}), str(tmp_path / "b.orc"),
                    batch_size=10, stripe_size=1)
    ds = ShardedStream(tmp_path, batch_size=8, shuffle_buffer=30, columns=["row_id", "v"], rank=0, world_size=1)
    rows = np.concatenate([b["row_id"].numpy() for b in ds])
    assert np.array_equal(np.sort(rows), np.arange(80))
    pq.write_table(pa.table({"row_id": np.arange(3.0)}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"c\.parquet: field 'row_id': type double here but int64 in .*a\.parquet"):
        ShardedStream(tmp_path, columns=["row_id"])


@pytest.mark.parametrize("compression", ["uncompressed", "snappy", "zlib", "zstd", "lz4"])
def test_orc_stripe_rows_from_the_footer(tmp_path, compression):
    table = pa.table({"row_id": np.arange(70000), "s": [f"{i * 7919 % 100003:08x}" for i in range(70000)]})
    path = tmp_path / "x.orc"
    orc.write_table(table, str(path), batch_size=30000, stripe_size=1, compression=compression)
    footer = streaming._orc_stripe_rows(path)
    # lz4 (ORC's raw blocks carry no length) is counted by reading a column instead
    assert footer == (None if compression == "lz4" else [30000, 30000, 10000])
    assert [u.rows for u in ShardedStream(path).units] == [30000, 30000, 10000]


def test_lightning_checkpoint_resumes_mid_epoch(tmp_path):
    """A run crashes after 7 steps with a checkpoint; the resumed run trains on exactly the other rows:
    Lightning's fit loop saves the StreamLoader's state in the checkpoint and restores it."""
    import warnings

    import lightning.pytorch as pl

    shards = _write(tmp_path / "shards", "parquet")

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin, self.seen = torch.nn.Linear(1, 1), []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch["row_id"].clone())
            return self.lin(batch["row_id"].float().unsqueeze(1) / ROWS).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), 0.01)

    class Consume(pl.Callback):
        def __init__(self, ds):
            self.ds = ds

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.ds.consumed(batch)

    class Crash(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == 6:
                trainer.save_checkpoint(tmp_path / "step7.ckpt")
                raise KeyError("crash")

    def fit(extra=(), ckpt=None):
        ds = stream(shards, num_workers=2, seed=4)
        model = Model()
        trainer = pl.Trainer(max_epochs=1, callbacks=[Consume(ds), *extra], logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                trainer.fit(model, ds.loader(), ckpt_path=ckpt)
            except KeyError:
                pass
        return torch.cat(model.seen).numpy(), len(ds)

    first, _ = fit([Crash()])
    rest, _ = fit(ckpt=str(tmp_path / "step7.ckpt"))
    assert 7 * 55 < len(first) < 7 * 65  # 7 batches of ~60 rows (1563 rows, 2 workers x 13 batches)
    assert not set(first.tolist()) & set(rest.tolist())
    assert np.array_equal(np.sort(np.concatenate([first, rest])), np.arange(ROWS))


def test_convert_window_yields_the_same_batches(shards):
    def both():
        out = {}
        for window in (False, True):
            ds = stream(shards, rank=0, world_size=1, num_workers=2, seed=9, convert_window=window)
            out[window] = {tuple(b[POS_KEY].tolist()): b["row_id"].numpy() for b in ds.loader()}
        return out

    got = both()
    assert got[False].keys() == got[True].keys()
    for pos, ids in got[False].items():
        assert np.array_equal(ids, got[True][pos])
    # a convert that is not row-wise is refused
    bad = ShardedStream(shards, convert=lambda t: {"n": torch.tensor([t.num_rows])}, convert_window=True,
                        rank=0, world_size=1, batch_size=64)
    with pytest.raises(ValueError, match=r"convert_window=True needs one row of every output per input row: 'n'"):
        next(iter(bad))


def test_pack_copies_a_slice_of_a_bigger_tensor():
    window = torch.arange(100)
    packed = streaming.pack_tensors({"a": window[10:20]})
    assert torch.equal(packed["a"], torch.arange(10, 20)) and packed["a"].untyped_storage().nbytes() == 80
