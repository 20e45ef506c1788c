"""`digitkit infer` on a general image classifier (issue 18): an ONNX model of digitkit's
general contract (input "pixels" (N, 32, 32, 3) raw 0..255, output "probabilities" (N, 5),
its class names and pixel policy in its metadata_props), built here with onnx.helper and
fitted on the `image_set` photos.

Over a folder of JPEG and PNG files of other sizes and aspect ratios, every engine gives
the labels the model gives on `images.pixels.load_pixels_batch`'s tensors of the same files
(the reference), under the class names the model carries; names with commas, quotes, spaces
and other scripts come back whole from CSV, JSON Lines, Parquet and Ray shard directories
(read back with pandas and pyarrow); accuracy over class folders matches folders by name;
and a gray 1-channel model is served the same way. The digit path is the rest of the suite.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from _cli import run_cli
from _general_models import fit_pixel_linear, predict_pixels, write_pixel_onnx
from digitkit.images.pixels import load_pixels_batch
from digitkit.infer import InferSpec, run_infer
from digitkit.model.contract import image_contract
from digitkit.predictors.runnable import carried_contract, model_contract

CLASSES = ("astronaut", "brick", "cat", "coffee", "coins")
#: The same classes under names every format must carry whole.
ODD_NAMES = ('astro, "naut"', "brick wall", "chat café", "コーヒー ☕", "coins\\n, 'x'")
SUFFIXES = (".jpg", ".png")


@pytest.fixture(scope="module")
def photos(image_set, tmp_path_factory) -> Path:
    """The image set's JPEG and PNG files (sizes 40..200, any aspect), one folder per class,
    and a file no decoder takes."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for f in sorted((image_set / cls).iterdir()):
            if f.suffix in SUFFIXES:
                shutil.copyfile(f, root / cls / f.name)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


@pytest.fixture(scope="module")
def rgb(image_set, tmp_path_factory):
    """(contract, model path, W, b): the 5-class RGB model carrying its contract."""
    contract = image_contract(32, 32, 3, CLASSES)
    w, b = fit_pixel_linear(image_set, contract, per_class=24)
    path = write_pixel_onnx(tmp_path_factory.mktemp("rgb") / "photos.onnx", contract, w, b)
    return contract, path, w, b


def _files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def _reference(contract, w, b, root: Path) -> dict[str, str | None]:
    """path -> the class name the model gives on load_pixels_batch's tensors (None: the
    file does not decode)."""
    paths = _files(root)
    pixels, reasons = load_pixels_batch(paths, contract.pixel_policy)
    names = iter(np.asarray(contract.class_names)[predict_pixels(w, b, pixels).argmax(1)])
    return {p: None if r else str(next(names)) for p, r in zip(paths, reasons, strict=True)}


def _csv_rows(path: Path) -> dict:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {r["path"]: r for r in df.to_dict("records")}


# -- the contract, read from the copy -------------------------------------------------------


def test_the_contract_is_read_from_the_onnx_metadata_without_onnx(rgb, tmp_path):
    contract, path, w, b = rgb
    assert model_contract(path) == contract and not contract.is_digit
    # Without metadata, a model presenting the contract by name: classes "0".."4".
    bare = write_pixel_onnx(tmp_path / "bare.onnx", contract, w, b, metadata=False)
    found = carried_contract(bare)
    assert found.pixels_shape == (32, 32, 3) and found.class_names == tuple("01234")
    import subprocess
    import sys

    code = ("import sys; from digitkit.predictors.runnable import model_contract as m; "
            f"c = m({str(path)!r}); assert c.class_names[0] == 'astronaut'; "
            "assert 'onnx' not in sys.modules, 'onnx imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


# -- labels, local engine -------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_infer_gives_the_models_labels_on_the_pixel_pipelines_tensors(rgb, photos, tmp_path,
                                                                     workers):
    contract, path, w, b = rgb
    want = _reference(contract, w, b, photos)
    out = tmp_path / "rows.csv"
    s = run_infer(InferSpec(path, workers=workers), [photos], out, warn=lambda m: None)
    rows = _csv_rows(out)
    assert set(rows) == set(want) and s.written == len(want) and s.failed == 1
    for p, label in want.items():
        assert rows[p]["label"] == (label or ""), p
        if label is None:
            assert rows[p]["error"]
        else:
            top = json.loads(rows[p]["top_k_labels"])
            assert top[0] == label and len(top) == 3 and set(top) <= set(CLASSES)
    # Accuracy over class folders: the parent folder's name against the model's names.
    good = {p: lab for p, lab in want.items() if lab is not None}
    right = sum(Path(p).parent.name == lab for p, lab in good.items())
    assert s.labelled == len(good) and s.accuracy == pytest.approx(right / len(good))
    assert s.confusion.shape == (5, 5) and s.accuracy > 0.5  # a fitted model, not chance


