#!/usr/bin/env python
"""ONNX Runtime with the OpenVINO execution provider against ORT's CPU provider and LiteRT
(issue 13: "an execution provider such as the OpenVINO EP where it installs").

    python benchmarks/bench_ort_openvino_ep.py EXPORT_DIR [EXPORT_DIR...] [--threads 2]
        [--rounds 2] [--work /tmp/digitkit-ort-ov-ep]

Two packages ship that provider. `onnxruntime-ep-openvino` (a plugin for the onnxruntime
digitkit installs) registers, but on a CPU that is not Intel's `get_ep_devices()` offers it no
device, so no session can use it (printed below). `onnxruntime-openvino` is a whole ONNX
Runtime build with the provider inside; it replaces the `onnxruntime` module, so it lives in
its own virtual environment under --work (created on first use with pip; the plugin too,
beside the onnxruntime version digitkit runs). Each engine runs
in its own process, `--rounds` times in turn, batch 1, 32 and 512, best of 8 timed slices
per batch; every engine's labels on the 10,000 test images are compared with the others'.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent("""
    import gzip, json, sys, time
    import numpy as np
    kind, path, threads, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with gzip.open(data + "/t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28).astype(np.float32)
    if kind == "ort-openvino-ep":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.log_severity_level = 3
        opts = {"device_type": "CPU", "precision": "FP32", "num_of_threads": str(threads)}
        s = ort.InferenceSession(path, so, providers=[("OpenVINOExecutionProvider", opts)])
        assert s.get_providers()[0] == "OpenVINOExecutionProvider", s.get_providers()
        i, o = s.get_inputs()[0].name, s.get_outputs()[0].name
        predict = lambda b: s.run([o], {i: b})[0]
    elif kind == "ort-cpu":
        from digitkit.predictors.ort import RegimeOnnxPredictor
        predict = RegimeOnnxPredictor(path, cores=threads).load().predict
    else:
        from digitkit.predictors.litert import LiteRTPredictor
        predict = LiteRTPredictor(path, threads).load().predict
    rates = {}
    for b in (1, 32, 512):
        xb, n = x[:b].copy(), max(20, 4000 // b)
        for _ in range(20):
            predict(xb)
        best = 1e9
        for _ in range(8):
            t0 = time.perf_counter()
            for _ in range(n):
                predict(xb)
            best = min(best, (time.perf_counter() - t0) / n)
        rates[b] = b / best
    labels = np.concatenate([predict(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
    print(json.dumps({"rates": rates, "labels": labels.tolist()}))
""")


PLUGIN_CHECK = textwrap.dedent("""
    import onnxruntime as ort, onnxruntime_ep_openvino as plugin
    ort.register_execution_provider_library(plugin.get_ep_name(), plugin.get_library_path())
    devices = sorted({f"{d.ep_name} ({d.device.vendor})" for d in ort.get_ep_devices()})
    print(f"onnxruntime {ort.__version__} + onnxruntime-ep-openvino: devices after registering "
          "the plugin: " + ", ".join(devices))
""")


def venv_with(work: Path, name: str, packages: list[str]) -> Path:
    """A virtual environment under `work` with `packages` (made once, kept)."""
    py = work / name / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(work / name)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *packages], check=True)
    return py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("exports", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/digitkit-ort-ov-ep"))
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" /
                                          "data" / "mnist"))
    args = ap.parse_args()
    print("$ python " + " ".join(sys.argv))
    import onnxruntime

    plugin = venv_with(args.work, "plugin", [f"onnxruntime=={onnxruntime.__version__}",
                                             "onnxruntime-ep-openvino"])
    print(subprocess.run([str(plugin), "-c", PLUGIN_CHECK], capture_output=True, text=True,
                         check=True).stdout.strip())
    ov = venv_with(args.work, "venv", ["onnxruntime-openvino", "numpy"])
    version = subprocess.run([str(ov), "-c", "import onnxruntime as o; print(o.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"onnxruntime-openvino {version} in {ov}")
    rows = ["| model | engine | b=1 img/s | b=32 img/s | b=512 img/s |", "|---|---|--:|--:|--:|"]
    for export in args.exports:
        tag = export.parent.name if export.name == "export" else export.name
        engines = {"ort-openvino-ep": (ov, export / "model.onnx"),
                   "ort-cpu": (Path(sys.executable), export / "model.onnx"),
                   "litert": (Path(sys.executable), export / "model.tflite")}
        best: dict[str, dict] = {}
        labels = {}
        for _ in range(args.rounds):
            for name, (py, path) in engines.items():
                out = subprocess.run([str(py), "-c", CHILD, name, str(path), str(args.threads),
                                      args.data], capture_output=True, text=True, check=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                labels[name] = got["labels"]
                for b, r in got["rates"].items():
                    best.setdefault(name, {})[b] = max(best.get(name, {}).get(b, 0.0), r)
        agree = {n: sum(a == b for a, b in zip(v, labels["ort-cpu"], strict=True)) / len(v)
                 for n, v in labels.items()}
        for name, rates in best.items():
            rows.append(f"| {tag} | {name} ({args.threads} threads; labels "
                        f"{100 * agree[name]:.2f} % = ort-cpu) | "
                        + " | ".join(f"{rates[b]:,.0f}" for b in ("1", "32", "512")) + " |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
