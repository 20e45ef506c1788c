"""What the Ray engine's two ways of running share (rows back to the driver: `ray`; shards
written by the actors: `ray_shards`): connecting to Ray, Ray Data's settings for a run, the
model shipped to the actors, the actor count, and the actors' own classifier. It imports
neither of them.

Ray is optional (`pip install 'digitkit[ray]'`): it is imported inside functions only.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitkit.errors import DependencyError, UsageError
from digitkit.images import decoder_for, no_pixels
from digitkit.infer.pool.isolation import (
    WorkerPool,
    decode_worker,
    join_decoded,
    start_forkserver,
)
from digitkit.infer.results.formats import encode_predictions
from digitkit.infer.results.rows import EncodedRows, row_names
from digitkit.infer.spec import DEFAULT_BATCH_SIZE, InferSpec, InputLimits
from digitkit.infer.storage.uri_inputs import decode_uris, is_uri
from digitkit.predictors.serving import forkable, open_in_worker, serving_model

RAY_HINT = "the ray engine needs Ray: pip install 'digitkit[ray]'"
#: An actor runs its model as a local worker process does (`serving.open_in_worker`: one
#: core, one thread, no spinning, the same runtime settings): each actor reserves one CPU
#: from Ray's scheduler and decoding is its work.
#: Ray sets up its own logging and prints INFO lines for every dataset; the CLI wants only
#: real problems on stderr.
_QUIET_LOGGERS = ("ray", "ray.data", "ray.data._internal")
#: What each actor's decoding process imports once (see `digitkit.infer.pool.isolation`).
_DECODER_PRELOAD = ["digitkit.infer.pool.isolation", "digitkit.images", "cv2"]


def import_ray():
    """Import Ray and Ray Data, or raise DependencyError with the one-line install hint."""
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra: pyarrow, pandas)
    except ImportError as err:
        raise DependencyError(RAY_HINT) from err
    return ray


def actor_predictor(spec: InferSpec):
    """The predictor an actor runs (the spec's row of the runtime table, one thread). A
    model file only: TensorFlow is not run in the actors."""
    serving = serving_model(spec.model, spec.runtime, spec.precision)
    if not forkable(serving.runtime, serving.path):
        raise UsageError("the ray engine runs a model file (.onnx, .tflite) on ONNX Runtime, "
                         "OpenVINO or LiteRT, not TensorFlow; export the model with "
                         "`digitkit export` first")
    return open_in_worker(serving.path, serving.runtime, DEFAULT_BATCH_SIZE, device=spec.device)


@dataclass(frozen=True)
class ModelPayload:
    """What every actor gets: the model file's bytes and name, the runtime table row
    that runs it (None: ONNX Runtime, the .onnx file's natural runtime), and the contract
    its files are decoded and named by (resolved on the driver; None: digits)."""

    data: bytes
    name: str
    runtime: str | None
    device: str = "cpu"  # --device (predictors.devices.parse_device)
    contract: object = None

    @property
    def names(self) -> tuple[str, ...] | None:
        """The class names rows carry (None: digits)."""
        return row_names(self.contract)


def model_payload(spec: InferSpec) -> ModelPayload:
    """The model shipped to every actor; loaded here first, so a bad model fails on the
    driver, before any cluster work."""
    predictor = actor_predictor(spec).load()
    path = Path(predictor.model_path)
    return ModelPayload(path.read_bytes(), path.name,
                        serving_model(path, spec.runtime, spec.precision).runtime, spec.device,
                        spec.resolved_contract)


def actor_count(ray, workers: int | None, units: int) -> int:
    """Actors for `units` of work (batches or shards): `workers`, or one per CPU of the
    cluster, and never more than the units: an actor without work only costs its start-up."""
    n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    return min(n, units)


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
    """Ray Data's settings for one run, restored after it. Python objects in a batch's
    columns (a finished shard's `ShardDone`) travel pickled, as Ray Data's own fallback does,
    without its warning."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars,
             ctx.enable_fallback_to_arrow_object_ext_type)
    ctx.execution_options.preserve_order = preserve_order
    # Ray's own bars only where a person watches; the CLI has its own progress line.
    ctx.enable_progress_bars = sys.stderr.isatty()
    ctx.enable_fallback_to_arrow_object_ext_type = True
    try:
        yield ctx
    finally:
        (ctx.execution_options.preserve_order, ctx.enable_progress_bars,
         ctx.enable_fallback_to_arrow_object_ext_type) = saved


def encode_classified(paths: list[str], reasons: list[str], probs: np.ndarray, top_k: int,
                      fmt: str, names: tuple[str, ...] | None = None) -> EncodedRows:
    """The rows of files an actor classified (`RayClassifier.classify`: probabilities of
    failed files are NaN placeholders, left out here); `names` as `ModelPayload.names`."""
    good = np.array([not r for r in reasons], dtype=bool)
    return encode_predictions(paths, reasons, probs[good] if good.any() else None, top_k, fmt,
                              names)


def classifier_class(model: ModelPayload, limits: InputLimits | None = None):
    """The base of both engines' actor classes; the model rides along in its closure.

    Each actor decodes in a child process of its own (`digitkit.infer.pool.isolation`, one
    worker): a file that crashes or hangs the decoder costs that file an error row, as in
    the local engine, instead of killing the actor and, with it, the dataset."""
    limits = limits or InputLimits()
    contract = model.contract
    k = 10 if contract is None else contract.num_classes

    class RayClassifier:
        def __init__(self):
            import tempfile

            start_forkserver(_DECODER_PRELOAD)
            self._decoder = WorkerPool(1, decode_worker,
                                       (limits.max_file_size, decoder_for(contract)),
                                       limits.file_timeout)

            self._scratch = Path(tempfile.mkdtemp(prefix="digitkit-ray-"))
            path = self._scratch / model.name
            path.write_bytes(model.data)
            self._predictor = open_in_worker(path, model.runtime, DEFAULT_BATCH_SIZE,
                                             device=model.device).load()
            path.unlink()  # the runtime holds the model in memory (or a mapping) now
            self._filesystems: dict = {}

        def _decode(self, paths: list[str]):
            _, parts = next(self._decoder.map([paths], 1))
            return join_decoded(parts, no_pixels(contract))

        def classify(self, paths: list[str]) -> tuple[list[str], np.ndarray]:
            """Each file's error reason ("" when good) and probabilities, (n, K) float32,
            NaN for a failed file."""
            uris = [i for i, p in enumerate(paths) if is_uri(p)]
            if uris:
                pixels, reasons = _decode_mixed(paths, uris, self._scratch, self._filesystems,
                                                self._decode, limits.max_file_size,
                                                no_pixels(contract))
            else:
                pixels, reasons = self._decode(paths)
            probs = np.full((len(paths), k), np.nan, np.float32)
            if len(pixels):
                good = np.array([not r for r in reasons])
                probs[good] = self._predictor.predict(
                    pixels if pixels.dtype == np.float32 else pixels.astype(np.float32))
            return reasons, probs

    return RayClassifier


def path_str(p) -> str:
    """A path as os functions take it: the driver ships bytes (os.fsencode), because Arrow
    strings cannot hold a file name that is not valid UTF-8."""
    return os.fsdecode(p) if isinstance(p, (bytes, bytearray)) else str(p)


def _decode_mixed(paths, uri_idx, scratch, filesystems, decode, max_file_size, empty):
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
    pixels = np.stack(arrays) if arrays else empty
    return pixels, reasons
