"""Shared fixtures: the read-only MNIST copies beside the checkout, a small trained Keras
model, a tiny TensorFlow-free ONNX model and one export directory. Tests never import this
file: helpers they call live in tests/_*.py (the CliRunner one in tests/_cli.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from _cli import run_cli

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    return Path(os.environ.get("DIGITKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Every test, and every digitkit process a test starts, caches (adapted copies, fits,
    runtime choices, downloads) in one temporary directory of this session, never the user's
    ~/.cache/digitkit. Tests of the cache itself set their own (`private_cache`, monkeypatch),
    which wins for that test and gives this one back after it."""
    path = tmp_path_factory.mktemp("digitkit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIGITKIT_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if not (path / "mnist").is_dir():
        msg = f"shared MNIST data not found at {path} (set DIGITKIT_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI always has it: a missing copy is a broken run, not a skip
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def mnist_dir(shared_data) -> Path:
    return shared_data / "mnist"


@pytest.fixture(scope="session")
def png_test_dir(shared_data) -> Path:
    return shared_data / "mnist-png" / "test"


@pytest.fixture(scope="session")
def mnist_test(mnist_dir):
    """(x_test uint8 (10000,28,28), y_test uint8) straight from the IDX files."""
    from digitkit.data import read_idx

    x, _ = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    y, _ = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    return x, y


@pytest.fixture(scope="session")
def seed_mlp_h5(tmp_path_factory, mnist_dir) -> Path:
    """A real seed-mlp trained for one epoch on 12,000 training images (~93-95% test accuracy).

    Session-scoped because training costs seconds; tests must treat the file as read-only
    (copy it into tmp_path before writing beside it).
    """
    import keras

    from digitkit.architectures import build_model, compile_model
    from digitkit.data import read_idx

    x, _ = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    y, _ = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    keras.utils.set_random_seed(0)
    model = compile_model(build_model("seed-mlp"), 1e-3)
    model.fit(x[:12000].astype(np.float32), y[:12000], epochs=1, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("seed_mlp") / "model.h5"
    model.save(path)
    os.chmod(path, 0o444)
    return path


@pytest.fixture(scope="session")
def linear_model(tmp_path_factory, mnist_dir):
    """(path, w, b) of the TensorFlow-free linear ONNX classifier of tests/_onnx_model.py
    (~85% accurate; read-only: copy it before writing beside it)."""
    from _onnx_model import build_linear_model

    return build_linear_model(mnist_dir, tmp_path_factory.mktemp("linear"))


@pytest.fixture(scope="session")
def linear_onnx(linear_model) -> Path:
    return linear_model[0]


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory, seed_mlp_h5, mnist_dir) -> Path:
    """One full `digitkit export --format all --quantize int8` of the seed model, made by the
    real command and shared read-only by the export, bench and view tests."""
    out = tmp_path_factory.mktemp("export") / "export"
    result = run_cli("export", seed_mlp_h5, "--out", out, "--data", mnist_dir,
                     "--quantize", "int8")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def zoo(tmp_path_factory, mnist_dir):
    """Foreign models in every input convention (tests/_foreign_models.py), built on first use
    and shared by every test of bring-your-own-model behaviour."""
    from _foreign_models import zoo_for

    return zoo_for(tmp_path_factory, mnist_dir)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Adapted copies go to a cache of this test's own, never the user's, and MNIST is found
    only where the test says (modules that need it: `pytest.mark.usefixtures`)."""
    monkeypatch.setenv("DIGITKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIGITKIT_DATA", raising=False)


@pytest.fixture
def src_h5(tmp_path, seed_mlp_h5) -> Path:
    """A writable copy of the seed model in this test's directory."""
    src = tmp_path / "seed.h5"
    shutil.copyfile(seed_mlp_h5, src)
    return src


@pytest.fixture(scope="session")
def image_set(tmp_path_factory) -> Path:
    """The labelled general-image set (5 classes x 40 files of every supported format and
    pixel kind, with manifest.json), made by the committed scripts/make_image_set.py run as
    a user runs it. Read-only for the tests."""
    import subprocess
    import sys

    pytest.importorskip("skimage", reason="the image set is cut from scikit-image's photos "
                                          "(the dev extra)")
    out = tmp_path_factory.mktemp("image_set") / "set"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_image_set.py"), str(out)],
                   check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def general_zoo(tmp_path_factory, image_set):
    """Small general image classifiers made elsewhere, one per input convention
    (tests/_general_models.py), trained on first use on the `image_set` pixels and shared."""
    from _general_models import GeneralZoo

    return GeneralZoo(tmp_path_factory.mktemp("general_zoo"), image_set)


# -- batch inference (tests/test_infer_*.py) --------------------------------------------------


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, png_test_dir) -> Path:
    """30 real PNGs per class in class folders, plus three files no decoder takes (`bad/`)."""
    from _infer_folders import class_folders

    return class_folders(png_test_dir, tmp_path_factory.mktemp("mixed"), bad=True)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The endpoint of a moto S3 server, its environment (endpoint, credentials) set for this
    module: pyarrow reads it, and Ray workers started after it inherit it."""
    pytest.importorskip("moto", reason="the S3 tests need moto[server] (dev extra)")
    from _s3_server import s3_server_env

    with s3_server_env() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def ray_runtime_env() -> dict:
    """The runtime_env of `ray_local`'s instance. A module overrides this fixture to give the
    actors an environment, or to start something first (`s3`) whose environment they
    inherit."""
    return {}


@pytest.fixture(scope="module")
def ray_local(ray_runtime_env):
    """A local Ray instance of 2 CPUs for one module, joined the way digitkit joins one."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                                            "'digitkit[ray]'")
    from digitkit.infer.engines.ray_actors import connect

    assert not ray.is_initialized()
    ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False, include_dashboard=False,
             runtime_env=ray_runtime_env or None)
    try:
        with connect() as r:  # joins the running instance, quietens Ray's loggers
            yield r
    finally:
        ray.shutdown()
