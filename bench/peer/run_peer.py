#!/usr/bin/env python3
"""Run one RecBole model with timing instrumentation.
usage: [PEER_MAX_BATCHES=N] [PEER_ANOMALY=0] PEER_PY bench/peer/run_peer.py MODEL DATASET CONFIG.yaml OUT.json
Runs in the RecBole 1.2.1 venv that bench/setup.py builds (never the project's), with the working
directory BENCH_DATA (RecBole writes ./log there) and PYTHONPATH empty (bench/common.py:run_peer).
Mirrors recbole.quick_start.run_recbole (config -> dataset -> split -> model -> fit -> evaluate)
but skips the thop FLOPs count and records wall times.
  PEER_MAX_BATCHES=N : stop each training epoch after N batches (for models whose full epoch
                       does not fit the time budget on 2 CPU cores); s/epoch is then extrapolated
                       from the per-batch times.
  PEER_ANOMALY=0     : turn off torch autograd anomaly detection, which RecBole 1.2.1 switches on
                       globally at import (recbole/model/sequential_recommender/sine.py:25).
                       Default: leave RecBole as shipped (anomaly detection ON)."""
import json, os, sys, time
T0 = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compat  # noqa: F401,E402  (bench/peer/compat.py: RecBole 1.2.1 on numpy 2 / torch >= 2.6, before recbole)
if len(sys.argv) != 5:
    raise SystemExit("usage: run_peer.py MODEL DATASET CONFIG.yaml OUT.json")
if not os.path.isfile(sys.argv[3]):
    raise SystemExit(f"error: RecBole config {sys.argv[3]} not found (python bench/setup.py writes them)")
import torch
from logging import getLogger
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_logger, get_model, get_trainer, init_seed

model_name, dataset_name, cfg_file, out_file = sys.argv[1:5]
t_import = time.time() - T0
config = Config(model=model_name, dataset=dataset_name, config_file_list=[cfg_file])
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
logger = getLogger()
logger.info(config)
t = time.time()
dataset = create_dataset(config)
logger.info(dataset)
t_load = time.time() - t
t = time.time()
train_data, valid_data, test_data = data_preparation(config, dataset)
t_split = time.time() - t
init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
logger.info(model)
n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

MAX_B = int(os.environ.get("PEER_MAX_BATCHES", "0")) or None
ANOMALY_AS_SHIPPED = torch.is_anomaly_enabled()
if os.environ.get("PEER_ANOMALY", "1") == "0":
    torch.autograd.set_detect_anomaly(False)
batch_times, batch_sizes = [], []


class TimedLoader:
    """Yields the first MAX_B batches of a RecBole train loader, timing each step."""
    def __init__(self, dl):
        self.dl = dl
    def __iter__(self):
        t = None
        for i, b in enumerate(self.dl):
            if MAX_B is not None and i >= MAX_B:
                break
            if t is not None:
                batch_times.append(time.time() - t)
            t = time.time()
            batch_sizes.append(len(b))
            yield b
        if t is not None:
            batch_times.append(time.time() - t)
    def __len__(self):
        return min(MAX_B or 10**12, len(self.dl))
    def __getattr__(self, k):
        return getattr(self.dl, k)


train_times, valid_times = [], []
_te, _ve = trainer._train_epoch, trainer._valid_epoch
def train_epoch(*a, **k):
    a = (TimedLoader(a[0]),) + tuple(a[1:])
    s = time.time(); r = _te(*a, **k); train_times.append(time.time() - s); return r
def valid_epoch(*a, **k):
    s = time.time(); r = _ve(*a, **k); valid_times.append(time.time() - s); return r
trainer._train_epoch, trainer._valid_epoch = train_epoch, valid_epoch

best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True,
                                                  show_progress=False)
t = time.time()
test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
t_test = time.time() - t
import statistics
samples = train_data.sample_size
n_batches_full = len(train_data)
trained_samples = sum(batch_sizes)
res = {
    "model": model_name, "dataset": dataset_name, "config_file": os.path.abspath(cfg_file),
    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    "n_users": dataset.user_num - 1, "n_items": dataset.item_num - 1, "n_inter": len(dataset.inter_feat),
    "train_samples_per_epoch": samples,
    "valid_users": valid_data.sample_size if valid_data else None,
    "test_users": test_data.sample_size if test_data else None,
    "n_params": n_params,
    "anomaly_detection_as_shipped": ANOMALY_AS_SHIPPED, "anomaly_detection_used": torch.is_anomaly_enabled(),
    "max_batches_per_epoch": MAX_B, "batches_per_full_epoch": n_batches_full,
    "epochs_run": len(train_times), "batches_trained": len(batch_times), "samples_trained": trained_samples,
    "epochs_equivalent": len(batch_times) / n_batches_full,
    "rows_per_batch_note": "len(batch); for pointwise+neg-sampling (DIN) a row is a pos OR neg pair, so 2048 rows = 1024 positives",
    "train_s_per_epoch_measured": train_times,
    "median_batch_s": statistics.median(batch_times), "mean_batch_s": sum(batch_times) / len(batch_times),
    "s_per_full_epoch_est": sum(train_times) / len(batch_times) * n_batches_full,
    "s_per_full_epoch_est_from_median_batch": statistics.median(batch_times) * n_batches_full,
    "samples_per_s": trained_samples / sum(train_times),
    "valid_eval_s": valid_times, "test_eval_s": t_test,
    "import_s": t_import, "load_s": t_load, "split_s": t_split,
    "best_valid": dict(best_valid_result or {}), "test": dict(test_result or {}),
    "total_s": time.time() - T0,
}
json.dump(res, open(out_file, "w"), indent=1, default=float)
print(json.dumps(res, indent=1, default=float))
