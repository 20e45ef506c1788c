"""The predictor contract (digitkit.predictors.base), held for every row of the runtime table.

In the manner of scikit-learn's parametrize_with_checks: one set of checks, parametrised over
`predictors.RUNTIMES`, so a new runtime row is checked the moment it is added. Each row is
opened as `bench` opens it (`open_runtime`) on its copy of one real export, and must:
- load: construct without loading, load once, on demand, and return itself;
- options: what it hands its runtime, JSON values, stated without loading (auto's cache key);
- predict: float32 probabilities (N, 10) for any batch size, agreeing with the Keras source;
- bad file: a missing or unreadable model is a one-line ModelError naming the file;
- missing extra: with its extra made unimportable for real (an import blocker installed by a
  `sitecustomize` in a child process, as tests/test_base_install.py does), loading is a
  one-line DependencyError naming the extra to install.
What only one runtime does (regime sessions, OpenVINO's precision, LiteRT's resizing) is
tested in that runtime's own file.

Every check runs on two exports: digitkit's digit model ((N, 28, 28) -> (N, 10)) and a
general image classifier of the issue-18 contract ((N, 24, 24, 3) raw pixels -> (N, 5),
its copies carrying the contract; tests/_general_models.py), on the pixels of its contract.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitkit.errors import ModelError
from digitkit.predictors import RUNTIMES, LazyPredictor, Predictor, open_runtime
from digitkit.predictors.compare import agreement

ROWS = list(RUNTIMES.values())
ROW_IDS = [r.name for r in ROWS]

#: The runtime families a predictor may say it runs on (records and messages name them).
FAMILIES = {"onnxruntime", "openvino", "litert", "tensorflow"}

#: What each extra brings: the top-level modules made unimportable to take it away.
EXTRA_MODULES = {"runtimes": ("openvino", "ai_edge_litert"),
                 "tensorflow": ("tensorflow", "keras", "tf_keras", "tf2onnx", "h5py")}

#: A model file of each copy kind that its runtime cannot read.
_BAD_NAMES = {"onnx": "bad.onnx", "onnx_int8": "bad.int8.onnx", "tflite": "bad.tflite",
              "keras": "bad.h5", "saved_model": "bad_saved_model"}


@pytest.fixture(scope="module", params=["digit", "general"])
def contract_export(request, tmp_path_factory):
    """(export directory, pixels of its contract): the digit export, or a general one."""
    if request.param == "digit":
        return (request.getfixturevalue("export_dir"),
                request.getfixturevalue("mnist_test")[0][:200].astype(np.float32))
    from functools import partial

    from _general_models import write_general_export
    from digitkit.images.labelled import load_labelled
    from digitkit.images.pixels import load_pixels_batch
    from digitkit.model.contract import image_contract

    image_set = request.getfixturevalue("image_set")
    contract = image_contract(24, 24, 3, ("astronaut", "brick", "cat", "coffee", "coins"))
    s = load_labelled(image_set, partial(load_pixels_batch, policy=contract.pixel_policy),
                      per_class=40)
    out = write_general_export(tmp_path_factory.mktemp("general") / "export", contract,
                               s.pixels, labels=s.labels)
    return out, s.pixels[::2]


@pytest.fixture(scope="module")
def copies(contract_export):
    from digitkit.model.files import read_export_dir

    return read_export_dir(contract_export[0])


@pytest.fixture(scope="module")
def reference(copies, contract_export):
    """(pixels, the Keras source's probabilities on them)."""
    from digitkit.predictors.tf import KerasPredictor

    x = contract_export[1]
    return x, KerasPredictor(copies.keras).predict(x)


def _runnable(row):
    why = row.unavailable()
    if why is not None:  # an optional runtime not installed, or a precision this CPU lacks
        pytest.skip(f"{row.name}: {why}")


def _bad_model(row, folder: Path) -> Path:
    bad = folder / _BAD_NAMES[row.copy]
    if row.copy == "saved_model":
        bad.mkdir()
        (bad / "saved_model.pb").write_bytes(b"not a SavedModel protobuf")
    else:
        bad.write_bytes(b"not a model of any kind")
    return bad


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_load_is_lazy_once_and_returns_the_predictor(row, copies, reference):
    _runnable(row)
    path = getattr(copies, row.copy)
    p = open_runtime(row.name, path, threads=1)
    assert isinstance(p, Predictor) and isinstance(p, LazyPredictor)
    assert p.runtime in FAMILIES and p.model_path == Path(path)
    assert not p.loaded  # construction only checked the path
    calls = []
    real_load = p._load
    p._load = lambda: (calls.append(1), real_load())[1]
    assert p.load() is p and p.loaded
    assert p.load() is p
    p.predict(np.zeros((2, *reference[0].shape[1:]), np.float32))
    assert calls == [1]


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_options_are_stated_without_loading_and_follow_the_threads(row, copies):
    # What auto's cache key holds of each row (`choice.run_options`): asked of a row that is
    # not installed as well, so neither the runtime's module nor the model is opened here.
    path = getattr(copies, row.copy)
    one, two = open_runtime(row.name, path, threads=1), open_runtime(row.name, path, threads=2)
    options = one.options()
    assert options and json.loads(json.dumps(options)) == options
    assert options == open_runtime(row.name, path, threads=1).options()
    assert options != two.options()  # a timing depends on the threads
    assert not one.loaded and not two.loaded


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_predict_gives_probabilities_that_agree_with_the_source(row, copies, reference):
    _runnable(row)
    x, ref = reference
    k = ref.shape[1]
    p = open_runtime(row.name, getattr(copies, row.copy), threads=1)
    for n in (1, 7):  # a batch size the model was not loaded with, and back
        out = p.predict(x[:n])
        assert out.shape == (n, k) and out.dtype == np.float32
    probs = p.predict(x)
    assert probs.shape == (len(x), k) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and (probs >= 0).all()
    fp32 = row.precision == "fp32"
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4 if fp32 else 1e-2)
    a = agreement(probs, ref)
    assert a.top1_fraction >= (0.995 if fp32 else 0.98), a
    if fp32:
        assert a.max_abs_diff < 1e-5, a


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_a_bad_model_file_is_a_one_line_model_error_naming_it(row, tmp_path):
    missing = tmp_path / ("missing" + _BAD_NAMES[row.copy])
    with pytest.raises(ModelError, match="no such model file") as err:
        open_runtime(row.name, missing, threads=1)
    assert str(missing) in str(err.value)
    _runnable(row)
    bad = _bad_model(row, tmp_path)
    p = open_runtime(row.name, bad, threads=1)  # cheap: the file is not read yet
    with pytest.raises(ModelError) as err:
        p.load()
    message = str(err.value)
    assert str(bad) in message and "\n" not in message, message
    assert not p.loaded


