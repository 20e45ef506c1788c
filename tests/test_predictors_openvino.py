"""digitkit.predictors.openvino: OpenVINO on the ONNX copy, precision always stated."""

from __future__ import annotations

import numpy as np
import pytest

from digitkit.errors import ModelError
from digitkit.predictors import RUNTIMES
from digitkit.predictors.openvino import OpenVinoPredictor, cpu_supports
from digitkit.predictors.ort import OnnxPredictor

pytest.importorskip("openvino", reason="the 'runtimes' extra is not installed")


def test_fp32_matches_onnx_runtime_and_says_so(export_dir, mnist_test):
    x = mnist_test[0][:50].astype(np.float32)
    ref = OnnxPredictor(export_dir / "model.onnx").predict(x)
    p = OpenVinoPredictor(export_dir / "model.onnx", threads=1)
    # fp32 asked for explicitly: the plugin's own default is bf16 on CPUs that have it.
    # Never pinned: every infer worker would pin itself to core 0 (test_predictors_worker_settings).
    assert p.config() == {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1,
                          "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                          "ENABLE_CPU_PINNING": False}
    for n in (1, 7, 50):
        out = p.predict(x[:n])
        assert out.shape == (n, 10) and out.dtype == np.float32
        assert np.abs(out - ref[:n]).max() < 1e-5
    assert p.output_names == ["probabilities"]
    compiled = p._request.get_compiled_model()
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_bf16_is_its_own_labelled_runtime(export_dir, mnist_test):
    runtime = RUNTIMES["openvino-bf16"]
    assert runtime.precision == "bf16" and RUNTIMES["openvino"].precision == "fp32"
    if not cpu_supports("bf16"):
        assert runtime.unavailable() == "this CPU has no native bf16"
        with pytest.raises(ModelError, match="no native bf16"):
            OpenVinoPredictor(export_dir / "model.onnx", 1, "bf16").load()
        return
    x = mnist_test[0][:200].astype(np.float32)
    ref = OnnxPredictor(export_dir / "model.onnx").predict(x)
    out = OpenVinoPredictor(export_dir / "model.onnx", 1, "bf16").predict(x)
    diff = np.abs(out - ref).max()
    assert 1e-5 < diff < 0.1  # really reduced precision, and still the same model
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.98


def test_an_unknown_precision_is_refused(export_dir):
    with pytest.raises(ValueError, match="unknown precision"):
        OpenVinoPredictor(export_dir / "model.onnx", precision="fp8")


def test_device_names_and_a_missing_gpu(export_dir):
    from digitkit.errors import DependencyError
    from digitkit.predictors.openvino import OpenVinoPredictor, device_name, import_openvino

    assert device_name("cpu") == "CPU"
    if any(d.startswith("GPU") for d in import_openvino().Core().available_devices):
        pytest.skip("this machine has a GPU OpenVINO can use")
    with pytest.raises(DependencyError, match=r"^--device gpu:1: OpenVINO has no GPU.1 device "
                                              r"here \(it lists CPU"):
        device_name("gpu:1")
    with pytest.raises(DependencyError, match="OpenVINO has no GPU device"):
        OpenVinoPredictor(export_dir / "model.onnx", 1, device="gpu").load()
