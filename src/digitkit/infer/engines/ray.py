"""The Ray engine of batch inference: the local engine's work, spread over a Ray cluster.

Ray Data's offline batch-inference pattern: the file list becomes a dataset of (index, path)
records, `map_batches` runs a stateful worker class in an actor pool (one ONNX Runtime session
per actor, opened once), and the driver collects the results in input order and turns them
into the output file's text. Every per-file step is the local engine's own code
(`digitkit.images.load_images`, with the same error reasons; `OnnxPredictor`;
`digitkit.infer.results.formats.encode_predictions`), so rows, error rows and the output format
are the same, and `run_infer` writes them with the same writer, resume included.

Ray is optional (`pip install 'digitkit[ray]'`): it is imported inside functions only, and
nothing else in digitkit imports this module: the engine registry
(`digitkit.infer.spec.get_engine`) imports it when `--engine ray` is asked for. What it
shares with the shard-directory writer (`ray_shards`) is in `ray_actors`.

Choices, and why:
- The model travels as bytes (read once on the driver, captured by the worker class that Ray
  ships to every actor): it works on any cluster without a shared model path, and a digit
  model is ~0.1-2 MB. Each actor writes it to a private temp file for `OnnxPredictor`, loads
  it, and deletes the file.
- Rows are encoded on the driver from the actors' probabilities (`encode_predictions`, no
  Row object per file): the actors return plain arrays, which Ray moves cheaply.
- One ONNX Runtime thread per actor: each actor reserves one CPU from Ray's scheduler, and
  decoding (not the small model) is the work; more intra-op threads would only oversubscribe
  cores that neighbouring actors own. Parallelism comes from the number of actors.
- Order: the driver numbers the files; Ray Data runs with `preserve_order` so blocks come back
  in input order, and a small reorder buffer keyed by that number makes the order exact
  whatever Ray does. Trade-off of `preserve_order`: a slow batch holds back the finished ones
  behind it (they wait in the object store, spilling to disk under pressure), in exchange for
  rows streaming out sorted with no driver-side sort of everything.
- Input paths must be readable by every node: a shared file system mounted at the same path,
  or object-store URIs (`s3://`, `gs://`, `abfs://`, `hdfs://`, `file://`) read through
  `pyarrow.fs`, listed on the driver and fetched by the actors.
- The file list lives on the driver (from_items): ~100 bytes per path, so ~100 MB for a
  million files; results stream back and are written as they come, so memory does not grow
  with the output.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Iterator

import numpy as np

from digitkit.errors import UsageError
from digitkit.infer.engines import ray_shards
from digitkit.infer.engines.ray_actors import (
    ModelPayload,
    actor_count,
    actor_predictor,
    classifier_class,
    connect,
    data_context,
    encode_classified,
    import_ray,
    model_payload,
    path_str,
)
from digitkit.infer.results.formats import DEFAULT_FORMAT
from digitkit.infer.results.rows import EncodedRows
from digitkit.infer.spec import BatchEngine, InferSpec, InputLimits
from digitkit.infer.storage.uri_inputs import find_inputs


def worker_class(model: ModelPayload, limits: InputLimits | None = None):
    """The stateful map_batches class of a row run: a batch of (index, path) records in, the
    same records with each file's error reason and probabilities out."""

    class DigitWorker(classifier_class(model, limits)):
        def __call__(self, batch: dict) -> dict:
            reasons, probs = self.classify([path_str(p) for p in batch["path"]])
            return {"i": batch["i"], "path": batch["path"], "reason": np.array(reasons,
                                                                                dtype=object),
                    "probs": probs}

    return DigitWorker


def check(spec: InferSpec) -> None:
    """Fail now, before any work: Ray missing (the one-line install hint), a model that is
    no actor can run (TensorFlow), a pool without actors."""
    import_ray()
    actor_predictor(spec)
    if spec.workers is not None and spec.workers < 1:
        raise UsageError(f"--num-workers must be at least 1 for the ray engine, "
                         f"got {spec.workers}")


def ray_engine(spec: InferSpec, paths: Iterable[str]) -> Iterator[EncodedRows]:
    """Yield chunks of encoded rows in input order: the local engine's contract, on Ray.

    `spec.workers`: actors in the pool (None: one per CPU of the cluster); `spec.address`:
    the cluster (see `connect`). The model file is read here and shipped to the actors.
    """
    fmt, top_k, batch_size = spec.fmt or DEFAULT_FORMAT, spec.top_k, spec.batch_size
    model = model_payload(spec)
    items = [{"i": i, "path": os.fsencode(p)} for i, p in enumerate(paths)]
    if not items:
        return
    with connect(spec.address, num_cpus=spec.workers) as ray, data_context(ray):
        n_blocks = max(1, -(-len(items) // batch_size))
        ds = ray.data.from_items(items, override_num_blocks=n_blocks)
        del items  # the dataset holds them now
        ds = ds.map_batches(
            worker_class(model, spec.limits),
            compute=ray.data.ActorPoolStrategy(size=actor_count(ray, spec.workers, n_blocks)),
            batch_size=batch_size, batch_format="numpy", num_cpus=1)
        for batch in _in_order(ds.iter_batches(batch_size=None, batch_format="numpy")):
            yield encode_batch(batch, top_k, fmt, model.names)


def _in_order(batches: Iterable[dict]) -> Iterator[dict]:
    """Re-sequence batches by their first index (a safety net behind preserve_order)."""
    expected, heap, seq = 0, [], 0
    for b in batches:
        if not len(b["i"]):
            continue
        heapq.heappush(heap, (int(b["i"][0]), seq, b))
        seq += 1
        while heap and heap[0][0] == expected:
            _, _, out = heapq.heappop(heap)
            expected = int(out["i"][-1]) + 1
            yield out
    while heap:  # only if indices were not contiguous: still yield everything, sorted
        yield heapq.heappop(heap)[2]


def encode_batch(batch: dict, top_k: int, fmt: str,
                 names: tuple[str, ...] | None = None) -> EncodedRows:
    """The rows of one batch of actor results, in format `fmt`; `names`: the class names
    rows carry (None: digits)."""
    return encode_classified([path_str(p) for p in batch["path"]],
                             [str(r) for r in batch["reason"]], batch["probs"], top_k, fmt,
                             names)


class RayEngine(BatchEngine):
    """A Ray Data actor pool, on this machine or a cluster; it also writes shard directories
    (`ray_shards`)."""

    name = "ray"
    writes_shards = True
    check = staticmethod(check)
    find = staticmethod(find_inputs)
    run = staticmethod(ray_engine)
    write_shards = staticmethod(ray_shards.write_shards)


ENGINE = RayEngine()