def test_the_cli_names_the_classes_in_its_report_and_confusion_matrix(rgb, photos, tmp_path):
    contract, path, *_ = rgb
    cm = tmp_path / "cm.csv"
    r = run_cli("infer", str(path), str(photos), "-o", str(tmp_path / "r.jsonl"),
                "--confusion-matrix", str(cm), "--workers", "0")
    assert r.exit_code == 3, r.output  # the broken file
    assert "accuracy over" in r.output and "astronaut" in r.output
    lines = cm.read_text().splitlines()
    assert lines[0] == "true\\pred," + ",".join(CLASSES)
    assert [ln.split(",")[0] for ln in lines[1:]] == list(CLASSES)


# -- names round-trip -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd(rgb, tmp_path_factory):
    """The same model under names that need quoting, escaping and UTF-8."""
    contract, _, w, b = rgb
    odd = image_contract(32, 32, 3, ODD_NAMES)
    return odd, write_pixel_onnx(tmp_path_factory.mktemp("odd") / "odd.onnx", odd, w, b), w, b


def _expected_odd(rgb, photos):
    contract, _, w, b = rgb
    to_odd = dict(zip(CLASSES, ODD_NAMES, strict=True))
    return {p: None if lab is None else to_odd[lab]
            for p, lab in _reference(contract, w, b, photos).items()}


def _check_rows(rows: dict, want: dict, top_of=lambda v: v):
    assert set(rows) == set(want)
    for p, label in want.items():
        r = rows[p]
        if label is None:
            assert r["error"] and (r["label"] in (None, "") or r["label"] != r["label"])  # NaN
        else:
            assert r["label"] == label and top_of(r["top_k_labels"])[0] == label
            assert set(top_of(r["top_k_labels"])) <= set(ODD_NAMES)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_names_round_trip_through_every_result_format(odd, rgb, photos, tmp_path, suffix):
    import pandas as pd

    _, path, *_ = odd
    want = _expected_odd(rgb, photos)
    out = tmp_path / f"rows{suffix}"
    run_infer(InferSpec(path, workers=2), [photos], out, warn=lambda m: None)
    if suffix == ".csv":
        _check_rows(_csv_rows(out), want, json.loads)
    elif suffix == ".jsonl":
        df = pd.read_json(out, lines=True, dtype=False)
        _check_rows({r["path"]: r for r in df.to_dict("records")}, want)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        assert str(table.schema.field("label").type) == "string"
        _check_rows({r["path"]: r for r in table.to_pylist()}, want)


def test_a_resumed_run_counts_named_rows_again(odd, rgb, photos, tmp_path):
    _, path, *_ = odd
    out = tmp_path / "rows.csv"
    first = run_infer(InferSpec(path, workers=0), [photos], out, warn=lambda m: None)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:len(lines) // 2]), encoding="utf-8")  # a run cut short
    again = run_infer(InferSpec(path, workers=0), [photos], out, resume=True,
                      warn=lambda m: None)
    assert again.total == first.total and again.resumed > 0
    assert again.labelled == first.labelled and again.accuracy == first.accuracy
    _check_rows(_csv_rows(out), _expected_odd(rgb, photos), json.loads)


@pytest.mark.parametrize(("suffix", "row"), [
    (".csv", 'p,dog,0.5,"[""dog""]",0.5,'),
    (".jsonl", '{"path": "p", "label": "dog", "confidence": 0.5, "top_k_labels": ["dog"], '
               '"top_k_probs": [0.5], "error": ""}'),
    (".jsonl", '{"path": "p", "label": 3, "confidence": 0.5, "top_k_labels": [3], '
               '"top_k_probs": [0.5], "error": ""}')])
def test_a_resume_refuses_rows_not_named_by_the_model(odd, photos, tmp_path, suffix, row):
    from digitkit.errors import DataError

    _, path, *_ = odd
    out = tmp_path / f"rows{suffix}"
    run_infer(InferSpec(path, workers=0), [photos / "brick"], out, warn=lambda m: None)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    head = lines[:1] if suffix == ".csv" else []
    out.write_text("".join(head + [row + "\n"] + lines[len(head):]), encoding="utf-8")
    before = out.read_bytes()
    with pytest.raises(DataError, match="cannot resume: malformed row"):
        run_infer(InferSpec(path, workers=0), [photos], out, resume=True, warn=lambda m: None)
    assert out.read_bytes() == before


