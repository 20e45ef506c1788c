"""`digitkit infer` on a general image classifier made elsewhere (digitkit.predictors.runnable):
its preprocessing is detected on the labelled `--calibration` folder, as `digitkit export`
detects it, never on MNIST; without a folder or a declared convention the refusal is one line
naming --calibration, with no MNIST download tried.

The model: the `general_zoo`'s NCHW ONNX file trained on ImageNet's mean/std with logits out
(what a PyTorch user brings; onnx.helper, no TensorFlow), on the `image_set` photos."""

from __future__ import annotations

import csv

import pytest

from _cli import run_cli

pytestmark = pytest.mark.usefixtures("private_cache")


def _labels(path):
    with open(path, newline="") as f:
        return {r["path"]: r["label"] for r in csv.DictReader(f)}


def test_detected_on_the_calibration_folder_as_export_detects_it(general_zoo, tmp_path):
    model, photos = general_zoo.path("nchw-onnx"), general_zoo.image_set
    out = tmp_path / "rows.csv"
    r = run_cli("infer", model, photos, "-o", out, "--calibration", photos)
    assert r.exit_code == 0, r.output
    assert "MNIST" not in r.output
    line = next(x for x in r.output.splitlines() if "running it through digitkit's adapter" in x)
    assert "calibration images in" in line and str(photos) in line, line
    assert "ImageNet" in line or "0.485" in line, line  # its training mean/std, not a guess
    # The same model exported on the same folder: the same convention, the same labels.
    export = tmp_path / "export"
    r = run_cli("export", model, "--calibration", photos, "--format", "onnx", "--out", export)
    assert r.exit_code == 0, r.output
    exported = tmp_path / "exported.csv"
    r = run_cli("infer", export, photos, "-o", exported)
    assert r.exit_code == 0, r.output
    rows = _labels(out)
    assert rows == _labels(exported) and len(rows) == 200
    right = sum(label == p.split("/")[-2] for p, label in rows.items())
    assert right / len(rows) > 0.9


def test_without_a_folder_or_flags_one_line_names_calibration(general_zoo, tmp_path):
    model = general_zoo.path("nchw-onnx")
    out = tmp_path / "rows.csv"
    r = run_cli("infer", model, general_zoo.image_set, "-o", out)
    assert r.exit_code != 0
    (line,) = r.output.strip().splitlines()
    assert line.startswith("digitkit: error: ") and "--calibration" in line, line
    assert "download" not in line and "MNIST" not in line, line
    assert not out.exists()


def test_bench_detects_it_on_its_calibration_folder_too(general_zoo, tmp_path):
    model, photos = general_zoo.path("nchw-onnx"), general_zoo.image_set
    r = run_cli("bench", model, "--calibration", photos, "--runtimes", "onnxruntime",
                "--batch-sizes", "1", "--iterations", "3", "--warmup", "1")
    assert r.exit_code == 0, r.output
    assert "MNIST" not in r.output.split("running it through digitkit's adapter")[0]
    assert "calibration images in" in r.output, r.output
