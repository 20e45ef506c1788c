"""digitkit.predictors.runtimes: `--device` (what it takes, which rows run on what) and the
one-line refusals of a device a runtime does not have or that is not there, through the
library and both commands that take it (infer, bench). Run for real: on a machine without
an NVIDIA GPU, onnxruntime-gpu or an Intel GPU, every GPU device is refused; where one is
there, its refusal test is skipped."""

from __future__ import annotations

import pytest

from _cli import run_cli
from digitkit.errors import DependencyError, UsageError
from digitkit.predictors.devices import device_index, device_kind, parse_device
from digitkit.predictors.runtimes import RUNTIMES


def test_device_spellings():
    assert parse_device(None) == parse_device("cpu") == parse_device(" CPU ") == "cpu"
    assert parse_device("cuda") == "cuda" and parse_device("cuda:01") == "cuda:1"
    assert parse_device("gpu:2") == "gpu:2" and parse_device("tensorrt") == "tensorrt"
    assert (device_kind("cuda:1"), device_index("cuda:1"), device_index("gpu")) == ("cuda", 1, 0)
    for bad in ("cpu:0", "cuda:", "cuda:x", "npu", "cuda:-1"):
        with pytest.raises(UsageError, match="choose from cpu, cuda"):
            parse_device(bad)


def test_which_rows_have_which_devices():
    runs_on = {name: set(r.devices) for name, r in RUNTIMES.items()}
    assert runs_on["onnxruntime"] == runs_on["onnxruntime-int8"] == {
        "cpu", "cuda", "tensorrt", "gpu"}
    assert runs_on["openvino"] == {"cpu", "gpu"}
    for name in ("openvino-bf16", "litert", "tf-savedmodel", "tf-function", "keras-predict"):
        assert runs_on[name] == {"cpu"}
    for row in RUNTIMES.values():
        row.check_device("cpu")  # the CPU always is


def _present(row, device) -> bool:
    try:
        row.check_device(device)
    except (UsageError, DependencyError):
        return False
    return True


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "tensorrt", "gpu"])
@pytest.mark.parametrize("name", list(RUNTIMES))
def test_every_runtime_refuses_a_gpu_it_does_not_have_in_one_line(name, device):
    row = RUNTIMES[name]
    if row.unavailable() and "not installed" in row.unavailable():
        pytest.skip(row.unavailable())
    if device_kind(device) not in row.devices:
        with pytest.raises(UsageError) as err:
            row.check_device(device)
        assert str(err.value) == (f"--device {device}: {name} runs on "
                                  f"{' or '.join(row.devices)}, not {device_kind(device)}")
        return
    if _present(row, device):
        pytest.skip(f"{device} is there for {name}")
    with pytest.raises(DependencyError) as err:
        row.check_device(device)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--device {device}: ")
    if row.group == "onnxruntime":
        provider = "TensorrtExecutionProvider" if device == "tensorrt" \
            else "CUDAExecutionProvider"
        assert f"this ONNX Runtime has no {provider}" in message
        assert "onnxruntime-gpu" in message
    else:
        assert "OpenVINO has no GPU" in message


@pytest.mark.skipif(_present(RUNTIMES["onnxruntime"], "cuda"), reason="CUDA is there")
def test_infer_and_bench_refuse_a_missing_device_before_any_work(export_dir, mnist_dir,
                                                                 png_test_dir, tmp_path):
    out = tmp_path / "rows.csv"
    r = run_cli("infer", export_dir / "model.onnx", png_test_dir / "0", "-o", out,
                "--device", "cuda:0")
    assert r.exit_code == 1, r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith("digitkit: error: --device cuda:0: this ONNX Runtime has no "
                           "CUDAExecutionProvider")
    assert not out.exists()
    r = run_cli("infer", export_dir, png_test_dir / "0", "-o", out, "--runtime", "litert",
                "--device", "gpu")
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [
        "digitkit: error: --device gpu: litert runs on cpu, not gpu"]
    r = run_cli("bench", export_dir, "--runtimes", "onnxruntime", "--device", "cuda",
                "--iterations", "1", "--batch-sizes", "1", "--data", mnist_dir)
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines()[-1].startswith(
        "digitkit: error: --device cuda: this ONNX Runtime has no CUDAExecutionProvider")
    assert "bench: " not in r.output  # nothing was measured
    r = run_cli("bench", export_dir, "--runtimes", "litert", "--device", "gpu",
                "--iterations", "1", "--batch-sizes", "1", "--data", mnist_dir)
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1] == (
        "digitkit: error: --device gpu: no requested runtime runs on it (litert: runs on "
        "cpu, not gpu)")


def test_bench_on_the_cpu_records_its_device(export_dir, mnist_dir, tmp_path):
    import json

    out = tmp_path / "bench.json"
    r = run_cli("bench", export_dir / "model.onnx", "--runtimes", "onnxruntime", "--device",
                "cpu", "--iterations", "2", "--warmup", "0", "--batch-sizes", "1",
                "--check-images", "100", "--data", mnist_dir, "--json", out)
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["settings"]["device"] == "cpu"
