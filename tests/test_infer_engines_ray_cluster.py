"""The Ray engine's shard output on a real multi-node cluster on this machine
(`ray.cluster_utils.Cluster`: a head without CPUs, so every actor runs on one of two worker
nodes of one CPU each), over the 10,000 MNIST test PNGs plus bad files at the start, in the
middle and at the end; then the same with a worker node removed mid-run; then object-store
input and output through a real S3-compatible server.

Part of the default suite (~40 s on 2 cores); markers `cluster` and `slow` select or
deselect it:

    .venv/bin/python -m pytest -m cluster
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'digitkit[ray]'")
pq = pytest.importorskip("pyarrow.parquet")

from _infer_folders import class_folders  # noqa: E402
from digitkit.infer import InferSpec, run_infer  # noqa: E402
from digitkit.infer.storage.shards import MANIFEST, SHARD_RE, ShardOutput  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: 500 files per shard: 21 shards for 10,003 files, so a node lost after a few of them still
#: has shards queued and running.
SHARD = 500
NODE = {"num_cpus": 1, "object_store_memory": 100 << 20}


@pytest.fixture(scope="module")
def cluster(s3):
    """Started after the S3 server (`s3`), so every node's workers find the endpoint and the
    credentials in their environment, the way a real deployment would."""
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 0, "object_store_memory": 100 << 20})
    workers = [c.add_node(**NODE) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield c, workers
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def inputs(png_test_dir, tmp_path_factory) -> list[Path]:
    """10,000 real PNGs with three bad files: one before them, one in the middle, one after."""
    root = tmp_path_factory.mktemp("bad")
    good = next((png_test_dir / "7").iterdir()).read_bytes()
    for name, data in (("first/empty.png", b""), ("middle/text.png", b"not a picture\n"),
                       ("last/truncated.png", good[: len(good) // 2])):
        (root / name).parent.mkdir()
        (root / name).write_bytes(data)
    classes = [png_test_dir / str(d) for d in range(10)]
    return [root / "first", *classes[:5], root / "middle", *classes[5:], root / "last"]


@pytest.fixture(scope="module")
def local_rows(linear_onnx, inputs, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local") / "local.parquet"
    run_infer(InferSpec(linear_onnx, workers=2), inputs, out, warn=lambda m: None)
    return {r["path"]: r for r in pq.read_table(out).to_pylist()}


def _run(model, inputs, dest: str, **kw):
    return run_infer(InferSpec(model, engine="ray", workers=2), inputs,
                     ShardOutput(dest, kw.pop("shard_size", SHARD)), warn=lambda m: None, **kw)


def _check(rows: list[dict], local: dict, path_map=lambda p: p) -> None:
    """Exactly one row per input, none twice, and each the local engine's row."""
    paths = [path_map(r["path"]) for r in rows]
    assert len(paths) == len(set(paths)) == len(local) == 10_003
    for r in rows:
        want = local[path_map(r["path"])]
        assert (r["label"], r["error"]) == (want["label"], want["error"])
        assert r["top_k_probs"] == pytest.approx(want["top_k_probs"], abs=1e-6)
    errors = {Path(path_map(r["path"])).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"empty.png", "text.png", "truncated.png"}


def _read_dir(d: Path) -> list[dict]:
    return [row for n in sorted(os.listdir(d)) if SHARD_RE.match(n)
            for row in pq.read_table(d / n).to_pylist()]


def test_two_nodes_write_the_local_engines_rows(cluster, linear_onnx, inputs, local_rows,
                                                tmp_path):
    import ray

    assert ray.cluster_resources()["CPU"] == 2 and len(ray.nodes()) == 3
    s = _run(linear_onnx, inputs, str(tmp_path / "out"))
    assert (s.written, s.failed) == (10_003, 3)
    _check(_read_dir(tmp_path / "out"), local_rows)
    m = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert (m["files"], m["failed"], len(m["shards"])) == (10_003, 3, 21)


def test_object_store_on_the_cluster(cluster, s3, linear_onnx, png_test_dir,
                                     tmp_path):
    """Listing (driver), image reads and shard writes (actors on both nodes) all
    against the S3 server, credentials and endpoint from the environment."""
    from pyarrow import fs as pafs

    from _s3_server import s3_fs, upload_tree

    folder = class_folders(png_test_dir, tmp_path / "imgs", per_class=20, bad=True)
    upload_tree(s3, folder, "cluster", "in")
    s = _run(linear_onnx, ["s3://cluster/in/"], "s3://cluster/out/", shard_size=50)
    assert (s.written, s.failed) == (203, 3)
    fs = s3_fs(s3)
    names = [i.base_name for i in fs.get_file_info(pafs.FileSelector("cluster/out"))]
    assert MANIFEST in names and sum(bool(SHARD_RE.match(n)) for n in names) == 5
    paths = []
    for n in names:
        if SHARD_RE.match(n):
            with fs.open_input_file(f"cluster/out/{n}") as f:
                paths += pq.read_table(f).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 203
    assert all(p.startswith("s3://cluster/in/") for p in paths)


def test_a_node_removed_mid_run(cluster, linear_onnx, inputs, local_rows, tmp_path):
    """One of the two worker nodes (one actor each, no spare CPU anywhere) is killed once
    a few shards are written: its actor is restarted, its shards retried, and the run
    completes with every input exactly once. Last in this module: it leaves the cluster
    one node short."""
    import ray

    c, workers = cluster
    out = tmp_path / "out"
    removed = threading.Event()

    def remove_when_running():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if out.is_dir() and sum(bool(SHARD_RE.match(n)) for n in os.listdir(out)) >= 3:
                c.remove_node(workers[1])
                removed.set()
                return
            time.sleep(0.02)

    killer = threading.Thread(target=remove_when_running, daemon=True)
    killer.start()
    s = _run(linear_onnx, inputs, str(out))
    killer.join(60)
    assert removed.is_set()
    assert sum(1 for n in ray.nodes() if n["Alive"]) == 2  # the head and one worker
    done = [n for n in os.listdir(out) if SHARD_RE.match(n)]
    assert len(done) == 21 and not [n for n in os.listdir(out) if n.startswith(".")]
    assert (s.written, s.failed) == (10_003, 3)
    _check(_read_dir(out), local_rows)
