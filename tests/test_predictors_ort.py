"""digitkit.predictors.ort: the per-regime ONNX Runtime settings, the one rule that bench and
infer both follow."""

from __future__ import annotations

import numpy as np
import pytest

from digitkit.predictors import open_runtime
from digitkit.predictors import ort as ort_predictors
from digitkit.predictors.ort import OrtSettings, RegimeOnnxPredictor, regime_settings


def test_regime_is_what_was_measured():
    for batch in (1, 8, 32, 512, 2048):
        # One core (each infer worker): one thread, nothing to spin.
        assert regime_settings(batch, 1) == OrtSettings(threads=1, spinning=False)
        # Two cores (this machine, bench's default): both; small batches spin.
        assert regime_settings(batch, 2) == OrtSettings(threads=2, spinning=batch <= 8)
    assert regime_settings(1, 0).threads == 1  # never fewer than one thread
    assert regime_settings(32, 16).threads == 16


def test_infer_and_bench_take_ort_settings_from_one_function(linear_onnx, monkeypatch):
    """Whatever regime_settings says is what a bench runtime and infer's sessions run with:
    a changed rule changes both."""
    from digitkit.infer.spec import DEFAULT_BATCH_SIZE
    from digitkit.predictors.serving import worker_regime

    # infer: each worker (and auto's calibration of it) runs batch-sized chunks on one core.
    settings = regime_settings(DEFAULT_BATCH_SIZE, cores=1)
    assert worker_regime(DEFAULT_BATCH_SIZE) == (settings.threads, settings.spinning)
    # bench: the onnxruntime row asks the function at every batch size.
    seen = []

    def rule(batch, cores):
        seen.append((batch, cores))
        return OrtSettings(threads=1, spinning=batch > 4)

    monkeypatch.setattr(ort_predictors, "regime_settings", rule)
    p = open_runtime("onnxruntime", linear_onnx, threads=2, spinning=None)
    assert isinstance(p, RegimeOnnxPredictor)
    assert p.predict(np.zeros((3, 28, 28), np.float32)).shape == (3, 10)
    assert p.predict(np.zeros((8, 28, 28), np.float32)).shape == (8, 10)
    assert (3, 2) in seen and (8, 2) in seen
    assert {s.spinning for s in p._predictors} == {False, True}  # one session per setting


def test_regime_predictor_matches_a_plain_session(linear_onnx, mnist_test):
    x = mnist_test[0][:40].astype(np.float32)
    plain = ort_predictors.OnnxPredictor(linear_onnx).predict(x)
    p = RegimeOnnxPredictor(linear_onnx, cores=2).load()
    np.testing.assert_array_equal(p.predict(x), plain)
    assert p.input_names == ["pixels"] and p.output_names == ["probabilities"]
    assert set(p.outputs(x[:2])) == {"probabilities"}
    with pytest.raises(Exception, match="no such model file"):
        RegimeOnnxPredictor(linear_onnx.parent / "missing.onnx")


def test_provider_lists_per_device():
    """The one place a session's providers are decided: the CPU alone on the CPU; on a GPU
    its provider first, with its device id, then the CPU for the nodes it does not take."""
    from digitkit.predictors.ort import providers

    assert providers("cpu") == ["CPUExecutionProvider"]
    assert providers("cuda") == providers("gpu") == providers("cuda:0") == [
        ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert providers("tensorrt:2") == [("TensorrtExecutionProvider", {"device_id": 2}),
                                       ("CUDAExecutionProvider", {"device_id": 2}),
                                       "CPUExecutionProvider"]


def test_a_cpu_session_runs_on_the_cpu_provider_only(linear_onnx):
    p = ort_predictors.OnnxPredictor(linear_onnx, OrtSettings(threads=1, device="cpu"))
    assert p.session.get_providers() == ["CPUExecutionProvider"]
    r = open_runtime("onnxruntime", linear_onnx, threads=1, spinning=None, device="cpu")
    assert r.session.get_providers() == ["CPUExecutionProvider"]


def test_a_session_that_fell_back_to_the_cpu_is_refused(linear_onnx):
    """ONNX Runtime drops a GPU provider that does not start and runs on the CPU
    (onnxruntime#23372): a real session without the provider asked for is refused."""
    from digitkit.errors import DependencyError
    from digitkit.predictors.ort import check_placed, open_session

    session = open_session(linear_onnx, OrtSettings(threads=1))
    check_placed(session, "cpu", linear_onnx)
    for device, provider in (("cuda:0", "CUDAExecutionProvider"),
                             ("tensorrt", "TensorrtExecutionProvider")):
        with pytest.raises(DependencyError) as err:
            check_placed(session, device, linear_onnx)
        assert str(err.value) == (
            f"{linear_onnx}: ONNX Runtime did not start {provider} for --device {device} "
            "(the session has CPUExecutionProvider); refusing to run it on the CPU instead")
