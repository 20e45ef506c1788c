"""A LiteRT copy carries its contract in the flatbuffer's metadata (digitkit.model.embedded):
written with TensorFlow's flatbuffer_utils at export time, read back by a reader that needs
neither TensorFlow nor the flatbuffers package, and the interpreter still runs the file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from digitkit.errors import ModelError
from digitkit.model.contract import image_contract
from digitkit.model.embedded import (
    TFLITE_METADATA,
    read_tflite_contract,
    read_tflite_record,
    tflite_metadata,
    write_tflite_contract,
)

CONTRACT = image_contract(12, 10, 3, ["left", "right", "up"])


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    """A small LiteRT model (12x10x3 pixels -> 3 probabilities), as the converter writes it."""
    pytest.importorskip("tensorflow")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((12, 10, 3), name="pixels"),
                              keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path_factory.mktemp("tflite") / "model.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _run(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def test_the_contract_rides_in_the_metadata_and_the_file_still_runs(tflite_file, tmp_path):
    pytest.importorskip("ai_edge_litert")
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite_file.read_bytes())
    before = set(tflite_metadata(path))  # the converter's own entries
    assert read_tflite_contract(path) is None
    x = np.random.default_rng(0).uniform(0, 255, (4, 12, 10, 3)).astype(np.float32)
    expected = _run(path, x)

    write_tflite_contract(path, CONTRACT, {"scale": "raw"})
    assert set(tflite_metadata(path)) == before | {TFLITE_METADATA}
    assert read_tflite_contract(path) == CONTRACT
    assert read_tflite_record(path)["convention"] == {"scale": "raw"}
    np.testing.assert_array_equal(_run(path, x), expected)  # same model, one more entry
    with pytest.raises(ModelError, match="already carries"):
        write_tflite_contract(path, CONTRACT)


def test_the_reader_needs_no_tensorflow_nor_flatbuffers(tflite_file, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(tflite_file.read_bytes())
    write_tflite_contract(path, CONTRACT)
    blocker = ("import importlib.abc, sys\n"
               "class B(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('tensorflow', 'keras', 'flatbuffers'):\n"
               "            raise ModuleNotFoundError(name)\n"
               "sys.meta_path.insert(0, B())\n"
               "from digitkit.model.embedded import read_tflite_contract\n"
               f"print(read_tflite_contract({str(path)!r}).class_names)\n")
    r = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "('left', 'right', 'up')"


@pytest.mark.parametrize("damage", ["empty", "not_tflite", "truncated", "wild_offset"])
def test_a_broken_file_is_one_line_not_a_crash(tflite_file, tmp_path, damage):
    data = bytearray(tflite_file.read_bytes())
    path = tmp_path / "bad.tflite"
    if damage == "empty":
        data = bytearray()
    elif damage == "not_tflite":
        data[4:8] = b"XXXX"
    elif damage == "truncated":
        data = data[:64]
    else:
        data[0:4] = (len(data) + 1000).to_bytes(4, "little")  # the root beyond the end
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"bad\.tflite"):
        tflite_metadata(path)
