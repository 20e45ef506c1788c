"""The Ray engine against a real local Ray instance (2 CPUs), started here and shut down after.

Every comparison is with the local engine on the same files: same labels, same confidences
(to float tolerance: the two engines batch differently and run ONNX Runtime with different
thread counts), same error rows, same order, same file through the same writer.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'digitkit[ray]'")

from _cli import run_cli  # noqa: E402
from digitkit.errors import DataError  # noqa: E402
from digitkit.images import find_images  # noqa: E402
from digitkit.infer import InferSpec, get_engine, run_infer  # noqa: E402
from digitkit.infer.engines.ray import ENGINE, find_inputs, ray_engine  # noqa: E402
from digitkit.infer.results.rows import (
    COLUMNS,  # noqa: E402
    EncodedRows,  # noqa: E402
)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
#: Confidences are written with 6 decimals; allow for ULP-level differences between batchings.
TOL = 2e-6
_PROBS = {"confidence", "top_k_probs"}


def _local(model, inputs, out: Path):
    # The local engine itself (in-process decoding keeps the test light on a shared machine).
    return run_infer(InferSpec(model, workers=0), inputs, out, warn=lambda msg: None)


def _ray(model, inputs, out: Path, **spec):
    return run_infer(InferSpec(model, engine="ray", **spec), inputs, out, warn=lambda msg: None)


def _records(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _assert_same_file(ray_text: str, local_text: str, path_map=lambda p: p):
    """Every row: the same bytes, except where a 6th decimal of a probability rounds the
    other way (then the same number of characters, within TOL)."""
    ray_recs, local_recs = _records(ray_text), _records(local_text)
    assert ray_recs[0] == local_recs[0] == list(COLUMNS)
    assert len(ray_recs) == len(local_recs)
    for a, b in zip(ray_recs[1:], local_recs[1:], strict=True):
        a = dict(zip(COLUMNS, a, strict=True))
        b = dict(zip(COLUMNS, b, strict=True))
        a["path"] = path_map(a["path"])
        for col in COLUMNS:
            if col not in _PROBS or a[col] == b[col]:
                assert a[col] == b[col], (col, a, b)
                continue
            xs, ys = a[col].split(), b[col].split()
            assert [len(x) for x in xs] == [len(y) for y in ys], (col, a, b)
            assert all(abs(float(x) - float(y)) <= TOL for x, y in zip(xs, ys, strict=True))


def test_same_file_as_local_engine_with_error_rows(ray_local, linear_onnx, mixed_folder,
                                                   tmp_path):
    local = _local(linear_onnx, [mixed_folder], tmp_path / "local.csv")
    # batch_size 32: many batches over 2 actors, so ordering is really exercised.
    ray = _ray(linear_onnx, [mixed_folder], tmp_path / "ray.csv", workers=2, batch_size=32)
    ray_text = (tmp_path / "ray.csv").read_text()
    _assert_same_file(ray_text, (tmp_path / "local.csv").read_text())
    rows = list(csv.DictReader(io.StringIO(ray_text)))
    assert len(rows) == 303
    # Order: the driver's deterministic listing, which is sorted by path.
    paths = [r["path"] for r in rows]
    assert paths == [str(p) for p in find_images([mixed_folder])]
    assert paths == sorted(paths, key=lambda p: Path(p).parts)
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"empty.png", "text.png", "truncated.png"}
    assert errors["empty.png"] == "empty file"
    assert errors["text.png"].startswith("not an image")
    assert errors["truncated.png"].startswith("truncated") or "decode" in errors["truncated.png"]
    # The same summary, from the batches the Ray engine encoded itself.
    assert (ray.written, ray.failed, ray.labelled) == (local.written, local.failed, 300)
    assert (ray.confusion == local.confusion).all()


def test_engine_yields_encoded_rows_in_order(ray_local, linear_onnx, mixed_folder):
    assert get_engine("ray") is ENGINE and ENGINE.run is ray_engine
    spec = InferSpec(linear_onnx, engine="ray", workers=2, batch_size=100, fmt="jsonl")
    files = list(find_inputs([mixed_folder / "bad", mixed_folder / "3"]))
    batches = list(ray_engine(spec, files))
    assert all(isinstance(b, EncodedRows) for b in batches)
    assert [b.count for b in batches] == [33]  # one batch: fewer files than batch_size
    rows = [json.loads(line) for line in batches[0].data.splitlines()]
    assert [r["path"] for r in rows] == files
    assert [Path(p).name for p in files[:3]] == ["empty.png", "text.png", "truncated.png"]
    assert [e[0] for e in batches[0].errors] == files[:3]
    assert batches[0].confusion.sum() == 30 and batches[0].confusion[3].sum() == 30


def test_object_store_uris_read_through_pyarrow(ray_local, linear_onnx, mixed_folder,
                                                tmp_path):
    """file:// goes through the same pyarrow.fs code as s3:// or gs://: listing on the
    driver, fetching in the actors, decoding (and error reasons) as for local files."""
    _local(linear_onnx, [mixed_folder], tmp_path / "local.csv")
    uri = mixed_folder.as_uri()
    _ray(linear_onnx, [uri], tmp_path / "ray.csv", workers=2)
    ray_text = (tmp_path / "ray.csv").read_text()
    assert all(r[0].startswith(uri + "/") for r in _records(ray_text)[1:])
    _assert_same_file(ray_text, (tmp_path / "local.csv").read_text(),
                      path_map=lambda p: p[len("file://"):])


def test_listing_and_missing_inputs(linear_onnx, mixed_folder, tmp_path):
    # Arguments in the order given; each folder sorted; URIs listed like folders.
    files = list(find_inputs([mixed_folder / "bad", mixed_folder / "3"]))
    assert files == [str(p) for p in find_images([mixed_folder / "bad", mixed_folder / "3"])]
    uris = list(find_inputs([(mixed_folder / "bad").as_uri()]))
    assert uris == [(mixed_folder / "bad" / n).as_uri()
                    for n in ("empty.png", "text.png", "truncated.png")]
    # Missing inputs fail in discovery, before Ray starts and before any output file.
    for missing in (mixed_folder / "nope", (mixed_folder / "nope").as_uri()):
        with pytest.raises(DataError, match="no such file"):
            _ray(linear_onnx, [missing], tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_whole_shared_folder(ray_local, linear_onnx, png_test_dir, tmp_path):
    _local(linear_onnx, [png_test_dir], tmp_path / "local.csv")
    ray = _ray(linear_onnx, [png_test_dir], tmp_path / "ray.csv", workers=2)
    assert ray.written == 10000
    _assert_same_file((tmp_path / "ray.csv").read_text(), (tmp_path / "local.csv").read_text())


# -- without Ray, and without the engine ----------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_missing_ray_gives_one_line_hint(linear_onnx, mixed_folder):
    # sys.modules["ray"] = None makes `import ray` fail through the real import machinery.
    proc = _python(f"""
        import sys
        sys.modules["ray"] = None
        from digitkit.errors import DependencyError
        from digitkit.infer import InferSpec, run_infer
        try:
            run_infer(InferSpec({str(linear_onnx)!r}, engine="ray"), [{str(mixed_folder)!r}])
        except DependencyError as e:
            print(e)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the ray engine needs Ray: pip install 'digitkit[ray]'\n"


