"""`digitkit bench`: ONNX Runtime against native TensorFlow, measured with care.

Method (after ONNX Runtime's perf_test and OpenVINO's benchmark_app):
- every engine runs in its own fresh process (`digitkit._bench_runners`), so load time is a
  cold load, peak RSS is that engine's alone, and thread pools do not interfere;
- every engine gets the same thread count (`--threads`, default: the CPUs this process may
  run on) and the same real inputs (MNIST test images, float32, made contiguous before timing);
- per batch size: one first call (reported), `--warmup` untimed calls, then timed calls for
  `--duration` seconds (at least a few calls) or exactly `--iterations` calls;
  throughput = images / wall seconds of the timed loop; latency percentiles per call;
- TensorFlow gets a fair baseline: the SavedModel signature, a compiled `tf.function` over
  the Keras model, and Keras `predict`; ONNX Runtime is compared with the best of them;
- after timing, every engine classifies the same check images; its top-1 agreement with the
  reference engine is reported, and an engine below its threshold is flagged and never
  counted as the fastest.
Nothing here imports TensorFlow: the parent process only orchestrates.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitkit._bench_runners import ENGINES, EXIT_USER_ERROR
from digitkit.errors import DigitkitError, ModelError, UsageError

#: User-facing runtime groups, each expanding to the engines (code paths) it covers.
RUNTIMES = {
    "onnxruntime": ("onnxruntime", "onnxruntime-int8"),
    "tensorflow": ("tf-savedmodel",),
    "keras": ("tf-function", "keras-predict"),
}
DEFAULT_RUNTIMES = ("onnxruntime", "tensorflow", "keras")
ORT_ENGINES = ("onnxruntime", "onnxruntime-int8")
TF_ENGINES = ("tf-savedmodel", "tf-function", "keras-predict")

#: From one image (latency) to a batch large enough that per-call overhead no longer matters.
DEFAULT_BATCH_SIZES = (1, 8, 32, 128, 512, 2048)
#: Seconds of timed calls per engine and batch size: enough for thousands of small-batch
#: calls and tens of large ones, while a full 6-size, 5-engine run stays a few minutes.
DEFAULT_DURATION = 3.0
#: Untimed calls per batch size before timing: lets lazy allocation, oneDNN primitive caches
#: and tf.function tracing settle (the first call is reported separately).
DEFAULT_WARMUP = 5
#: How many MNIST test images every engine classifies for the cross-check: all of them.
DEFAULT_CHECK_IMAGES = 10000

#: Minimum top-1 agreement with the reference. Float copies of the same weights should agree
#: on every image bar near-ties; 99.9% allows ten ties in 10,000 and catches any real bug.
FLOAT_AGREEMENT = 0.999
#: int8 legitimately moves a few near-tie images; below 99% something is wrong (bad
#: calibration, a broken quantized op), not rounding.
INT8_AGREEMENT = 0.99

#: Preferred reference engines, best first: Keras is the source of every export; when it is
#: not benchmarked, the float copies are the next-best reference.
_REFERENCE_ORDER = ("keras-predict", "tf-function", "tf-savedmodel", "onnxruntime")


@dataclass
class ModelCopies:
    """The copies of one model the engines can load."""

    name: str
    keras: Path | None = None
    saved_model: Path | None = None
    onnx: Path | None = None
    onnx_int8: Path | None = None
    manifest: dict = field(default_factory=dict)

    def copy_for(self, engine: str) -> Path | None:
        return getattr(self, ENGINES[engine][1])

    def as_dict(self) -> dict:
        return {"name": self.name,
                **{k: str(getattr(self, k)) if getattr(self, k) else None
                   for k in ("keras", "saved_model", "onnx", "onnx_int8")}}


# ---------------------------------------------------------------------------- arguments

def parse_runtimes(text: str | None) -> tuple[list[str], set[str]]:
    """Comma-separated runtime groups or engine names -> (engines, engines that must run).

    A runtime named by the user must find its model copy; int8 reached through the
    "onnxruntime" group runs only when an int8 copy is present. With no --runtimes, every
    engine whose copy exists runs.
    """
    if text is None:
        return [e for r in DEFAULT_RUNTIMES for e in RUNTIMES[r]], set()
    engines: list[str] = []
    required: set[str] = set()
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item in RUNTIMES:
            engines += RUNTIMES[item]
            required |= {e for e in RUNTIMES[item] if e != "onnxruntime-int8"}
        elif item in ENGINES:
            engines.append(item)
            required.add(item)
        else:
            raise UsageError(f"--runtimes: unknown runtime {item!r}; choose from "
                             f"{', '.join(RUNTIMES)} or engines {', '.join(ENGINES)}")
    if not engines:
        raise UsageError("--runtimes: no runtime given")
    return list(dict.fromkeys(engines)), required


def parse_batch_sizes(text: str | None) -> list[int]:
    if text is None:
        return list(DEFAULT_BATCH_SIZES)
    sizes = []
    for item in (s.strip() for s in text.split(",")):
        try:
            b = int(item)
        except ValueError:
            raise UsageError(f"--batch-sizes: {item!r} is not a whole number") from None
        if b < 1:
            raise UsageError(f"--batch-sizes: batch size must be at least 1, got {b}")
        sizes.append(b)
    if not sizes:
        raise UsageError("--batch-sizes: no batch size given")
    return sorted(set(sizes))


def default_threads() -> int:
    """The CPUs this process may run on (respects taskset/cgroup affinity, unlike cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _is_int8_onnx(path: Path) -> bool:
    if path.name.endswith(".int8.onnx"):
        return True
    try:
        import onnx

        ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    except Exception:  # unreadable files fail later, at load, with the runtime's own message
        return False
    return bool(ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                       "MatMulInteger", "ConvInteger"})


