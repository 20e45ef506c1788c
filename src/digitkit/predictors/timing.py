"""How one predictor is timed at one batch size: what `bench` reports per batch size and what
`infer --runtime auto` measures when it calibrates (predictors.choice), so the two figures are
taken the same way.

Per batch size: one first call (reported; left out by a caller that has just run the
predictor at this batch size), `warmup` untimed calls, then timed calls for `duration`
seconds (at least `min_calls`, MIN_TIMED_CALLS unless the caller needs only the throughput)
or exactly `iterations` calls, cycling through a few distinct batches of real images;
throughput = images / wall seconds of the timed loop.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np

#: However short the duration is, a batch size gets this many timed calls, so that p50 and the
#: extremes come from more than a couple of samples.
MIN_TIMED_CALLS = 5


def peak_rss_mb() -> float:
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


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def batches(x: np.ndarray, batch: int, limit: int = 16) -> list[np.ndarray]:
    """Up to `limit` distinct contiguous float32 batches of real images, cycled when timing.

    Different images per call keep a runtime from looking faster on a cache-hot input.
    """
    n = len(x)
    if batch > n:
        x = np.concatenate([x] * (batch // n + 1))
        n = len(x)
    starts = [(i * batch) % (n - batch + 1) for i in range(min(limit, max(1, n // batch)))]
    return [np.ascontiguousarray(x[s:s + batch], dtype=np.float32) for s in starts]


def percentiles(lat: list[float]) -> dict:
    a = np.asarray(lat) * 1e3
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"min": float(a.min()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": float(a.max()), "mean": float(a.mean())}


def time_batch(run, x: np.ndarray, batch: int, warmup: int, duration: float | None,
               iterations: int | None, min_calls: int = MIN_TIMED_CALLS,
               first_call: bool = True) -> dict:
    """Time `run` (a predictor's `predict`) on batches of `batch` images of `x` (see the
    module docstring); the figures as a JSON-ready dict (first_call_ms None when
    `first_call` is False)."""
    cycle = batches(x, batch)
    first = None
    if first_call:
        t0 = time.perf_counter()
        run(cycle[0])
        first = (time.perf_counter() - t0) * 1e3
    for i in range(warmup):
        run(cycle[i % len(cycle)])
    lat = []
    start = time.perf_counter()
    i = 0
    while True:
        b = cycle[i % len(cycle)]
        t0 = time.perf_counter()
        run(b)
        t1 = time.perf_counter()
        lat.append(t1 - t0)
        i += 1
        if iterations is not None:
            if i >= iterations:
                break
        elif t1 - start >= duration and i >= min_calls:
            break
    wall = time.perf_counter() - start
    return {
        "batch": batch,
        "calls": len(lat),
        "seconds": wall,
        "images_per_s": batch * len(lat) / wall,
        "latency_ms": percentiles(lat),
        "first_call_ms": first,
        "peak_rss_mb": peak_rss_mb(),
    }