# -- Ray ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_names_round_trip_through_ray_shard_directories(ray_local, odd, rgb, photos, tmp_path,
                                                        fmt):
    from digitkit.infer.storage.shards import SHARD_RE, ShardOutput

    _, path, *_ = odd
    out = tmp_path / "shards"
    s = run_infer(InferSpec(path, engine="ray", workers=2, fmt=fmt), [photos],
                  ShardOutput(str(out), 40), warn=lambda m: None)
    rows = {}
    for name in sorted(os.listdir(out)):
        if SHARD_RE.match(name):
            if fmt == "parquet":
                import pyarrow.parquet as pq

                rows.update({r["path"]: r for r in pq.read_table(out / name).to_pylist()})
            else:
                rows.update(_csv_rows(out / name))
    want = _expected_odd(rgb, photos)
    _check_rows(rows, want, json.loads if fmt == "csv" else (lambda v: v))
    assert s.labelled == 0  # folders are named astronaut..coins, not the odd names
    # Resumed: every shard is read back and counted under the names.
    again = run_infer(InferSpec(path, engine="ray", workers=2, fmt=fmt), [photos],
                      ShardOutput(str(out), 40), resume=True, warn=lambda m: None)
    assert again.resumed == s.written and again.failed == s.failed


def test_the_ray_engine_gives_the_local_labels_and_accuracy(ray_local, rgb, photos, tmp_path):
    contract, path, w, b = rgb
    out = tmp_path / "ray.jsonl"
    s = run_infer(InferSpec(path, engine="ray", workers=2), [photos], out, warn=lambda m: None)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    want = _reference(contract, w, b, photos)
    assert {r["path"]: r["label"] for r in rows} == want
    good = [lab for lab in want.values() if lab is not None]
    assert s.labelled == len(good) and s.accuracy > 0.5


# -- a gray model ---------------------------------------------------------------------------


def test_a_gray_one_channel_model(image_set, photos, tmp_path):
    contract = image_contract(28, 28, 1, CLASSES)
    w, b = fit_pixel_linear(image_set, contract, per_class=24)
    path = write_pixel_onnx(tmp_path / "gray.onnx", contract, w, b)
    want = _reference(contract, w, b, photos)
    out = tmp_path / "gray.csv"
    s = run_infer(InferSpec(path, workers=2), [photos], out, warn=lambda m: None)
    assert {p: r["label"] or None for p, r in _csv_rows(out).items()} == want
    assert s.labelled == sum(v is not None for v in want.values())


# -- an export directory: every copy carries the contract -----------------------------------


@pytest.fixture(scope="module")
def general_export(image_set, tmp_path_factory):
    """(contract, export directory) of a small Keras classifier with every copy
    (tests/_general_models.write_general_export): model.keras with its embedded record,
    saved_model/, model.onnx with metadata, model.int8.onnx, model.tflite, export.json."""
    pytest.importorskip("tensorflow", reason="building the copies needs the tensorflow extra")
    from _general_models import write_general_export
    from digitkit.images.labelled import load_labelled
    from digitkit.images.pixels import PolicyDecoder

    contract = image_contract(24, 24, 3, CLASSES)
    s = load_labelled(image_set, PolicyDecoder(contract.pixel_policy), per_class=40)
    out = write_general_export(tmp_path_factory.mktemp("gx") / "export", contract, s.pixels,
                               labels=s.labels)
    return contract, out


@pytest.mark.parametrize(("copy", "runtime", "served"), [
    (None, None, "onnxruntime"), (None, "tensorflow", "tf-savedmodel"),
    ("model.keras", None, "tensorflow"), ("model.tflite", None, "litert")])
def test_an_export_directory_needs_no_flags_on_any_copy(general_export, photos, tmp_path,
                                                        copy, runtime, served):
    from digitkit.predictors.tf import KerasPredictor

    contract, export = general_export
    assert model_contract(export) == contract
    for name in ("model.keras", "model.onnx", "model.tflite", "saved_model"):
        assert model_contract(export / name) == contract, name
    paths = _files(photos)
    pixels, reasons = load_pixels_batch(paths, contract.pixel_policy)
    names = iter(np.asarray(CLASSES)[KerasPredictor(export / "model.keras").predict(pixels)
                                     .argmax(1)])
    want = {p: None if r else str(next(names)) for p, r in zip(paths, reasons, strict=True)}
    out = tmp_path / "rows.csv"
    if copy == "model.tflite":
        pytest.importorskip("ai_edge_litert", reason="LiteRT is the runtimes extra")
    model = export if copy is None else export / copy
    s = run_infer(InferSpec(model, runtime=runtime, workers=2), [photos], out,
                  warn=lambda m: None)
    got = {p: r["label"] or None for p, r in _csv_rows(out).items()}
    agree = sum(got[p] == want[p] for p in want) / len(want)
    assert agree >= 0.99, agree  # fp32 copies: the source's labels (near-ties aside)
    assert s.runtime == served
