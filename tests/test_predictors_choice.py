"""`infer --runtime auto` (digitkit.predictors.choice): on a real export directory (conftest's
`export_dir`), real runtimes and real MNIST test images, with a cache of the test's own.

What is held: the choice passes the gate and is recorded with the result file; a second run
reads the cache instead of calibrating (the cache file is not rewritten), and a batch size or
a runtime opened another way calibrates again; a runtime made
unimportable for real falls back to the next fastest of the cached ranking; a copy that
export.json does not record as passed, that changed since, or that fails the gate, is never
chosen. No figure is asserted: which runtime is fastest depends on the machine.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import run_cli
from _infer_folders import class_folders
from digitkit.infer.results.formats import result_format
from digitkit.infer.results.provenance import read_record
from digitkit.predictors.choice import CACHE_DIR, MIN_AGREEMENT
from digitkit.predictors.ort import FIXED_SESSION
from digitkit.predictors.runtimes import RUNTIMES

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def folder(png_test_dir, tmp_path_factory) -> Path:
    """5 real test PNGs per class, in class folders."""
    return class_folders(png_test_dir, tmp_path_factory.mktemp("pngs") / "test", per_class=5)


def _auto(model, folder, out, mnist_dir, *args):
    return run_cli("infer", model, folder, "-o", out, "--runtime", "auto", "--data", mnist_dir,
                   "--workers", "1", *args)


def _cached(cache_root: Path) -> tuple[Path, dict]:
    (path,) = (cache_root / CACHE_DIR).glob("*.json")
    return path, json.loads(path.read_text())


def _cache_root() -> Path:
    return Path(os.environ["DIGITKIT_CACHE"])


def _labels(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and not any(r["error"] for r in rows)
    return {r["path"]: r["label"] for r in rows}


def test_auto_chooses_the_fastest_row_that_passes_the_gate_and_records_why(
        export_dir, folder, mnist_dir, tmp_path):
    out = tmp_path / "auto.csv"
    r = _auto(export_dir, folder, out, mnist_dir, "--precision", "any")
    assert r.exit_code == 0, r.output
    assert "--runtime auto: calibrating" in r.output
    chose = [ln for ln in r.output.splitlines() if "--runtime auto chose" in ln]
    assert len(chose) == 1  # said once
    rec = read_record(out, result_format("csv"))
    choice = rec.choice
    assert choice["chosen"] == rec.runtime and choice["precision"] == rec.precision
    assert f"runtime: {rec.runtime}, {rec.precision}" in r.output
    assert f"--runtime auto chose {rec.runtime} ({rec.precision}" in chose[0]
    results = {x["runtime"]: x for x in choice["results"]}
    assert choice["reference"] == "onnxruntime"
    mine = results[rec.runtime]
    assert mine["refused"] is None and mine["top1_agreement"] >= MIN_AGREEMENT
    passing = [x for x in results.values() if x["refused"] is None and x["images_per_s"]]
    assert mine["images_per_s"] == max(x["images_per_s"] for x in passing)
    for x in results.values():  # every refusal is a gate failure, stated with its figure
        if x["refused"] is not None:
            assert x["top1_agreement"] < MIN_AGREEMENT or "accuracy" in x["refused"] \
                or "failed to run" in x["refused"]
    # The record it came from is the cache file, whose key names this machine.
    path, cached = _cached(_cache_root())
    assert choice["record"] == str(path)
    assert cached["key"]["machine"]["usable_cpus"] == len(os.sched_getaffinity(0))
    assert cached["key"]["batch"] == 256 and cached["key"]["threads"] == 1
    if rec.precision == "fp32":  # a float row gives ONNX Runtime's labels on every file
        ort = tmp_path / "ort.csv"
        assert run_cli("infer", export_dir / "model.onnx", folder, "-o", ort).exit_code == 0
        assert _labels(out) == _labels(ort)


def test_a_second_run_reads_the_cache_and_does_not_calibrate(export_dir, folder, mnist_dir,
                                                             tmp_path, monkeypatch):
    first = _auto(export_dir, folder, tmp_path / "a.csv", mnist_dir)
    assert first.exit_code == 0, first.output
    assert "calibrating" in first.output and "cached in" in first.output
    path, _ = _cached(_cache_root())
    stamp = path.stat().st_mtime_ns
    second = _auto(export_dir, folder, tmp_path / "b.csv", mnist_dir)
    assert second.exit_code == 0, second.output
    assert "calibrating" not in second.output
    assert f"from the cache ({path})" in second.output
    assert path.stat().st_mtime_ns == stamp
    a = read_record(tmp_path / "a.csv", result_format("csv"))
    b = read_record(tmp_path / "b.csv", result_format("csv"))
    assert (a.runtime, a.precision) == (b.runtime, b.precision)
    # Another batch size is another measurement.
    third = _auto(export_dir, folder, tmp_path / "c.csv", mnist_dir, "--batch-size", "32")
    assert third.exit_code == 0 and "calibrating" in third.output
    # A runtime opened another way is another measurement: the key holds what each
    # predictor hands its runtime, so a settings change in digitkit (here ORT's graph
    # optimisation level, a real other level) recalibrates instead of reading an old speed.
    cached = json.loads(path.read_text())
    assert cached["key"]["options"]["onnxruntime"]["threads"] == 1
    monkeypatch.setitem(FIXED_SESSION, "graph_optimization_level", "ORT_ENABLE_EXTENDED")
    fourth = _auto(export_dir, folder, tmp_path / "d.csv", mnist_dir)
    assert fourth.exit_code == 0 and "calibrating" in fourth.output


_BLOCK_RUNTIMES = '''
import importlib.abc, sys
class _NoRuntimes(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("openvino", "ai_edge_litert"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoRuntimes())
'''


@pytest.mark.skipif(RUNTIMES["openvino"].unavailable() is not None
                    or RUNTIMES["litert"].unavailable() is not None,
                    reason="the 'runtimes' extra is not installed")
def test_a_runtime_made_unavailable_falls_back_to_the_next_fastest(export_dir, folder,
                                                                   mnist_dir, tmp_path):
    # --precision any: ONNX Runtime's int8 row stays a candidate beside its float row, so
    # what is left without the extra is still a choice, read from the cached ranking.
    r = _auto(export_dir, folder, tmp_path / "a.csv", mnist_dir, "--precision", "any")
    assert r.exit_code == 0, r.output
    _, cached = _cached(_cache_root())
    ranking = [x["runtime"] for x in sorted(cached["results"], key=lambda x: -(
        x["images_per_s"] or 0)) if x["refused"] is None]
    assert {"openvino", "litert"} <= set(ranking)
    # The same run with the runtimes extra made unimportable for real, in a fresh process.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK_RUNTIMES)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    out = tmp_path / "b.csv"
    proc = subprocess.run([sys.executable, "-m", "digitkit", "infer", str(export_dir),
                           str(folder), "-o", str(out), "--runtime", "auto", "--data",
                           str(mnist_dir), "--workers", "1", "--precision", "any", "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "calibrating" not in proc.stderr and "from the cache" in proc.stderr
    expected = next(x for x in ranking if RUNTIMES[x].group == "onnxruntime")
    assert read_record(out, result_format("csv")).runtime == expected
    for blocked in ranking[:ranking.index(expected)]:  # the faster ones, passed over
        assert f"{blocked} (not installed: pip install 'digitkit[runtimes]')" in proc.stderr


def test_a_lone_candidate_is_chosen_without_measuring(export_dir, folder, mnist_dir,
                                                       tmp_path):
    """A .tflite file runs on LiteRT alone: nothing to compare, nothing cached."""
    if RUNTIMES["litert"].unavailable():
        pytest.skip(RUNTIMES["litert"].unavailable())
    out = tmp_path / "rows.csv"
    r = _auto(export_dir / "model.tflite", folder, out, mnist_dir)
    assert r.exit_code == 0, r.output
    assert "--runtime auto: litert (fp32, model.tflite) is the only candidate" in r.output
    assert "calibrating" not in r.output
    assert not (_cache_root() / CACHE_DIR).exists()
    assert read_record(out, result_format("csv")).choice["only_candidate"] is True


def _copy_export(export_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    return copy


def _edit_manifest(export: Path, edit) -> None:
    path = export / "export.json"
    manifest = json.loads(path.read_text())
    edit(manifest["artifacts"])
    path.write_text(json.dumps(manifest))


def test_a_copy_export_json_records_as_failed_is_never_a_candidate(export_dir, folder,
                                                                    mnist_dir, tmp_path):
    export = _copy_export(export_dir, tmp_path)

    def fail_tflite(artifacts):
        artifacts["tflite"]["status"] = "failed"
        artifacts["tflite"]["validation"]["status"] = "failed"

    _edit_manifest(export, fail_tflite)
    out = tmp_path / "rows.csv"
    r = _auto(export, folder, out, mnist_dir)
    assert r.exit_code == 0, r.output
    assert "litert (export validation: failed)" in r.output
    rec = read_record(out, result_format("csv"))
    assert rec.runtime != "litert"
    assert "litert" not in {x["runtime"] for x in rec.choice["results"]}


def test_a_copy_that_fails_the_gate_or_changed_since_export_is_refused(
        export_dir, linear_onnx, folder, mnist_dir, tmp_path):
    """A wrong int8 copy that export.json vouches for (its sha256 recorded): the gate
    catches it. The same file without its sha256 recorded: refused before any calibration."""
    export = _copy_export(export_dir, tmp_path)
    shutil.copyfile(linear_onnx, export / "model.int8.onnx")  # another model: ~85% accurate
    from digitkit.artifacts import sha256_file

    sha = sha256_file(export / "model.int8.onnx")

    def vouch(artifacts):
        artifacts["onnx-int8"]["sha256"] = sha

    _edit_manifest(export, vouch)
    r = _auto(export, folder, tmp_path / "any.csv", mnist_dir, "--precision", "any")
    assert r.exit_code == 0, r.output
    assert "onnxruntime-int8 (top-1 agreement" in r.output
    assert read_record(tmp_path / "any.csv", result_format("csv")).runtime != "onnxruntime-int8"
    out = tmp_path / "int8.csv"
    r = _auto(export, folder, out, mnist_dir, "--precision", "int8")
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("digitkit: error: ") and "no candidate passes the gate" in last
    assert "onnxruntime-int8: top-1 agreement" in last
    assert not out.exists()

    def unvouch(artifacts):
        artifacts["onnx-int8"]["sha256"] = "0" * 64

    _edit_manifest(export, unvouch)
    r = _auto(export, folder, out, mnist_dir, "--precision", "int8")
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines() == [
        f"digitkit: error: {export}: --runtime auto has nothing to choose from "
        "(onnxruntime-int8: changed since export validation (sha256 differs from export.json))"]


@pytest.mark.parametrize(("args", "message"), [
    (["--precision", "any"], "--precision any is for --runtime auto"),
    (["--runtime", "auto", "--input-scale", "unit"], "--runtime auto compares digitkit's own"),
])
def test_usage_errors(args, message, export_dir, folder, tmp_path):
    r = run_cli("infer", export_dir / "model.onnx", folder, "-o", tmp_path / "x.csv", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1


def test_auto_on_a_device_no_candidate_has_is_refused_naming_each(export_dir, folder,
                                                                   mnist_dir, tmp_path):
    from digitkit.errors import DependencyError

    try:
        RUNTIMES["onnxruntime"].check_device("cuda")
        pytest.skip("CUDA is there")
    except DependencyError:
        pass
    out = tmp_path / "rows.csv"
    r = _auto(export_dir, folder, out, mnist_dir, "--device", "cuda")
    assert r.exit_code == 1, r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"digitkit: error: {export_dir}: --runtime auto has nothing to "
                           "choose from (onnxruntime: this ONNX Runtime has no "
                           "CUDAExecutionProvider")
    if RUNTIMES["litert"].unavailable() is None:
        assert "litert: litert runs on cpu, not cuda" in line
    assert not out.exists() and not (_cache_root() / CACHE_DIR).exists()
