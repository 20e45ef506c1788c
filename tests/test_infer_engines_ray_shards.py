"""digitkit.infer.engines.ray_shards: shard directories written by the Ray engine's workers
(local Ray instance, 2 CPUs), on a local directory and on a real S3-compatible server (moto's
server mode on 127.0.0.1, started here). The plan and a shard's bytes without Ray:
tests/test_infer_storage_shards.py.

Every directory is read back as a whole and compared with the local engine on the same
files: exactly one row per input, the same labels and error rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'digitkit[ray]'")
pq = pytest.importorskip("pyarrow.parquet")

from _cli import run_cli  # noqa: E402
from digitkit.errors import DataError, OutputExistsError  # noqa: E402
from digitkit.infer import InferSpec, run_infer  # noqa: E402
from digitkit.infer.results.provenance import SHARD_RECORD  # noqa: E402
from digitkit.infer.results.rows import COLUMNS  # noqa: E402
from digitkit.infer.storage.shards import (  # noqa: E402
    MANIFEST,
    SHARD_RE,
    ShardOutput,
    ShardRun,
)

SHARD = 50  # 303 files -> 7 shards, several per actor


@pytest.fixture(scope="module")
def ray_runtime_env(s3) -> dict:
    """The S3 server first: `ray_local`'s workers inherit its environment."""
    return {}


@pytest.fixture(scope="module")
def local_rows(linear_onnx, mixed_folder, tmp_path_factory) -> dict:
    """path -> row of the local engine (in-process) on the same files."""
    out = tmp_path_factory.mktemp("local") / "local.parquet"
    run_infer(InferSpec(linear_onnx, workers=0), [mixed_folder], out, warn=lambda m: None)
    return {r["path"]: r for r in pq.read_table(out).to_pylist()}


@pytest.fixture(scope="module")
def parquet_dir(ray_local, linear_onnx, mixed_folder, tmp_path_factory):
    """(summary, directory) of one Ray run over the mixed folder; tests copy it to change it."""
    out = tmp_path_factory.mktemp("shards") / "out"
    return _shards(linear_onnx, [mixed_folder], out), out


def _shards(linear_onnx, inputs, dest, **kw):
    shard_size = kw.pop("shard_size", SHARD)
    run = {k: kw.pop(k) for k in ("resume", "force") if k in kw}
    kw.setdefault("workers", 2)
    return run_infer(InferSpec(linear_onnx, engine="ray", **kw), inputs,
                     ShardOutput(str(dest), shard_size), warn=lambda m: None, **run)


def _read_dir(d: Path, fmt: str = "parquet") -> list[dict]:
    rows = []
    for name in sorted(os.listdir(d)):
        if not SHARD_RE.match(name):
            continue
        if fmt == "parquet":
            rows += pq.read_table(d / name).to_pylist()
        elif fmt == "csv":
            rows += list(csv.DictReader(io.StringIO((d / name).read_text())))
        else:
            rows += [json.loads(line) for line in (d / name).read_text().splitlines()]
    return rows


def _assert_same_as_local(rows: list[dict], local: dict, path_map=lambda p: p):
    paths = [path_map(r["path"]) for r in rows]
    assert len(paths) == len(set(paths)) == len(local)  # one row per input, no duplicates
    for r in rows:
        want = local[path_map(r["path"])]
        assert r["error"] == want["error"]
        assert (r["label"] in (None, "") and want["label"] is None) or \
            int(r["label"]) == want["label"]
        if isinstance(r["top_k_probs"], list):  # Parquet / JSON Lines
            assert r["top_k_probs"] == pytest.approx(want["top_k_probs"], abs=1e-6)


# -- on Ray ---------------------------------------------------------------------------------


def test_parquet_shards_match_the_local_engine(parquet_dir, linear_onnx, local_rows):
    s, out = parquet_dir
    assert (s.written, s.resumed, s.failed, s.labelled) == (303, 0, 3, 300)
    names = sorted(os.listdir(out))
    assert names[:2] == [MANIFEST, SHARD_RECORD] and len(names) == 2 + 7
    assert [n for n in names if n.startswith(".")] == []  # no temporary file left
    _assert_same_as_local(_read_dir(out), local_rows)
    # The directory is one dataset for pyarrow (and so pandas, DuckDB): the manifest and
    # hidden names are skipped.
    import pyarrow.dataset as pds

    assert pds.dataset(out, format="parquet").count_rows() == 303
    m = json.loads((out / MANIFEST).read_text())
    assert (m["files"], m["written"], m["failed"], m["format"]) == (303, 303, 3, "parquet")
    assert sorted(Path(f["path"]).name for f in m["failed_files"]) == \
        ["empty.png", "text.png", "truncated.png"]
    assert [s["name"] for s in m["shards"]] == names[2:]
    assert sum(s["files"] for s in m["shards"]) == 303
    from digitkit.artifacts import sha256_file

    assert m["model"]["sha256"] == sha256_file(linear_onnx)
    assert m["arguments"]["engine"] == "ray" and m["arguments"]["top_k"] == 3
    assert {"python", "digitkit", "ray", "pyarrow", "onnxruntime"} <= set(m["versions"])


