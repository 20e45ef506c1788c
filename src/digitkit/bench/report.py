"""What a bench run found: the cross-check, the comparisons (ONNX Runtime against the best
TensorFlow path and against the best fp32 peer), the JSON record with its environment, the
tables and the plot.

The cross-check applies `digitkit.predictors.compare.agreement`, the same rule export
validation uses; the environment comes from `digitkit.environment`, like every other record.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys

import numpy as np

from digitkit.bench.config import FLOAT_AGREEMENT, INT8_AGREEMENT
from digitkit.bench.plan import FP32_PEERS, ORT_RUNTIMES, TF_RUNTIMES
from digitkit.environment import RECORDED_PACKAGES, cpu_model, library_versions
from digitkit.predictors import RUNTIMES, regime_settings
from digitkit.predictors.compare import agreement

#: Preferred reference runtimes, best first: Keras is the source of every export; when it is
#: not benchmarked, the float copies are the next-best reference.
REFERENCE_ORDER = ("keras-predict", "tf-function", "tf-savedmodel", "onnxruntime", "openvino",
                   "litert")
#: The optional runtimes' distributions, named in the record beside the base ones.
BENCH_PACKAGES = (*RECORDED_PACKAGES, "openvino", "ai-edge-litert")


# ---------------------------------------------------------------------------- the record

def ort_threads(threads: int, spinning: bool | None, batch_sizes) -> dict:
    """What digitkit.predictors.ort.session_options sets, stated without importing ONNX
    Runtime into this (orchestrating) process: per batch size when the regime decides."""
    fixed = {"inter_op_num_threads": 1, "execution_mode": "sequential",
             "graph_optimization_level": "all"}
    if spinning is not None:
        return {**fixed, "intra_op_num_threads": threads, "allow_spinning": spinning}
    per = {b: regime_settings(b, threads) for b in batch_sizes}
    out = {**fixed, "regime": f"digitkit.predictors.ort.regime_settings(batch, cores={threads})",
           "per_batch": {str(b): {"intra_op_num_threads": s.threads, "allow_spinning": s.spinning}
                         for b, s in per.items()}}
    if len(set(per.values())) == 1:  # one setting for every batch size: state it plainly
        out.update(next(iter(out["per_batch"].values())))
    return out


def environment(threads: int, ort_spinning: bool | None = None, batch_sizes=(1,)) -> dict:
    """The machine, the libraries and the thread settings every runtime ran with."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001 - psutil is optional; the record then says null
        physical, mem_gb = None, None
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = None
    env_threads = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "TF_", "ORT_", "KMP_"))}
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "affinity": affinity,
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": library_versions(BENCH_PACKAGES),
        "threads": {
            "bench_threads": threads,
            # What the predictors set (digitkit.predictors.ort, .openvino, .litert, .tf),
            # stated without importing any runtime into this (orchestrating) process.
            "onnxruntime": ort_threads(threads, ort_spinning, batch_sizes),
            "openvino": {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                         "PERFORMANCE_HINT": "LATENCY",
                         "INFERENCE_PRECISION_HINT": "f32 (openvino), bf16 (openvino-bf16)"},
            "litert": {"num_threads": threads, "delegate": "XNNPACK (the default)"},
            "tensorflow": {"intra_op_parallelism_threads": threads,
                           "inter_op_parallelism_threads": 1},
        },
        "thread_env": env_threads,
    }


def new_record(config, command: str | None, inputs: str, check_images: int,
               image_count: int | None) -> dict:
    """The record of a run before any model is measured: what, where and how."""
    return {
        "tool": "digitkit bench",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "environment": environment(config.thread_count, config.ort_spinning, config.sizes),
        "settings": {
            "batch_sizes": config.sizes, "threads": config.thread_count,
            "device": config.device,
            "warmup": config.warmup, "duration_s": config.timed_duration,
            "iterations": config.iterations, "repeat": config.repeat,
            "inputs": inputs,
            "check_images": check_images,
            "agreement_threshold": {"float": FLOAT_AGREEMENT, "int8": INT8_AGREEMENT},
            "images_dir": [str(p) for p in config.images] if config.images else None,
            "images": image_count,
        },
        # The record's keys stay as they were ("engines", "runtime"): readers of older records.
        "engines": {r.name: {"runtime": r.group, "copy": r.copy, "precision": r.precision,
                             "call": r.description} for r in RUNTIMES.values()},
        "unavailable": {},  # runtime -> why it could not run here (not installed, no CPU support)
        "models": [],
    }


