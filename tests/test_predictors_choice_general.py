"""`infer --runtime auto` on a general (non-digit) image classifier (digitkit.predictors.choice):
the gate's check images follow the model's contract, so a 5-class photo model is held to its
labelled --calibration folder (decoded by its pixel policy, as export and infer decode it),
never to MNIST (MNIST is not even reachable here: `private_cache` unsets DIGITKIT_DATA and no
--data is given).

The model: a ridge-regression linear classifier of the `image_set` photos written as an ONNX
copy of digitkit's general contract (tests/_general_models.py: no TensorFlow, seconds),
exported by the real `digitkit export --calibration --quantize int8`, so export.json vouches
for its copies and records the folder. `--precision any` keeps the int8 copy a candidate
beside the float ones, so there is always something to compare and calibrate, with or
without the runtimes extra.

What is held: auto chooses on the folder's images, says and records them ("N calibration
images in DIR"), and its labels on that folder are ONNX Runtime fp32's (the gate asks 99.9%
of 200 images: every one); without --calibration the folder export.json records serves while
it is there, and once it is gone the refusal is one line naming --calibration; another
folder, or a file of the same folder changed, is another cache key and recalibrates.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from _cli import run_cli
from _general_models import fit_pixel_linear, write_pixel_onnx
from digitkit.infer.results.formats import result_format
from digitkit.infer.results.provenance import read_record
from digitkit.model.contract import image_contract
from digitkit.predictors.choice import CACHE_DIR, MIN_AGREEMENT, per_class_cap
from digitkit.predictors.runtimes import RUNTIMES

pytestmark = pytest.mark.usefixtures("private_cache")

CLASSES = ("astronaut", "brick", "cat", "coffee", "coins")
SIZE = (24, 24)


@pytest.fixture(scope="module")
def photos_onnx(image_set, tmp_path_factory) -> Path:
    """The 5-class RGB 24x24 linear classifier as an .onnx carrying its contract."""
    contract = image_contract(*SIZE, 3, CLASSES)
    w, b = fit_pixel_linear(image_set, contract)
    return write_pixel_onnx(tmp_path_factory.mktemp("model") / "photos.onnx", contract, w, b)


def _export(model: Path, out: Path, calibration: Path | None) -> Path:
    args = ["--calibration", calibration, "--quantize", "int8",
            "--max-accuracy-drop", "5"] if calibration is not None else []
    r = run_cli("export", model, "--out", out, *args)
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def general_export(photos_onnx, image_set, tmp_path_factory) -> Path:
    """`digitkit export photos.onnx --calibration IMAGE_SET --quantize int8`: export.json
    records every copy as passed and the image set as its calibration folder."""
    return _export(photos_onnx, tmp_path_factory.mktemp("export") / "export", image_set)


def _auto(model, folder, out, *args):
    return run_cli("infer", model, folder, "-o", out, "--runtime", "auto", "--workers", "1",
                   "--precision", "any", *args)


def _labels(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and not any(r["error"] for r in rows)
    return {r["path"]: r["label"] for r in rows}


def _records() -> list[dict]:
    return [json.loads(p.read_text()) for p in
            sorted((Path(os.environ["DIGITKIT_CACHE"]) / CACHE_DIR).glob("*.json"))]


def _images(root: Path) -> int:
    from digitkit.images.labelled import list_labelled

    return len(list_labelled(root, CLASSES)[1])


def test_auto_on_a_general_export_checks_on_its_calibration_folder(general_export, image_set,
                                                                   tmp_path):
    out = tmp_path / "auto.csv"
    r = _auto(general_export, image_set, out, "--calibration", image_set)
    assert r.exit_code == 0, r.output
    n = _images(image_set)
    assert n <= len(CLASSES) * per_class_cap(len(CLASSES))  # so every file is a check image
    assert ("--runtime auto: calibrating onnxruntime, onnxruntime-int8" in r.output
            and f"on the calibration images in {image_set} (at most "
                f"{per_class_cap(len(CLASSES)):,} per class)" in r.output)
    (chose,) = [ln for ln in r.output.splitlines() if "--runtime auto chose" in ln]
    assert f"accuracy within 0.1 points, {n:,} calibration images in {image_set})" in chose
    assert "MNIST" not in r.output
    rec = read_record(out, result_format("csv"))
    choice = rec.choice
    assert (choice["chosen"], choice["precision"]) == (rec.runtime, rec.precision)
    assert choice["check_images"] == n
    assert choice["check_images_source"] == f"calibration images in {image_set}"
    assert choice["reference"] == "onnxruntime"
    results = {x["runtime"]: x for x in choice["results"]}
    assert {"onnxruntime", "onnxruntime-int8"} <= set(results)
    mine = results[rec.runtime]
    assert mine["refused"] is None and mine["top1_agreement"] >= MIN_AGREEMENT
    for x in results.values():  # every figure measured on the folder, every refusal stated
        assert x["accuracy"] is not None or x["refused"].startswith("failed to run")
    (cached,) = _records()
    assert cached["key"]["check_images"]["folder"] == os.path.abspath(image_set)
    assert cached["key"]["check_images"]["files"] == n
    assert cached["data_source"] == f"calibration folder {image_set}"
    # The gate asks 99.9% of these images to agree with ONNX Runtime fp32: all of them. The
    # rows are those very files, decoded by infer as the calibration decoded them.
    ort = tmp_path / "ort.csv"
    r = run_cli("infer", general_export, image_set, "-o", ort, "--runtime", "onnxruntime",
                "--workers", "1")
    assert r.exit_code == 0, r.output
    assert len(_labels(ort)) == n
    assert _labels(out) == _labels(ort)


def test_the_recorded_folder_serves_until_it_is_gone_then_one_line_names_calibration(
        photos_onnx, image_set, tmp_path, monkeypatch):
    folder = tmp_path / "cal"
    shutil.copytree(image_set, folder)
    # Given relative to where export ran, recorded absolute: auto finds it from anywhere.
    monkeypatch.chdir(tmp_path)
    export = _export(photos_onnx, tmp_path / "export", Path("cal"))
    assert json.loads((export / "export.json").read_text())["calibration"]["folder"] == str(folder)
    monkeypatch.chdir(image_set)
    r = _auto(export, folder, tmp_path / "a.csv")
    assert r.exit_code == 0, r.output
    assert f"on the calibration images in {folder} (at most" in r.output
    assert read_record(tmp_path / "a.csv", result_format("csv")).choice[
        "check_images_source"] == f"calibration images in {folder}"
    moved = tmp_path / "moved"
    folder.rename(moved)
    out = tmp_path / "b.csv"
    r = _auto(export, moved, out)
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [
        f"digitkit: error: {export}: --runtime auto holds every copy to the fp32 reference on "
        "labelled images: give --calibration DIR (one subfolder per class, named like the "
        f"model's classes) (the calibration folder export.json records, {folder}, is no longer "
        "a readable folder)"]
    assert not out.exists()
    # Named again, wherever it is now, it serves.
    r = _auto(export, moved, out, "--calibration", moved)
    assert r.exit_code == 0, r.output
    assert f"calibration images in {moved})" in r.output


@pytest.mark.skipif(RUNTIMES["openvino"].unavailable() is not None,
                    reason="without the 'runtimes' extra ONNX Runtime is the only candidate "
                           "of an export without an int8 copy: nothing to check")
def test_an_export_made_without_a_folder_is_refused_in_one_line(photos_onnx, image_set,
                                                                tmp_path):
    export = _export(photos_onnx, tmp_path / "export", None)
    out = tmp_path / "rows.csv"
    r = _auto(export, image_set, out)
    assert r.exit_code == 2, r.output
    (line,) = r.output.strip().splitlines()
    assert line.startswith(f"digitkit: error: {export}: --runtime auto holds every copy")
    assert "give --calibration DIR" in line
    assert line.endswith("(export.json records no calibration folder)")
    assert not out.exists()


def test_another_folder_or_a_changed_file_recalibrates(general_export, image_set, tmp_path):
    first = _auto(general_export, image_set, tmp_path / "a.csv", "--calibration", image_set)
    assert first.exit_code == 0 and "calibrating" in first.output, first.output
    again = _auto(general_export, image_set, tmp_path / "b.csv", "--calibration", image_set)
    assert again.exit_code == 0 and "calibrating" not in again.output, again.output
    assert "from the cache" in again.output
    # Another folder: the same classes, half the files, and one file no decoder takes
    # (skipped and said, not counted).
    half = tmp_path / "half"
    for cls in CLASSES:
        (half / cls).mkdir(parents=True)
        for f in sorted((image_set / cls).iterdir())[::2]:
            shutil.copyfile(f, half / cls / f.name)
    n = _images(half)
    assert 0 < n < _images(image_set)
    (half / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    other = _auto(general_export, image_set, tmp_path / "c.csv", "--calibration", half)
    assert other.exit_code == 0, other.output
    assert "calibrating onnxruntime" in other.output
    (note,) = [ln for ln in other.output.splitlines() if "not decodable" in ln]
    assert note.startswith(f"digitkit: --runtime auto: 1 file of {half} left out, not "
                           f"decodable (first: {half / 'cat' / 'broken.png'}: ")
    assert note.endswith(f"checking on {n:,} calibration images in {half}")
    assert f"{n:,} calibration images in {half})" in other.output
    assert read_record(tmp_path / "c.csv", result_format("csv")).choice["check_images"] == n
    assert len(_records()) == 2
    # The same folder with one file rewritten (another size): measured again.
    victim = next(p for p in sorted((half / "cat").iterdir()) if p.suffix == ".png")
    shutil.copyfile(next(p for p in sorted((image_set / "coins").iterdir())
                         if p.suffix == ".png"), victim)
    changed = _auto(general_export, image_set, tmp_path / "d.csv", "--calibration", half)
    assert changed.exit_code == 0 and "calibrating" in changed.output, changed.output
    assert len(_records()) == 3


@pytest.mark.parametrize(("runtime", "message"), [
    ("auto", "--calibration is for general image classifiers; --runtime auto checks a digit "
             "model on 2,000 MNIST test images (see --data)"),
    ("onnxruntime", "--calibration is for a general image classifier: the labelled images "
                    "--runtime auto holds its copies to, or those its preprocessing is detected "
                    "on when it was made elsewhere"),
])
def test_calibration_where_it_means_nothing_is_a_usage_error(runtime, message, linear_onnx,
                                                             image_set, tmp_path):
    """A digit model is checked on MNIST; digitkit's own model is detected on nothing."""
    out = tmp_path / "rows.csv"
    r = run_cli("infer", linear_onnx, image_set, "-o", out, "--runtime", runtime,
                "--calibration", image_set)
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [f"digitkit: error: {message}"]
    assert not out.exists()
