"""digitkit.infer.engines.local: the process-pool engine, called through the engine contract."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from _infer_folders import class_folders, numpy_answers
from digitkit.errors import ModelError, UsageError
from digitkit.images import iter_image_paths, load_images
from digitkit.infer import InferSpec, get_engine
from digitkit.infer.engines.local import (
    _WORKER_PRELOAD,
    ENGINE,
    TASK_BATCHES,
    classify_encoded,
    local_engine,
    predict_batches,
)
from digitkit.infer.results.rows import EncodedRows
from digitkit.predictors import OnnxPredictor


@pytest.fixture(scope="module")
def small_folder(png_test_dir, tmp_path_factory):
    return class_folders(png_test_dir, tmp_path_factory.mktemp("pngs") / "test")


def test_registry_opens_this_engine():
    assert get_engine("local") is ENGINE
    assert ENGINE.run is local_engine and ENGINE.find is iter_image_paths


def test_check_fails_before_any_work(linear_onnx, tmp_path):
    with pytest.raises(UsageError, match="--address is for the ray engine"):
        ENGINE.check(InferSpec(linear_onnx, address="auto"))
    with pytest.raises(ModelError, match="no such file"):
        ENGINE.check(InferSpec(tmp_path / "missing.onnx"))
    with pytest.raises(UsageError, match="runs on onnxruntime, not tensorflow"):
        ENGINE.check(InferSpec(linear_onnx, runtime="tensorflow"))
    ENGINE.check(InferSpec(linear_onnx))


def test_forkserver_preloads_modules_that_exist():
    # A stale name here would not fail a run: the forkserver only warns and every worker
    # then pays the imports itself.
    assert "digitkit.infer.engines.local" in _WORKER_PRELOAD
    for name in _WORKER_PRELOAD:
        assert importlib.util.find_spec(name) is not None, name


def test_classify_in_this_process_with_an_error_row(linear_model, small_folder, tmp_path,
                                                    mnist_test):
    path, w, b = linear_model
    files = [str(p) for p in sorted((small_folder / "4").iterdir())[:5]]
    files.append(str(tmp_path / "missing.png"))
    pixels, reasons = load_images(files)
    assert pixels.shape == (5, 28, 28) and reasons == [""] * 5 + ["no such file"]
    enc = classify_encoded(OnnxPredictor(path), files, 2, "jsonl")
    rows = [json.loads(line) for line in enc.data.splitlines()]
    predicted, truth = numpy_answers(files[:5], mnist_test, w, b)
    assert [r["label"] for r in rows[:5]] == predicted.tolist()
    assert all(len(r["top_k_labels"]) == 2 for r in rows[:5])
    assert rows[5] == {"path": files[5], "label": None, "confidence": None,
                       "top_k_labels": [], "top_k_probs": [], "error": "no such file"}
    assert enc.count == 6 and enc.errors == [(files[5], "no such file")]
    assert enc.confusion.sum() == 5
    assert (enc.confusion[4] == np.bincount(predicted, minlength=10)).all()


def test_workers_and_batch_size_do_not_change_results(linear_onnx, small_folder):
    paths = list(iter_image_paths([small_folder]))
    texts = []
    for workers, batch in [(0, 300), (1, 7), (2, 64)]:
        spec = InferSpec(linear_onnx, batch_size=batch, workers=workers, top_k=5, fmt="jsonl")
        batches = list(local_engine(spec, iter(paths)))
        assert all(isinstance(b, EncodedRows) for b in batches)
        task = batch if workers == 0 else batch * TASK_BATCHES  # rows come back per task
        assert [b.count for b in batches] == [len(c) for c in _chunked(paths, task)]
        texts.append("".join(b.data for b in batches))
    assert texts[0] == texts[1] == texts[2]
    first = json.loads(texts[0].splitlines()[0])
    assert set(first) == {"path", "label", "confidence", "top_k_labels", "top_k_probs", "error"}
    assert len(first["top_k_probs"]) == 5
    assert [json.loads(line)["path"] for line in texts[0].splitlines()] == paths


def test_a_task_is_predicted_batch_size_images_at_a_time(linear_onnx, mnist_test):
    class Recording(OnnxPredictor):
        sizes: list = []

        def predict(self, pixels):
            self.sizes.append(len(pixels))
            return super().predict(pixels)

    x = mnist_test[0][:700]
    whole = OnnxPredictor(linear_onnx).predict(x.astype(np.float32))
    rec = Recording(linear_onnx)
    assert np.array_equal(predict_batches(rec, x, 256), whole)
    assert rec.sizes == [256, 256, 188]
    assert predict_batches(rec, x[:0], 256) is None


def test_no_paths_no_batches(linear_onnx):
    assert list(local_engine(InferSpec(linear_onnx), iter([]))) == []


def _chunked(items, n):
    return [items[i:i + n] for i in range(0, len(items), n)]
