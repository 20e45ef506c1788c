"""`infer --runtime --precision`: every runtime of the runtime table serves `infer`, on real
runtimes and a real export directory (conftest's `export_dir`), over 200 MNIST test PNGs.

Every fp32 runtime gives ONNX Runtime's labels on every file; the int8 copy's agreement is
stated; bf16 runs where this CPU has it natively and is refused in one line where not.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from _cli import run_cli
from _infer_folders import class_folders
from digitkit.predictors.runtimes import RUNTIMES

#: The int8 (QDQ) copy's top-1 agreement with the fp32 ONNX copy on these files, at least:
#: quantization moves a few near-ties, never the model's answers wholesale (the seed model's
#: int8 copy agreed on 99.69% of the 10,000 test PNGs when this was written).
INT8_AGREEMENT = 0.98


@pytest.fixture(scope="module")
def folder(png_test_dir, tmp_path_factory) -> Path:
    """20 real test PNGs per class, in class folders."""
    return class_folders(png_test_dir, tmp_path_factory.mktemp("pngs") / "test", per_class=20)


def _labels(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and not any(r["error"] for r in rows)
    return {r["path"]: r["label"] for r in rows}


def _infer(model, folder, out, *args):
    # Tasks of 4 x 32 files: 200 files make two tasks, so the model runs in the worker pool
    # (a run of one task runs it in the main process, beside one decoding worker).
    return run_cli("infer", model, folder, "-o", out, "--workers", "2", "--batch-size", "32",
                   *args)


@pytest.fixture(scope="module")
def ort_labels(export_dir, folder, tmp_path_factory) -> dict[str, str]:
    """The reference: the .onnx file on ONNX Runtime, as infer has always run it."""
    out = tmp_path_factory.mktemp("ort") / "ort.csv"
    r = _infer(export_dir / "model.onnx", folder, out)
    assert r.exit_code == 0, r.output
    assert "runtime: onnxruntime, fp32" in r.output
    return _labels(out)


def test_export_dir_with_no_flags_runs_its_onnx_copy(export_dir, folder, ort_labels,
                                                     tmp_path):
    out = tmp_path / "rows.csv"
    r = _infer(export_dir, folder, out)
    assert r.exit_code == 0, r.output
    assert "runtime: onnxruntime, fp32" in r.output
    assert _labels(out) == ort_labels


@pytest.mark.parametrize("runtime", ["openvino", "litert", "tensorflow"])
def test_every_fp32_runtime_gives_ort_labels(runtime, export_dir, folder, ort_labels,
                                             tmp_path):
    row = next(r for r in RUNTIMES.values() if r.group == runtime)
    if row.unavailable():
        pytest.skip(f"{runtime}: {row.unavailable()}")
    out = tmp_path / "rows.csv"
    r = _infer(export_dir, folder, out, "--runtime", runtime)
    assert r.exit_code == 0, r.output
    assert f"runtime: {row.name}, fp32" in r.output
    assert _labels(out) == ort_labels


def _agreement(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return sum(a[k] == b[k] for k in a) / len(a)


def test_int8_runs_the_int8_copy(export_dir, folder, ort_labels, tmp_path):
    out = tmp_path / "rows.csv"
    r = _infer(export_dir, folder, out, "--precision", "int8")
    assert r.exit_code == 0, r.output
    assert "runtime: onnxruntime-int8, int8" in r.output
    assert _agreement(_labels(out), ort_labels) >= INT8_AGREEMENT


def test_bf16_runs_where_the_cpu_has_it_and_is_refused_in_one_line_where_not(
        export_dir, folder, ort_labels, tmp_path):
    row = RUNTIMES["openvino-bf16"]
    if row.requires and row.unavailable() and "not installed" in row.unavailable():
        pytest.skip(row.unavailable())
    out = tmp_path / "rows.csv"
    r = _infer(export_dir, folder, out, "--runtime", "openvino", "--precision", "bf16")
    if row.unavailable() is None:  # a CPU with native bf16
        assert r.exit_code == 0, r.output
        assert "runtime: openvino-bf16, bf16" in r.output
        assert _agreement(_labels(out), ort_labels) >= INT8_AGREEMENT
        return
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "digitkit: error: --runtime openvino --precision bf16 (openvino-bf16): this CPU "
        "has no native bf16"]
    assert not out.exists()


def test_a_copy_the_export_dir_lacks_is_refused_in_one_line(export_dir, folder, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copyfile(export_dir / "model.onnx", partial / "model.onnx")
    out = tmp_path / "rows.csv"
    r = _infer(partial, folder, out, "--runtime", "litert")
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1
    assert f"{partial}: no tflite copy for --runtime litert" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--runtime", "litert", "--precision", "int8"], "--runtime litert has no int8 row"),
    (["--runtime", "bogus"], "Invalid value for '--runtime'"),
    (["--runtime", "litert", "MODEL=model.onnx"],
     "model.onnx: a .onnx model runs on onnxruntime, not litert"),
])
def test_usage_errors_exit_2(args, message, export_dir, folder, tmp_path):
    model = export_dir
    if args[-1] == "MODEL=model.onnx":
        args, model = args[:-1], export_dir / "model.onnx"
    r = _infer(model, folder, tmp_path / "rows.csv", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output


@pytest.mark.parametrize("runtime", ["litert", "openvino"])
def test_ray_actors_serve_the_runtime_with_local_rows(runtime, ray_local, export_dir, folder,
                                                      tmp_path):
    if RUNTIMES[runtime].unavailable():
        pytest.skip(f"{runtime}: {RUNTIMES[runtime].unavailable()}")
    from digitkit.infer import InferSpec, run_infer

    local, ray = tmp_path / "local.csv", tmp_path / "ray.csv"
    run_infer(InferSpec(export_dir, runtime=runtime, workers=0), [folder], local)
    summary = run_infer(InferSpec(export_dir, runtime=runtime, engine="ray", workers=2,
                                  batch_size=64), [folder], ray)
    assert (summary.runtime, summary.precision) == (runtime, "fp32")
    # The same rows; probabilities to float tolerance (one thread in an actor, every core
    # here: a runtime may sum in another order).
    ray_rows, local_rows = _rows(ray), _rows(local)
    assert len(ray_rows) == len(local_rows) == 200
    for a, b in zip(ray_rows, local_rows, strict=True):
        assert (a["path"], a["label"], a["top_k_labels"], a["error"]) == \
            (b["path"], b["label"], b["top_k_labels"], b["error"])
        assert abs(float(a["confidence"]) - float(b["confidence"])) <= 2e-6


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_result_file_records_the_runtime_and_a_resume_on_another_is_refused(
        export_dir, folder, tmp_path):
    from digitkit.infer.results.formats import result_format
    from digitkit.infer.results.provenance import read_record

    out = tmp_path / "rows.csv"
    assert _infer(export_dir, folder, out).exit_code == 0
    rec = read_record(out, result_format("csv"))
    assert (rec.runtime, rec.precision) == ("onnxruntime", "fp32")
    before = out.read_bytes()
    r = _infer(export_dir, folder, out, "--resume", "--precision", "int8")
    assert r.exit_code == 1
    assert "runtime onnxruntime, this run onnxruntime-int8" in r.output
    assert "precision fp32, this run int8" in r.output
    assert out.read_bytes() == before
