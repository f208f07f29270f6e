#!/usr/bin/env python3
"""One FuxiCTR 2.3 run (DeepFM or DCNv2) on CTR rows that bench/ctr.py wrote, timed, figures to a JSON.

usage: FUXI_PY bench/peer/ctr_fuxictr.py MODEL DATA_DIR WORK_DIR SEED EPOCHS OUT.json
  MODEL     DeepFM | DCNv2
  DATA_DIR  train.csv, valid.csv, test.csv and features.json (bench/ctr.py writes them: the columns,
            which are categorical and which is the "^"-joined sequence, and its length)
  WORK_DIR  FuxiCTR's processed data (feature map, parquet) and checkpoints; the processed data are
            built once per DATA_DIR content and reused by later runs (their time is reported apart)

Runs in FuxiCTR's own venv (<BENCH_DATA>/fuxictr-venv: fuxictr==2.3.10 torch==2.13.0), never the
project's, with PYTHONPATH empty. The pip package ships FuxiCTR's layers, feature processing, data
loaders and training loop (BaseModel.fit: Adam, early stopping on the validation monitor, learning
rate x0.1 on a plateau, best checkpoint restored), but not the model zoo: DeepFM and DCNv2 below are
FuxiCTR's model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py and model_zoo/DCNv2/src/DCNv2.py (Apache-2.0,
FuxiCTR 2.3.10's tree), the same layers in the same order, only their docstrings left out.
Hyper-parameters: the zoo's DeepFM_default / DCNv2_default (model_config.yaml), epochs capped by EPOCHS.

FuxiCTR 2.3.10 reads its processed parquet through Ray Data (ParquetDataLoader: ray.init starts a
local Ray cluster, whose worker processes do the reading and shuffling beside the trainer): the
figures are FuxiCTR's as shipped. Peak memory: the caller's wait4 sees this process (and what it
reaped); this runner also samples the RSS of its whole process tree (Ray's processes included)
every 0.5 s and reports the peak as ``tree_peak_rss_mb``. FuxiCTR 2.3.10 needs polars < 2 (polars 2
removed scan_csv's ``dtypes`` argument that its FeatureProcessor.read_data passes).

Timing: training seconds per epoch = the whole of train_epoch (data loading included) less the
validation inside it (BaseModel evaluates and checkpoints at the end of each epoch); samples/s =
training rows / those seconds. Peak memory is the caller's (wait4 of this process).
"""
import json
import os
import sys
import time

T0 = time.time()
if len(sys.argv) != 7:
    raise SystemExit("usage: ctr_fuxictr.py MODEL DATA_DIR WORK_DIR SEED EPOCHS OUT.json")
MODEL, DATA_DIR, WORK_DIR, SEED, EPOCHS, OUT = sys.argv[1:7]
SEED, EPOCHS = int(SEED), int(EPOCHS)
if MODEL not in ("DeepFM", "DCNv2"):
    raise SystemExit(f"error: MODEL {MODEL!r}: DeepFM or DCNv2")
for name in ("train.csv", "valid.csv", "test.csv", "features.json"):
    if not os.path.isfile(os.path.join(DATA_DIR, name)):
        raise SystemExit(f"error: {os.path.join(DATA_DIR, name)} not found (bench/ctr.py writes it)")

import logging  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from fuxictr.features import FeatureMap  # noqa: E402
from fuxictr.preprocess import FeatureProcessor, build_dataset  # noqa: E402
from fuxictr.pytorch.dataloaders import RankDataLoader  # noqa: E402
from fuxictr.pytorch.layers import CrossNetMix, CrossNetV2, FactorizationMachine, FeatureEmbedding, MLP_Block  # noqa: E402
from fuxictr.pytorch.models import BaseModel  # noqa: E402
from fuxictr.pytorch.torch_utils import seed_everything  # noqa: E402
import fuxictr  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