def _classify(copies: ModelCopies, p: Path) -> None:
    if p.is_dir():
        if (p / "saved_model.pb").is_file():
            copies.saved_model = p
            return
        raise ModelError(f"{p}: not an export directory or a SavedModel (no saved_model.pb)")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        if _is_int8_onnx(p):
            copies.onnx_int8 = p
        else:
            copies.onnx = p
    elif suffix in (".h5", ".keras"):
        copies.keras = p
    else:
        raise ModelError(f"{p}: unknown model file type (expected .onnx, .h5, .keras or a "
                         "SavedModel directory)")


def resolve_models(paths) -> list[ModelCopies]:
    """Each export directory is one model; individual files together form one more."""
    models: list[ModelCopies] = []
    loose = None
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ModelError(f"{p}: no such file or directory")
        if p.is_dir() and not (p / "saved_model.pb").is_file():
            m = ModelCopies(name=p.resolve().name)
            for name, attr in (("model.h5", "keras"), ("model.keras", "keras"),
                               ("saved_model", "saved_model"), ("model.onnx", "onnx"),
                               ("model.int8.onnx", "onnx_int8")):
                if (p / name).exists() and getattr(m, attr) is None:
                    setattr(m, attr, p / name)
            manifest = p / "export.json"
            if manifest.is_file():
                try:
                    m.manifest = json.loads(manifest.read_text())
                except (OSError, ValueError):
                    m.manifest = {}
            if not any((m.keras, m.saved_model, m.onnx, m.onnx_int8)):
                raise ModelError(f"{p}: no model copy found (expected model.h5, saved_model/, "
                                 "model.onnx or model.int8.onnx)")
            models.append(m)
        else:
            if loose is None:
                loose = ModelCopies(name=p.resolve().parent.name or "model")
                models.append(loose)
            _classify(loose, p)
    if not models:
        raise UsageError("no MODEL given")
    names = [m.name for m in models]
    for i, m in enumerate(models):  # two exports both called "export" still need labels
        if names.count(m.name) > 1:
            m.name = f"{m.name}#{i + 1}"
    return models


def plan_engines(models: list[ModelCopies], engines: list[str], required: set[str],
                 warn=lambda msg: None) -> dict[str, list[str]]:
    """Model name -> engines to run; a required engine without its copy is an error."""
    copy_names = {"onnx": "ONNX (model.onnx)", "onnx_int8": "int8 ONNX (model.int8.onnx)",
                  "saved_model": "SavedModel (saved_model/)", "keras": "Keras (model.h5)"}
    plan = {}
    for m in models:
        chosen = []
        for e in engines:
            if m.copy_for(e) is not None:
                chosen.append(e)
            elif e in required:
                raise ModelError(f"{m.name}: no {copy_names[ENGINES[e][1]]} copy for runtime "
                                 f"{ENGINES[e][0]} ({e})")
            elif e != "onnxruntime-int8":  # int8 runs "when present": its absence is normal
                warn(f"{m.name}: no {copy_names[ENGINES[e][1]]} copy, skipping {e}")
        if not chosen:
            raise ModelError(f"{m.name}: no model copy for any requested runtime")
        plan[m.name] = chosen
    return plan


