"""The measuring side of `digitkit bench`: one engine, one model copy, one process.

`digitkit.bench` starts `python -m digitkit._bench_runners SPEC.json` once per engine so that
every engine gets a fresh process: its own thread pools and allocator, its own peak RSS, a
cold model load, and no TensorFlow in the ONNX Runtime process (importing TF alone changes
the memory picture and spins up thread pools). Thread settings are applied before the
runtime is imported, because TensorFlow fixes its pools on first use.

Nothing here imports TensorFlow or ONNX Runtime at module level.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from digitkit.architectures import INPUT_NAME, OUTPUT_NAME

#: engine name -> (user-facing runtime group, model copy it loads, short description)
ENGINES = {
    "onnxruntime": ("onnxruntime", "onnx", "ONNX Runtime InferenceSession.run, float model"),
    "onnxruntime-int8": ("onnxruntime", "onnx_int8", "ONNX Runtime InferenceSession.run, int8"),
    "tf-savedmodel": ("tensorflow", "saved_model", "SavedModel signature 'serving_default'"),
    "tf-function": ("keras", "keras", "tf.function(model(x, training=False)), fixed signature"),
    "keras-predict": ("keras", "keras", "Keras model.predict(x, batch_size=len(x))"),
}

#: Batch size of the untimed cross-check pass: every engine handles it comfortably and 10,000
#: test images divide into it evenly.
CHECK_BATCH = 500

#: However short --duration is, a batch size gets this many timed calls, so that p50 and the
#: extremes come from more than a couple of samples.
MIN_TIMED_CALLS = 5


def ort_session_options(threads: int, spinning: bool = False):
    """The ONNX Runtime settings the bench measures (and recommends for inference).

    - graph optimisation ALL: constant folding plus layout and fusion passes (Conv+BN+ReLU,
      MatMul+Add); ORT's default is ALL already, stated here so the record cannot drift.
    - intra-op threads = the bench's --threads, the same number TensorFlow gets.
    - sequential execution: these graphs are a chain, so a parallel executor adds
      scheduling cost and nothing to overlap; inter-op threads are then unused (1).
    - spinning: ORT's default lets idle pool threads busy-wait for the next op, which saves
      wake-up latency on small batches but burns CPU that the other pool thread (or another
      process) needs; on a busy machine that made multi-threaded ops stall. `digitkit infer`
      turns it off, so the bench does too unless --ort-spinning.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def _peak_rss_mb() -> float:
    """Peak resident memory of this process's own address space, in MiB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
    started by a big parent would report the parent's peak (a pytest process holding
    TensorFlow made the ONNX Runtime child look like 900 MB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _configure_tf(threads: int):
    import tensorflow as tf

    # Before any op runs: TensorFlow sizes its pools once. Inter-op 1 like ORT's sequential
    # executor; the models are a chain of ops, so there is nothing to run side by side.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def load_engine(engine: str, path: str, threads: int, ort_spinning: bool = False):
    """Load the copy; return `run(x: float32 (N,28,28)) -> float32 (N,10) numpy`."""
    if engine.startswith("onnxruntime"):
        import onnxruntime as ort

        sess = ort.InferenceSession(path, sess_options=ort_session_options(threads, ort_spinning),
                                    providers=["CPUExecutionProvider"])
        out_name = sess.get_outputs()[0].name
        in_name = sess.get_inputs()[0].name
        run_ = sess.run

        def run(x):
            return run_([out_name], {in_name: x})[0]

        return run

    tf = _configure_tf(threads)
    if engine == "tf-savedmodel":
        loaded = tf.saved_model.load(path)
        fn = loaded.signatures["serving_default"]

        def run(x):
            return fn(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()

        run._keep = loaded  # the signature holds only a weak reference to its variables
        return run

    import keras

    model = keras.models.load_model(path, compile=False)
    if engine == "keras-predict":
        def run(x):
            return model.predict(x, batch_size=len(x), verbose=0)

        return run
    if engine == "tf-function":
        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28), tf.float32)],
                     reduce_retracing=True)
        def call(x):
            return model(x, training=False)

        def run(x):
            return call(tf.constant(x)).numpy()

        return run
    raise ValueError(f"unknown engine {engine!r}")


def _batches(x: np.ndarray, batch: int, limit: int = 16) -> list[np.ndarray]:
    """Up to `limit` distinct contiguous float32 batches of real images, cycled when timing.

    Different images per call keep a runtime from looking faster on a cache-hot input.
    """
    n = len(x)
    if batch > n:
        x = np.concatenate([x] * (batch // n + 1))
        n = len(x)
    starts = [(i * batch) % (n - batch + 1) for i in range(min(limit, max(1, n // batch)))]
    return [np.ascontiguousarray(x[s:s + batch], dtype=np.float32) for s in starts]


def _percentiles(lat: list[float]) -> dict:
    a = np.asarray(lat) * 1e3
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"min": float(a.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(a.max()), "mean": float(a.mean())}


def time_batch(run, x: np.ndarray, batch: int, warmup: int, duration: float | None,
               iterations: int | None) -> dict:
    batches = _batches(x, batch)
    t0 = time.perf_counter()
    run(batches[0])
    first_call = time.perf_counter() - t0
    for i in range(warmup):
        run(batches[i % len(batches)])
    lat = []
    start = time.perf_counter()
    i = 0
    while True:
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        run(b)
        t1 = time.perf_counter()
        lat.append(t1 - t0)
        i += 1
        if iterations is not None:
            if i >= iterations:
                break
        elif t1 - start >= duration and i >= MIN_TIMED_CALLS:
            break
    wall = time.perf_counter() - start
    return {
        "batch": batch,
        "calls": len(lat),
        "seconds": wall,
        "images_per_s": batch * len(lat) / wall,
        "latency_ms": _percentiles(lat),
        "first_call_ms": first_call * 1e3,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _load_image_fn():
    try:  # the infer engineer's decoder, so the bench measures what `digitkit infer` does
        from digitkit.preprocess import load_image
        return load_image
    except ImportError:
        from PIL import Image

        def load_image(path):
            with Image.open(path) as im:
                im = im.convert("L")
                if im.size != (28, 28):
                    im = im.resize((28, 28), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)

        return load_image


def end_to_end(run, paths: list[str], batch: int, duration: float | None,
               iterations: int | None) -> dict:
    """Decode and preprocess files, then infer, timed separately, batch by batch.

    Stops after one pass over the files or, like the timed loop, after `duration` seconds
    (`iterations` batches), whichever comes first: a slow path at batch 1 must not turn a
    benchmark over 10,000 files into an hour.
    """
    load_image = _load_image_fn()
    pre = inf = 0.0
    top1 = []
    n = calls = 0
    for s in range(0, len(paths), batch):
        chunk = paths[s:s + batch]
        t0 = time.perf_counter()
        x = np.stack([load_image(p) for p in chunk]).astype(np.float32)
        t1 = time.perf_counter()
        p = run(x)
        t2 = time.perf_counter()
        pre += t1 - t0
        inf += t2 - t1
        top1.append(np.argmax(p, axis=1))
        n += len(chunk)
        calls += 1
        if iterations is not None and calls >= iterations:
            break
        if duration is not None and pre + inf >= duration and calls >= MIN_TIMED_CALLS:
            break
    return {
        "batch": batch,
        "images": n,
        "preprocess_s": pre,
        "inference_s": inf,
        "total_s": pre + inf,
        "images_per_s": n / (pre + inf),
        "preprocess_ms_per_image": pre / n * 1e3,
        "inference_ms_per_image": inf / n * 1e3,
        "top1": np.concatenate(top1).tolist(),
    }


def measure(spec: dict) -> dict:
    """Run one engine as `spec` says; the result is JSON-ready (predictions go to a .npy)."""
    threads = int(spec["threads"])
    t0 = time.perf_counter()
    run = load_engine(spec["engine"], spec["model"], threads, spec.get("ort_spinning", False))
    load_s = time.perf_counter() - t0
    rss_load = _rss_mb()
    x = np.load(spec["inputs"]).astype(np.float32)

    t0 = time.perf_counter()
    run(x[:1])
    first_inference_ms = (time.perf_counter() - t0) * 1e3

    per_batch = [time_batch(run, x, b, spec["warmup"], spec.get("duration"),
                            spec.get("iterations")) for b in spec["batch_sizes"]]

    check = np.load(spec["check"]).astype(np.float32)
    probs = np.concatenate([run(check[s:s + CHECK_BATCH])
                            for s in range(0, len(check), CHECK_BATCH)])
    np.save(spec["predictions"], probs.astype(np.float32))

    e2e = [end_to_end(run, spec["images"], b, spec.get("duration"), spec.get("iterations"))
           for b in spec["batch_sizes"]] if spec.get("images") else []
    return {
        "engine": spec["engine"],
        "model_file": spec["model"],
        "load_s": load_s,
        "first_inference_ms": first_inference_ms,
        "rss_after_load_mb": rss_load,
        "peak_rss_mb": _peak_rss_mb(),
        "per_batch": per_batch,
        "end_to_end": e2e,
    }


#: Exit status telling the parent that the last stderr line is a one-line user error
#: (an undecodable --images file, say), to be shown as is rather than as an engine failure.
EXIT_USER_ERROR = 3


def main(argv=None) -> int:
    from digitkit.errors import DigitkitError

    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    try:
        result = measure(spec)
    except DigitkitError as e:
        print(e.message, file=sys.stderr)
        return EXIT_USER_ERROR
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
