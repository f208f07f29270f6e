"""Edge benchmark: every exportable model in onnxruntime against PyTorch eager, on one CPU thread.

    python bench/edge.py              # ~3-5 min on 2 shared cores: latency table, then a short training for the accuracy tables
    python bench/edge.py --quick      # fewer repetitions, smaller training (~1-2 min; a smoke check)
    python bench/edge.py --no-train   # the latency table only

1. **Latency** (untrained weights: time does not depend on them). For every registered model
   with an on-device part (``edge_parts()``), at ml-1m's size (3,707 items, sequence length 50)
   with the hyper-parameters of ``configs/model/<Model>.yaml``, plus PINRec's SASRec and
   GRU4Rec trunks: the export (default exporter, verified; the parity figure is its max abs
   difference against PyTorch), the ONNX file size, and for one request (batch 1, a full
   history of 50) the p50 / p99 latency of ``EdgePredictor.predict`` (onnxruntime,
   ``intra_op_num_threads=1``, input checks included) and of PyTorch eager
   (``torch.set_num_threads(1)``, ``inference_mode``), and the throughput at batch 256; the
   int8 copy's size and p50. Target (issue 5): PINRec's device model p50 < 1 ms and faster
   than PyTorch eager.
2. **Accuracy**, for every model with an on-device part (each trained for a few epochs on the
   generated data by the command line): the int8 copy's test AUC against the float export's,
   each file on the test rows it serves; the first device model cut at ``--cut`` (default
   ``classifier``: the classifier input crosses the network; a model without that stage is cut at
   its first cut point) with each codec's AUC loss against no compression and payload per
   request (RTCoInfer's table); and the controller along a simulated bandwidth trace (the codec
   it picks per segment, latency against the budget). Everything model-specific comes from the
   model's ``edge_parts()``.

Prints markdown tables with the machine line (``bench/common.py``); writes
``bench/results/edge-<stamp>/edge.json``, ``edge.md`` and ``edge_codecs.png`` (codec bytes against AUC loss,
one line per model).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import machine, machine_line, md_table, new_results_dir, save_plot  # noqa: E402

NUM_ITEMS, NUM_USERS, SEQ = 3707, 6041, 50


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def timeit(f, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


def model_kwargs(name: str):
    from recstudio_edge.config import find_named_config, load_yaml
    from recstudio_edge.model import get_model_class
    from recstudio_edge.registry import constructor_params

    path = find_named_config("model", name)
    given = dict((load_yaml(path).get("model") or {}) if path else {})
    params = constructor_params(get_model_class(name))
    return {k: v for k, v in given.items() if k in params}


def edge_model_names():
    """The registered models with an on-device part (``edge_parts()``)."""
    from recstudio_edge.edge.protocol import has_edge_part
    from recstudio_edge.model import get_model_class, list_models

    return [n for n in list_models() if has_edge_part(get_model_class(n))]


def edge_models():
    """(label, model) for every registered model with an on-device part (``edge_model_names()``),
    plus PINRec's other trunks."""
    from recstudio_edge.model import create_model

    out = []
    for name in edge_model_names():
        kw = model_kwargs(name)
        torch.manual_seed(0)
        out.append((name, create_model(name, num_users=NUM_USERS, num_items=NUM_ITEMS, max_seq_len=SEQ, **kw)))
        if name == "PINRec":
            for trunk in ("SASRec", "GRU4Rec"):
                torch.manual_seed(0)
                out.append((f"PINRec[{trunk}]", create_model(name, num_users=NUM_USERS, num_items=NUM_ITEMS,
                                                             max_seq_len=SEQ, **{**kw, "arch_config": {"trunk": trunk}})))
    return out


def full_request(part, batch: int):
    """Valid inputs at ``batch`` rows and full length: every history holds ``SEQ`` real items (the
    slowest request), every other input as the part's own examples."""
    x = part.example_inputs(batch, {"seq": SEQ})
    g = torch.Generator().manual_seed(1)
    for spec in part.inputs:
        if spec.padding is not None:
            x[spec.name] = torch.randint(spec.low, spec.high + 1, tuple(x[spec.name].shape), generator=g)
    return x


