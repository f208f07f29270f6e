"""Split inference: codecs hold their stated error bounds and sizes, the controller picks the
expected codec along a hand-built bandwidth trace, and a model cut at a named layer runs as
device part -> codec -> cloud part equal to the uncut model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recstudio_edge.edge.split import (BandwidthTrace, CodecProfile, SplitController, SplitPipeline, codec_accuracy,
                                       codec_bound, decode, export_split, make_codec)
from tests.edge.conftest import device, examples, small_pinrec

CODECS = ["none", "fp16", "int8", "topk", "topk:0.5"]


def arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 64)).astype(np.float32)
    x[2] = 0.0                      # an all-zero row (int8 scale 0)
    x[3] *= 1e3                     # rows of very different scales
    x[4] *= 1e-3
    return [x, np.tanh(rng.standard_normal((2, 3, 16))).astype(np.float32), rng.standard_normal(300).astype(np.float32)]


@pytest.mark.parametrize("name", CODECS)
def test_codec_round_trip_within_its_stated_error_and_size(name):
    codec = make_codec(name)
    for x in arrays():
        msg = codec.encode(x)
        y = decode(msg)
        assert y.shape == x.shape and y.dtype == np.float32
        assert len(msg) == codec.nbytes(x.shape)
        err = np.abs(y - x)
        assert (err <= codec_bound(codec, x)).all(), (name, float((err - codec_bound(codec, x)).max()))
    x = arrays()[0]
    err = np.abs(decode(codec.encode(x)) - x)
    if name == "none":
        assert err.max() == 0.0 and len(codec.encode(x)) > 4 * x.size
    else:
        assert err.max() > 0.0 and len(codec.encode(x)) < 4 * x.size  # lossy, and smaller
    if name.startswith("topk"):
        k = codec.k(64)
        assert k == {"topk": 16, "topk:0.5": 32}[name]
        kept = (decode(codec.encode(x)) != 0).sum(1)
        assert (kept <= k).all() and kept[0] == k
        # what it keeps are the largest magnitudes
        top = np.argsort(-np.abs(x[0]))[:k]
        assert set(np.flatnonzero(decode(codec.encode(x))[0])) == set(top)


def test_codec_errors_are_clear():
    with pytest.raises(ValueError, match="unknown codec 'fp61'.*did you mean 'fp16'"):
        make_codec("fp61")
    with pytest.raises(ValueError, match="exceeds the float16 range"):
        make_codec("fp16").encode(np.array([[1e6, 1.0]], np.float32))
    with pytest.raises(ValueError, match="inf or NaN"):
        make_codec("int8").encode(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(ValueError, match="not a codec message"):
        decode(b"XX" + bytes(20))
    assert make_codec("topk0.5").ratio == 0.5 and make_codec("topk").name == "topk0.25"


def test_bandwidth_trace_transfer_spans_a_change():
    tr = BandwidthTrace([(0, 1000.0), (1.0, 100.0)], rtt_ms=5)
    assert tr.bandwidth(0.5) == 1000.0 and tr.bandwidth(1.5) == 100.0
    assert tr.transfer_seconds(500, 0.0) == pytest.approx(0.5 + 0.005)
    # 500 bytes from t=0.9: 100 bytes at 1000 B/s (0.1 s), then 400 at 100 B/s (4 s)
    assert tr.transfer_seconds(500, 0.9) == pytest.approx(4.1 + 0.005)


def test_controller_picks_the_most_accurate_codec_that_fits_along_a_trace():
    profiles = [CodecProfile(make_codec("topk"), 0.02), CodecProfile(make_codec("int8"), 0.001),
                CodecProfile(make_codec("none"), 0.0), CodecProfile(make_codec("fp16"), 0.0001)]
    # one request = a [1, 64] tensor: none 272 bytes, fp16 144, int8 84, topk (16 of 64) 64
    assert [p.codec.nbytes((1, 64)) for p in profiles] == [64, 84, 272, 144]
    ctl = SplitController(profiles, budget_ms=10.0, device_ms=1.0, cloud_ms=1.0, initial_bandwidth=1e6)
    #           bytes/s: none fits | fp16 | int8 | topk | nothing fits | none again
    trace = BandwidthTrace([(0, 1e6), (1, 30e3), (2, 14e3), (3, 10e3), (4, 4e3), (5, 1e6)])
    picks, late, ests = {}, [], {}
    for i in range(60):  # a request every 0.1 s
        t = i / 10
        d = ctl.choose((1, 64))
        nbytes = d.codec.nbytes((1, 64))
        secs = trace.transfer_seconds(nbytes, t)
        ctl.observe(nbytes, secs)
        picks[t], ests[t] = (d.codec.name, d.fits), d.bandwidth
        if i % 10 >= 4 and d.fits:  # once the estimate has caught up (<= 4 requests), what it promised holds
            late.append(2.0 + secs * 1000 <= 10.0)
    ends = [picks[round(s + 0.9, 1)] for s in range(6)]
    assert ends == [("none", True), ("fp16", True), ("int8", True), ("topk0.25", True), ("topk0.25", False),
                    ("none", True)]
    assert all(late) and len(late) == 5 * 6
    assert picks[1.0] == ("none", True) and picks[1.4][0] == "fp16"  # it reacts to the drop within 4 requests
    assert ests[3.9] == pytest.approx(10e3, rel=1e-2)  # the estimate converges on the true bandwidth
    assert ests[5.9] > 5e5  # and recovers (slower: a harmonic mean rises slowly)


def test_model_cut_at_a_named_layer_runs_split_and_matches(tmp_path):
    from recstudio_edge.edge.runtime import EdgePredictor

    model = small_pinrec(groups=2)
    with pytest.raises(ValueError, match=r"cannot cut at 'clasifier': the cut points are \['classifier\.0', .*'output'\] \(did you mean 'classifier'"):
        device(model, "1").module.split("clasifier")
    r = export_split(model, "classifier.2", tmp_path, variant=1, exporter="torchscript")
    assert r["cut_shape"] == [4, 128] and r["device"]["max_abs_diff"] <= 1e-4 and r["cloud"]["max_abs_diff"] <= 1e-4
    dev, cloud = EdgePredictor(r["device"]["path"]), EdgePredictor(r["cloud"]["path"])
    assert dev.input_names == ["item_id", "seq"] and cloud.input_names == ["cut"] and cloud.output_names == ["probability"]
    assert dev.sidecar["split"] == {"part": "device", "layer": "classifier.2"}
    ex = examples(model, 1, 12)
    with torch.no_grad():
        want = device(model, "1").module(*ex.values()).numpy()
    prof = [CodecProfile(make_codec(c), loss) for c, loss in [("none", 0), ("fp16", 1e-4), ("int8", 1e-3)]]
    ctl = SplitController(prof, budget_ms=50.0, device_ms=1.0, cloud_ms=1.0)
    pipe = SplitPipeline(dev, cloud, ctl, BandwidthTrace([(0, 1e6)]))
    batch = {k: v.numpy() for k, v in ex.items()}
    out, rec = pipe.infer(batch, now_s=0.0)
    assert rec["codec"] == "none" and rec["bytes"] == 16 + 4 * 128
    np.testing.assert_allclose(out, want, atol=1e-5)
    out16, rec16 = pipe.infer(batch, now_s=0.1, codec="fp16")
    assert rec16["bytes"] == 16 + 2 * 128 and np.abs(out16 - want).max() < 1e-3
    timing = pipe.profile(batch, ["none", "int8"], repeats=3)
    assert timing["device_ms"] > 0 and "int8_encode_ms" in timing


def test_codec_accuracy_reports_no_loss_for_none_and_smaller_payloads(tmp_path):
    from recstudio_edge.edge.runtime import EdgePredictor

    model = small_pinrec(groups=1)
    r = export_split(model, "classifier", tmp_path, exporter="torchscript")
    dev, cloud = EdgePredictor(r["device"]["path"]), EdgePredictor(r["cloud"]["path"])
    ex = {k: v.numpy() for k, v in examples(model, 200, 12).items()}
    rng = np.random.default_rng(0)
    with torch.no_grad():
        p = device(model, "0").module(*(torch.from_numpy(v) for v in ex.values())).numpy()
    batches = [{**ex, "label": (rng.random(200) < p).astype(np.float32)}]
    rows = {r_["codec"]: r_ for r_ in codec_accuracy(dev, cloud, ["none", "fp16", "int8", "topk"], batches)}
    assert rows["none"]["auc_loss"] == 0.0 and rows["none"]["max_abs_prob_diff"] == 0.0
    assert 0.5 < rows["none"]["auc"] <= 1.0
    assert rows["fp16"]["max_abs_prob_diff"] < 1e-3 and abs(rows["fp16"]["auc_loss"]) < 0.01
    sizes = [rows[c]["payload_bytes_1row"] for c in ("none", "fp16", "int8", "topk0.25")]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 16 + 4 * 16
