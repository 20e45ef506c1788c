"""digitkit.bench.config: option parsing, defaults and the validation of a BenchConfig."""

from __future__ import annotations

import subprocess
import sys

import pytest

from digitkit.bench.config import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_DURATION,
    DEFAULT_ORT_SPINNING,
    BenchConfig,
    parse_batch_sizes,
    parse_runtimes,
)
from digitkit.environment import usable_cpus
from digitkit.errors import UsageError

ALL_RUNTIMES = ["onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "litert",
               "tf-savedmodel", "tf-function", "keras-predict"]


def test_runtime_groups_expand_to_runtimes():
    runtimes, required = parse_runtimes("onnxruntime,keras")
    assert runtimes == ["onnxruntime", "onnxruntime-int8", "tf-function", "keras-predict"]
    assert "onnxruntime-int8" not in required  # reached through the group: "when present"
    assert parse_runtimes(None) == (ALL_RUNTIMES, set())
    # A runtime named on its own must run; sequences work like the comma-separated text.
    assert parse_runtimes(["onnxruntime-int8", "tensorflow"]) == (
        ["onnxruntime-int8", "tf-savedmodel"], {"onnxruntime-int8", "tf-savedmodel"})
    with pytest.raises(UsageError, match="unknown runtime 'foo'"):
        parse_runtimes("foo")
    with pytest.raises(UsageError, match="no runtime given"):
        parse_runtimes(" , ")


def test_batch_sizes_are_sorted_unique_and_positive():
    assert parse_batch_sizes(None) == list(DEFAULT_BATCH_SIZES)
    assert parse_batch_sizes("32, 1,8,1") == [1, 8, 32]
    assert parse_batch_sizes((4, 2)) == [2, 4]
    with pytest.raises(UsageError):
        parse_batch_sizes("-1")
    with pytest.raises(UsageError, match="'x' is not a whole number"):
        parse_batch_sizes("1,x")


def test_config_defaults_resolve_threads_and_duration():
    c = BenchConfig(models=["m.onnx"])
    assert c.thread_count == usable_cpus() and c.timed_duration == DEFAULT_DURATION
    assert c.sizes == list(DEFAULT_BATCH_SIZES) and c.requested_runtimes[0] == ALL_RUNTIMES
    c = BenchConfig(models=["m.onnx"], iterations=3, threads=2, batch_sizes="1,4")
    assert c.timed_duration is None and c.thread_count == 2 and c.sizes == [1, 4]


@pytest.mark.parametrize("opts, message", [
    ({"runtimes": "foo"}, "unknown runtime 'foo'"),
    ({"batch_sizes": "0"}, "batch size must be at least 1"),
    ({"threads": 0}, "--threads must be at least 1"),
    ({"duration": 1.0, "iterations": 3}, "alternatives"),
    ({"duration": 0.0}, "--duration must be positive"),
    ({"iterations": 0}, "--iterations must be at least 1"),
    ({"warmup": -1}, "--warmup must be 0 or more"),
    ({"check_images": 0}, "--check-images must be at least 1"),
    ({"repeat": 0}, "--repeat must be at least 1"),
])
def test_invalid_config_is_a_usage_error_on_construction(opts, message):
    with pytest.raises(UsageError, match=message):
        BenchConfig(models=["m.onnx"], **opts)


def test_ort_default_is_the_regime_infer_runs_by(linear_onnx):
    """No --ort-spinning: the onnxruntime row's settings follow the batch size through
    regime_settings, the function infer's sessions come from; a value pins one setting."""
    from digitkit.predictors import open_runtime
    from digitkit.predictors.ort import OnnxPredictor, RegimeOnnxPredictor, regime_settings

    assert DEFAULT_ORT_SPINNING is None
    p = open_runtime("onnxruntime", linear_onnx, 2, DEFAULT_ORT_SPINNING)
    assert isinstance(p, RegimeOnnxPredictor)
    for batch in (1, 32, 512):
        assert p.for_batch(batch).settings == regime_settings(batch, 2)
    pinned = open_runtime("onnxruntime", linear_onnx, 2, False)
    assert isinstance(pinned, OnnxPredictor) and pinned.settings.spinning is False


def test_config_imports_no_numpy_or_runtime():
    """The CLI reads its --help defaults from this module: importing it must be instant."""
    code = ("import sys, digitkit.bench.config; "
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