def latency_rows(reps: int, reps_batch: int, folder: Path):
    from recstudio_edge.edge.onnx_export import export_edge_models
    from recstudio_edge.edge.protocol import edge_parts_of
    from recstudio_edge.edge.quantize import quantize_file
    from recstudio_edge.edge.runtime import EdgePredictor

    torch.set_num_threads(1)
    rows, raw = [], []
    for label, model in edge_models():
        model.eval()
        variant, part = edge_parts_of(model).first()
        out = folder / label.replace("[", "_").replace("]", "")
        t0 = time.perf_counter()
        (rep,) = export_edge_models(model, out, variants=[variant]).values()
        export_s = time.perf_counter() - t0
        q = quantize_file(rep["path"])
        ort_p, q_p = EdgePredictor(rep["path"], threads=1), EdgePredictor(q["path"], threads=1)
        edge = part.module
        one, big = full_request(part, 1), part.example_inputs(256, {"seq": SEQ})
        np1 = {k: v.numpy() for k, v in one.items()}
        npb = {k: v.numpy() for k, v in big.items()}
        names = ort_p.input_names
        with torch.inference_mode():
            def t1():
                edge(*(one[n] for n in names))

            def tb():
                edge(*(big[n] for n in names))

            for _ in range(50):  # warm-up
                t1(), ort_p.predict(np1), q_p.predict(np1)
            o1 = timeit(lambda: ort_p.predict(np1), reps)
            p1 = timeit(t1, reps)
            qo = timeit(lambda: q_p.predict(np1), reps)
            ob = timeit(lambda: ort_p.predict(npb), reps_batch)
            pb = timeit(tb, reps_batch)
            diff = float(np.abs(ort_p.predict(np1) - edge(*(one[n] for n in names)).numpy()).max())
        r = {"model": label, "exporter": rep["exporter"], "onnx_kb": rep["bytes"] / 1024, "parity": rep["max_abs_diff"],
             "parity_request": diff, "export_s": export_s,
             "ort_p50": pct(o1, 50), "ort_p99": pct(o1, 99), "torch_p50": pct(p1, 50), "torch_p99": pct(p1, 99),
             "ort_rows_s": 256 / float(np.median(ob)), "torch_rows_s": 256 / float(np.median(pb)),
             "int8_kb": q["bytes"] / 1024, "int8_p50": pct(qo, 50)}
        raw.append(r)
        rows.append([label, r["exporter"], f"{r['onnx_kb']:.0f}", f"{r['parity']:.1e}", f"{r['ort_p50']:.3f}",
                     f"{r['ort_p99']:.3f}", f"{r['torch_p50']:.3f}", f"{r['torch_p99']:.3f}",
                     f"{r['torch_p50'] / r['ort_p50']:.1f}x", f"{r['ort_rows_s']:,.0f}", f"{r['torch_rows_s']:,.0f}",
                     f"{r['int8_kb']:.0f}", f"{r['int8_p50']:.3f}"])
        print(f"  {label}: ORT p50 {r['ort_p50']:.3f} ms, torch p50 {r['torch_p50']:.3f} ms", flush=True)
    head = ["model", "exporter", "ONNX KB", "parity max abs diff", "ORT p50 ms", "ORT p99 ms", "torch p50 ms",
            "torch p99 ms", "p50 speed-up", "ORT rows/s @256", "torch rows/s @256", "int8 KB", "int8 p50 ms"]
    return md_table(head, rows), raw


