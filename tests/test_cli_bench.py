"""`digitkit bench`: real short runs over the real copies of a trained seed-mlp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from _cli import run_cli
from digitkit.bench.config import DEFAULT_BATCH_SIZES, DEFAULT_CHECK_IMAGES, DEFAULT_WARMUP
from digitkit.bench.plan import TF_RUNTIMES
from digitkit.predictors import RUNTIMES

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
    # No int8 or LiteRT copy in this export: they are simply not run; every other runtime
    # is, the optional runtimes where installed (tests/test_bench_extra.py covers both).
    optional = {e for e in ("openvino", "openvino-bf16") if not RUNTIMES[e].unavailable()}
    assert set(m["results"]) == {"onnxruntime", "tf-savedmodel", "tf-function",
                                 "keras-predict"} | optional
    assert m["reference"] == "keras-predict"
    for e, res in m["results"].items():
        assert res["load_s"] > 0 and res["first_inference_ms"] > 0 and res["peak_rss_mb"] > 10
        # The child's own peak, not pytest's (which holds TensorFlow and the training data).
        if e == "onnxruntime":
            assert res["peak_rss_mb"] < 400
        floor = 0.999 if RUNTIMES[e].precision == "fp32" else 0.99
        assert res["check"]["ok"] and res["check"]["top1_agreement"] >= floor, e
        assert res["size_bytes"] > 1000 and rec["engines"][e]["precision"], e
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
    assert cmp[("onnxruntime", 1)]["best_tf_engine"] in TF_RUNTIMES

    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000
    main_table = r.stdout.split("\n\n")[0].splitlines()
    assert len(main_table) == 1 + 2 * len(m["results"])  # header, runtimes x 2 batch sizes
    assert len({len(ln) for ln in main_table[1:]}) == 1  # aligned (agreement column last)
    head = r.stdout.splitlines()[0]
    assert head.split()[:4] == ["model", "engine", "batch", "images/s"]
    assert "End to end" in r.output and "best TF path" in r.output
    # Every runtime side by side: precision, status, size, load time, accuracy, agreement.
    summary = r.stdout.split("\n\n")[1].splitlines()[1:]
    assert summary[0].split()[:8] == ["model", "engine", "precision", "status", "size",
                                      "MB", "load", "s"]
    rows = {ln.split()[1]: ln.split() for ln in summary[1:]}
    # A runtime this machine cannot run (no such CPU support, e.g. bf16 on a CPU without it)
    # still gets its row, saying why; it has no results.
    assert set(rows) == set(m["results"]) | set(rec["unavailable"])
    for e, why in rec["unavailable"].items():
        assert e not in m["results"] and rows[e][3] in ("not", "this"), (e, why)
    assert rows["onnxruntime"][2:4] == ["fp32", "ok"] and rows["keras-predict"][7] == "reference"
    accuracy = m["results"]["onnxruntime"]["check"]["accuracy"]
    assert rows["onnxruntime"][6] == f"{100 * accuracy:.2f}%"

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


_BLOCK_RUNTIMES = '''
import importlib.abc, sys
class _NoRuntimes(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("openvino", "ai_edge_litert"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoRuntimes())
'''


def _bench_child(env, *args):
    return subprocess.run([sys.executable, "-m", "digitkit", "bench", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(RUNTIMES["openvino"].unavailable() is not None
                    or RUNTIMES["litert"].unavailable() is not None,
                    reason="the 'runtimes' extra is not installed")
def test_optional_runtimes_with_and_without_the_extra(export_dir, mnist_dir, tmp_path):
    """With the extra, OpenVINO and LiteRT are rows like any other, precision stated; with
    it made unimportable for real (in every process of the run) they are listed as not
    installed and the run still succeeds."""
    quick = ["--runtimes", "onnxruntime,openvino,litert", "--batch-sizes", "1,8",
             "--iterations", "3", "--warmup", "1", "--check-images", "500", "--data", mnist_dir]
    out = tmp_path / "with.json"
    r = run_cli("bench", export_dir, *quick, "--json", out)
    assert r.exit_code == 0, r.output
    (m,) = json.loads(out.read_text())["models"]
    runtimes = {"onnxruntime", "onnxruntime-int8", "openvino", "litert"}
    runtimes |= {"openvino-bf16"} if RUNTIMES["openvino-bf16"].unavailable() is None else set()
    assert set(m["results"]) == runtimes
    assert m["results"]["litert"]["size_bytes"] == (export_dir / "model.tflite").stat().st_size
    for e in ("openvino", "litert"):
        assert m["results"][e]["check"]["ok"] and m["results"][e]["check"]["accuracy"] > 0.85
    peers = {c["best_fp32_peer"] for c in m["comparison"]}
    assert peers <= {"openvino", "litert"} and peers

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK_RUNTIMES)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    out = tmp_path / "without.json"
    r = _bench_child(env, export_dir, *quick, "--json", out)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    missing = "not installed: pip install 'digitkit[runtimes]'"
    assert rec["unavailable"] == {"openvino": missing, "openvino-bf16": missing,
                                  "litert": missing}
    (m,) = rec["models"]
    assert set(m["results"]) == {"onnxruntime", "onnxruntime-int8"}
    rows = [ln.split() for ln in r.stdout.split("\n\n")[1].splitlines()[2:]]
    listed = {row[1]: " ".join(row[3:7]) for row in rows}
    assert listed["litert"] == listed["openvino"] == "not installed: pip install"
    assert "FLAGGED" not in r.stdout and "Traceback" not in r.stderr
    # Only missing runtimes asked for: nothing can run, one line naming the extra.
    r = _bench_child(env, export_dir, "--runtimes", "litert", "--data", mnist_dir)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"digitkit: error: no requested runtime can run here: litert: {missing}")
