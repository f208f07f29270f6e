"""The CTR source (``data/formats/ctr.py``): MovieLens as CTR rows with the shipped feature YAML, Criteo
shards in memory and streamed, an interrupted stream resumed exactly, two DDP processes, and the errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recstudio_edge.config import load_yaml
from recstudio_edge.data import criteo
from recstudio_edge.data.datamodule import RecDataModule
from recstudio_edge.data.errors import DataError
from recstudio_edge.data.formats import ctr
from recstudio_edge.features import FeatureSet

ROOT = Path(__file__).resolve().parents[2]
ML1M_FEATURES = load_yaml(ROOT / "configs" / "data" / "ml-1m-ctr.yaml")["data"]["features"]
SYNTH = load_yaml(ROOT / "configs" / "data" / "criteo-synth.yaml")["data"]


def _movielens(folder: Path, with_year: bool = True):
    """A tiny MovieLens-1M-like atomic dataset: 6 users x 5 items, ratings 1..5, distinct timestamps."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    t = 1000
    for u in range(1, 7):
        for i in rng.permutation(5)[:4] + 1:
            t += int(rng.integers(1, 50))
            rows.append((f"u{u}", f"Movie {i} ({1990 + i})", int(rng.integers(1, 6)), t))
    (folder / "mini.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                       + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    ages = [1, 18, 25, 35, 45, 56]
    (folder / "mini.user").write_text("user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n"
                                      + "".join(f"u{u}\t{ages[u - 1]}\t{'FM'[u % 2]}\t{u}\t{48000 + u}\n"
                                                for u in range(1, 7)))
    genres = ["Comedy", "Drama Romance", "Action Adventure Sci-Fi", "Drama", "Children's Comedy"]
    head = "item_id:token\tmovie_title:token\t" + ("release_year:float\t" if with_year else "") + "genre:token\n"
    (folder / "mini.item").write_text(head + "".join(
        f"Movie {i} ({1990 + i})\tMovie {i}\t" + (f"{1990 + i}\t" if with_year else "") + f"{genres[i - 1]}\n"
        for i in range(1, 6)))
    return rows


def _ml_dm(tmp_path, **extra):
    cfg = {"name": "mini", "format": "atomic", "cache": False, "label_threshold": 4, "features": ML1M_FEATURES,
           "split": {"mode": "time", "ratios": [0.6, 0.2, 0.2]}, **extra}
    dm = RecDataModule(cfg, tmp_path, "ctr", batch_size=8, eval_batch_size=8, seed=0, data_format="ctr")
    dm.setup()
    return dm


@pytest.mark.parametrize("with_year", [True, False])
def test_movielens_rows_labels_time_split_and_features(tmp_path, with_year):
    rows = _movielens(tmp_path / "mini", with_year)
    dm = _ml_dm(tmp_path)
    src = dm.source
    t = {s: src.tables[s] for s in ("train", "valid", "test")}
    assert sum(x.num_rows for x in t.values()) == len(rows)
    # split by time: every training row is older than every valid row, valid older than test
    assert max(t["train"]["timestamp"].to_pylist()) < min(t["valid"]["timestamp"].to_pylist())
    assert max(t["valid"]["timestamp"].to_pylist()) < min(t["test"]["timestamp"].to_pylist())
    # label = rating >= 4, row by row
    for s in t.values():
        assert s["label"].to_pylist() == [float(r >= 4) for r in s["rating"].to_pylist()]
    # the year: the atomic column, or the title's "(1995)"
    by_title = {f"Movie {i} ({1990 + i})": 1990 + i for i in range(1, 6)}
    tokens = dm.data.item_tokens
    assert [by_title[tokens[i]] for i in t["train"]["item_id"].to_pylist()] == t["train"]["release_year"].to_pylist()
    # genres: a list column, hashed ids + 1, left-padded to length 6, mean-combined by the model
    batch = src.train("ctr")[torch.arange(len(src.train("ctr")))]
    assert batch["genre"].shape[1] == 6
    n_genres = [len(g) for g in t["train"]["genre"].to_pylist()]
    assert (batch["genre"] != 0).sum(1).tolist() == n_genres
    assert batch["label"].tolist() == t["train"]["label"].to_pylist()
    # the data decides the identity features' tables; model_args hands them to the constructor
    args = dm.model_args()
    assert args["feature_sizes"]["user_id"] == dm.data.num_users and args["features"][0]["name"] == "user_id"
    assert FeatureSet.from_config(args["features"]).to_config() == args["features"]


def test_implicit_interactions_get_sampled_negatives(tmp_path):
    cfg = {"name": "synthetic", "format": "auto", "cache": False, "neg_per_pos": 2, "eval_neg_per_pos": 3,
           "generator": {"num_users": 30, "num_items": 40, "mean_per_user": 10, "min_per_user": 5},
           "split": {"mode": "loo"}}
    dm = RecDataModule(cfg, tmp_path, "ctr", seed=0, data_format="ctr")
    dm.setup()
    tr, va = dm.source.tables["train"], dm.source.tables["valid"]
    assert abs(float(np.mean(tr["label"].to_numpy())) - 1 / 3) < 1e-6
    assert abs(float(np.mean(va["label"].to_numpy())) - 1 / 4) < 1e-6
    # a negative is an item the user never touched
    seen = set(zip(dm.data.user.tolist(), dm.data.item.tolist()))
    negs = [(u, i) for u, i, y in zip(tr["user_id"].to_pylist(), tr["item_id"].to_pylist(), tr["label"].to_pylist())
            if y == 0]
    assert sum((u, i) in seen for u, i in negs) <= 0.02 * len(negs)


def _synth(tmp_path, rows=4000, fmt="parquet", **over):
    cfg = {**SYNTH, "name": "synth", "generator": {**SYNTH["generator"], "rows": rows, "shards": 6, "format": fmt,
                                                     "row_group_size": 250}, "shuffle_buffer": 600, **over}
    return cfg


@pytest.mark.parametrize("fmt", ["parquet", "orc"])
def test_streamed_epoch_reads_each_training_row_once(tmp_path, fmt):
    cfg = _synth(tmp_path, fmt=fmt)
    dm = RecDataModule(cfg, tmp_path, "ctr", batch_size=128, seed=3)
    dm.setup()
    files = sorted((tmp_path / "synth").glob("train-*"))
    assert len(files) == 4 and dm.source.stats["valid_rows"] + dm.source.stats["test_rows"] == 2 * (4000 // 6)
    want = torch.cat([dm.source.encode(ctr.read_table(p, None))["dense"] for p in files])
    got = torch.cat([b["dense"] for b in dm.train_dataloader()])
    assert got.shape == want.shape
    key = lambda x: torch.sort((x * torch.arange(1, 14)).sum(1)).values  # noqa: E731 (a row's fingerprint)
    torch.testing.assert_close(key(got), key(want))
    # in memory: the same rows
    mem = RecDataModule({**cfg, "stream": False}, tmp_path, "ctr", batch_size=128, seed=3)
    mem.setup()
    torch.testing.assert_close(key(mem.source.encoded["train"]["dense"]), key(want))


class _Recorder(__import__("lightning").pytorch.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((tuple(batch["_pos"].tolist()), float(batch["dense"].sum())))


def _fit(dm, model, callbacks, root, ckpt=None, **kw):
    import lightning.pytorch as pl

    from recstudio_edge.callbacks.stream_position import StreamPosition

    saves = any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[StreamPosition(), *callbacks],
                         enable_checkpointing=saves, default_root_dir=str(root), **kw)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt, weights_only=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_an_interrupted_stream_resumes_at_the_next_unseen_batch(tmp_path, workers):
    """Two epochs straight through, against the same run stopped mid-epoch (a step checkpoint) and resumed:
    the same batches in the same order, none repeated, none skipped."""
    import lightning.pytorch as pl

    from recstudio_edge.model import create_model

    cfg = _synth(tmp_path, rows=3000)

    def parts():
        dm = RecDataModule(cfg, tmp_path, "ctr", batch_size=200, seed=1, num_workers=workers)
        dm.setup()
        torch.manual_seed(0)
        return dm, create_model("DLRM", **dm.model_args(), embed_dim=4, dense_arch=[8, 4], over_arch=[8, 1])

    dm, model = parts()
    straight = _Recorder()
    _fit(dm, model, [straight], tmp_path, max_epochs=2)
    per_epoch = len(dm.stream)
    assert len(straight.seen) == 2 * per_epoch and len(set(straight.seen)) == 2 * per_epoch

    dm, model = parts()
    first = _Recorder()
    ck = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=per_epoch + 3, save_top_k=-1)
    _fit(dm, model, [first, ck], tmp_path, max_epochs=2, max_steps=per_epoch + 3)
    (path,) = list((tmp_path / "ck").glob("*.ckpt"))
    dm, model = parts()
    second = _Recorder()
    _fit(dm, model, [second], tmp_path, ckpt=str(path), max_epochs=2)
    assert first.seen + second.seen == straight.seen


def test_two_ddp_processes_train_from_shards(tmp_path):
    """``--trainer.devices=2 --trainer.strategy=ddp`` on CPU: each process reads its own row groups."""
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m=DLRM", "-d=criteo-synth", "--epochs=1",
                          f"--data_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}",
                          "--data.generator.rows=3000", "--data.generator.row_group_size=200",
                          "--model.dense_arch=[16,8]", "--model.over_arch=[16,1]", "--model.embed_dim=8",
                          "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    import json
    import math

    (metrics,) = list((tmp_path / "out").rglob("metrics.json"))
    test = json.loads(metrics.read_text())["test"]
    assert 0.0 < test["auc"] < 1.0 and math.isfinite(test["logloss"]) and "gauc" not in test  # Criteo rows: no users


def test_bad_ctr_files_are_named(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    t = pa.table({"x": pa.array([1, 2, 3]), "label": pa.array([0, 2, 1])})
    pq.write_table(t, folder / "train.parquet")
    feats = [{"name": "x", "type": "sparse", "fields": ["x"]}]
    with pytest.raises(DataError, match=r"row 2: field 'label': expected 0 or 1, got 2"):
        ctr.open_source(folder, {"name": "bad", "features": feats})
    with pytest.raises(DataError, match="field 'click': no such column, the label column"):
        ctr.open_source(folder, {"name": "bad", "features": feats, "label": "click"})
    with pytest.raises(DataError, match="unknown stage 'tset'.*test"):
        ctr.open_source(folder, {"name": "bad", "features": feats, "files": {"tset": "x*"}})
    with pytest.raises(DataError, match="data.features is empty"):
        ctr.open_source(folder, {"name": "bad"})
    criteo.write_table(criteo.generate_table(50), folder / "train.tsv")
    (folder / "train.parquet").unlink()
    with pytest.raises(DataError, match="train.tsv.*data.stream reads Parquet or ORC"):
        ctr.open_source(folder, {"name": "bad", "features": SYNTH["features"], "stream": True})
