import functools
import gzip
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from digitkit import data
from digitkit.errors import DataError


def _idx_bytes(arr: np.ndarray) -> bytes:
    magic = 0x00000803 if arr.ndim == 3 else 0x00000801
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write(path: Path, raw: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


# --- IDX parsing and validation ---------------------------------------------------------------

def test_read_shared_idx_matches_published_checksums(mnist_dir):
    x, md5 = data.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz",
                           data.MNIST_FILES["test_images"][1])
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert md5 == "2646ac647ad5339dbf082846283269ea"
    y, _ = data.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert y.shape == (10000,) and set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_roundtrip(tmp_path, gz):
    arr = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x, _ = data.read_idx(_write(tmp_path / "imgs", _idx_bytes(arr), gz))
    np.testing.assert_array_equal(x, arr)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "too short"),
        (b"\x00\x00\x08\x04" + b"\x00" * 12, "not an MNIST IDX file"),
        (struct.pack(">I", 0x803) + struct.pack(">I", 2), "truncated IDX header"),
        (_idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-10], "truncated: header promises"),
        (_idx_bytes(np.zeros((3, 28, 28), np.uint8)) + b"xx", "trailing bytes"),
        (_idx_bytes(np.zeros((3, 32, 32), np.uint8)), "images are 32x32"),
        (_idx_bytes(np.array([1, 2, 12], np.uint8)), "label 12 out of range"),
    ],
    ids=["empty", "bad-magic", "short-header", "truncated", "trailing", "wrong-dims", "label"],
)
def test_read_idx_rejects_bad_files(tmp_path, raw, reason):
    path = _write(tmp_path / "bad-idx", raw)
    with pytest.raises(DataError) as e:
        data.read_idx(path)
    assert reason in str(e.value)
    assert str(path) in str(e.value)  # the message names the file


def test_read_idx_rejects_corrupt_gzip(tmp_path, mnist_dir):
    raw = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = _write(tmp_path / "cut.gz", raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        data.read_idx(path)


def test_checksum_mismatch_is_an_error(tmp_path):
    path = _write(tmp_path / "labels", _idx_bytes(np.array([1, 2, 3], np.uint8)))
    with pytest.raises(DataError, match="checksum mismatch: md5 [0-9a-f]{32}, expected 0{32}"):
        data.read_idx(path, "0" * 32)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        data.read_idx(tmp_path / "nope")


# --- whole data sets and resolution -----------------------------------------------------------

@pytest.fixture(scope="module")
def raw_idx_dir(tmp_path_factory, mnist_dir):
    """The shared data, decompressed: the loader must take both forms."""
    d = tmp_path_factory.mktemp("raw_idx")
    for f in mnist_dir.glob("*.gz"):
        (d / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
    return d


def test_gzipped_and_raw_dirs_load_identically(mnist_dir, raw_idx_dir):
    a, b = data.load_mnist(mnist_dir), data.load_mnist(raw_idx_dir)
    assert a.x_train.shape == (60000, 28, 28) and a.x_test.shape == (10000, 28, 28)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert sorted(a.checksums.values()) == sorted(b.checksums.values())


def test_dir_with_a_wrong_file_names_it(tmp_path, raw_idx_dir):
    for f in raw_idx_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    raw = bytearray(bad.read_bytes())
    raw[-1] = (raw[-1] + 1) % 10  # one flipped label: structurally valid, wrong checksum
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        data.load_mnist(tmp_path)
    assert str(bad) in str(e.value) and "checksum mismatch" in str(e.value)


def test_npz_like_keras(tmp_path, mnist_dir):
    ref = data.load_mnist(mnist_dir)
    path = tmp_path / "mnist.npz"
    np.savez_compressed(path, x_train=ref.x_train[:100], y_train=ref.y_train[:100],
                        x_test=ref.x_test[:50], y_test=ref.y_test[:50])
    for source in (path, tmp_path):  # the file itself, or a directory holding mnist.npz
        d = data.load_mnist(source)
        np.testing.assert_array_equal(d.x_test, ref.x_test[:50])
        assert d.y_train.dtype == np.uint8


@pytest.mark.parametrize("case", ["missing-array", "pickle", "not-zip", "bad-shape"])
def test_npz_errors(tmp_path, case):
    path = tmp_path / "mnist.npz"
    x, y = np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.uint8)
    if case == "missing-array":
        np.savez(path, x_train=x, y_train=y, x_test=x)
    elif case == "pickle":
        np.savez(path, x_train=np.array([object()]), y_train=y, x_test=x, y_test=y)
    elif case == "not-zip":
        path.write_text("hello")
    else:
        np.savez(path, x_train=np.zeros((2, 32, 32), np.uint8), y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError) as e:
        data.load_mnist(path)
    assert str(path) in str(e.value)


def test_env_var_and_explicit_path(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv(data.ENV_DATA, str(mnist_dir))
    assert "IDX files" in data.load_mnist().source
    monkeypatch.setenv(data.ENV_DATA, str(tmp_path / "missing"))
    with pytest.raises(DataError, match="missing: no such file or directory"):
        data.load_mnist()
    assert data.load_mnist(mnist_dir).x_test.shape[0] == 10000  # explicit path wins


def test_offline_with_nothing_lists_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_DATA, raising=False)
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    with pytest.raises(DataError) as e:
        data.load_mnist(download=False)
    msg = str(e.value)
    assert "--data" in msg and data.ENV_DATA in msg and str(tmp_path / "cache") in msg


# --- download from a local HTTP server --------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(directory))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_download_into_cache_then_reuse(tmp_path, monkeypatch, serve, mnist_dir):
    monkeypatch.delenv(data.ENV_DATA, raising=False)
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    url = serve(mnist_dir)
    seen = []
    d = data.load_mnist(mirrors=[url], progress=lambda name, done, total: seen.append(name))
    assert d.x_train.shape == (60000, 28, 28)
    cached = sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir())
    assert cached == sorted(p.name for p in mnist_dir.glob("*.gz"))  # no .part leftovers
    assert len(set(seen)) == 4
    # Second call: served from the cache, even with no mirror reachable.
    d2 = data.load_mnist(mirrors=["http://127.0.0.1:9/"], download=False)
    np.testing.assert_array_equal(d.x_test, d2.x_test)