def test_ray_engine_refuses_what_it_cannot_run(linear_onnx, tmp_path):
    from digitkit.errors import UsageError

    keras_file = tmp_path / "model.h5"
    keras_file.write_bytes(b"\x89HDF\r\n\x1a\n")  # an HDF5 signature: a Keras model by kind
    with pytest.raises(UsageError, match="runs .onnx models on ONNX Runtime"):
        ENGINE.check(InferSpec(keras_file, engine="ray"))
    with pytest.raises(UsageError, match="--num-workers must be at least 1"):
        ENGINE.check(InferSpec(linear_onnx, engine="ray", workers=0))


def test_local_engine_never_imports_ray(linear_onnx, mixed_folder, tmp_path):
    proc = _python(f"""
        import sys
        from digitkit.cli import cli
        from click.testing import CliRunner
        r = CliRunner().invoke(cli, ["infer", {str(linear_onnx)!r}, {str(mixed_folder / "3")!r},
                                     "-o", {str(tmp_path / "out.csv")!r}, "--workers", "0"])
        assert r.exit_code == 0, r.output
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")
                     or m == "digitkit.infer.engines.ray"))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- the CLI --------------------------------------------------------------------------------


def test_cli_engine_ray_matches_local(ray_local, linear_onnx, mixed_folder, tmp_path):
    local = run_cli("infer", linear_onnx, mixed_folder, "-q", "-o", tmp_path / "local.csv",
                    "--workers", "0")
    remote = run_cli("infer", linear_onnx, mixed_folder, "-q", "-o", tmp_path / "ray.jsonl",
                     "--engine", "ray", "--num-workers", "2")
    assert local.exit_code == remote.exit_code == 3  # the three bad files
    ray_rows = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    local_rows = list(csv.DictReader(open(tmp_path / "local.csv", newline="")))
    assert [r["path"] for r in ray_rows] == [r["path"] for r in local_rows]
    assert [str(r["label"]) if r["label"] is not None else "" for r in ray_rows] == \
        [r["label"] for r in local_rows]
    assert [r["error"] for r in ray_rows] == [r["error"] for r in local_rows]
    assert remote.stderr.count("warning: ") == 3


def test_cli_engine_ray_resume(ray_local, linear_onnx, mixed_folder, tmp_path):
    out = tmp_path / "ray.csv"
    args = ["infer", linear_onnx, mixed_folder, "-q", "-o", out, "--engine", "ray",
            "--num-workers", "2"]
    first = run_cli(*args)
    assert first.exit_code == 3, first.output
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:100]) + lines[100][:7])  # killed mid-row
    again = run_cli(*args, "--resume")
    assert again.exit_code == 3, again.output
    assert out.read_text() == full
