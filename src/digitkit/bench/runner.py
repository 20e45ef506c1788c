"""The measuring side of `digitkit bench`: one runtime, one model copy, one process.

`measure_runtime` starts `python -m digitkit.bench.runner SPEC.json` once per runtime so
that every runtime gets a fresh process: its own thread pools and allocator, its own peak
RSS, a cold model load, and no TensorFlow in the ONNX Runtime process (importing TF alone
changes the memory picture and spins up thread pools). The child opens its runtime only through
`digitkit.predictors.open_runtime`, so what is timed is exactly what `infer` and export
validation run; thread settings are applied there before the runtime's first op, because
TensorFlow fixes its pools on first use.

Nothing here imports TensorFlow or ONNX Runtime at module level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from digitkit.errors import DigitkitError, ModelError
from digitkit.predictors import open_runtime
from digitkit.predictors.devices import DEFAULT_DEVICE

# The timing itself lives on the floor: `infer --runtime auto` calibrates with it too.
from digitkit.predictors.timing import MIN_TIMED_CALLS, time_batch
from digitkit.predictors.timing import batches as _batches  # noqa: F401 - tests call it here
from digitkit.predictors.timing import peak_rss_mb as _peak_rss_mb
from digitkit.predictors.timing import rss_mb as _rss_mb

#: Batch size of the untimed cross-check pass: every runtime handles it comfortably and 10,000
#: test images divide into it evenly.
CHECK_BATCH = 500

#: Exit status telling the parent that the last stderr line is a one-line user error
#: (an undecodable --images file, say), to be shown as is rather than as a runtime failure.
EXIT_USER_ERROR = 3


# ---------------------------------------------------------------------------- parent side

def prepare(work: Path, config, x_test: np.ndarray, x_check: np.ndarray,
            image_paths: list[Path] | None, contract=None) -> dict:
    """Write the shared inputs into `work`; return the spec every runtime's child gets
    (`contract`: the models', whose pixel policy decodes --images; None: digits)."""
    np.save(work / "inputs.npy", x_test)
    np.save(work / "check.npy", x_check)
    policy = None if contract is None or contract.is_digit else contract.pixel_policy.to_dict()
    return {"threads": config.thread_count, "ort_spinning": config.ort_spinning,
            "pixel_policy": policy,
            "batch_sizes": config.sizes, "warmup": config.warmup,
            "duration": config.timed_duration, "iterations": config.iterations,
            "inputs": str(work / "inputs.npy"), "check": str(work / "check.npy"),
            "images": [str(p) for p in image_paths] if image_paths else None,
            "trust_model": config.trust_model, "device": config.device}


def measure_runtime(runtime: str, model_file: Path, spec: dict, work: Path, tag: str) -> dict:
    """Measure one runtime in a fresh process; its check probabilities come back as an array."""
    spec = dict(spec, engine=runtime, model=str(model_file),
                predictions=str(work / f"{tag}.npy"), result=str(work / f"{tag}.json"))
    spec_path = work / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter is not a result
    proc = subprocess.run([sys.executable, "-m", "digitkit.bench.runner", str(spec_path)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode == EXIT_USER_ERROR:
            raise DigitkitError(last)
        raise ModelError(f"{model_file}: {runtime} failed: {last}")
    result = json.loads(Path(spec["result"]).read_text())
    result["probabilities"] = np.load(spec["predictions"])
    return result


def measure_model(name: str, files: dict[str, Path], spec: dict, work: Path, repeat: int,
                  progress=lambda msg: None) -> dict[str, dict]:
    """Every runtime of one model (runtime -> the copy it loads), `repeat` rounds each;
    runtime -> its result, the best round per batch size when there are several."""
    rounds: dict[str, list[dict]] = {e: [] for e in files}
    for r in range(repeat):
        # Round robin: a burst of outside load then hits every runtime alike.
        for e, path in files.items():
            progress(f"{name}: {e}" + (f" (round {r + 1}/{repeat})" if repeat > 1 else ""))
            tag = f"{name}-{e}-{r}".replace("#", "_")
            rounds[e].append(measure_runtime(e, path, spec, work, tag))
    results = {e: (best_of(rs) if len(rs) > 1 else rs[0]) for e, rs in rounds.items()}
    if repeat > 1:
        for e, rs in rounds.items():
            results[e]["round_images_per_s"] = [[b["images_per_s"] for b in x["per_batch"]]
                                                for x in rs]
    return results


def best_of(rounds: list[dict]) -> dict:
    """Merge repeated runs of one runtime: per batch size, the round with the best throughput.

    On a shared machine a round can be slowed by other work, never sped up, so the best round
    is the closest to what the runtime can do; all rounds stay in the record.
    """
    merged = dict(rounds[0])
    merged["per_batch"] = [max((r["per_batch"][i] for r in rounds),
                               key=lambda b: b["images_per_s"])
                           for i in range(len(rounds[0]["per_batch"]))]
    merged["load_s"] = min(r["load_s"] for r in rounds)
    merged["first_inference_ms"] = min(r["first_inference_ms"] for r in rounds)
    if rounds[0]["end_to_end"]:
        merged["end_to_end"] = [max((r["end_to_end"][i] for r in rounds),
                                    key=lambda b: b["images_per_s"])
                                for i in range(len(rounds[0]["end_to_end"]))]
    merged["rounds"] = len(rounds)
    return merged


# ---------------------------------------------------------------------------- child side

def end_to_end(run, paths: list[str], batch: int, duration: float | None,
               iterations: int | None, policy: dict | None = None) -> dict:
    """Decode and preprocess files, then infer, timed separately, batch by batch.

    Stops after one pass over the files or, like the timed loop, after `duration` seconds
    (`iterations` batches), whichever comes first: a slow path at batch 1 must not turn a
    benchmark over 10,000 files into an hour.
    """
    # The decoder of `digitkit infer`, so the bench measures what infer does; imported only
    # for --images runs, so that it is not part of every other child's peak RSS.
    from digitkit.images import load_image

    if policy is not None:  # a general classifier: its own pixel pipeline
        from functools import partial

        from digitkit.images.pixels import PixelPolicy, load_pixels

        load_image = partial(load_pixels, policy=PixelPolicy.from_dict(policy))
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
    """Run one runtime as `spec` says; the result is JSON-ready (predictions go to a .npy)."""
    t0 = time.perf_counter()
    predictor = open_runtime(spec["engine"], spec["model"], int(spec["threads"]),
                             spec.get("ort_spinning", False),
                             spec.get("trust_model", False),
                             spec.get("device", DEFAULT_DEVICE)).load()
    load_s = time.perf_counter() - t0
    rss_load = _rss_mb()
    run = predictor.predict
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

    e2e = [end_to_end(run, spec["images"], b, spec.get("duration"), spec.get("iterations"),
                      spec.get("pixel_policy"))
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


def main(argv=None) -> int:
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
