"""What a bench run found: the cross-check, the ORT-against-TF comparison, the JSON record with
its environment, the table and the plot.

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
from digitkit.bench.plan import INT8_ENGINE, ORT_ENGINES, TF_ENGINES
from digitkit.environment import cpu_model, library_versions
from digitkit.predictors import ENGINES
from digitkit.predictors.compare import agreement

#: Preferred reference engines, best first: Keras is the source of every export; when it is
#: not benchmarked, the float copies are the next-best reference.
REFERENCE_ORDER = ("keras-predict", "tf-function", "tf-savedmodel", "onnxruntime")


# ---------------------------------------------------------------------------- the record

def environment(threads: int, ort_spinning: bool = False) -> dict:
    """The machine, the libraries and the thread settings every engine ran with."""
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
        "versions": library_versions(),
        "threads": {
            "bench_threads": threads,
            # What digitkit.predictors.ort.session_options and .tf.configure_threads set,
            # stated without importing either runtime into this (orchestrating) process.
            "onnxruntime": {"intra_op_num_threads": threads, "inter_op_num_threads": 1,
                            "execution_mode": "sequential", "graph_optimization_level": "all",
                            "allow_spinning": ort_spinning},
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
        "environment": environment(config.thread_count, config.ort_spinning),
        "settings": {
            "batch_sizes": config.sizes, "threads": config.thread_count,
            "warmup": config.warmup, "duration_s": config.timed_duration,
            "iterations": config.iterations, "repeat": config.repeat,
            "inputs": inputs,
            "check_images": check_images,
            "agreement_threshold": {"float": FLOAT_AGREEMENT, "int8": INT8_AGREEMENT},
            "images_dir": [str(p) for p in config.images] if config.images else None,
            "images": image_count,
        },
        "engines": {e.name: {"runtime": e.runtime, "copy": e.copy, "call": e.description}
                    for e in ENGINES.values()},
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
    """Fill each result's "check" entry; return the reference engine's name."""
    ref = next((e for e in REFERENCE_ORDER if e in results), None)
    # Only int8 was run: nothing to check against but the labels.
    ref_probs = results[ref]["probabilities"] if ref is not None else None
    for engine, r in results.items():
        probs = r.pop("probabilities")
        top1 = probs.argmax(axis=1)
        threshold = INT8_AGREEMENT if engine == INT8_ENGINE else FLOAT_AGREEMENT
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


def compare(results: dict[str, dict], batch_sizes: list[int]) -> list[dict]:
    """Per batch size: each ONNX Runtime engine against the best TensorFlow path that passed."""
    rows = []
    for i, b in enumerate(batch_sizes):
        tf_ok = [(e, results[e]["per_batch"][i]) for e in TF_ENGINES
                 if e in results and results[e]["check"]["ok"]]
        if not tf_ok:
            continue
        best_e, best = max(tf_ok, key=lambda t: t[1]["images_per_s"])
        for e in ORT_ENGINES:
            if e not in results:
                continue
            pb = results[e]["per_batch"][i]
            rows.append({
                "batch": b,
                "engine": e,
                "best_tf_engine": best_e,
                "throughput_ratio": pb["images_per_s"] / best["images_per_s"],
                "p50_latency_ratio": best["latency_ms"]["p50"] / pb["latency_ms"]["p50"],
                "flagged": not results[e]["check"]["ok"],
            })
    return rows


# ---------------------------------------------------------------------------- the table

def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _align(rows: list[list[str]], left: int = 2) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) if i < left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def format_table(record: dict) -> str:
    head = ["model", "engine", "batch", "images/s", "min ms", "p50 ms", "p90 ms", "p99 ms",
            "max ms", "1st call ms", "load s", "1st inf ms", "peak MB", "top-1 agree"]
    rows = [head]
    for m in record["models"]:
        for e, r in m["results"].items():
            c = r["check"]
            agree = "-" if c["top1_agreement"] is None else f"{100 * c['top1_agreement']:.2f}%"
            if e == m["reference"]:
                agree = "reference"
            elif not c["ok"]:
                agree += " FLAGGED"
            for pb in r["per_batch"]:
                lat = pb["latency_ms"]
                rows.append([m["model"], e, str(pb["batch"]), _fmt_rate(pb["images_per_s"]),
                             _fmt_ms(lat["min"]), _fmt_ms(lat["p50"]), _fmt_ms(lat["p90"]),
                             _fmt_ms(lat["p99"]), _fmt_ms(lat["max"]),
                             _fmt_ms(pb["first_call_ms"]), f"{r['load_s']:.2f}",
                             _fmt_ms(r["first_inference_ms"]), f"{pb['peak_rss_mb']:.0f}",
                             agree])
    parts = [_align(rows)]

    e2e_rows = [["model", "engine", "batch", "files", "images/s e2e", "preprocess ms/img",
                 "inference ms/img", "preprocess share", "top-1 agree"]]
    for m in record["models"]:
        for e, r in m["results"].items():
            for x in r.get("end_to_end") or []:
                agree = x.get("top1_agreement")
                e2e_rows.append([m["model"], e, str(x["batch"]), str(x["images"]),
                                 _fmt_rate(x["images_per_s"]),
                                 f"{x['preprocess_ms_per_image']:.4f}",
                                 f"{x['inference_ms_per_image']:.4f}",
                                 f"{100 * x['preprocess_s'] / x['total_s']:.0f}%",
                                 "-" if agree is None else f"{100 * agree:.2f}%"])
    if len(e2e_rows) > 1:
        n = record["settings"]["images"]
        parts.append(f"\nEnd to end over up to {n} image files (decode + preprocess, then "
                     "infer; a pass stops after --duration):")
        parts.append(_align(e2e_rows))

    cmp_rows = [["model", "engine", "batch", "best TF path", "throughput x", "p50 latency x"]]
    for m in record["models"]:
        for c in m["comparison"]:
            cmp_rows.append([m["model"], c["engine"] + (" (FLAGGED)" if c["flagged"] else ""),
                             str(c["batch"]), c["best_tf_engine"],
                             f"{c['throughput_ratio']:.2f}", f"{c['p50_latency_ratio']:.2f}"])
    if len(cmp_rows) > 1:
        parts.append("\nONNX Runtime against the best TensorFlow path (higher is better for ORT):")
        parts.append(_align(cmp_rows, left=2))
    flagged = [f"{m['model']}/{e}" for m in record["models"] for e, r in m["results"].items()
               if not r["check"]["ok"]]
    if flagged:
        parts.append("\nFLAGGED (top-1 agreement below threshold; never counted as fastest): "
                     + ", ".join(flagged))
    return "\n".join(parts)


def any_flagged(record: dict) -> bool:
    return any(not r["check"]["ok"] for m in record["models"] for r in m["results"].values())


def save_plot(record: dict, path) -> None:
    """Throughput against batch size, one line per engine, one panel per model (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from digitkit.outputs import atomic_path

    models = record["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6.4 * len(models), 4.8), squeeze=False)
    styles = {"onnxruntime": ("C0", "o"), "onnxruntime-int8": ("C1", "s"),
              "tf-savedmodel": ("C2", "^"), "tf-function": ("C3", "v"),
              "keras-predict": ("C4", "D")}
    for ax, m in zip(axes[0], models, strict=True):
        for e, r in m["results"].items():
            color, marker = styles.get(e, (None, "x"))
            xs = [pb["batch"] for pb in r["per_batch"]]
            ys = [pb["images_per_s"] for pb in r["per_batch"]]
            flagged = not r["check"]["ok"]
            ax.plot(xs, ys, marker=marker, color=color, linestyle="--" if flagged else "-",
                    label=e + (" (FLAGGED)" if flagged else ""))
        ax.set_xscale("log", base=2)
        sizes = record["settings"]["batch_sizes"]
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (images/s)")
        ax.set_title(m["model"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    env = record["environment"]
    fig.suptitle(f"digitkit bench: {env['cpu']}, {record['settings']['threads']} threads",
                 fontsize="medium")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def command_line(argv=None) -> str:
    argv = sys.argv if argv is None else argv
    return "digitkit " + " ".join(shlex.quote(a) for a in argv[1:]) if argv else "digitkit bench"
