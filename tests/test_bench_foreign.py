"""`digitkit bench` on an ONNX model made elsewhere (issue 10, story 4: the NCHW ONNX failed
with an ONNX Runtime rank error): its convention detected once, said on stderr, and the
adapted copy benchmarked and cross-checked like any other."""

from __future__ import annotations

import json

import pytest

from _cli import run_cli

pytestmark = pytest.mark.usefixtures("private_cache")


def test_nchw_onnx_bench(zoo, tmp_path, mnist_dir):
    out = tmp_path / "bench.json"
    r = run_cli("bench", zoo.path("nchw-onnx-unit"), "--runtimes", "onnxruntime",
                "--batch-sizes", "1,8", "--iterations", "3", "--warmup", "1",
                "--check-images", "1000", "--data", mnist_dir, "--json", out)
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.output.splitlines() if "detected:" in ln]
    assert len(said) == 1 and "nchw_unit.onnx: detected: /255 (logits: softmax added)" in said[0]
    record = json.loads(out.read_text())
    result = record["models"][0]["results"]["onnxruntime"]
    assert result["check"]["accuracy"] > 0.85  # the model's own accuracy, not raw pixels'



def test_export_of_a_foreign_model_benches_its_keras_copy_adapted(zoo, tmp_path, mnist_dir):
    """The export directory keeps the source as model.h5; bench's Keras runtimes run it
    through the adapter export.json records, so they agree with the exported ONNX copy
    (fed raw pixels the notebook's model disagrees on about one image in ten)."""
    out = tmp_path / "export"
    r = run_cli("export", zoo.path("notebook-axis1"), "--out", out, "--format", "onnx",
                "--images", "100", "--data", mnist_dir)
    assert r.exit_code == 0, r.output
    r = run_cli("bench", out, "--runtimes", "onnxruntime,tf-function", "--batch-sizes", "8",
                "--iterations", "2", "--warmup", "0", "--check-images", "2000",
                "--data", mnist_dir, "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "b.json").read_text())["models"][0]["results"]
    assert results["onnxruntime"]["check"]["top1_agreement"] == 1.0