def model_entry(copies, results: dict[str, dict], labels: np.ndarray | None,
                batch_sizes: list[int]) -> dict:
    """One model's part of the record: its copies, the cross-checked results, the ratios."""
    reference = cross_check(results, labels)
    return {
        "model": copies.name,
        "copies": copies.as_dict(),
        "manifest": copies.manifest or None,
        "reference": reference,
        "results": results,
        "comparison": compare(results, batch_sizes),
    }


def cross_check(results: dict[str, dict], labels: np.ndarray | None) -> str | None:
    """Fill each result's "check" entry; return the reference runtime's name."""
    ref = next((e for e in REFERENCE_ORDER if e in results), None)
    # Only int8 was run: nothing to check against but the labels.
    ref_probs = results[ref]["probabilities"] if ref is not None else None
    for runtime, r in results.items():
        probs = r.pop("probabilities")
        top1 = probs.argmax(axis=1)
        threshold = FLOAT_AGREEMENT if RUNTIMES[runtime].precision == "fp32" else INT8_AGREEMENT
        check = {"reference": ref, "images": int(len(top1)), "threshold": threshold}
        if ref_probs is not None:
            a = agreement(probs, ref_probs)
            check["top1_agreement"] = a.top1_fraction
            check["max_abs_diff"] = a.max_abs_diff
            check["ok"] = a.top1_fraction >= threshold
        else:
            check["top1_agreement"] = None
            check["ok"] = True
        if labels is not None:
            check["accuracy"] = float(np.mean(top1 == labels[:len(top1)]))
        if r.get("end_to_end") and ref is not None and results[ref].get("end_to_end"):
            # Passes may stop early (duration), so compare over the files both classified.
            ref_e2e = max((np.asarray(e["top1"]) for e in results[ref]["end_to_end"]), key=len)
            for e in r["end_to_end"]:
                mine = np.asarray(e["top1"])
                k = min(len(mine), len(ref_e2e))
                e["top1_agreement"] = float(np.mean(mine[:k] == ref_e2e[:k])) if k else None
        r["check"] = check
    for r in results.values():
        for e in r.get("end_to_end", []):
            e.pop("top1", None)
    return ref


def _best(results: dict, runtimes, i: int):
    """(runtime, its batch entry) with the highest throughput among `runtimes` that passed."""
    ok = [(e, results[e]["per_batch"][i]) for e in runtimes
          if e in results and results[e]["check"]["ok"]]
    return max(ok, key=lambda t: t[1]["images_per_s"]) if ok else (None, None)


def compare(results: dict[str, dict], batch_sizes: list[int]) -> list[dict]:
    """Per batch size: each ONNX Runtime row against the best TensorFlow path that passed
    and against the best fp32 peer that passed (OpenVINO fp32, LiteRT, TensorFlow's paths);
    a ratio is None where there is nothing to compare with."""
    rows = []
    for i, b in enumerate(batch_sizes):
        tf_e, tf_b = _best(results, TF_RUNTIMES, i)
        peer_e, peer_b = _best(results, FP32_PEERS, i)
        if tf_e is None and peer_e is None:
            continue
        for e in ORT_RUNTIMES:
            if e not in results:
                continue
            pb = results[e]["per_batch"][i]
            rows.append({
                "batch": b,
                "engine": e,
                "best_tf_engine": tf_e,
                "throughput_ratio": pb["images_per_s"] / tf_b["images_per_s"] if tf_e else None,
                "p50_latency_ratio": (tf_b["latency_ms"]["p50"] / pb["latency_ms"]["p50"]
                                      if tf_e else None),
                "best_fp32_peer": peer_e,
                "peer_throughput_ratio": (pb["images_per_s"] / peer_b["images_per_s"]
                                          if peer_e else None),
                "flagged": not results[e]["check"]["ok"],
            })
    return rows


def any_flagged(record: dict) -> bool:
    return any(not r["check"]["ok"] for m in record["models"] for r in m["results"].values())


def command_line(argv=None) -> str:
    argv = sys.argv if argv is None else argv
    return "digitkit " + " ".join(shlex.quote(a) for a in argv[1:]) if argv else "digitkit bench"