def train_model(name: str, work: Path, quick: bool):
    """Train ``name`` for a few epochs on generated data by the command line, then export it
    (``--export.quantize=true``); returns (train result, export result)."""
    from recstudio_edge.cli import main
    from recstudio_edge.runner import RUN_DIR_ENV

    gen = (["--data.generator.num_users=800", "--data.generator.num_items=400"] if quick else
           ["--data.generator.num_users=3000", "--data.generator.num_items=1500"])
    common = [f"--data_dir={work / 'data'}", f"--output_dir={work / 'out'}", "--trainer.enable_progress_bar=false",
              *gen, "--data.generator.mean_per_user=40", "--data.generator.min_per_user=10"]
    os.environ.pop(RUN_DIR_ENV, None)
    epochs = 3 if quick else 6
    # plugin_stage applies to models with plugin sites (PINRec) and is ignored by the others
    res = main([f"-m={name}", f"--epochs={epochs}", f"--stage_switch_epoch={1 if quick else 3}",
                "--eval_neg_per_pos=5", "--train.batch_size=256", "--lr=0.005", *common])
    os.environ.pop(RUN_DIR_ENV, None)
    exp = main(["--task=export", f"--ckpt={res['best_ckpt']}", "--export.quantize=true", *common])
    os.environ.pop(RUN_DIR_ENV, None)
    res["epochs_run"] = epochs
    return res, exp


def cut_point(part, wanted: str) -> str:
    """``wanted`` when the device model can be cut there, else its first cut point."""
    names = part.module.stage_names()
    return wanted if any(n == wanted or n.startswith(wanted + ".") for n in names) else names[0]


