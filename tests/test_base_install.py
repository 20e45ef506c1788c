"""The base install (no `tensorflow` extra) runs infer, view and bench on an ONNX model.

TensorFlow, Keras, tf2onnx, h5py and pyarrow (the `parquet` extra) are made unimportable for
real in every process of the run, children included (a `sitecustomize` on PYTHONPATH
installs an import blocker), so a stray module-level import anywhere on these paths fails
the test exactly as it would fail on a machine without the extra. Commands that do need an
extra must say so in one line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

BLOCKED = ("tensorflow", "keras", "tf_keras", "tf2onnx", "h5py", "pyarrow")

_SITECUSTOMIZE = f'''
import importlib.abc, sys
class _NoTensorflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NoTensorflow())
'''


@pytest.fixture(scope="module")
def no_tf_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("no_tf_site")
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'tensorflow'" in check.stderr
    return env


def _digitkit(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "digitkit", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_infer_runs_without_tensorflow(no_tf_env, linear_onnx, png_test_dir, tmp_path):
    out = tmp_path / "rows.csv"
    r = _digitkit(no_tf_env, "infer", linear_onnx, png_test_dir / "7", "-o", out,
                  "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 1 + len(list((png_test_dir / "7").iterdir()))
    assert "Traceback" not in r.stderr


def test_bench_runs_onnxruntime_without_tensorflow(no_tf_env, linear_onnx, mnist_dir):
    r = _digitkit(no_tf_env, "bench", linear_onnx, "--runtimes", "onnxruntime",
                  "--batch-sizes", "1,32", "--iterations", "20", "--check-images", "500",
                  "--data", mnist_dir)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "onnxruntime" in r.stdout and "Traceback" not in r.stderr


def test_view_serves_an_onnx_model_without_tensorflow(no_tf_env, linear_onnx):
    proc = subprocess.Popen([sys.executable, "-m", "digitkit", "view", str(linear_onnx),
                             "--port", "0", "--no-browser"], env=no_tf_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if m:
                with urllib.request.urlopen(m.group(1) + "data/" + linear_onnx.name,
                                            timeout=10) as resp:
                    assert resp.read() == linear_onnx.read_bytes()
                break
        else:
            pytest.fail("no URL printed")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize("args", [
    ("train", "--limit", "10"),
    ("export", "{h5}"),
])
def test_tensorflow_commands_name_the_extra(no_tf_env, seed_mlp_h5, mnist_dir, tmp_path, args):
    args = [a.format(h5=seed_mlp_h5) for a in args]
    # No --data for train: the missing extra must be reported before any data is fetched.
    more = ("--data", mnist_dir, "--out") if args[0] == "export" else ("-o",)
    r = _digitkit(no_tf_env, *args, *more, tmp_path / "out")
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ")
    assert "pip install 'digitkit[tensorflow]'" in line


def test_parquet_output_names_its_extra(no_tf_env, linear_onnx, png_test_dir, tmp_path):
    out = tmp_path / "rows.parquet"
    r = _digitkit(no_tf_env, "infer", linear_onnx, png_test_dir / "7", "-o", out)
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "pip install 'digitkit[parquet]'" in line
    assert not out.exists()


def test_a_general_classifier_runs_without_tensorflow(no_tf_env, image_set, tmp_path):
    """Issue 18: an ONNX image classifier carrying its contract (names, 24x24x3, policy):
    infer and bench need nothing beyond the base install either."""
    from _general_models import fit_pixel_linear, write_pixel_onnx
    from digitkit.model.contract import image_contract

    contract = image_contract(24, 24, 3, ("astronaut", "brick", "cat", "coffee", "coins"))
    w, b = fit_pixel_linear(image_set, contract, per_class=10)
    model = write_pixel_onnx(tmp_path / "photos.onnx", contract, w, b)
    out = tmp_path / "rows.csv"
    r = _digitkit(no_tf_env, "infer", model, image_set / "cat", "-o", out, "--workers", "2")
    assert r.returncode in (0, 3), r.stderr  # 3: a file the set makes undecodable, if any
    import csv

    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows and all(r["label"] in contract.class_names or r["error"] for r in rows)
    assert "accuracy over" in r.stdout and "Traceback" not in r.stderr
    r = _digitkit(no_tf_env, "bench", model, "--runtimes", "onnxruntime", "--batch-sizes", "4",
                  "--iterations", "2", "--calibration", image_set)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
