"""`digitkit infer` end to end: real files, a real ONNX model, real processes and signals."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from _cli import run_cli
from _infer_folders import class_folders, numpy_answers
from digitkit.infer.results.provenance import sidecar


@pytest.fixture(scope="module")
def small_folder(png_test_dir, tmp_path_factory):
    """30 real test PNGs per class, in class folders."""
    return class_folders(png_test_dir, tmp_path_factory.mktemp("pngs") / "test")


def _invoke(*args):
    return run_cli("infer", *args)


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_rows_in_order_with_accuracy_report(linear_model, small_folder, tmp_path,
                                                mnist_test):
    model, w, b = linear_model
    out = tmp_path / "out.csv"
    r = _invoke(model, small_folder, "-o", out, "--workers", "2", "--batch-size", "64")
    assert r.exit_code == 0, r.output
    rows = _csv_rows(out)
    assert len(rows) == 300
    assert [x["path"] for x in rows] == sorted((x["path"] for x in rows),
                                               key=lambda s: s.split("/"))
    assert all(x["error"] == "" for x in rows)
    # Labels equal the model's predictions on the IDX arrays of the same images.
    predicted, truth = numpy_answers([x["path"] for x in rows], mnist_test, w, b)
    assert [int(x["label"]) for x in rows] == predicted.tolist()
    acc = float(np.mean(predicted == truth))
    assert 0.7 < acc < 1  # a real classifier, and not a trivially perfect one
    assert f"accuracy over 300 files in class folders: {acc:.4f}" in r.output
    assert "precision" in r.output and "recall" in r.output
    top = rows[0]
    assert len(top["top_k_labels"].split()) == 3 and top["top_k_labels"].split()[0] == top["label"]
    assert float(top["confidence"]) == float(top["top_k_probs"].split()[0])


def test_stdout_when_no_output_and_quiet_adds_nothing(linear_onnx, small_folder):
    r = _invoke(linear_onnx, small_folder / "3", "-q")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "path,label,confidence,top_k_labels,top_k_probs,error"
    assert len(lines) == 31
    assert "\r" not in r.stderr and r.stderr == ""


def test_bad_files_get_error_rows_and_warnings_and_exit_3(linear_onnx, small_folder, tmp_path):
    d = tmp_path / "in"
    shutil.copytree(small_folder / "1", d / "1")
    good = next((d / "1").iterdir()).read_bytes()
    (d / "empty.png").write_bytes(b"")
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "text.jpg").write_text("not an image")
    Image.new("1", (8000, 8000)).save(d / "bomb.png")
    out = tmp_path / "out.csv"
    r = _invoke(linear_onnx, d, "-o", out)
    assert r.exit_code == 3, r.output
    rows = {os.path.basename(x["path"]): x for x in _csv_rows(out)}
    assert len(rows) == 34
    assert "empty file" in rows["empty.png"]["error"]
    assert "truncated" in rows["truncated.png"]["error"]
    assert "not an image" in rows["text.jpg"]["error"]
    assert "decompression bomb" in rows["bomb.png"]["error"]
    assert sum(1 for x in rows.values() if x["error"] == "" and x["label"] != "") == 30
    for name in ("empty.png", "truncated.png", "text.jpg", "bomb.png"):
        assert f"warning: {d / name}: " in r.stderr
    assert "4 of 34 files could not be classified" in r.stderr


def test_exit_codes_for_runs_that_cannot_start(linear_onnx, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _invoke(linear_onnx, empty)
    assert r.exit_code == 1 and "no images found" in r.stderr
    r = _invoke(linear_onnx, tmp_path / "missing")
    assert r.exit_code == 1 and "no such file or directory" in r.stderr
    r = _invoke(tmp_path / "missing.onnx", empty)
    assert r.exit_code == 1 and "missing.onnx" in r.stderr  # the model fails first
    r = _invoke(linear_onnx, empty, "--resume")
    assert r.exit_code == 2 and "--resume needs an output file" in r.stderr
    r = _invoke(linear_onnx, empty, "--top-k", "11")
    assert r.exit_code == 2


def test_engine_options_belong_to_their_engine(linear_onnx, tmp_path):
    r = _invoke(linear_onnx, tmp_path, "--num-workers", "2")
    assert r.exit_code == 2 and "are for the ray engine (--engine ray)" in r.stderr
    r = _invoke(linear_onnx, tmp_path, "--address", "auto")
    assert r.exit_code == 2 and "are for the ray engine (--engine ray)" in r.stderr
    r = _invoke(linear_onnx, tmp_path, "--engine", "ray", "--workers", "2")
    assert r.exit_code == 2 and "--workers is for the local engine" in r.stderr


def test_existing_output_is_refused_then_forced(linear_onnx, small_folder, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("mine\n")
    r = _invoke(linear_onnx, small_folder / "0", "-o", out)
    assert r.exit_code == 1 and "already exists" in r.stderr
    assert out.read_text() == "mine\n"
    r = _invoke(linear_onnx, small_folder / "0", "-o", out, "--force", "-q")
    assert r.exit_code == 0 and len(_csv_rows(out)) == 30


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_resume_finishes_a_truncated_file_without_duplicates(linear_onnx, small_folder, tmp_path,
                                                             suffix):
    full = tmp_path / f"full.{suffix}"
    assert _invoke(linear_onnx, small_folder, "-o", full, "-q").exit_code == 0
    data = full.read_bytes()
    lines = data.splitlines(keepends=True)
    part = tmp_path / f"part.{suffix}"
    part.write_bytes(b"".join(lines[:120]) + lines[120][:17])  # killed mid-row
    shutil.copy(sidecar(full), sidecar(part))  # what made its rows (results/provenance.py)
    r = _invoke(linear_onnx, small_folder, "-o", part, "--resume")
    assert r.exit_code == 0, r.output
    assert part.read_bytes() == data
    n_done = 119 if suffix == "csv" else 120
    assert f"{n_done} already done (resumed)" in r.output
    assert "accuracy over 300 files" in r.output  # the report covers the resumed rows too
    # Resuming a finished file does nothing.
    r = _invoke(linear_onnx, small_folder, "-o", part, "--resume", "-q")
    assert r.exit_code == 0 and part.read_bytes() == data


def _spawn(args, **kw):
    code = "import sys; from digitkit.cli import main; main(sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _wait_for_rows(path, n_bytes, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > n_bytes:
            return
        if proc.poll() is not None:
            pytest.fail(f"finished before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.02)
    pytest.fail("no rows appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_real_interruption_leaves_a_valid_file_that_resume_finishes(linear_onnx, png_test_dir,
                                                                    tmp_path, sig):
    out = tmp_path / "out.csv"
    args = ["infer", linear_onnx, png_test_dir, "-o", out, "--batch-size", "32", "--workers",
            "1"]
    proc = _spawn(args)
    _wait_for_rows(out, 5000, proc)
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    assert rc == {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 130}[sig], \
        proc.stderr.read()
    text = out.read_text()
    assert text.endswith("\n")  # whole rows only
    partial = _csv_rows(out)
    assert 0 < len(partial) < 10000
    assert all(x["label"] != "" and x["error"] == "" for x in partial)
    proc = _spawn(args + ["--resume", "-q"])
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    rows = _csv_rows(out)
    paths = [x["path"] for x in rows]
    assert len(paths) == len(set(paths)) == 10000
    assert rows[: len(partial)] == partial


def test_onnx_path_never_imports_tensorflow(linear_onnx, small_folder, tmp_path):
    out = tmp_path / "o.csv"
    code = (
        "import sys\n"
        "from digitkit.cli import main\n"
        f"try:\n    main(['infer', {str(linear_onnx)!r}, {str(small_folder)!r}, "
        f"'-o', {str(out)!r}, '-q'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert len(_csv_rows(out)) == 300


def test_tensorflow_runtime_on_h5(seed_mlp_h5, small_folder, tmp_path):
    out = tmp_path / "tf.csv"
    r = _invoke(seed_mlp_h5, small_folder, "-o", out, "--runtime", "tensorflow", "--workers", "1")
    assert r.exit_code == 0, r.output
    rows = _csv_rows(out)
    acc = np.mean([int(x["label"]) == int(os.path.basename(os.path.dirname(x["path"])))
                   for x in rows])
    assert acc > 0.85


def test_confusion_matrix_csv(linear_model, small_folder, tmp_path, mnist_test):
    model, w, b = linear_model
    cm = tmp_path / "cm.csv"
    out = tmp_path / "o.csv"
    r = _invoke(model, small_folder, "-o", out, "--confusion-matrix", cm, "-q")
    assert r.exit_code == 0, r.output
    lines = cm.read_text().splitlines()
    assert lines[0] == "true\\pred,0,1,2,3,4,5,6,7,8,9"
    counts = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
    predicted, truth = numpy_answers([x["path"] for x in _csv_rows(out)], mnist_test, w, b)
    expected = np.zeros((10, 10), np.int64)
    np.add.at(expected, (truth, predicted), 1)
    assert (counts == expected).all()
    assert counts.sum() == 300 and (counts.sum(1) == 30).all()


def test_a_model_that_cannot_load_leaves_no_output(small_folder, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    out = tmp_path / "out.csv"
    # In this process, and (8-file chunks) in the workers, which load the model themselves.
    for workers, batch in (("0", "256"), ("2", "8")):
        r = _invoke(junk, small_folder / "1", "-o", out, "--workers", workers,
                    "--batch-size", batch)
        assert r.exit_code == 1 and "not a usable ONNX model" in r.stderr, r.output
        assert not out.exists()