def test_resume_redoes_only_missing_shards(parquet_dir, linear_onnx, mixed_folder, local_rows,
                                           tmp_path):
    out = tmp_path / "out"
    shutil.copytree(parquet_dir[1], out)
    names = sorted(n for n in os.listdir(out) if SHARD_RE.match(n))
    kept = {n: (out / n).stat().st_ino for n in names}
    (out / names[1]).unlink()
    (out / names[4]).unlink()
    (out / MANIFEST).unlink()  # as an interrupted run leaves it
    (out / ".part-000002-bbbbbbbbbbbb.parquet.1234abcd.tmp").write_bytes(b"half")
    with pytest.raises(OutputExistsError, match="--resume"):
        _shards(linear_onnx, [mixed_folder], out)
    s = _shards(linear_onnx, [mixed_folder], out, resume=True)
    assert (s.written, s.resumed, s.total, s.failed) == (100, 203, 303, 3)
    assert sorted(os.listdir(out)) == [MANIFEST, SHARD_RECORD] + names
    for n in names:  # the shards that were there were not rewritten
        if n not in (names[1], names[4]):
            assert (out / n).stat().st_ino == kept[n]
    _assert_same_as_local(_read_dir(out), local_rows)
    m = json.loads((out / MANIFEST).read_text())
    assert (m["files"], m["written"], m["resumed"], m["failed"]) == (303, 100, 203, 3)
    assert len(m["failed_files"]) == 3


def test_resume_of_another_plan_or_model_is_refused_and_deletes_nothing(
        parquet_dir, linear_onnx, linear_model, mixed_folder, tmp_path):
    """Issue 19: `--resume` with other inputs or another model deleted the finished shards of
    the other plan. It is refused now, in one line, and every file stays."""
    from _onnx_model import write_linear_onnx

    out = tmp_path / "out"
    shutil.copytree(parquet_dir[1], out)
    (out / MANIFEST).unlink()  # as an interrupted run leaves it
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    _, w, b = linear_model
    other = write_linear_onnx(tmp_path / "other.onnx", w * 0.5, b)
    with pytest.raises(DataError, match="cannot resume: made with model sha256"):
        _shards(other, [mixed_folder], out, resume=True)
    with pytest.raises(DataError, match="cannot resume: made with top-k 3, this run 5"):
        _shards(linear_onnx, [mixed_folder], out, resume=True, top_k=5)
    with pytest.raises(DataError, match=r"shard file\(s\) here are not of this run's plan"):
        _shards(linear_onnx, [mixed_folder / "3", mixed_folder / "bad"], out, resume=True)
    (out / "part-000099-aaaaaaaaaaaa.parquet").write_bytes(b"a shard nobody planned")
    with pytest.raises(DataError, match="part-000099-aaaaaaaaaaaa.parquet"):
        _shards(linear_onnx, [mixed_folder], out, resume=True)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == {
        **before, "part-000099-aaaaaaaaaaaa.parquet": b"a shard nobody planned"}
    (out / SHARD_RECORD).unlink()  # a directory from before records were kept
    with pytest.raises(DataError, match="no record of the model"):
        _shards(linear_onnx, [mixed_folder], out, resume=True)


