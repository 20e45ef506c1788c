"""digitkit.bench.report: the cross-check and the comparisons (against the best TensorFlow
path and the best fp32 peer)."""

from __future__ import annotations

import numpy as np

from digitkit.bench import report


def _fake(ips, ok=True):
    return {"per_batch": [{"batch": 1, "images_per_s": ips, "latency_ms": {"p50": 1 / ips}}],
            "check": {"ok": ok}}


def test_compare_uses_best_tf_path_that_passed_the_check():
    results = {"onnxruntime": _fake(1000), "tf-savedmodel": _fake(50),
               "tf-function": _fake(100), "keras-predict": _fake(5000, ok=False)}
    (row,) = report.compare(results, [1])
    assert row["best_tf_engine"] == "tf-function" and row["throughput_ratio"] == 10
    assert not row["flagged"]


def test_peers_are_fp32_only_and_must_pass():
    """ORT is held against the best fp32 peer: a faster bf16 row is not fp32, and a flagged
    row is never counted; with no TensorFlow path run, that ratio is None, not an error."""
    results = {"onnxruntime": _fake(1000), "openvino": _fake(800),
               "openvino-bf16": _fake(5000), "litert": _fake(2000, ok=False)}
    (row,) = report.compare(results, [1])
    assert row["best_fp32_peer"] == "openvino" and row["peer_throughput_ratio"] == 1.25
    assert row["best_tf_engine"] is None and row["throughput_ratio"] is None


def _probs(top1):
    p = np.full((len(top1), 10), 0.01, np.float32)
    p[np.arange(len(top1)), top1] = 0.91
    return p


def test_cross_check_thresholds_per_runtime():
    labels = np.arange(1000) % 10
    off = labels.copy()
    off[:5] = (off[:5] + 1) % 10  # 99.5% agreement: fine for int8, too low for a float copy
    results = {"onnxruntime": {"probabilities": _probs(off)},
               "onnxruntime-int8": {"probabilities": _probs(off)},
               "tf-savedmodel": {"probabilities": _probs(labels)}}
    assert report.cross_check(results, labels) == "tf-savedmodel"
    ort, int8, ref = (results[e]["check"] for e in ("onnxruntime", "onnxruntime-int8",
                                                     "tf-savedmodel"))
    assert ort["top1_agreement"] == int8["top1_agreement"] == 0.995
    assert not ort["ok"] and int8["ok"] and ref["ok"] and ref["top1_agreement"] == 1.0
    assert ort["max_abs_diff"] > 0.8 and ort["accuracy"] == 0.995
    assert all("probabilities" not in r for r in results.values())
    # Only int8: no reference, nothing flagged, accuracy still reported.
    only = {"onnxruntime-int8": {"probabilities": _probs(off)}}
    assert report.cross_check(only, labels) is None
    assert only["onnxruntime-int8"]["check"]["ok"]
    assert only["onnxruntime-int8"]["check"]["top1_agreement"] is None


def test_command_line_quotes_arguments():
    assert report.command_line(["/x/digitkit", "bench", "a b", "--threads", "1"]) == \
        "digitkit bench 'a b' --threads 1"