def accuracy_tables(name: str, work: Path, quick: bool, cut: str, trace_spec):
    """int8, codec and controller tables of one edge model, trained briefly on generated data;
    the split and the codecs on its first device variant, over the test rows that variant serves."""
    from recstudio_edge.config import build_config
    from recstudio_edge.edge.bundle import labelled_batches
    from recstudio_edge.edge.protocol import edge_parts_of, select_rows
    from recstudio_edge.edge.runtime import EdgePredictor
    from recstudio_edge.edge.split import (BandwidthTrace, CodecProfile, SplitController, SplitPipeline,
                                           codec_accuracy, export_split, make_codec)
    from recstudio_edge.checkpoint import load_weights
    from recstudio_edge.model import get_model_class
    from recstudio_edge.runner import build_datamodule, build_model

    t0 = time.perf_counter()
    res, exp = train_model(name, work / name, quick)
    train_s = time.perf_counter() - t0
    out = {"train": {k: res[k] for k in ("test", "epochs_run", "train_seconds", "best_ckpt")}, "train_wall_s": train_s}
    # quantisation: what --task=export --export.quantize=true reported, per device file
    qrows = []
    for variant, r in exp["export"].items():
        q = r["int8"]
        if "auc_float" not in q:
            qrows.append([variant, f"{q['float_bytes'] / 1024:.0f}", f"{q['bytes'] / 1024:.0f}", f"{q['ratio']:.2f}",
                          "-", "-", "-", "-", q.get("accuracy", "")])
            continue
        qrows.append([f"{variant} ({q['rows_of']})" if q.get("rows_of") else variant, f"{q['float_bytes'] / 1024:.0f}",
                      f"{q['bytes'] / 1024:.0f}", f"{q['ratio']:.2f}", f"{q['auc_float']:.4f}", f"{q['auc_int8']:.4f}",
                      f"{q['auc_delta']:+.4f}", f"{q['max_abs_prob_diff']:.4f}", str(q["rows"])])
    out["quantization"] = {k: r["int8"] for k, r in exp["export"].items()}
    qtable = md_table(["file", "float KB", "int8 KB", "ratio", "test AUC float", "test AUC int8", "delta",
                       "max abs prob diff", "rows"], qrows)
    # split inference on the trained model, its first device variant, over the rows it serves
    run_dir = Path(res["run_dir"])
    cls = get_model_class(name)
    cfg = build_config(name, None, str(run_dir / "config.yaml"), {}, cls)
    dm = build_datamodule(cfg, cls)
    model = build_model(cfg, cls, dm)
    load_weights(model, res["best_ckpt"])
    model.eval()
    variant, part = edge_parts_of(model).first()
    layer = cut_point(part, cut)
    rep = export_split(model, layer, work / name / "split", variant=variant, config=cfg)
    dev, cloud = EdgePredictor(rep["device"]["path"]), EdgePredictor(rep["cloud"]["path"])
    batches = labelled_batches(dm)
    if part.rows:
        batches = [{k: v[select_rows(part, b)] for k, v in b.items()} for b in batches]
        batches = [b for b in batches if len(b["label"])]
    codecs = ["none", "fp16", "int8", "topk:0.5", "topk:0.25"]
    acc = codec_accuracy(dev, cloud, codecs, batches)
    one = {k: v[:1] for k, v in batches[0].items()}
    pipe0 = SplitPipeline(dev, cloud, SplitController([CodecProfile(make_codec("none"))], 1e9), BandwidthTrace([(0, 1e9)]))
    prof = pipe0.profile(one, codecs, repeats=200)
    crow = []
    for a in acc:
        crow.append([a["codec"], str(a["payload_bytes_1row"]), f"{a['auc']:.4f}", f"{a['auc_loss']:+.4f}",
                     f"{a['mean_abs_prob_diff']:.5f}", f"{a['max_abs_prob_diff']:.4f}", f"{a['max_cut_error']:.4f}",
                     f"{prof[a['codec'] + '_encode_ms'] * 1000:.0f}", f"{prof[a['codec'] + '_decode_ms'] * 1000:.0f}"])
    ctable = md_table(["codec", "bytes / request", "test AUC", "AUC loss vs none", "mean abs prob diff", "max abs prob diff",
                       "max abs error of the cut tensor", "encode us", "decode us"], crow)
    served = ", ".join(f"{k}={v}" for k, v in part.rows.items()) or "all rows"
    out["split"] = {"variant": variant, "rows_of": served, "layer": layer, "cut_shape": rep["cut_shape"],
                    "rows": int(sum(len(b["label"]) for b in batches)), "codecs": acc, "profile_ms": prof,
                    "parity": {"device": rep["device"]["max_abs_diff"], "cloud": rep["cloud"]["max_abs_diff"]}}
    # the controller along a trace: requests every 50 ms, budget 10 ms
    budget, rtt = 10.0, 0.0
    # accuracy loss for the controller: the mean probability change against no compression (AUC
    # differences of a few 1e-4 on ~1k rows are noise and would rank codecs at random)
    profiles = [CodecProfile(make_codec(a["codec"]), a["mean_abs_prob_diff"], prof[a["codec"] + "_encode_ms"],
                             prof[a["codec"] + "_decode_ms"]) for a in acc]
    ctl = SplitController(profiles, budget, device_ms=prof["device_ms"], cloud_ms=prof["cloud_ms"], rtt_ms=rtt,
                          initial_bandwidth=trace_spec[0][1])
    trace = BandwidthTrace(trace_spec, rtt_ms=rtt)
    pipe = SplitPipeline(dev, cloud, ctl, trace)
    flat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    recs = []
    end = trace_spec[-1][0] + 2.0
    for i in range(int(end / 0.05)):
        j = i % len(flat["label"])
        _, r = pipe.infer({k: v[j:j + 1] for k, v in flat.items()}, now_s=i * 0.05)
        recs.append(r)
    srows = []
    bounds = [s for s, _ in trace_spec] + [end]
    for (s, bw), e in zip(trace_spec, bounds[1:]):
        seg = [r for r in recs if s <= r["t"] < e]
        picks = {}
        for r in seg:
            picks[r["codec"]] = picks.get(r["codec"], 0) + 1
        srows.append([f"{s:g}-{e:g}", f"{bw / 1000:g}", ", ".join(f"{c} x{n}" for c, n in sorted(picks.items(), key=lambda x: -x[1])),
                      f"{np.median([r['total_ms'] for r in seg]):.2f}", f"{max(r['total_ms'] for r in seg):.2f}",
                      f"{100.0 * np.mean([r['total_ms'] <= budget for r in seg]):.0f}%"])
    stable = md_table(["seconds", "bandwidth kB/s", "codecs chosen", "median total ms", "max total ms",
                       f"within {budget:g} ms"], srows)
    out["controller"] = {"budget_ms": budget, "trace": trace_spec, "records": recs}
    return out, qtable, ctable, stable