def test_download_skips_a_corrupt_mirror(tmp_path, monkeypatch, serve, mnist_dir):
    bad = tmp_path / "bad_mirror"
    bad.mkdir()
    for f in mnist_dir.glob("*.gz"):
        raw = bytearray(gzip.decompress(f.read_bytes()))
        raw[-1] ^= 1  # right size, wrong content: only the checksum can tell
        (bad / f.name).write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    monkeypatch.delenv(data.ENV_DATA, raising=False)
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    d = data.load_mnist(mirrors=[serve(bad), serve(mnist_dir)])
    assert d.checksums["t10k-images-idx3-ubyte.gz"] == data.MNIST_FILES["test_images"][1]


def test_download_failure_names_every_mirror(tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    url = serve(empty)
    with pytest.raises(DataError) as e:
        data.download_mnist(tmp_path / "cache", mirrors=[url, "http://127.0.0.1:9/"])
    msg = str(e.value)
    assert "download failed" in msg and url in msg and "127.0.0.1:9" in msg
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written left behind


# --- image folders ----------------------------------------------------------------------------

def test_image_folder_matches_idx(tmp_path, png_test_dir, mnist_test):
    x_ref, y_ref = mnist_test
    folder = tmp_path / "digits"
    picked = []
    for label in range(10):
        files = sorted((png_test_dir / str(label)).glob("*.png"))[:5]
        (folder / str(label)).mkdir(parents=True)
        for f in files:
            shutil.copy(f, folder / str(label) / f.name)
            picked.append((int(f.stem) - 60000, label))
    (folder / "3" / "broken.png").write_bytes(b"not a png")
    x, y, skipped = data.load_image_folder(folder)
    assert len(x) == 50 and len(skipped) == 1 and "broken.png" in skipped[0]
    order = sorted(picked, key=lambda t: (t[1], f"{t[0] + 60000}.png"))
    np.testing.assert_array_equal(x, x_ref[[i for i, _ in order]])
    np.testing.assert_array_equal(y, [lbl for _, lbl in order])
    np.testing.assert_array_equal(y, y_ref[[i for i, _ in order]])
