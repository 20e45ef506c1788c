"""digitkit.model.onnx_ends: digitkit's own .onnx told apart without the onnx package, and
never a different answer from the onnx path (predictors.adapted.contract_status)."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from digitkit.errors import ModelError
from digitkit.model import onnx_ends
from digitkit.model.adapters import CONVENTION_KEY
from digitkit.model.onnx_ends import honours_contract
from digitkit.predictors import adapted
from digitkit.predictors.adapted import CONTRACT, contract_status


def _by_onnx(path) -> str:
    """contract_status's answer through onnx.load alone (the reader switched off)."""
    saved = onnx_ends.honours_contract
    onnx_ends.honours_contract = lambda p: None
    try:
        return adapted._onnx_status(path)[0]
    except ModelError:
        return "error"
    finally:
        onnx_ends.honours_contract = saved


def _model(path, *, inp="pixels", out="probabilities", shape=("N", 28, 28), extra_input=False,
           input_is_initializer=False, metadata=None):
    inputs = [helper.make_tensor_value_info(inp, TensorProto.FLOAT, list(shape))]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))
    inits = [numpy_helper.from_array(np.array([-1, 784], np.int64), "flat_shape"),
             numpy_helper.from_array(np.zeros((784, 10), np.float32), "W")]
    if input_is_initializer:
        inits.append(numpy_helper.from_array(np.zeros((1, 28, 28), np.float32), inp))
    graph = helper.make_graph(
        [helper.make_node("Reshape", [inp, "flat_shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], [out], axis=1)],
        "g", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_digitkit_models_are_told_without_importing_onnx(linear_onnx):
    """The answer for digitkit's own model comes from its bytes: `onnx` stays unimported (it
    costs the main process of every `infer` more than the rest of its start-up)."""
    code = ("import sys; from digitkit.predictors.adapted import contract_status; "
            f"print(contract_status({str(linear_onnx)!r})[0], 'onnx' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == [CONTRACT, "False"]


@pytest.mark.parametrize("variant, proved", [
    ({}, True),
    ({"shape": (None, 28, 28)}, True),
    ({"shape": (-1, 28, 28)}, True),
    ({"inp": "x"}, None),
    ({"out": "scores"}, None),
    ({"shape": ("N", 1, 28, 28)}, None),
    ({"shape": ("N", 784)}, None),
    ({"extra_input": True}, None),
    ({"input_is_initializer": True}, None),
    ({"metadata": {"author": "me"}}, True),
    ({"metadata": {CONVENTION_KEY: "{}"}}, None),  # adapted (here: not valid): onnx decides
])
def test_the_reader_agrees_with_onnx(tmp_path, variant, proved):
    path = _model(tmp_path / "m.onnx", **variant)
    assert honours_contract(path) is proved
    if proved:
        assert _by_onnx(path) == CONTRACT == contract_status(path)[0]


def test_damaged_files_are_left_to_onnx(tmp_path, linear_onnx):
    """Cut short anywhere or with bytes changed, the reader never raises and never proves a
    file the onnx path would not call digitkit's (where it cannot load it, ONNX Runtime
    refuses it later, in one line)."""
    data = linear_onnx.read_bytes()
    assert honours_contract(linear_onnx) is True
    rng = random.Random(0)
    # The nodes come first and the graph's inputs and outputs last, after the weights.
    ends = [*range(300), *range(len(data) - 1500, len(data))]
    cuts = sorted({*range(0, 300), *range(len(data) - 400, len(data)),
                   *rng.sample(range(len(data)), 100)})
    cases = [data[:n] for n in cuts]
    for _ in range(150):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.choice(ends)
            b[i] = rng.randrange(256)
        cases.append(bytes(b))
    path = tmp_path / "d.onnx"
    for case in cases:
        path.write_bytes(case)
        if honours_contract(path):
            assert _by_onnx(path) in (CONTRACT, "error")
    path.write_bytes(b"")
    assert honours_contract(path) is None
    assert honours_contract(tmp_path / "missing.onnx") is None


def test_op_types_are_onnx_s_and_tell_an_int8_copy_without_importing_it(export_dir, tmp_path,
                                                                         linear_onnx):
    from digitkit.model.files import is_int8_onnx
    from digitkit.model.onnx_ends import op_types

    for name in ("model.onnx", "model.int8.onnx"):
        path = export_dir / name
        assert op_types(path) == {n.op_type for n in onnx.load(path).graph.node}
    plain = tmp_path / "quantized.onnx"  # an int8 copy not named as one: found by its ops
    plain.write_bytes((export_dir / "model.int8.onnx").read_bytes())
    assert is_int8_onnx(plain) and not is_int8_onnx(linear_onnx)
    code = (f"import sys; from digitkit.model.files import is_int8_onnx; "
            f"assert is_int8_onnx({str(plain)!r}); assert 'onnx' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x0a\xff\xff\xff")
    assert op_types(damaged) is None
