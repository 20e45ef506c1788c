"""digitkit.export.manifest: the export directory, staged installs, .FAILED copies and
export.json. Read-only checks use the shared `export_dir`; tests that write copy the seed."""

from __future__ import annotations

import json

from _cli import run_cli
from digitkit.artifacts import sha256_file, sha256_tree


def test_default_layout_and_manifest(export_dir, seed_mlp_h5):
    out = export_dir
    manifest = json.loads((out / "export.json").read_text())
    assert (out / "model.h5").read_bytes() == seed_mlp_h5.read_bytes()
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "model.onnx").is_file() and (out / "model.int8.onnx").is_file()
    assert not list(out.glob(".export-*")), "staging directory left behind"
    assert manifest["status"] == "passed"
    assert manifest["source"]["sha256"] == sha256_file(seed_mlp_h5)
    cfg = manifest["config"]
    assert cfg["opset"] == 17 and cfg["atol"] == 1e-5 and cfg["versions"]["onnxruntime"]
    arts = manifest["artifacts"]
    assert set(arts) == {"keras", "savedmodel", "onnx", "onnx-int8", "tflite"}
    for rec in arts.values():
        p = out / rec["path"]
        assert rec["sha256"] == (sha256_tree(p) if p.is_dir() else sha256_file(p))
        assert rec["size_bytes"] > 0
    for fmt in ("savedmodel", "onnx", "tflite"):
        v = arts[fmt]["validation"]
        assert v["status"] == "passed"
        assert v["max_abs_diff"] <= 1e-5
        agree, total = v["top1_agreement"]
        assert agree == total >= 1000 + 2 + 2 + 1 + 7
        cases = {c["case"]: c for c in v["cases"]}
        assert {"all_zeros", "all_255", "batch_of_1", "odd_batch_7"} <= set(cases)
        assert cases["odd_batch_7"]["shape"] == [7, 10]
    acc = arts["onnx-int8"]["accuracy"]
    assert acc["test_images"] == 10000
    assert acc["int8_size_bytes"] < acc["float_size_bytes"] / 2
    assert acc["accuracy_drop_points"] <= acc["max_accuracy_drop_points"]


def test_manifest_keys_are_stable(export_dir):
    """Other tools read export.json: its keys (and their order) are part of the interface."""
    manifest = json.loads((export_dir / "export.json").read_text())
    assert list(manifest) == ["digitkit_version", "created", "status", "export_dir", "source",
                              "model", "config", "artifacts", "seconds"]
    assert list(manifest["config"]) == [
        "formats", "opset", "atol", "rtol", "source_sha256", "quantize", "max_accuracy_drop_points",
        "validation_images", "data_source", "versions"]
    assert list(manifest["config"]["versions"])[:2] == ["python", "digitkit"]
    arts = manifest["artifacts"]
    assert list(arts["savedmodel"]) == ["path", "format", "size_bytes", "sha256", "status",
                                        "sha256_method", "signature", "validation"]
    assert list(arts["onnx"]) == ["path", "format", "size_bytes", "sha256", "status",
                                  "validation"]
    assert list(arts["onnx-int8"])[-2:] == ["validation", "accuracy"]


def test_a_copy_that_was_never_built_is_listed(tmp_path):
    from digitkit.export.manifest import format_artifacts

    lines = format_artifacts({"onnx-int8": {"path": None, "format": "onnx-int8",
                                            "size_bytes": 0, "sha256": "", "status": "failed"}})
    assert lines[0].split() == ["-", "onnx-int8", "0", "B", "sha256", "failed"]
    assert lines[-1].split() == ["export.json", "manifest"]


def test_impossible_atol_fails_and_moves_copy_aside(src_h5, mnist_dir):
    result = run_cli("export", src_h5, "--format", "onnx", "--atol", "0", "--rtol", "0",
                     "--data", mnist_dir)
    out = src_h5.parent / "export"
    manifest = json.loads((out / "export.json").read_text())
    onnx_rec = manifest["artifacts"]["onnx"]
    # ONNX Runtime's kernels differ from TensorFlow's in the last bits: the diff is real.
    assert onnx_rec["validation"]["max_abs_diff"] > 0
    assert result.exit_code == 4, result.output
    assert "validation failed for onnx" in result.output
    assert "[FAILED] onnx" in result.output
    assert not (out / "model.onnx").exists()
    assert (out / "model.onnx.FAILED").is_file()
    assert manifest["status"] == "failed" and onnx_rec["status"] == "failed"
    assert onnx_rec["path"] == "model.onnx.FAILED"
    assert not (out / "saved_model").exists()


def test_overwrite_needs_force_and_force_leaves_a_consistent_dir(src_h5, mnist_dir, tmp_path):
    out = tmp_path / "out"
    assert run_cli("export", src_h5, "--out", out, "--data", mnist_dir,
                   "--images", 100).exit_code == 0
    again = run_cli("export", src_h5, "--out", out, "--data", mnist_dir)
    assert again.exit_code == 1
    assert again.output.strip().splitlines()[-1].endswith("already exists; pass --force to "
                                                          "overwrite")
    forced = run_cli("export", src_h5, "--out", out, "--data", mnist_dir, "--format", "onnx",
                     "--images", 100, "--force")
    assert forced.exit_code == 0, forced.output
    manifest = json.loads((out / "export.json").read_text())
    assert set(manifest["artifacts"]) == {"keras", "onnx"}
    assert not (out / "saved_model").exists()  # nothing left that the manifest does not list