_BLOCKER = '''
import importlib.abc, sys
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {modules!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Blocked())
'''

#: Run in the child: open every row given, load it, report what happened.
_TRY_ROWS = '''
import json, sys
from digitkit.errors import DigitkitError
from digitkit.predictors import RUNTIMES, open_runtime
seen = {}
for name, path in json.loads(sys.argv[1]).items():
    outcome = {"unavailable": RUNTIMES[name].unavailable()}
    try:
        open_runtime(name, path, threads=1).load()
        outcome["error"] = None
    except DigitkitError as e:
        outcome["error"] = [type(e).__name__, str(e)]
    seen[name] = outcome
print(json.dumps(seen))
'''


@pytest.fixture(scope="module")
def without_extra(copies, tmp_path_factory):
    """{row name: what loading it did} with the row's extra made unimportable: one child
    process per extra, every row of that extra tried in it."""
    seen = {}
    for extra, modules in EXTRA_MODULES.items():
        site = tmp_path_factory.mktemp(f"no_{extra}_site")
        (site / "sitecustomize.py").write_text(_BLOCKER.format(modules=modules))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
        paths = {r.name: str(getattr(copies, r.copy)) for r in ROWS if r.extra == extra}
        child = subprocess.run([sys.executable, "-c", _TRY_ROWS, json.dumps(paths)], env=env,
                               capture_output=True, text=True, timeout=300)
        assert child.returncode == 0, child.stderr
        seen.update(json.loads(child.stdout.strip().splitlines()[-1]))
    return seen


@pytest.mark.parametrize("row", [r for r in ROWS if r.extra is not None],
                         ids=[r.name for r in ROWS if r.extra is not None])
def test_without_its_extra_loading_names_the_extra(row, without_extra):
    assert row.extra in EXTRA_MODULES, f"{row.name}: say which modules its extra brings"
    outcome = without_extra[row.name]
    hint = f"pip install 'digitkit[{row.extra}]'"
    kind, message = outcome["error"]
    assert kind == "DependencyError" and hint in message and "\n" not in message, outcome
    # A row naming the module it needs is listed by bench as not installed, not failed.
    expected = f"not installed: {hint}" if row.requires is not None else None
    assert outcome["unavailable"] == expected


def test_base_install_rows_need_no_extra():
    """The base install is inference-only on ONNX Runtime: its rows need nothing optional."""
    base = [r.name for r in ROWS if r.extra is None]
    assert base == ["onnxruntime", "onnxruntime-int8"]
    assert all(r.requires is None for r in ROWS if r.extra is None)