def test_interrupted_run_leaves_whole_shards_and_no_manifest(ray_local, linear_onnx,
                                                              mixed_folder, local_rows,
                                                              tmp_path):
    from digitkit.infer import get_engine
    from digitkit.infer.run import drive

    class StopAfterTwo:  # Ctrl-C after two shards are counted
        n = 0

        def update(self, count):
            self.n += 1
            if self.n == 2:
                raise KeyboardInterrupt

        def close(self):
            pass

    from digitkit.infer.results.provenance import record_for

    out = tmp_path / "out"
    spec = InferSpec(linear_onnx, engine="ray", workers=1)
    record = record_for(linear_onnx, None, spec.top_k, spec.limits.max_file_size,
                        "onnxruntime", "fp32")
    engine = get_engine("ray")
    shard_run = ShardRun(spec, [mixed_folder], ShardOutput(str(out), SHARD), resume=False,
                         force=False, find=engine.find, record=record)
    with pytest.raises(KeyboardInterrupt):
        drive(engine.write_shards(shard_run.spec, shard_run.job),
              lambda done: shard_run.add(done, lambda m: None), StopAfterTwo())
    names = [n for n in os.listdir(out) if n != SHARD_RECORD]
    assert MANIFEST not in names and not [n for n in names if n.startswith(".")]
    assert 2 <= len(names) < 7 and all(SHARD_RE.match(n) for n in names)
    for n in names:  # every shard there is whole
        assert pq.read_table(out / n).num_rows == SHARD
    s = _shards(linear_onnx, [mixed_folder], out, resume=True, workers=1)
    # (A shard the stopped actors were finishing may have landed since: whole, and kept.)
    assert s.resumed % SHARD == 0 and s.resumed >= SHARD * len(names) and s.total == 303
    _assert_same_as_local(_read_dir(out), local_rows)


def test_text_formats_and_force(ray_local, linear_onnx, mixed_folder, local_rows, tmp_path):
    out = tmp_path / "out"
    # One actor: these runs are about the formats (the others exercise the pool).
    _shards(linear_onnx, [mixed_folder], out, fmt="csv", shard_size=120, workers=1)
    rows = _read_dir(out, "csv")
    assert all(list(r) == list(COLUMNS) for r in rows)
    _assert_same_as_local(rows, local_rows)
    # --force over it in another format: the CSV shards are gone, JSON Lines in their place.
    _shards(linear_onnx, [mixed_folder], out, fmt="jsonl", shard_size=120, force=True,
            workers=1)
    assert {n.rsplit(".", 1)[1] for n in os.listdir(out)} == {"jsonl", "json"}
    _assert_same_as_local(_read_dir(out, "jsonl"), local_rows)


def test_cli_shard_directory(ray_local, linear_onnx, mixed_folder, tmp_path):
    out = f"{tmp_path}/cli/"
    args = ["infer", linear_onnx, mixed_folder, "-o", out, "--engine", "ray",
            "--num-workers", "1", "--shard-size", "100"]
    r = run_cli(*args)
    assert r.exit_code == 3, r.output  # the three bad files
    assert "303 files" in r.output and r.output.count("warning: ") == 3
    assert len([n for n in os.listdir(out) if SHARD_RE.match(n)]) == 4
    again = run_cli(*args, "-q")
    assert again.exit_code == 1 and "--resume" in again.output
    again = run_cli(*args, "--resume")
    assert again.exit_code == 3 and "303 already done" in again.output
    r = run_cli("infer", linear_onnx, mixed_folder, "-o", f"{tmp_path}/local/")
    assert r.exit_code == 2 and "--engine ray" in r.output


def test_object_store_listing_reading_and_shards(ray_local, s3, linear_onnx, mixed_folder,
                                                 local_rows, tmp_path):
    """s3:// inputs listed by the driver and fetched by the actors, shards written to s3://
    by the actors, all through a real S3 server; resume there too."""
    from pyarrow import fs as pafs

    from _s3_server import s3_fs, upload_tree

    subset = tmp_path / "subset"  # 33 files: one class folder and the bad files
    for name in ("3", "bad"):
        shutil.copytree(mixed_folder / name, subset / name)
    upload_tree(s3, subset, "digits", "images")
    out = "s3://digits/results/"
    s = _shards(linear_onnx, ["s3://digits/images"], out, shard_size=10)
    assert (s.written, s.failed) == (33, 3)
    fs = s3_fs(s3)
    names = sorted(i.base_name for i in fs.get_file_info(
        pafs.FileSelector("digits/results")) if i.is_file)
    assert names[:2] == [MANIFEST, SHARD_RECORD] and len(names) == 2 + 4
    rows = []
    for n in names[2:]:
        with fs.open_input_file(f"digits/results/{n}") as f:
            rows += pq.read_table(f).to_pylist()
    prefix = "s3://digits/images/"
    assert all(r["path"].startswith(prefix) for r in rows)
    local = {str(p): local_rows[str(mixed_folder / p.relative_to(subset))]
             for p in subset.rglob("*.png")}
    _assert_same_as_local(rows, local, path_map=lambda p: str(subset / p[len(prefix):]))
    fs.delete_file(f"digits/results/{names[3]}")
    again = _shards(linear_onnx, ["s3://digits/images"], out, shard_size=10, resume=True)
    assert (again.written, again.resumed) == (10, 23)