def plot_codecs(path, accuracy):
    """Bytes per request of each codec against its test-AUC loss, one line per model."""
    series = []
    for name, out in accuracy.items():
        acc = sorted(out["split"]["codecs"], key=lambda a: a["payload_bytes_1row"])
        series.append({"label": f"{name} (cut at {out['split']['layer']})", "x": [a["payload_bytes_1row"] for a in acc],
                       "y": [a["auc_loss"] for a in acc], "labels": [a["codec"] for a in acc]})
    return save_plot(path, series, xlabel="bytes per request (log)", ylabel="test AUC loss against no compression",
                     title="Split inference: codec bytes against AUC loss", logx=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-train", action="store_true", help="latency table only")
    ap.add_argument("--cut", default="classifier", help="layer the split model is cut before")
    args = ap.parse_args(argv)
    import onnxruntime

    res_dir = new_results_dir("edge", args.quick)
    m = machine()
    mline = machine_line(m) + f" | onnxruntime {onnxruntime.__version__} (1 intra-op thread)"
    print(mline, flush=True)
    reps, reps_b = (300, 10) if args.quick else (2000, 40)
    result = {"machine": m, "machine_line": mline}
    md = [f"machine: {mline}", ""]
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        work = Path(tmp)
        print("latency (1 thread, sequence length 50):", flush=True)
        table, raw = latency_rows(reps, reps_b, work / "latency")
        result["latency"] = raw
        md += [f"### Latency, one request (batch 1, sequence length {SEQ}) and batch 256, 1 thread, "
               f"{NUM_ITEMS} items ({reps} requests, {reps_b} batches)", "", table, ""]
        pin = next((r for r in raw if r["model"] == "PINRec"), None)
        if pin is not None:
            ok = pin["ort_p50"] < 1.0 and pin["ort_p50"] < pin["torch_p50"]
            verdict = (f"PINRec device model, one request: onnxruntime p50 {pin['ort_p50']:.3f} ms "
                       f"(target < 1 ms), PyTorch eager p50 {pin['torch_p50']:.3f} ms: "
                       f"{'target met' if ok else 'TARGET MISSED'}")
            md += [verdict, ""]
            result["target"] = {"met": ok, "line": verdict}
        if not args.no_train:
            trace = [(0.0, 200e3), (2.0, 25e3), (4.0, 12e3), (6.0, 8e3), (8.0, 2e3), (10.0, 200e3)]
            result["accuracy"] = {}
            for name in edge_model_names():
                print(f"accuracy tables: {name} (training on generated data)", flush=True)
                out, qtable, ctable, stable = accuracy_tables(name, work, args.quick, args.cut, trace)
                result["accuracy"][name] = out
                t, sp = out["train"]["test"], out["split"]
                md += [f"### {name}: int8 dynamic quantisation (trained {out['train']['epochs_run']} epochs on generated "
                       f"data, test AUC {t.get('auc', float('nan')):.4f}; each file on the test rows it serves)",
                       "", qtable, "",
                       f"### {name}: split at `{sp['layer']}` (cut tensor {sp['cut_shape'][1:]} per request), codec "
                       f"accuracy on {sp['rows']} test rows of variant {sp['variant']} ({sp['rows_of']})", "", ctable, "",
                       f"### {name}: controller along a simulated bandwidth trace (a request every 50 ms, budget 10 ms, "
                       "measured compute times, simulated transfer)", "", stable, ""]
    text = "\n".join(md)
    print("\n" + text)
    (res_dir / "edge.md").write_text(text + "\n")
    (res_dir / "edge.json").write_text(json.dumps(result, indent=1, default=str))
    if result.get("accuracy"):
        plot_codecs(res_dir / "edge_codecs.png", result["accuracy"])
    print(f"results: {res_dir}")


if __name__ == "__main__":
    main()