def _tree_rss_mb(root: int) -> float:
    """RSS (MB) of ``root`` and all its descendants, from /proc."""
    kids, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            kids.setdefault(int(parts[1]), []).append(int(d))
            rss[int(d)] = int(parts[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(kids.get(p, []))
    return total / 2 ** 20


PEAK = {"tree": 0.0}


def _sample():
    while True:
        PEAK["tree"] = max(PEAK["tree"], _tree_rss_mb(os.getpid()))
        time.sleep(0.5)


import threading  # noqa: E402

threading.Thread(target=_sample, daemon=True).start()


class DeepFM(BaseModel):
    """FuxiCTR model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py."""

    def __init__(self, feature_map, model_id="DeepFM", gpu=-1, learning_rate=1e-3, embedding_dim=10,
                 hidden_units=[64, 64, 64], hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                 embedding_regularizer=None, net_regularizer=None, **kwargs):
        super(DeepFM, self).__init__(feature_map, model_id=model_id, gpu=gpu,
                                     embedding_regularizer=embedding_regularizer,
                                     net_regularizer=net_regularizer, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1, hidden_units=hidden_units,
                             hidden_activations=hidden_activations, output_activation=None,
                             dropout_rates=net_dropout, batch_norm=batch_norm)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.fm(X, feature_emb)
        y_pred += self.mlp(feature_emb.flatten(start_dim=1))
        y_pred = self.output_activation(y_pred)
        return {"y_pred": y_pred}


class DCNv2(BaseModel):
    """FuxiCTR model_zoo/DCNv2/src/DCNv2.py."""

    def __init__(self, feature_map, model_id="DCNv2", gpu=-1, model_structure="parallel", use_low_rank_mixture=False,
                 low_rank=32, num_experts=4, learning_rate=1e-3, embedding_dim=10, stacked_dnn_hidden_units=[],
                 parallel_dnn_hidden_units=[], dnn_activations="ReLU", num_cross_layers=3, net_dropout=0,
                 batch_norm=False, embedding_regularizer=None, net_regularizer=None, **kwargs):
        super(DCNv2, self).__init__(feature_map, model_id=model_id, gpu=gpu,
                                    embedding_regularizer=embedding_regularizer,
                                    net_regularizer=net_regularizer, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        input_dim = feature_map.sum_emb_out_dim()
        if use_low_rank_mixture:
            self.crossnet = CrossNetMix(input_dim, num_cross_layers, low_rank=low_rank, num_experts=num_experts)
        else:
            self.crossnet = CrossNetV2(input_dim, num_cross_layers)
        self.model_structure = model_structure
        assert self.model_structure in ["crossnet_only", "stacked", "parallel", "stacked_parallel"], \
            "model_structure={} not supported!".format(self.model_structure)
        if self.model_structure in ["stacked", "stacked_parallel"]:
            self.stacked_dnn = MLP_Block(input_dim=input_dim, output_dim=None, hidden_units=stacked_dnn_hidden_units,
                                         hidden_activations=dnn_activations, output_activation=None,
                                         dropout_rates=net_dropout, batch_norm=batch_norm)
            final_dim = stacked_dnn_hidden_units[-1]
        if self.model_structure in ["parallel", "stacked_parallel"]:
            self.parallel_dnn = MLP_Block(input_dim=input_dim, output_dim=None,
                                          hidden_units=parallel_dnn_hidden_units, hidden_activations=dnn_activations,
                                          output_activation=None, dropout_rates=net_dropout, batch_norm=batch_norm)
            final_dim = input_dim + parallel_dnn_hidden_units[-1]
        if self.model_structure == "stacked_parallel":
            final_dim = stacked_dnn_hidden_units[-1] + parallel_dnn_hidden_units[-1]
        if self.model_structure == "crossnet_only":
            final_dim = input_dim
        self.fc = nn.Linear(final_dim, 1)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X, flatten_emb=True)
        cross_out = self.crossnet(feature_emb)
        if self.model_structure == "crossnet_only":
            final_out = cross_out
        elif self.model_structure == "stacked":
            final_out = self.stacked_dnn(cross_out)
        elif self.model_structure == "parallel":
            dnn_out = self.parallel_dnn(feature_emb)
            final_out = torch.cat([cross_out, dnn_out], dim=-1)
        elif self.model_structure == "stacked_parallel":
            final_out = torch.cat([self.stacked_dnn(cross_out), self.parallel_dnn(feature_emb)], dim=-1)
        y_pred = self.fc(final_out)
        y_pred = self.output_activation(y_pred)
        return {"y_pred": y_pred}


COMMON = dict(loss="binary_crossentropy", metrics=["logloss", "AUC"], task="binary_classification",
              optimizer="adam", learning_rate=1e-3, embedding_regularizer=0, net_regularizer=0,
              batch_size=10000, embedding_dim=40, shuffle=True, monitor={"AUC": 1, "logloss": -1},
              monitor_mode="max", early_stop_patience=2, save_best_only=True, eval_steps=None,
              verbose=0, num_workers=1)
MODELS = {  # model_zoo DeepFM_default / DCNv2_default
    "DeepFM": dict(hidden_units=[300, 300, 300], hidden_activations="relu", batch_norm=False, net_dropout=0),
    "DCNv2": dict(model_structure="parallel", use_low_rank_mixture=False, low_rank=32, num_experts=4,
                  stacked_dnn_hidden_units=[500, 500, 500], parallel_dnn_hidden_units=[500, 500, 500],
                  dnn_activations="relu", num_cross_layers=3, net_dropout=0, batch_norm=False),
}

spec = json.load(open(os.path.join(DATA_DIR, "features.json")))
feature_cols = [{"name": spec["categorical"], "active": True, "dtype": "str", "type": "categorical"}]
for seq in spec["sequence"]:
    feature_cols.append({"name": seq["name"], "active": True, "dtype": "str", "type": "sequence",
                         "splitter": "^", "max_len": int(seq["length"]), "padding": "post",
                         "encoder": "MaskedAveragePooling"})
dataset_id = f"ml1m_ctr_{spec['digest'][:12]}"
params = dict(COMMON, **MODELS[MODEL], model=MODEL, model_id=f"{MODEL}_seed{SEED}", seed=SEED, epochs=EPOCHS,
              dataset_id=dataset_id, data_root=os.path.join(WORK_DIR, "data"),
              model_root=os.path.join(WORK_DIR, "checkpoints"), data_format="csv",
              train_data=os.path.join(DATA_DIR, "train.csv"), valid_data=os.path.join(DATA_DIR, "valid.csv"),
              test_data=os.path.join(DATA_DIR, "test.csv"), feature_cols=feature_cols,
              label_col={"name": "label", "dtype": "float"}, min_categr_count=1, gpu=-1)
t_import = time.time() - T0
seed_everything(seed=SEED)

t = time.time()
data_dir = os.path.join(params["data_root"], dataset_id)
built_before = os.path.exists(os.path.join(data_dir, "feature_map.json"))
encoder = FeatureProcessor(**params)
params["train_data"], params["valid_data"], params["test_data"] = build_dataset(encoder, **params)
params["data_format"] = "parquet"
feature_map = FeatureMap(dataset_id, data_dir)
feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
t_build = time.time() - t



def _gens(made):
    """RankDataLoader's generators: 2.3.10 returns them, the zoo's run_expid.py calls make_iterator()."""
    return made.make_iterator() if hasattr(made, "make_iterator") else made


seed_everything(seed=SEED)
model = {"DeepFM": DeepFM, "DCNv2": DCNv2}[MODEL](feature_map, **params)
os.makedirs(model.model_dir, exist_ok=True)  # the zoo's set_logger makes it
n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
t = time.time()
train_gen, valid_gen = _gens(RankDataLoader(feature_map, stage="train", **params))
t_loader = time.time() - t

epochs = []
_train_epoch, _evaluate = model.train_epoch, model.evaluate
in_epoch = {"eval_s": 0.0}


def evaluate(*a, **k):
    s = time.time()
    r = _evaluate(*a, **k)
    in_epoch["eval_s"] += time.time() - s
    in_epoch["valid"] = {k2: float(v) for k2, v in r.items()}
    return r


def train_epoch(gen):
    in_epoch.update(eval_s=0.0, valid=None)
    rows = {"n": 0}

    class Counted:  # counts the rows the epoch really trained (early stop may end it early)
        def __iter__(self):
            for b in gen:
                rows["n"] += int(b["label"].shape[0]) if "label" in b else 0
                yield b

        def __len__(self):
            return len(gen)

    s = time.time()
    r = _train_epoch(Counted())
    wall = time.time() - s
    epochs.append({"wall_s": wall, "valid_s": in_epoch["eval_s"], "train_s": wall - in_epoch["eval_s"],
                   "rows": rows["n"], "valid": in_epoch["valid"]})
    return r


model.train_epoch, model.evaluate = train_epoch, evaluate
t = time.time()
model.fit(train_gen, validation_data=valid_gen, **params)
t_fit = time.time() - t
model.evaluate = _evaluate
t = time.time()
test_gen = _gens(RankDataLoader(feature_map, stage="test", **params))
test = {k: float(v) for k, v in model.evaluate(test_gen).items()}
t_test = time.time() - t
train_s = sum(e["train_s"] for e in epochs)
rows = sum(e["rows"] for e in epochs)
best = max(range(len(epochs)), key=lambda i: (epochs[i]["valid"] or {}).get("AUC", -1)) if epochs else None
res = {"side": "FuxiCTR", "model": MODEL, "seed": SEED, "fuxictr": fuxictr.__version__, "torch": torch.__version__,
       "torch_threads": torch.get_num_threads(), "n_params": n_params,
       "hyper": {k: v for k, v in params.items() if k in COMMON or k in MODELS[MODEL] or k == "epochs"},
       "train_rows": int(train_gen.num_samples), "epochs_run": len(epochs), "epochs": epochs,
       "best_epoch": None if best is None else best + 1,
       "best_valid": None if best is None else epochs[best]["valid"],
       "samples_per_s": rows / train_s if train_s else None, "train_s": train_s,
       "test": {"auc": test.get("AUC"), "logloss": test.get("logloss")},
       "import_s": t_import, "build_s": t_build, "build_reused": built_before, "loader_s": t_loader,
       "fit_s": t_fit, "test_s": t_test, "total_s": time.time() - T0, "tree_peak_rss_mb": PEAK["tree"]}
json.dump(res, open(OUT, "w"), indent=1)
print(json.dumps({k: res[k] for k in ("model", "seed", "samples_per_s", "test", "epochs_run", "best_epoch",
                                      "tree_peak_rss_mb")}))
try:
    import ray

    ray.shutdown()  # the local Ray cluster FuxiCTR's parquet loader started
except Exception:  # noqa: BLE001
    pass
