"""`digitkit bench`: real short runs over the real copies of a trained seed-mlp."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli
from digitkit.bench.config import DEFAULT_BATCH_SIZES, DEFAULT_CHECK_IMAGES, DEFAULT_WARMUP
from digitkit.bench.plan import TF_ENGINES

# Tiny but real: a couple of timed calls per batch size, a few hundred check images.
QUICK = ["--batch-sizes", "1,4", "--iterations", "3", "--warmup", "1", "--check-images", "300"]


@pytest.fixture(scope="module")
def float_export(tmp_path_factory, export_dir):
    """The shared export without its int8 copy (links), named "export" like it."""
    view = tmp_path_factory.mktemp("float") / "export"
    view.mkdir()
    for name in ("model.h5", "saved_model", "model.onnx", "export.json"):
        (view / name).symlink_to(export_dir / name)
    return view


@pytest.fixture(scope="module")
def wrong_onnx(tmp_path_factory):
    """The model contract with random weights: runs fine, answers wrongly (TF-free)."""
    from _onnx_model import write_linear_onnx

    rng = np.random.default_rng(123)
    w = rng.normal(0, 0.01, (784, 10)).astype(np.float32)
    b = rng.normal(0, 0.01, 10).astype(np.float32)
    return write_linear_onnx(tmp_path_factory.mktemp("wrong") / "model.onnx", w, b)


def test_full_run_writes_table_json_plot_and_end_to_end(float_export, mnist_dir, png_test_dir,
                                                        tmp_path):
    images = tmp_path / "imgs"
    for d in ("3", "7"):
        (images / d).mkdir(parents=True)
        for p in sorted((png_test_dir / d).glob("*.png"))[:6]:
            shutil.copy(p, images / d / p.name)
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    r = run_cli("bench", float_export, *QUICK, "--data", mnist_dir, "--threads", "1",
                "--images", images, "--json", out_json, "--plot", out_png)
    assert r.exit_code == 0, r.output

    rec = json.loads(out_json.read_text())
    env = rec["environment"]
    assert env["cpu"] and env["logical_cores"] >= 1 and env["versions"]["onnxruntime"]
    assert env["threads"]["onnxruntime"]["intra_op_num_threads"] == 1
    assert env["threads"]["onnxruntime"]["allow_spinning"] is False  # as `digitkit infer`
    assert env["threads"]["tensorflow"]["intra_op_parallelism_threads"] == 1
    assert rec["settings"]["batch_sizes"] == [1, 4] and rec["settings"]["images"] == 12
    assert rec["engines"]["tf-function"]["copy"] == "keras"
    (m,) = rec["models"]
    # No int8 copy in this export: it is simply not run; every other engine is.
    assert set(m["results"]) == {"onnxruntime", "tf-savedmodel", "tf-function", "keras-predict"}
    assert m["reference"] == "keras-predict"
    for e, res in m["results"].items():
        assert res["load_s"] > 0 and res["first_inference_ms"] > 0 and res["peak_rss_mb"] > 10
        # The child's own peak, not pytest's (which holds TensorFlow and the training data).
        if e == "onnxruntime":
            assert res["peak_rss_mb"] < 400
        assert res["check"]["ok"] and res["check"]["top1_agreement"] >= 0.999, e
        assert res["check"]["accuracy"] > 0.85
        assert [pb["batch"] for pb in res["per_batch"]] == [1, 4]
        for pb in res["per_batch"]:
            lat = pb["latency_ms"]
            assert pb["calls"] == 3 and pb["images_per_s"] > 0
            assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert [x["batch"] for x in res["end_to_end"]] == [1, 4]
        for x in res["end_to_end"]:
            # One pass over the 12 files, cut at --iterations batches like the timed loop.
            assert x["images"] == min(12, 3 * x["batch"])
            assert x["preprocess_s"] > 0 and x["inference_s"] > 0
            assert x["top1_agreement"] == 1.0 and "top1" not in x
    cmp = {(c["engine"], c["batch"]): c for c in m["comparison"]}
    assert set(cmp) == {("onnxruntime", 1), ("onnxruntime", 4)}
    assert cmp[("onnxruntime", 1)]["best_tf_engine"] in TF_ENGINES

    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000
    main_table = r.stdout.split("\n\n")[0].splitlines()
    assert len(main_table) == 1 + 8  # header, 4 engines x 2 batch sizes
    assert len({len(ln) for ln in main_table[1:]}) == 1  # aligned (agreement column last)
    head = r.stdout.splitlines()[0]
    assert head.split()[:4] == ["model", "engine", "batch", "images/s"]
    assert "End to end" in r.output and "best TF path" in r.output

    # The outputs are the user's: no silent overwrite.
    again = run_cli("bench", float_export, "--json", out_json, "--data", mnist_dir)
    assert again.exit_code == 1 and "already exists" in again.output


def test_wrong_model_is_flagged_not_crowned(export_dir, wrong_onnx, mnist_dir, tmp_path):
    out_json = tmp_path / "b.json"
    r = run_cli("bench", wrong_onnx, export_dir / "saved_model", "--runtimes",
                "onnxruntime,tensorflow", *QUICK, "--data", mnist_dir, "--json", out_json)
    assert r.exit_code == 4, r.output
    assert "FLAGGED" in r.output and "disagrees with the reference" in r.output
    (m,) = json.loads(out_json.read_text())["models"]
    assert m["reference"] == "tf-savedmodel"
    check = m["results"]["onnxruntime"]["check"]
    assert not check["ok"] and check["top1_agreement"] < 0.5
    assert all(c["flagged"] for c in m["comparison"])


@pytest.mark.parametrize("args, message", [
    (["--runtimes", "foo"], "unknown runtime 'foo'"),
    (["--batch-sizes", "0"], "batch size must be at least 1"),
    (["--batch-sizes", "1,x"], "'x' is not a whole number"),
    (["--duration", "1", "--iterations", "3"], "alternatives"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--plot", "out.jpg"], "expected a .png"),
])
def test_bad_arguments_are_one_line_usage_errors(export_dir, args, message):
    r = run_cli("bench", export_dir, *args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitkit: error: ") and message in lines[0]


def test_undecodable_image_is_a_one_line_error(export_dir, mnist_dir, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not a png at all")
    r = run_cli("bench", export_dir / "model.onnx", "--runtimes", "onnxruntime", *QUICK,
                "--data", mnist_dir, "--images", tmp_path / "imgs")
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("digitkit: error: ") and "bad.png" in last and "Traceback" not in last


def test_help_shows_the_library_defaults():
    r = run_cli("bench", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert f"[default: {','.join(map(str, DEFAULT_BATCH_SIZES))}]" in text
    assert f"[default: {DEFAULT_WARMUP}]" in text and f"[default: {DEFAULT_CHECK_IMAGES}]" in text
