"""`digitkit bench`: real short runs over real SavedModel/ONNX/h5 copies of a trained seed-mlp."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from _bench_models import make_export_dir
from digitkit import bench
from digitkit.cli import cli
from digitkit.errors import ModelError, UsageError

# Tiny but real: a couple of timed calls per batch size, a few hundred check images.
QUICK = ["--batch-sizes", "1,4", "--iterations", "3", "--warmup", "1", "--check-images", "300"]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, seed_mlp_h5):
    return make_export_dir(seed_mlp_h5, tmp_path_factory.mktemp("bench") / "export")


@pytest.fixture(scope="module")
def wrong_onnx(tmp_path_factory):
    """Same architecture and contract, untrained weights: runs fine, answers wrongly."""
    import keras

    from digitkit.architectures import build_model

    keras.utils.set_random_seed(123)
    out = make_export_dir(build_model("seed-mlp"), tmp_path_factory.mktemp("wrong") / "w",
                          onnx_only=True)
    return out / "model.onnx"


def _run(args):
    return CliRunner().invoke(cli, ["bench", *args])


def test_full_run_writes_table_json_plot_and_end_to_end(export_dir, mnist_dir, png_test_dir,
                                                        tmp_path):
    images = tmp_path / "imgs"
    for d in ("3", "7"):
        (images / d).mkdir(parents=True)
        for p in sorted((png_test_dir / d).glob("*.png"))[:6]:
            shutil.copy(p, images / d / p.name)
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    r = _run([str(export_dir), *QUICK, "--data", str(mnist_dir), "--threads", "1",
              "--images", str(images), "--json", str(out_json), "--plot", str(out_png)])
    assert r.exit_code == 0, r.output

    rec = json.loads(out_json.read_text())
    env = rec["environment"]
    assert env["cpu"] and env["logical_cores"] >= 1 and env["versions"]["onnxruntime"]
    assert env["threads"]["onnxruntime"]["intra_op_num_threads"] == 1
    assert env["threads"]["onnxruntime"]["allow_spinning"] is False  # as `digitkit infer`
    assert env["threads"]["tensorflow"]["intra_op_parallelism_threads"] == 1
    assert rec["settings"]["batch_sizes"] == [1, 4] and rec["settings"]["images"] == 12
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
    assert cmp[("onnxruntime", 1)]["best_tf_engine"] in bench.TF_ENGINES

    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000
    main_table = r.stdout.split("\n\n")[0].splitlines()
    assert len(main_table) == 1 + 8  # header, 4 engines x 2 batch sizes
    assert len({len(ln) for ln in main_table[1:]}) == 1  # aligned (agreement column last)
    head = r.stdout.splitlines()[0]
    assert head.split()[:4] == ["model", "engine", "batch", "images/s"]
    assert "End to end" in r.output and "best TF path" in r.output

    # The outputs are the user's: no silent overwrite.
    again = _run([str(export_dir), "--json", str(out_json), "--data", str(mnist_dir)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_wrong_model_is_flagged_not_crowned(export_dir, wrong_onnx, mnist_dir, tmp_path):
    out_json = tmp_path / "b.json"
    r = _run([str(wrong_onnx), str(export_dir / "saved_model"), "--runtimes",
              "onnxruntime,tensorflow", *QUICK, "--data", str(mnist_dir),
              "--json", str(out_json)])
    assert r.exit_code == 4, r.output
    assert "FLAGGED" in r.output and "disagrees with the reference" in r.output
    (m,) = json.loads(out_json.read_text())["models"]
    assert m["reference"] == "tf-savedmodel"
    check = m["results"]["onnxruntime"]["check"]
    assert not check["ok"] and check["top1_agreement"] < 0.5
    assert all(c["flagged"] for c in m["comparison"])


def test_onnx_runner_never_imports_tensorflow(export_dir, tmp_path):
    x = np.zeros((8, 28, 28), np.uint8)
    np.save(tmp_path / "x.npy", x)
    spec = {"engine": "onnxruntime", "model": str(export_dir / "model.onnx"), "threads": 1,
            "batch_sizes": [2], "warmup": 0, "iterations": 2, "inputs": str(tmp_path / "x.npy"),
            "check": str(tmp_path / "x.npy"), "predictions": str(tmp_path / "p.npy"),
            "result": str(tmp_path / "r.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = ("import sys, digitkit._bench_runners as b; b.main([sys.argv[1]]); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spec.json")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert np.load(tmp_path / "p.npy").shape == (8, 10)


@pytest.mark.parametrize("args, message", [
    (["--runtimes", "foo"], "unknown runtime 'foo'"),
    (["--batch-sizes", "0"], "batch size must be at least 1"),
    (["--batch-sizes", "1,x"], "'x' is not a whole number"),
    (["--duration", "1", "--iterations", "3"], "alternatives"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--plot", "out.jpg"], "expected a .png"),
])
def test_bad_arguments_are_one_line_usage_errors(export_dir, args, message):
    r = _run([str(export_dir), *args])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitkit: error: ") and message in lines[0]


def test_missing_model_copy_is_a_one_line_model_error(export_dir, tmp_path):
    r = _run([str(export_dir / "model.onnx"), "--runtimes", "tensorflow"])
    assert r.exit_code == 1
    assert r.output.strip() == ("digitkit: error: export: no SavedModel (saved_model/) copy "
                                "for runtime tensorflow (tf-savedmodel)")
    r = _run([str(export_dir / "model.onnx"), "--runtimes", "onnxruntime-int8"])
    assert r.exit_code == 1 and "no int8 ONNX (model.int8.onnx) copy" in r.output
    r = _run([str(tmp_path / "nope.onnx")])
    assert r.exit_code == 1 and "nope.onnx: no such file or directory" in r.output
    (tmp_path / "empty").mkdir()
    r = _run([str(tmp_path / "empty")])
    assert r.exit_code == 1 and "no model copy found" in r.output


def test_resolution_and_planning(export_dir, tmp_path):
    (m,) = bench.resolve_models([export_dir])
    assert m.onnx and m.saved_model and m.keras and m.onnx_int8 is None
    int8 = tmp_path / "model.int8.onnx"
    shutil.copy(export_dir / "model.onnx", int8)
    (loose,) = bench.resolve_models([export_dir / "model.onnx", int8, export_dir / "model.h5"])
    assert loose.onnx_int8 == int8 and loose.onnx == export_dir / "model.onnx"
    engines, required = bench.parse_runtimes("onnxruntime,keras")
    assert engines == ["onnxruntime", "onnxruntime-int8", "tf-function", "keras-predict"]
    assert "onnxruntime-int8" not in required
    notes = []
    plan = bench.plan_engines([m], *bench.parse_runtimes(None), warn=notes.append)
    assert plan["export"] == ["onnxruntime", "tf-savedmodel", "tf-function", "keras-predict"]
    assert notes == []  # a missing int8 copy is normal, not worth a note
    with pytest.raises(UsageError):
        bench.parse_batch_sizes("-1")
    with pytest.raises(ModelError):
        bench.plan_engines([loose], ["tf-savedmodel"], {"tf-savedmodel"})


def _fake(ips, ok=True):
    return {"per_batch": [{"batch": 1, "images_per_s": ips, "latency_ms": {"p50": 1 / ips}}],
            "check": {"ok": ok}}


def test_compare_uses_best_tf_path_that_passed_the_check():
    results = {"onnxruntime": _fake(1000), "tf-savedmodel": _fake(50),
               "tf-function": _fake(100), "keras-predict": _fake(5000, ok=False)}
    (row,) = bench.compare(results, [1])
    assert row["best_tf_engine"] == "tf-function" and row["throughput_ratio"] == 10
    assert not row["flagged"]


def test_best_of_rounds_keeps_fastest_round_per_batch():
    def rnd(a, b):
        return {"per_batch": [{"batch": 1, "images_per_s": a}, {"batch": 8, "images_per_s": b}],
                "load_s": a, "first_inference_ms": b, "end_to_end": []}

    merged = bench._best_of([rnd(10, 80), rnd(12, 70)])
    assert [pb["images_per_s"] for pb in merged["per_batch"]] == [12, 80]
    assert merged["rounds"] == 2


def test_undecodable_image_is_a_one_line_error(export_dir, mnist_dir, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not a png at all")
    r = _run([str(export_dir / "model.onnx"), "--runtimes", "onnxruntime", *QUICK,
              "--data", str(mnist_dir), "--images", str(tmp_path / "imgs")])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("digitkit: error: ") and "bad.png" in last and "Traceback" not in last
