"""The Ray engine of batch inference: the local engine's work, spread over a Ray cluster.

Ray Data's offline batch-inference pattern: the file list becomes a dataset of (index, path)
records, `map_batches` runs a stateful worker class in an actor pool (one ONNX Runtime session
per actor, opened once), and the driver collects the results in input order and turns them
into the output file's text. Every per-file step is the local engine's own code
(`digitkit.images.load_images`, with the same error reasons; `OnnxPredictor`;
`digitkit.infer.rows.encode_predictions`), so rows, error rows and the output format are the
same, and `run_infer` writes them with the same `RowWriter`, resume included.

Ray is optional (`pip install 'digitkit[ray]'`): it is imported inside functions only, and
nothing else in digitkit imports this module: the engine registry
(`digitkit.infer.spec.get_engine`) imports it when `--engine ray` is asked for.

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
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from digitkit.errors import DependencyError, UsageError
from digitkit.infer.isolation import WorkerPool, decode_worker, join_decoded, start_forkserver
from digitkit.infer.rows import encode_predictions
from digitkit.infer.spec import DEFAULT_BATCH_SIZE, EncodedRows, Engine, InferSpec, InputLimits
from digitkit.infer.uri_inputs import decode_uris, find_inputs, is_uri
from digitkit.predictors import OnnxPredictor, open_predictor, regime_settings

RAY_HINT = "the ray engine needs Ray: pip install 'digitkit[ray]'"
#: One ONNX Runtime thread per actor (and for the driver's check of the model): see the
#: module docstring; no spinning, the actor's core is its own.
_ACTOR_ORT = regime_settings(DEFAULT_BATCH_SIZE, cores=1)
#: Ray sets up its own logging and prints INFO lines for every dataset; the CLI wants only
#: real problems on stderr.
_QUIET_LOGGERS = ("ray", "ray.data", "ray.data._internal")


def import_ray():
    """Import Ray and Ray Data, or raise DependencyError with the one-line install hint."""
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra: pyarrow, pandas)
    except ImportError as err:
        raise DependencyError(RAY_HINT) from err
    return ray


#: What each actor's decoding process imports once (see `digitkit.infer.isolation`).
_DECODER_PRELOAD = ["digitkit.infer.isolation", "digitkit.images", "cv2"]


def worker_class(model_bytes: bytes, model_name: str, limits: InputLimits | None = None):
    """The stateful map_batches class; the model bytes ride along in its closure.

    Each actor decodes in a child process of its own (`digitkit.infer.isolation`, one
    worker): a file that crashes or hangs the decoder costs that file an error row, as in
    the local engine, instead of killing the actor and, with it, the dataset."""
    limits = limits or InputLimits()

    class DigitWorker:
        def __init__(self):
            import tempfile

            start_forkserver(_DECODER_PRELOAD)
            self._decoder = WorkerPool(1, decode_worker, (limits.max_file_size,),
                                       limits.file_timeout)

            self._scratch = Path(tempfile.mkdtemp(prefix="digitkit-ray-"))
            model = self._scratch / model_name
            model.write_bytes(model_bytes)
            self._predictor = OnnxPredictor(model, _ACTOR_ORT).load()
            model.unlink()  # ONNX Runtime holds the graph in memory now
            self._filesystems: dict = {}

        def _decode(self, paths: list[str]):
            _, parts = next(self._decoder.map([paths], 1))
            return join_decoded(parts)

        def __call__(self, batch: dict) -> dict:
            paths = [_path_str(p) for p in batch["path"]]
            uris = [i for i, p in enumerate(paths) if is_uri(p)]
            if uris:
                pixels, reasons = _decode_mixed(paths, uris, self._scratch, self._filesystems,
                                                self._decode, limits.max_file_size)
            else:
                pixels, reasons = self._decode(paths)
            probs = np.full((len(paths), 10), np.nan, np.float32)
            if len(pixels):
                good = np.array([not r for r in reasons])
                probs[good] = self._predictor.predict(pixels.astype(np.float32))
            return {"i": batch["i"], "path": batch["path"],
                    "reason": np.array(reasons, dtype=object), "probs": probs}

    return DigitWorker


def _path_str(p) -> str:
    """A path as os functions take it: the driver ships bytes (os.fsencode), because Arrow
    strings cannot hold a file name that is not valid UTF-8."""
    return os.fsdecode(p) if isinstance(p, (bytes, bytearray)) else str(p)


def _decode_mixed(paths, uri_idx, scratch, filesystems, decode, max_file_size):
    if len(uri_idx) == len(paths):
        return decode_uris(paths, scratch, filesystems, decode, max_file_size)
    # Rare (local and object-store inputs in one run): decode each kind, merge in order.
    uri_set = set(uri_idx)
    loc = [i for i in range(len(paths)) if i not in uri_set]
    px_u, r_u = decode_uris([paths[i] for i in uri_idx], scratch, filesystems, decode,
                             max_file_size)
    px_l, r_l = decode([paths[i] for i in loc])
    reasons = [""] * len(paths)
    for i, r in zip(uri_idx, r_u, strict=True):
        reasons[i] = r
    for i, r in zip(loc, r_l, strict=True):
        reasons[i] = r
    it_u, it_l = iter(px_u), iter(px_l)
    arrays = [next(it_u if i in uri_set else it_l) for i in range(len(paths)) if not reasons[i]]
    pixels = np.stack(arrays) if arrays else np.zeros((0, 28, 28), np.uint8)
    return pixels, reasons


# -- the driver -----------------------------------------------------------------------------


@contextmanager
def connect(address: str | None = None, num_cpus: int | None = None):
    """Use the running Ray instance, or start/join one; shut down only what we started.

    address None: the instance this process already has, else a new local one with
    `num_cpus` CPUs (default: all). "auto" joins the cluster this machine belongs to;
    "ray://host:port" connects through Ray Client.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kwargs = dict(logging_level=logging.ERROR, log_to_driver=False,
                      include_dashboard=False, configure_logging=True)
        if address is None:
            kwargs["num_cpus"] = num_cpus
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as err:
            raise UsageError(f"cannot connect to Ray at {address}: "
                             f"{str(err).splitlines()[0]}") from err
        started = True
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextmanager
def data_context(ray, preserve_order: bool = True):
    """Ray Data's settings for one run, restored after it."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = preserve_order
    # Ray's own bars only where a person watches; the CLI has its own progress line.
    ctx.enable_progress_bars = sys.stderr.isatty()
    try:
        yield ctx
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved


def check(spec: InferSpec) -> None:
    """Fail now, before any work: Ray missing (the one-line install hint), a model that is
    not ONNX, a pool without actors."""
    import_ray()
    onnx_predictor(spec)
    if spec.workers is not None and spec.workers < 1:
        raise UsageError(f"--num-workers must be at least 1 for the ray engine, "
                         f"got {spec.workers}")


def onnx_predictor(spec: InferSpec) -> OnnxPredictor:
    predictor = open_predictor(spec.model, spec.runtime, _ACTOR_ORT)
    if predictor.runtime != "onnxruntime":
        raise UsageError("the ray engine runs .onnx models on ONNX Runtime; export the model "
                         "with `digitkit export` first")
    return predictor


def ray_engine(spec: InferSpec, paths: Iterable[str]) -> Iterator[EncodedRows]:
    """Yield chunks of encoded rows in input order: the local engine's contract, on Ray.

    `spec.workers`: actors in the pool (None: one per CPU of the cluster); `spec.address`:
    the cluster (see `connect`). The model file is read here and shipped to the actors.
    """
    fmt, top_k, batch_size = spec.fmt or "csv", spec.top_k, spec.batch_size
    predictor = onnx_predictor(spec).load()  # a bad model fails here, before cluster work
    model_path = Path(predictor.model_path)
    model_bytes = model_path.read_bytes()
    items = [{"i": i, "path": os.fsencode(p)} for i, p in enumerate(paths)]
    if not items:
        return
    with connect(spec.address, num_cpus=spec.workers) as ray, data_context(ray):
        n_workers = spec.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        n_blocks = max(1, -(-len(items) // batch_size))
        # No more actors than batches: an actor without work only costs its start-up.
        n_workers = min(n_workers, n_blocks)
        ds = ray.data.from_items(items, override_num_blocks=n_blocks)
        del items  # the dataset holds them now
        ds = ds.map_batches(
            worker_class(model_bytes, model_path.name, spec.limits),
            compute=ray.data.ActorPoolStrategy(size=n_workers),
            batch_size=batch_size, batch_format="numpy", num_cpus=1)
        for batch in _in_order(ds.iter_batches(batch_size=None, batch_format="numpy")):
            yield encode_batch(batch, top_k, fmt)


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


def encode_batch(batch: dict, top_k: int, fmt: str) -> EncodedRows:
    """The output file's text for one batch of actor results (probabilities of failed files
    are NaN placeholders, left out)."""
    reasons = [str(r) for r in batch["reason"]]
    good = np.array([not r for r in reasons], dtype=bool)
    probs = batch["probs"][good] if good.any() else None
    return encode_predictions([_path_str(p) for p in batch["path"]], reasons, probs, top_k,
                              fmt)


def write_shards(spec: InferSpec, job) -> Iterator:
    """The actors write a shard directory themselves (`digitkit.infer.ray_shards`, imported
    when one is asked for, as the registry imports engines)."""
    return importlib.import_module("digitkit.infer.ray_shards").write_shards(spec, job)


ENGINE = Engine("ray", check=check, find=find_inputs, run=ray_engine, write_shards=write_shards)
