"""digitkit.bench.runner: the measuring subprocess and the merging of repeated rounds."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from digitkit.bench import runner
from digitkit.errors import DigitkitError


def _spec(tmp_path, model, x):
    np.save(tmp_path / "x.npy", x)
    return {"engine": "onnxruntime", "model": str(model), "threads": 1, "batch_sizes": [2],
            "warmup": 0, "iterations": 2, "inputs": str(tmp_path / "x.npy"),
            "check": str(tmp_path / "x.npy"), "predictions": str(tmp_path / "p.npy"),
            "result": str(tmp_path / "r.json")}


def test_onnx_runner_never_imports_tensorflow(export_dir, tmp_path):
    spec = _spec(tmp_path, export_dir / "model.onnx", np.zeros((8, 28, 28), np.uint8))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = ("import sys, digitkit.bench.runner as b; b.main([sys.argv[1]]); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spec.json")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert np.load(tmp_path / "p.npy").shape == (8, 10)
    result = json.loads((tmp_path / "r.json").read_text())
    (pb,) = result["per_batch"]
    assert pb["batch"] == 2 and pb["calls"] == 2 and result["end_to_end"] == []


def test_measure_runtime_measures_in_a_fresh_process(linear_onnx, tmp_path):
    x = np.zeros((6, 28, 28), np.uint8)
    spec = {k: v for k, v in _spec(tmp_path, linear_onnx, x).items()
            if k not in ("engine", "model", "predictions", "result")}
    r = runner.measure_runtime("onnxruntime", linear_onnx, spec, tmp_path, "t")
    assert r["probabilities"].shape == (6, 10) and r["model_file"] == str(linear_onnx)
    assert 10 < r["peak_rss_mb"] and r["load_s"] > 0


def test_a_broken_model_is_a_one_line_error_from_the_child(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    spec = _spec(tmp_path, bad, np.zeros((2, 28, 28), np.uint8))
    assert runner.main([str(_write(tmp_path / "s.json", spec))]) == runner.EXIT_USER_ERROR
    with pytest.raises(DigitkitError, match="broken.onnx: not a usable ONNX model"):
        runner.measure_runtime("onnxruntime", bad, spec, tmp_path, "t")


def _write(path, spec):
    path.write_text(json.dumps(spec))
    return path


def test_best_of_rounds_keeps_fastest_round_per_batch():
    def rnd(a, b):
        return {"per_batch": [{"batch": 1, "images_per_s": a}, {"batch": 8, "images_per_s": b}],
                "load_s": a, "first_inference_ms": b, "end_to_end": []}

    merged = runner.best_of([rnd(10, 80), rnd(12, 70)])
    assert [pb["images_per_s"] for pb in merged["per_batch"]] == [12, 80]
    assert merged["rounds"] == 2


def test_batches_are_distinct_contiguous_float32():
    x = np.arange(10 * 28 * 28, dtype=np.uint8).reshape(10, 28, 28)
    bs = runner._batches(x, 4)
    assert len(bs) == 2 and all(b.dtype == np.float32 and b.flags.c_contiguous for b in bs)
    assert not np.array_equal(bs[0], bs[1])
    (big,) = runner._batches(x, 25)  # larger than the inputs: images repeat
    assert big.shape == (25, 28, 28)