# ---------------------------------------------------------------------------- environment

def environment(threads: int, ort_spinning: bool = False) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        physical, mem_gb = None, None
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    from importlib import metadata

    for dist in ("digitkit", "onnxruntime", "onnx", "tensorflow-cpu", "tensorflow", "keras",
                 "tf2onnx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    env_threads = {k: v for k, v in os.environ.items()
                   if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "TF_", "ORT_", "KMP_"))}
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "affinity": affinity,
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "threads": {
            "bench_threads": threads,
            "onnxruntime": {"intra_op_num_threads": threads, "inter_op_num_threads": 1,
                            "execution_mode": "sequential", "graph_optimization_level": "all",
                            "allow_spinning": ort_spinning},
            "tensorflow": {"intra_op_parallelism_threads": threads,
                           "inter_op_parallelism_threads": 1},
        },
        "thread_env": env_threads,
    }


# ---------------------------------------------------------------------------- running

def _run_engine(engine: str, model_file: Path, spec: dict, work: Path, tag: str) -> dict:
    spec = dict(spec, engine=engine, model=str(model_file),
                predictions=str(work / f"{tag}.npy"), result=str(work / f"{tag}.json"))
    spec_path = work / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's start-up chatter is not a result
    proc = subprocess.run([sys.executable, "-m", "digitkit._bench_runners", str(spec_path)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        if proc.returncode == EXIT_USER_ERROR:
            raise DigitkitError(last)
        raise ModelError(f"{model_file}: {engine} failed: {last}")
    result = json.loads(Path(spec["result"]).read_text())
    result["probabilities"] = np.load(spec["predictions"])
    return result


def _best_of(rounds: list[dict]) -> dict:
    """Merge repeated runs of one engine: per batch size, the round with the best throughput.

    On a shared machine a round can be slowed by other work, never sped up, so the best round
    is the closest to what the engine can do; all rounds stay in the record.
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


def cross_check(results: dict[str, dict], labels: np.ndarray | None) -> str | None:
    """Fill each result's "check" entry; return the reference engine's name."""
    ref = next((e for e in _REFERENCE_ORDER if e in results), None)
    if ref is None:  # only int8 was run: nothing to check against but the labels
        ref_top1 = None
    else:
        ref_probs = results[ref]["probabilities"]
        ref_top1 = ref_probs.argmax(axis=1)
    for engine, r in results.items():
        probs = r.pop("probabilities")
        top1 = probs.argmax(axis=1)
        threshold = INT8_AGREEMENT if engine == "onnxruntime-int8" else FLOAT_AGREEMENT
        check = {"reference": ref, "images": int(len(top1)), "threshold": threshold}
        if ref_top1 is not None:
            agree = float(np.mean(top1 == ref_top1))
            check["top1_agreement"] = agree
            check["max_abs_diff"] = float(np.max(np.abs(probs - ref_probs)))
            check["ok"] = agree >= threshold
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


def run_bench(model_paths, runtimes: str | None = None, batch_sizes: str | None = None,
              threads: int | None = None, duration: float | None = None,
              iterations: int | None = None, warmup: int = DEFAULT_WARMUP,
              images=None, data=None, check_images: int = DEFAULT_CHECK_IMAGES,
              repeat: int = 1, ort_spinning: bool = False, progress=lambda msg: None,
              warn=lambda msg: None,
              command: str | None = None) -> dict:
    """Run the whole benchmark; return the JSON-ready record."""
    engines, required = parse_runtimes(runtimes)
    sizes = parse_batch_sizes(batch_sizes)
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    if duration is not None and iterations is not None:
        raise UsageError("--duration and --iterations are alternatives; give one")
    if iterations is None and duration is None:
        duration = DEFAULT_DURATION
    if duration is not None and duration <= 0:
        raise UsageError(f"--duration must be positive, got {duration}")
    if iterations is not None and iterations < 1:
        raise UsageError(f"--iterations must be at least 1, got {iterations}")
    if warmup < 0:
        raise UsageError(f"--warmup must be 0 or more, got {warmup}")
    if check_images < 1:
        raise UsageError(f"--check-images must be at least 1, got {check_images}")
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    models = resolve_models(model_paths)
    plan = plan_engines(models, engines, required, warn)

    image_paths = _find_images(images) if images is not None else None
    x_test, y_test, source = _mnist_test(data)
    x_check = x_test[:check_images]

    record = {
        "tool": "digitkit bench",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "environment": environment(threads, ort_spinning),
        "settings": {
            "batch_sizes": sizes, "threads": threads, "warmup": warmup,
            "duration_s": duration, "iterations": iterations, "repeat": repeat,
            "inputs": f"MNIST test images ({len(x_test)}) from {source}",
            "check_images": int(len(x_check)),
            "agreement_threshold": {"float": FLOAT_AGREEMENT, "int8": INT8_AGREEMENT},
            "images_dir": [str(p) for p in images] if images is not None else None,
            "images": len(image_paths) if image_paths else None,
        },
        "engines": {e: {"runtime": ENGINES[e][0], "copy": ENGINES[e][1],
                        "call": ENGINES[e][2]} for e in ENGINES},
        "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="digitkit-bench-") as tmp:
        work = Path(tmp)
        np.save(work / "inputs.npy", x_test)
        np.save(work / "check.npy", x_check)
        spec = {"threads": threads, "ort_spinning": ort_spinning, "batch_sizes": sizes,
                "warmup": warmup,
                "duration": duration, "iterations": iterations,
                "inputs": str(work / "inputs.npy"), "check": str(work / "check.npy"),
                "images": [str(p) for p in image_paths] if image_paths else None}
        for m in models:
            rounds: dict[str, list[dict]] = {e: [] for e in plan[m.name]}
            for r in range(repeat):
                # Round robin: a burst of outside load then hits every engine alike.
                for e in plan[m.name]:
                    progress(f"{m.name}: {e}" + (f" (round {r + 1}/{repeat})" if repeat > 1
                                                 else ""))
                    rounds[e].append(_run_engine(e, m.copy_for(e), spec, work,
                                                 f"{len(record['models'])}-{e}-{r}"))
            results = {e: (_best_of(rs) if len(rs) > 1 else rs[0]) for e, rs in rounds.items()}
            if repeat > 1:
                for e, rs in rounds.items():
                    results[e]["round_images_per_s"] = [[b["images_per_s"] for b in x["per_batch"]]
                                                        for x in rs]
            reference = cross_check(results, y_test[:len(x_check)] if y_test is not None
                                    else None)
            record["models"].append({
                "model": m.name,
                "copies": m.as_dict(),
                "manifest": m.manifest or None,
                "reference": reference,
                "results": results,
                "comparison": compare(results, sizes),
            })
    return record


def _mnist_test(data):
    """(x_test uint8, y_test, source description) via the data layer."""
    from digitkit import data as data_mod

    if hasattr(data_mod, "load_mnist"):
        d = data_mod.load_mnist(data)
        return d.x_test, d.y_test, d.source
    base = Path(data) if data else None  # pre-load_mnist fallback: an IDX directory only
    if base is None:
        raise UsageError("--data: give the MNIST IDX directory")
    x, _ = data_mod.read_idx(base / "t10k-images-idx3-ubyte.gz")
    y, _ = data_mod.read_idx(base / "t10k-labels-idx1-ubyte.gz")
    return x, y, str(base)


def _find_images(paths) -> list[Path]:
    try:
        from digitkit.files import find_images
    except ImportError:
        find_images = None
    if find_images is not None:
        found = list(find_images(paths))
        found = [getattr(f, "path", f) for f in found]
    else:
        exts = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
        found = []
        for p in map(Path, paths):
            if not p.exists():
                raise DigitkitError(f"{p}: no such file or directory")
            found += sorted(q for q in p.rglob("*") if q.suffix.lower() in exts) \
                if p.is_dir() else [p]
    if not found:
        raise UsageError(f"--images: no images found in {', '.join(map(str, paths))}")
    return [Path(f) for f in found]


# ---------------------------------------------------------------------------- reporting

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
